"""``[server] log_format = "json"``: every line the daemon logs is one JSON object (time, level,
logger, message) and none holds a password or a message body; and SIGTERM: clients are told,
in the <system-shutdown/> text, that the server restarts, and what it accepted before is
committed (an offline message is there after the restart)."""

from __future__ import annotations

import json


from tests.daemon import Daemon
from tests.rawclient import RawClient


PASSWORD = "pw-Secret-7391"
BODY = "body-SECRET-5678 the content of a private message"
NS_STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"


async def shutdown_text(client: RawClient) -> tuple[str, str]:
    """Read until the stream error; its condition and text."""
    while True:
        el = await client.element(timeout=10)
        if el.tag == "error" and el.ns == "http://etherx.jabber.org/streams":
            cond = next(c.tag for c in el.elements() if c.ns == NS_STREAMS and c.tag != "text")
            text = next((c.text or "" for c in el.elements() if c.tag == "text"), "")
            return cond, text


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:  # (all of it: Daemon.log() keeps only the end)
        return f.read()


async def bodies(client: RawClient, n: int) -> list[str | None]:
    """The bodies of the next ``n`` messages ``client`` receives."""
    out: list[str | None] = []
    while len(out) < n:
        el = await client.element(timeout=10)
        if el.tag == "message":
            out.append(el.findtext("body"))
    return out


def daemon_with(server_keys: str) -> Daemon:
    """A daemon whose [server] section says ``server_keys`` in place of its log_level line."""
    d = Daemon()
    with open(d.config_path) as f:
        text = f.read()
    with open(d.config_path, "w") as f:
        f.write(text.replace('log_level = "info"', server_keys, 1))
    return d


async def test_json_logs_and_restart_notice():
    d = daemon_with('log_level = "info"\nlog_format = "json"')
    try:
        d.start()
        d.add_user("alice@localhost", PASSWORD)
        d.add_user("bob@localhost", PASSWORD)
        bad = await RawClient.connect(d.tls, direct_tls=True)  # a refused login is logged
        await bad.open("localhost")
        await bad.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                       "AGFsaWNlAHdyb25nLXB3LVNlY3JldA==</auth>")  # \0alice\0wrong-pw-Secret
        assert (await bad.element()).tag == "failure"
        await bad.close()
        alice = await RawClient.connect(d.tls, direct_tls=True)
        await alice.login("alice", PASSWORD, direct_tls=True)
        await alice.send(f"<message to='bob@localhost' type='chat' id='m1'><body>{BODY}</body></message>"
                         "<message to='bob@localhost' type='chat'><body>x</body></message>"
                         "<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
        while (await alice.element()).get("id") != "ping":
            pass  # the round trip: both messages were routed (stored offline) before the stop
        # a stanza that cannot be routed is logged by kind, not content
        await alice.send(f"<message to='nobody@nowhere.invalid'><body>{BODY}</body></message>")

        d.proc.terminate()
        cond, text = await shutdown_text(alice)
        assert cond == "system-shutdown"
        assert "restarting" in text and "reconnect" in text
        await alice.close()
        d.proc.wait(15)
        assert d.stop() == 0

        d.start()  # what was accepted before the stop is there
        bob = await RawClient.connect(d.tls, direct_tls=True)
        await bob.login("bob", PASSWORD, direct_tls=True)
        await bob.send("<presence/>")
        assert await bodies(bob, 2) == [BODY, "x"]
        await bob.close()
        assert d.stop() == 0

        lines = [ln for ln in read(d.log_path).splitlines() if ln.strip()]
        assert len(lines) > 10
        for line in lines:
            obj = json.loads(line)  # every line is one JSON object
            assert set(obj) >= {"time", "level", "logger", "message"}, obj
            assert obj["time"].endswith("Z") and obj["level"] in ("debug", "info", "warning", "error")
        messages = [json.loads(ln)["message"] for ln in lines]
        assert any("stopping" == m for m in messages)
        assert any(m.startswith("c2s (direct TLS) listening") for m in messages)
        log_text = "\n".join(lines)
        for secret in (PASSWORD, "wrong-pw-Secret", "body-SECRET", "AGFsaWNl"):
            assert secret not in log_text, secret
    finally:
        d.cleanup()


def test_log_format_is_validated():
    d = daemon_with('log_format = "xml"')
    try:
        r = d.cli("check-config", check=False)
        assert r.returncode == 2
        assert "server.log_format: must be one of text, json, got \"xml\"" in r.stderr + r.stdout
    finally:
        d.cleanup()


def test_stanzas_are_logged_by_kind_not_content():
    """What the internal-error log lines of the c2s/s2s streams and the IQ dispatch print."""
    from mbxmpp.util.logjson import loggable
    from mbxmpp.xml.element import Element
    auth = Element("auth", "urn:ietf:params:xml:ns:xmpp-sasl", {"mechanism": "PLAIN"})
    auth.text = "AGFsaWNlAHNlY3JldA=="
    assert loggable(auth) == "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'> []"
    msg = Element("message", "jabber:client", {"to": "b@x", "type": "chat", "id": "1"})
    msg.add("body", "jabber:client").text = BODY
    assert loggable(msg) == "<message xmlns='jabber:client' type='chat' id='1' to='b@x'> [body]"


async def test_stream_management_session_across_a_restart():
    """A session kept for resumption survives the restart: the client is told the server
    restarts, the session is saved (modules/sm_restart.py), and its <resume/> afterwards
    succeeds and re-sends what it never acknowledged: nothing lost. (Expiry and wrong ids:
    test_sm_restart.py.)"""
    ns_sm = "urn:xmpp:sm:3"
    d = Daemon()
    try:
        d.start()
        d.add_user("alice@localhost", PASSWORD)
        d.add_user("bob@localhost", PASSWORD)
        alice = await RawClient.connect(d.tls, direct_tls=True)
        await alice.login("alice", PASSWORD, direct_tls=True, resource="phone")
        await alice.send(f"<enable xmlns='{ns_sm}' resume='true'/>")
        enabled = await alice.element()
        assert enabled.tag == "enabled" and enabled.get("resume") == "true"
        await alice.send("<presence/>")
        bob = await RawClient.connect(d.tls, direct_tls=True)
        await bob.login("bob", PASSWORD, direct_tls=True)
        await bob.send("<message to='alice@localhost/phone' type='chat'><body>unacked one</body></message>"
                       "<message to='alice@localhost/phone' type='chat'><body>unacked two</body></message>")
        # received, never acknowledged
        assert await bodies(alice, 2) == ["unacked one", "unacked two"]

        d.proc.terminate()
        cond, text = await shutdown_text(alice)
        assert cond == "system-shutdown" and "restarting" in text
        await alice.close()
        await bob.close()
        d.proc.wait(15)
        assert d.stop() == 0

        d.start()
        again = await RawClient.connect(d.tls, direct_tls=True)
        await again.auth("alice", PASSWORD, direct_tls=True)
        await again.send(f"<resume xmlns='{ns_sm}' previd='{enabled.get('id')}' h='0'/>")
        resumed = await again.element()
        assert resumed.tag == "resumed" and resumed.ns == ns_sm
        assert await bodies(again, 2) == ["unacked one", "unacked two"]
        await again.close()
    finally:
        d.cleanup()
