"""External components (XEP-0114) over the wire: a raw-socket component and raw clients against
the spawned daemon. The handshake, stanzas both ways (messages and IQs), each bad input with its
exact stream error, bounces while the component is away, reconnection, the limits."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Iterator

import pytest

from mbxmpp.xml import Element, StreamHeader
from tests.daemon import Daemon, free_ports
from tests.interop.netlab import S2S_HEADER
from tests.rawclient import RawClient

SECRET = "s3cret-for-the-bridge"
OTHER_SECRET = "another-secret"
BRIDGE = "bridge.localhost"
OTHER = "other.example"          # configured, not a subdomain of a served host
PASSWORD = "pw-comp"
HEADER = ("<stream:stream xmlns='jabber:component:accept' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='{to}'>")
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


HOSTS = f"""
[components.hosts."{BRIDGE}"]
secret = "{SECRET}"
name = "Test bridge"

[components.hosts."{OTHER}"]
secret = "{OTHER_SECRET}"
"""


def component_config(port: int, hosts: str = HOSTS) -> str:
    return f"""
[components]
listen = ["127.0.0.1:{port}"]
max_stanza_size = "16KiB"
auth_timeout = "1s"
{hosts}"""


def with_components(d: Daemon, hosts: str = HOSTS) -> int:
    """Add a [components] section on a port of its own to the daemon's configuration."""
    taken = {d.c2s, d.tls, d.s2s, d.http, d.proxy}
    port = next(p for p in free_ports(8) if p not in taken)
    with open(d.config_path, "a") as f:
        f.write(component_config(port, hosts))
    return port


def component_daemon(password: str = PASSWORD) -> Iterator[Daemon]:
    """A daemon serving BRIDGE and OTHER to components (port ``component_port``), with the
    accounts alice and bob."""
    d = Daemon()
    d.component_port = with_components(d)  # type: ignore[attr-defined]
    for u in ("alice@localhost", "bob@localhost"):
        d.add_user(u, password)
    d.start()
    yield d
    d.finish()


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    yield from component_daemon()


def digest(stream_id: str, secret: str) -> str:
    return hashlib.sha1((stream_id + secret).encode()).hexdigest()


async def open_component(daemon: Daemon, domain: str = BRIDGE) -> tuple[RawClient, StreamHeader]:
    c = await RawClient.connect(daemon.component_port)  # type: ignore[attr-defined]
    await c.send(HEADER.format(to=domain))
    h = await c.next()
    assert isinstance(h, StreamHeader), h
    return c, h


async def component(daemon: Daemon, domain: str = BRIDGE, secret: str = SECRET) -> RawClient:
    """A component connected and authenticated (the accepted handshake checked)."""
    c, h = await open_component(daemon, domain)
    assert h.default_ns == "jabber:component:accept"
    assert h.attrs["from"] == domain
    await c.send(f"<handshake>{digest(h.attrs['id'], secret)}</handshake>")
    ok = await c.element()
    assert ok.tag == "handshake" and ok.ns == "jabber:component:accept", ok
    assert not ok.children
    return c


async def client(daemon: Daemon, user: str = "alice", resource: str = "raw") -> RawClient:
    c = await RawClient.connect(daemon.c2s)
    await c.login(user, PASSWORD, resource=resource)
    return c


async def stanza(c: RawClient, tag: str, timeout: float = 5.0) -> Element:
    while True:
        el = await c.element(timeout)
        if el.tag == tag:
            return el


def condition(el: Element) -> tuple[str, str]:
    err = next(x for x in el.elements() if x.tag == "error")
    cond = next(x.tag for x in err.elements() if x.ns == NS_STANZAS and x.tag != "text")
    return err.attrs["type"], cond


async def test_messages_and_iqs_both_ways(daemon: Daemon) -> None:
    comp = await component(daemon)
    alice = await client(daemon)
    # client -> component: any JID at the domain
    await alice.send(f"<message to='irc-user@{BRIDGE}' type='chat' id='m1'><body>hello bridge</body></message>")
    m = await stanza(comp, "message")
    assert m.attrs["from"] == "alice@localhost/raw" and m.attrs["to"] == f"irc-user@{BRIDGE}"
    assert m.findtext("body", "jabber:component:accept") == "hello bridge"
    # component -> client, from a user at its domain (in the component's namespace)
    await comp.send(f"<message from='irc-user@{BRIDGE}/nick' to='alice@localhost/raw' type='chat'>"
                    "<body>hello alice</body></message>")
    m = await stanza(alice, "message")
    assert m.attrs["from"] == f"irc-user@{BRIDGE}/nick"
    assert m.findtext("body") == "hello alice"
    # client IQ to the component's domain, answered by the component
    await alice.send(f"<iq type='get' id='q1' to='{BRIDGE}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    iq = await stanza(comp, "iq")
    assert iq.attrs["type"] == "get" and iq.attrs["from"] == "alice@localhost/raw"
    await comp.send(f"<iq type='result' id='q1' from='{BRIDGE}' to='alice@localhost/raw'>"
                    "<query xmlns='http://jabber.org/protocol/disco#info'><identity category='gateway' "
                    "type='irc' name='IRC'/></query></iq>")
    res = await stanza(alice, "iq")
    assert res.attrs["type"] == "result" and res.attrs["id"] == "q1" and res.attrs["from"] == BRIDGE
    assert res.first_child().find("identity", "http://jabber.org/protocol/disco#info") is not None  # type: ignore[union-attr]
    # component IQ to a client, answered by the client
    await comp.send(f"<iq type='get' id='v1' from='bot@{BRIDGE}' to='alice@localhost/raw'>"
                    "<query xmlns='jabber:iq:version'/></iq>")
    iq = await stanza(alice, "iq")
    assert iq.attrs["from"] == f"bot@{BRIDGE}"
    await alice.send(f"<iq type='result' id='v1' to='bot@{BRIDGE}'><query xmlns='jabber:iq:version'>"
                     "<name>raw</name></query></iq>")
    res = await stanza(comp, "iq")
    assert res.attrs["type"] == "result" and res.attrs["id"] == "v1"
    assert res.attrs["from"] == "alice@localhost/raw" and res.attrs["to"] == f"bot@{BRIDGE}"
    # component IQ to the server itself (slixmpp's itest: ping from whatever@component)
    await comp.send(f"<iq type='get' id='p1' from='whatever@{BRIDGE}' to='localhost'>"
                    "<ping xmlns='urn:xmpp:ping'/></iq>")
    res = await stanza(comp, "iq")
    assert res.attrs["type"] == "result" and res.attrs["to"] == f"whatever@{BRIDGE}"
    assert res.attrs["from"] == "localhost"
    await comp.send("</stream:stream>")
    await comp.expect_closed()
    await alice.close()


async def test_presence_to_and_from_the_component(daemon: Daemon) -> None:
    comp = await component(daemon)
    alice = await client(daemon, resource="pres")
    await alice.send(f"<presence to='room@{BRIDGE}/alice'/>")
    p = await stanza(comp, "presence")
    assert p.attrs["from"] == "alice@localhost/pres" and p.attrs["to"] == f"room@{BRIDGE}/alice"
    await comp.send(f"<presence from='room@{BRIDGE}/alice' to='alice@localhost/pres'/>")
    p = await stanza(alice, "presence")
    assert p.attrs["from"] == f"room@{BRIDGE}/alice"
    await comp.close()
    await alice.close()


async def test_stanza_without_from_comes_from_the_domain(daemon: Daemon) -> None:
    comp = await component(daemon)
    alice = await client(daemon, resource="nofrom")
    await comp.send("<message to='alice@localhost/nofrom'><body>from the domain</body></message>")
    m = await stanza(alice, "message")
    assert m.attrs["from"] == BRIDGE
    await comp.close()
    await alice.close()


async def test_stanzas_in_jabber_client_and_foreign_payloads_pass(daemon: Daemon) -> None:
    """Components that write their stanzas in jabber:client (slixmpp's use_jc_ns) are served
    too; payloads in their own namespaces reach the client as they were."""
    comp = await component(daemon)
    alice = await client(daemon, resource="jc")
    await comp.send(f"<message xmlns='jabber:client' from='u@{BRIDGE}' to='alice@localhost/jc'>"
                    "<body>in jabber:client</body><x xmlns='jabber:x:oob'><url>https://example.org/a</url></x>"
                    "</message>")
    m = await stanza(alice, "message")
    assert m.ns == "jabber:client" and m.findtext("body") == "in jabber:client"
    oob = m.find("x", "jabber:x:oob")
    assert oob is not None and oob.findtext("url", "jabber:x:oob") == "https://example.org/a"
    await comp.close()
    await alice.close()


async def test_stanza_without_to_is_refused_with_bad_request(daemon: Daemon) -> None:
    comp = await component(daemon)
    await comp.send(f"<iq type='get' id='nt' from='{BRIDGE}'><ping xmlns='urn:xmpp:ping'/></iq>")
    err = await stanza(comp, "iq")
    assert err.attrs["type"] == "error" and err.attrs["id"] == "nt"
    assert condition(err) == ("modify", "bad-request")
    # the stream stays up
    await comp.send(f"<iq type='get' id='p2' from='{BRIDGE}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await stanza(comp, "iq")).attrs["type"] == "result"
    await comp.close()


async def test_message_to_an_unknown_local_user_bounces_to_the_component(daemon: Daemon) -> None:
    comp = await component(daemon)
    await comp.send(f"<message from='x@{BRIDGE}' to='nobody@localhost' id='u1'><body>hi</body></message>")
    err = await stanza(comp, "message")
    assert err.attrs["type"] == "error" and err.attrs["to"] == f"x@{BRIDGE}"
    assert condition(err) == ("cancel", "service-unavailable")
    await comp.close()


async def test_two_components_talk_through_the_server(daemon: Daemon) -> None:
    a = await component(daemon)
    b = await component(daemon, OTHER, OTHER_SECRET)
    await a.send(f"<message from='u@{BRIDGE}' to='v@{OTHER}'><body>across</body></message>")
    m = await stanza(b, "message")
    assert m.attrs["from"] == f"u@{BRIDGE}" and m.findtext("body", "jabber:component:accept") == "across"
    await a.close()
    await b.close()


async def test_disconnected_component_bounces_then_reconnects(daemon: Daemon) -> None:
    comp = await component(daemon)
    await comp.send("</stream:stream>")
    await comp.expect_closed()
    alice = await client(daemon, resource="bounce")
    # unavailable presence asks for nothing: not bounced (the message's error comes first)
    await alice.send(f"<presence type='unavailable' to='u@{BRIDGE}'/>")
    await alice.send(f"<message to='u@{BRIDGE}' type='chat' id='b1'><body>anyone?</body></message>")
    err = await alice.element()
    assert err.tag == "message", err
    assert err.attrs["type"] == "error" and err.attrs["from"] == f"u@{BRIDGE}" and err.attrs["id"] == "b1"
    assert condition(err) == ("wait", "service-unavailable")
    await alice.send(f"<iq type='get' id='b2' to='{BRIDGE}'><ping xmlns='urn:xmpp:ping'/></iq>")
    err = await stanza(alice, "iq")
    assert err.attrs["type"] == "error" and condition(err) == ("wait", "service-unavailable")
    # a component that is cut off (no closing tag) is noticed as well
    comp = await component(daemon)
    comp.abort()
    await asyncio.sleep(0.3)
    await alice.send(f"<message to='u@{BRIDGE}' type='chat' id='b3'><body>still?</body></message>")
    err = await stanza(alice, "message")
    assert err.attrs["id"] == "b3" and condition(err) == ("wait", "service-unavailable")
    # back again: stanzas reach it
    comp = await component(daemon)
    await alice.send(f"<message to='u@{BRIDGE}' type='chat' id='b4'><body>welcome back</body></message>")
    m = await stanza(comp, "message")
    assert m.attrs["id"] == "b4"
    await comp.close()
    await alice.close()


async def test_disco_items_of_the_parent_domain_list_the_component(daemon: Daemon) -> None:
    alice = await client(daemon, resource="disco")
    await alice.send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    res = await stanza(alice, "iq")
    items = {i.attrs["jid"]: i.attrs.get("name") for i in res.first_child().elements()}  # type: ignore[union-attr]
    assert items[BRIDGE] == "Test bridge"
    assert OTHER not in items  # not a subdomain of localhost
    await alice.close()


# -- bad inputs, each with its stream error -------------------------------------------------------

async def expect_error(c: RawClient, cond: str) -> None:
    assert await c.stream_error() == cond
    await c.expect_closed()


@pytest.mark.parametrize("secret", ["wrong", OTHER_SECRET])
async def test_wrong_handshake_is_not_authorized(daemon: Daemon, secret: str) -> None:
    c, h = await open_component(daemon)
    await c.send(f"<handshake>{digest(h.attrs['id'], secret)}</handshake>")
    await expect_error(c, "not-authorized")


ACCEPT = "jabber:component:accept"


@pytest.mark.parametrize("header, cond", [
    (HEADER.format(to="unknown.localhost"), "host-unknown"),
    (HEADER.format(to="localhost"), "host-unknown"),               # a served domain
    (HEADER.format(to=f"user@{BRIDGE}"), "host-unknown"),          # not a bare domain
    (HEADER.replace(" to='{to}'", ""), "improper-addressing"),
    (HEADER.format(to=BRIDGE).replace(ACCEPT, "jabber:client"), "invalid-namespace"),
    (HEADER.format(to=BRIDGE).replace(ACCEPT, "jabber:component:connect"), "invalid-namespace"),
    (HEADER.format(to=BRIDGE).replace("stream:stream", "s:stream").replace("xmlns:stream", "xmlns:s"),
     "bad-namespace-prefix"),
])
async def test_bad_header(daemon: Daemon, header: str, cond: str) -> None:
    """XEP-0114 §3 / RFC 6120 §4.7.1: our header, then the stream error, then the close."""
    c = await RawClient.connect(daemon.component_port)  # type: ignore[attr-defined]
    await c.send(header)
    first = await c.next()
    assert isinstance(first, StreamHeader) and first.attrs.get("id")
    assert first.attrs.get("from") != "localhost"
    await expect_error(c, cond)


async def test_stanza_before_handshake_is_not_authorized(daemon: Daemon) -> None:
    c, _ = await open_component(daemon)
    await c.send(f"<message from='u@{BRIDGE}' to='alice@localhost'><body>early</body></message>")
    await expect_error(c, "not-authorized")


async def test_second_connection_is_refused_with_conflict(daemon: Daemon) -> None:
    first = await component(daemon)
    c, h = await open_component(daemon)
    await c.send(f"<handshake>{digest(h.attrs['id'], SECRET)}</handshake>")
    await expect_error(c, "conflict")
    # the connected one stays and keeps working
    await first.send(f"<iq type='get' id='c1' from='{BRIDGE}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await stanza(first, "iq")).attrs["type"] == "result"
    await first.close()


async def test_foreign_from_is_invalid_from(daemon: Daemon) -> None:
    comp = await component(daemon)
    await comp.send("<message from='alice@localhost' to='bob@localhost'><body>spoof</body></message>")
    await expect_error(comp, "invalid-from")
    # (and the domain is free again)
    comp = await component(daemon)
    await comp.send(f"<message from='u@sub.{BRIDGE}' to='bob@localhost'><body>spoof</body></message>")
    await expect_error(comp, "invalid-from")


async def test_too_large_stanza_is_policy_violation(daemon: Daemon) -> None:
    comp = await component(daemon)
    body = "x" * (20 * 1024)  # [components] max_stanza_size = 16KiB here
    await comp.send(f"<message from='u@{BRIDGE}' to='alice@localhost'><body>{body}</body></message>")
    await expect_error(comp, "policy-violation")


async def test_no_handshake_in_time_is_connection_timeout(daemon: Daemon) -> None:
    c, _ = await open_component(daemon)  # [components] auth_timeout = 1s here
    await expect_error(c, "connection-timeout")


async def test_uppercase_handshake_is_accepted(daemon: Daemon) -> None:
    """XEP-0114 asks for lowercase hex; an uppercase one is the same digest (Prosody agrees)."""
    c, h = await open_component(daemon)
    await c.send(f"<handshake>{digest(h.attrs['id'], SECRET).upper()}</handshake>")
    assert (await c.element()).tag == "handshake"
    await c.close()


async def test_second_handshake_is_policy_violation(daemon: Daemon) -> None:
    comp = await component(daemon)
    await comp.send("<handshake>0000</handshake>")
    await expect_error(comp, "policy-violation")


async def test_unknown_element_after_handshake_is_unsupported_stanza_type(daemon: Daemon) -> None:
    comp = await component(daemon)
    await comp.send("<foo xmlns='urn:example'/>")
    await expect_error(comp, "unsupported-stanza-type")


async def test_neither_secret_nor_handshake_in_the_log(daemon: Daemon) -> None:
    c, h = await open_component(daemon)
    sent = digest(h.attrs["id"], "a-guess")
    await c.send(f"<handshake>{sent}</handshake>")
    await expect_error(c, "not-authorized")
    comp = await component(daemon)
    await comp.close()
    await asyncio.sleep(0.2)
    log = daemon.log()
    assert "wrong handshake for " + BRIDGE in log  # (the log was written)
    assert SECRET not in log and OTHER_SECRET not in log and sent not in log


async def test_component_domain_is_ours_to_federation(daemon: Daemon) -> None:
    """A server connecting to the component's domain over s2s is answered for it (the start
    of dialback, which verifies the domain through us), not refused with host-unknown."""
    peer = await RawClient.connect(daemon.s2s)
    await peer.send(S2S_HEADER.format(ns="jabber:server", frm="peer.example", to=BRIDGE))
    h = await peer.next()
    assert isinstance(h, StreamHeader) and h.attrs.get("from") == BRIDGE
    features = await peer.element()
    assert features.tag == "features" and features.find("starttls", "urn:ietf:params:xml:ns:xmpp-tls") is not None
    await peer.close()


async def test_component_stanza_to_another_server_goes_to_federation(daemon: Daemon) -> None:
    """From the component's domain to a remote one: sent over s2s (not refused as from a
    foreign domain); a domain that does not exist bounces back to the component."""
    comp = await component(daemon)
    await comp.send(f"<message from='u@{BRIDGE}' to='x@nowhere.invalid' id='r1'><body>out</body></message>")
    err = await stanza(comp, "message", timeout=30)
    assert err.attrs["id"] == "r1" and err.attrs["to"] == f"u@{BRIDGE}"
    assert condition(err)[1] in ("remote-server-not-found", "remote-server-timeout")
    await comp.close()


def test_nothing_listens_without_configured_domains() -> None:
    d = Daemon()
    port = with_components(d, hosts="")
    d.start()
    try:
        import socket
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        d.finish()


def test_check_config_names_the_component_listener(daemon: Daemon) -> None:
    out = daemon.cli("check-config").stdout
    port = daemon.component_port  # type: ignore[attr-defined]
    assert f"external components: {BRIDGE}, {OTHER} on 127.0.0.1:{port}\n" in out


def test_a_component_domain_cannot_be_added_as_a_virtual_host(daemon: Daemon) -> None:
    r = daemon.cli("domains", "add", BRIDGE, check=False)
    assert r.returncode == 1 and f"{BRIDGE} is already served by an external component" in r.stderr, r
    assert BRIDGE not in daemon.cli("domains", "list").stdout


def test_xeps_lists_the_component_protocol(daemon: Daemon) -> None:
    assert "0114" in daemon.cli("xeps").stdout


async def test_component_domain_gets_its_certificate_from_certificates_dir(tmp_path) -> None:
    """[tls] certificates_dir: the component's own folder, as for a served host (it federates
    under its own name)."""
    import os
    import shutil
    import ssl

    from cryptography import x509

    from tests.interop.netlab import CA
    ca = CA(str(tmp_path / "ca"))
    live = tmp_path / "live"
    serials = {}
    for domain in ("localhost", BRIDGE):
        cert, key = ca.issue(domain, [domain])
        os.makedirs(live / domain)
        shutil.copy(cert, live / domain / "fullchain.pem")
        shutil.copy(key, live / domain / "privkey.pem")
        with open(cert, "rb") as f:
            serials[domain] = x509.load_pem_x509_certificate(f.read()).serial_number
    d = Daemon(extra=f'[tls]\ncertificates_dir = "{live}"\n')
    with_components(d)
    d.start()
    try:
        ctx = ssl.create_default_context(cafile=ca.path)
        for name in ("localhost", BRIDGE):
            r, w = await asyncio.open_connection("127.0.0.1", d.tls, ssl=ctx, server_hostname=name)
            der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
            assert x509.load_der_x509_certificate(der).serial_number == serials[name]
            w.close()
    finally:
        d.finish()


async def test_a_domain_added_as_a_host_before_wins_over_the_component() -> None:
    """`domains add` (kept in data_dir) made BRIDGE a virtual host before [components] named
    it: the server starts, serves the host, and refuses the component with host-unknown."""
    d = Daemon()
    d.cli("domains", "add", BRIDGE)
    d.component_port = with_components(d)  # type: ignore[attr-defined]
    d.start()
    try:
        c, _ = await open_component(d)
        assert await c.stream_error() == "host-unknown"
        assert f"components.hosts: {BRIDGE} is already served here; no component for it" in d.log()
    finally:
        d.finish()


async def test_metrics_count_component_connections(daemon: Daemon) -> None:
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    from tests.rawclient import client_ssl

    async def connections() -> float:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"https://127.0.0.1:{daemon.http}/metrics", ssl=client_ssl()) as r:
                text = await r.text()
        return next((s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                     if s.name == "mbxmpp_connections" and s.labels == {"transport": "component"}), 0.0)

    comp = await component(daemon)
    assert await connections() == 1
    await comp.send("</stream:stream>")
    await comp.expect_closed()
    await asyncio.sleep(0.2)
    assert await connections() == 0


async def test_server_stop_ends_the_component_with_system_shutdown() -> None:
    d = Daemon()
    d.component_port = with_components(d)  # type: ignore[attr-defined]
    d.start()
    try:
        comp = await component(d)
        stopped = asyncio.ensure_future(asyncio.to_thread(d.stop))
        assert await comp.stream_error() == "system-shutdown"
        await comp.expect_closed()
        assert await stopped == 0
        assert "Traceback" not in d.log()
    finally:
        d.cleanup()
