"""BOSH (XEP-0124/0206) at /http-bind over real HTTPS: session creation, SCRAM, restart, the
request window and its rules (repeats, far-out rids, too many requests, pause, inactivity),
terminate, stream errors inside a terminate body, CORS, and every bad input with its exact
binding condition. The common wire suites (test_sm.py, test_features_wire.py) run over BOSH
too, through the ``transport`` fixture."""

from __future__ import annotations

import asyncio
import base64
import xml.etree.ElementTree as ET

import aiohttp
import pytest

from tests.daemon import Daemon
from tests.rawclient import NS_HTTPBIND, NS_XBOSH, BoshRawClient, RawClient, client_ssl
from tests.unit.test_sasl import ScramClient

PW = "bosh-pw"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_STREAMS = "http://etherx.jabber.org/streams"
FOREIGN = "https://evil.example.com"


@pytest.fixture(scope="module")
def daemon():
    d = Daemon(domains=("localhost", "example.test"),
               http_extra='bosh_inactivity = "1s"\nbosh_max_pause = "5s"\n'
                          'websocket_origins = ["https://chat.example.net"]')
    for u in ("alice", "bob", "eve"):
        d.add_user(f"{u}@localhost", PW)
    d.start()
    yield d
    d.finish()


class Manual:
    """A BOSH session driven request by request: exactly the rids and bodies a test says."""

    def __init__(self, client: BoshRawClient) -> None:
        self.c = client
        self.rid = client.rid
        self.sid: str | None = None

    @classmethod
    async def connect(cls, daemon, **kw) -> Manual:
        return cls(await BoshRawClient.connect(daemon.http, **kw))

    async def create(self, to="localhost", extra="ver='1.11' wait='60' hold='1' xmpp:version='1.0'"):
        status, text, root = await self.post(f"to='{to}' xml:lang='en' {extra}", sid=False)
        if root.get("sid"):
            self.sid = root.get("sid")
        return status, text, root

    def body(self, attrs="", payload="", rid=None, sid=True) -> str:
        if rid is None:
            rid, self.rid = self.rid, self.rid + 1
        s = f" sid='{self.sid}'" if sid and self.sid else ""
        a = f" {attrs}" if attrs else ""
        end = f">{payload}</body>" if payload else "/>"
        return f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' rid='{rid}'{s}{a}{end}"

    async def post(self, attrs="", payload="", rid=None, sid=True, raw=None):
        data = raw if raw is not None else self.body(attrs, payload, rid, sid)
        status, text = await self.c.post_raw(data)
        return status, text, ET.fromstring(text)

    async def login(self, user="alice", resource="m") -> str:
        await self.create()
        token = base64.b64encode(f"\0{user}\0{PW}".encode()).decode()
        _, _, r = await self.post(payload=f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        assert r.find(f"{{{NS_SASL}}}success") is not None
        _, _, r = await self.post("xmpp:restart='true'")
        assert r.find(f"{{{NS_STREAMS}}}features") is not None
        _, _, r = await self.post(payload="<iq xmlns='jabber:client' type='set' id='b'><bind "
                                          f"xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}"
                                          "</resource></bind></iq>")
        return r.find("{jabber:client}iq").find("{urn:ietf:params:xml:ns:xmpp-bind}bind")[0].text

    async def close(self):
        await self.c.session.close()


def terminated(root, condition=None) -> bool:
    return root.get("type") == "terminate" and root.get("condition") == condition


# -- session creation -------------------------------------------------------------------------
async def test_session_creation_answers_every_attribute_and_the_features(daemon):
    m = await Manual.connect(daemon)
    async with m.c.session.post(m.c.url, data=m.body(
            "to='localhost' xml:lang='en' ver='1.6' wait='45' hold='3' ack='1' xmpp:version='1.0'",
            sid=False)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"
        assert "Set-Cookie" not in resp.headers
        text = await resp.text()
    root = ET.fromstring(text)
    a = root.attrib
    assert len(a["sid"]) >= 32
    assert (a["wait"], a["hold"], a["requests"], a["ver"]) == ("45", "1", "2", "1.6")
    assert a["inactivity"] == "1" and a["polling"] == "2" and a["maxpause"] == "5"
    assert a["from"] == "localhost" and a["secure"] == "true" and a["authid"]
    assert a[f"{{{NS_XBOSH}}}version"] == "1.0" and a[f"{{{NS_XBOSH}}}restartlogic"] == "true"
    assert a["ack"] == str(m.rid - 1)  # the creation request's rid
    feats = root.find(f"{{{NS_STREAMS}}}features")
    mechs = [x.text for x in feats.find(f"{{{NS_SASL}}}mechanisms")]
    assert "PLAIN" in mechs and "SCRAM-SHA-256" in mechs
    assert not any(x.endswith("-PLUS") for x in mechs)  # no one TLS channel to bind to
    await m.close()


async def test_scram_login_restart_bind_and_chat_with_a_tcp_user(daemon):
    c = await BoshRawClient.connect(daemon.http)
    await c.open()
    scram = ScramClient("SCRAM-SHA-256", username="alice", password=PW, cb_data=b"")
    await c.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>"
                 + base64.b64encode(scram.first()).decode() + "</auth>")
    ch = await c.element()
    assert ch.tag == "challenge", ch
    await c.send(f"<response xmlns='{NS_SASL}'>"
                 + base64.b64encode(scram.final(base64.b64decode(ch.text))).decode() + "</response>")
    assert (await c.element()).tag == "success"
    feats = await c.open()  # xmpp:restart='true'
    assert feats.find("bind", "urn:ietf:params:xml:ns:xmpp-bind") is not None
    jid = await c.bind("web")
    b = await RawClient.connect(daemon.c2s)
    b_jid = await b.login("bob", PW, resource="tcp")
    await c.send(f"<message to='{b_jid}' type='chat'><body>over bosh</body></message>")  # no xmlns
    got = await b.element()
    assert got.findtext("body") == "over bosh" and got.get("from") == jid
    await b.send(f"<message to='{jid}' type='chat'><body>over tcp</body></message>")
    assert (await c.element()).findtext("body") == "over tcp"
    await c.close()
    await b.close()


async def test_unknown_host_and_missing_to(daemon):
    m = await Manual.connect(daemon)
    status, _, root = await m.create(to="nowhere.example")
    assert status == 200 and terminated(root, "host-unknown")
    status, _, root = await m.post("ver='1.11' wait='60' hold='1' xmpp:version='1.0'", sid=False)
    assert status == 200 and terminated(root, "improper-addressing")
    # a second host of this server is served
    status, _, root = await m.create(to="example.test")
    assert status == 200 and root.get("from") == "example.test"
    await m.close()


async def test_without_xmpp_version_the_stream_error_comes_in_the_terminate_body(daemon):
    m = await Manual.connect(daemon)
    _, _, root = await m.create(extra="ver='1.11' wait='60' hold='1'")
    assert terminated(root, "remote-stream-error")
    err = root.find(f"{{{NS_STREAMS}}}error")
    assert err.find("{urn:ietf:params:xml:ns:xmpp-streams}unsupported-version") is not None
    await m.close()


async def test_restart_before_authentication_is_bad_request(daemon):
    m = await Manual.connect(daemon)
    await m.create()
    _, _, root = await m.post("xmpp:restart='true'")
    assert terminated(root, "bad-request")
    status, _, root = await m.post()
    assert status == 404 and terminated(root, "item-not-found")
    await m.close()


# -- the request window -----------------------------------------------------------------------
async def test_repeated_rid_gets_the_same_response_and_a_far_rid_terminates(daemon):
    m = await Manual.connect(daemon)
    await m.login("alice", "replay")
    ping = "<iq xmlns='jabber:client' type='get' id='pp' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    rid = m.rid
    _, first, root = await m.post(payload=ping)
    assert root.find("{jabber:client}iq").get("id") == "pp"
    _, again, _ = await m.post(payload=ping, rid=rid)
    assert again == first  # the buffered copy, not a second ping
    status, _, root = await m.post(rid=m.rid + 5)  # beyond the window of 2
    assert status == 200 and terminated(root, "item-not-found")
    status, _, root = await m.post()
    assert status == 404 and terminated(root, "item-not-found")
    await m.close()


async def test_a_rid_too_old_to_repeat_is_item_not_found(daemon):
    m = await Manual.connect(daemon)
    await m.login("alice", "old")
    old = m.rid - 3  # three responses ago: only `requests` (2) are kept
    _, _, root = await m.post(rid=old)
    assert terminated(root, "item-not-found")
    await m.close()


async def test_another_users_sid_with_a_wrong_rid_gets_nothing_of_theirs(daemon):
    victim = await Manual.connect(daemon)
    await victim.login("bob", "victim")
    ping = ("<iq xmlns='jabber:client' type='get' id='secret words' to='localhost'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>")
    _, text, _ = await victim.post(payload=ping)  # its answer is buffered for a repeat
    assert "secret words" in text
    eve = await Manual.connect(daemon)
    eve.sid = victim.sid
    for rid in (1, victim.rid - 100, victim.rid + 50):
        _, text, root = await eve.post(rid=rid)
        assert "secret words" not in text
        assert terminated(root, "item-not-found")
    await victim.close()
    await eve.close()


async def test_too_many_requests_at_once_is_policy_violation(daemon):
    m = await Manual.connect(daemon)
    await m.login("alice", "greedy")
    base = m.rid
    held = asyncio.ensure_future(m.post(rid=base))      # held: nothing to say yet
    await asyncio.sleep(0.2)
    gap = asyncio.ensure_future(m.post(rid=base + 2))   # waits for base + 1
    await asyncio.sleep(0.2)
    _, _, root = await m.post(rid=base + 3)             # a third request open: requests is 2
    assert terminated(root, "policy-violation")
    results = [r for _, _, r in await asyncio.gather(held, gap)]
    assert all(r.get("type") == "terminate" or not list(r) for r in results)
    await m.close()


async def test_a_held_request_is_answered_after_wait(daemon):
    m = await Manual.connect(daemon)
    _, _, root = await m.create(extra="ver='1.11' wait='1' hold='1' xmpp:version='1.0'")
    assert root.get("wait") == "1"
    _, _, root = await asyncio.wait_for(m.post(), 5)  # empty: nothing to deliver
    assert root.get("type") is None and not list(root)
    await m.close()


async def test_a_repeat_of_an_open_request_takes_its_place(daemon):
    m = await Manual.connect(daemon)
    await m.login("alice", "repeat")
    rid = m.rid
    m.rid += 1
    first = asyncio.ensure_future(m.post(rid=rid))
    await asyncio.sleep(0.2)
    second = asyncio.ensure_future(m.post(rid=rid))
    _, _, r1 = await asyncio.wait_for(first, 5)
    assert r1.get("type") == "error"  # recoverable: the client resends
    third = asyncio.ensure_future(m.post(payload="<presence xmlns='jabber:client'/>"))
    _, _, r2 = await asyncio.wait_for(second, 5)  # answered once the next request is held
    assert r2.get("type") is None
    _, _, r = await m.post("type='terminate'")
    assert terminated(r) or terminated((await third)[2])
    await m.close()


async def test_ack_reports_the_highest_rid_received(daemon):
    m = await Manual.connect(daemon)
    await m.create(extra="ver='1.11' wait='60' hold='1' ack='1' xmpp:version='1.0'")
    held_rid = m.rid
    held = asyncio.ensure_future(m.post())
    await asyncio.sleep(0.2)
    newer = asyncio.ensure_future(m.post())  # the server answers the held one now
    _, _, r = await asyncio.wait_for(held, 5)
    assert r.get("ack") == str(held_rid + 1)
    await m.post("type='terminate'")
    await newer
    await m.close()


# -- pause, inactivity, terminate ---------------------------------------------------------------
async def test_inactivity_ends_the_session(daemon):
    m = await Manual.connect(daemon)
    await m.login("alice", "idle")
    await asyncio.sleep(3.0)  # inactivity is 1 s
    status, _, root = await m.post()
    assert status == 404 and terminated(root, "item-not-found")
    await m.close()


async def test_pause_answers_open_requests_and_keeps_the_session(daemon):
    m = await Manual.connect(daemon)
    await m.login("alice", "pause")
    held = asyncio.ensure_future(m.post())
    await asyncio.sleep(0.2)
    _, _, root = await m.post("pause='4'")
    assert root.get("type") is None and not list(root)  # no payloads in a pause response
    await asyncio.wait_for(held, 2)  # answered at once too
    await asyncio.sleep(2.0)  # longer than the inactivity period, within the pause
    status, _, root = await m.post("type='terminate'")
    assert status == 200 and terminated(root)
    _, _, root = await m.post("pause='60'", rid=m.rid)  # the session is gone now
    assert terminated(root, "item-not-found")
    await m.close()


async def test_pause_beyond_maxpause_is_policy_violation(daemon):
    m = await Manual.connect(daemon)
    await m.login("alice", "longpause")
    _, _, root = await m.post("pause='600'")
    assert terminated(root, "policy-violation")
    await m.close()


async def test_terminate_sends_its_payload_then_ends(daemon):
    b = await RawClient.connect(daemon.c2s)
    b_jid = await b.login("bob", PW, resource="watch")
    m = await Manual.connect(daemon)
    await m.login("alice", "bye")
    _, _, root = await m.post("type='terminate'", payload=f"<message xmlns='jabber:client' "
                                                          f"to='{b_jid}'><body>last words</body></message>")
    assert terminated(root)
    assert (await b.element()).findtext("body") == "last words"
    status, _, root = await m.post()
    assert status == 404
    await b.close()
    await m.close()


async def test_stream_error_comes_inside_a_terminate_body(daemon):
    m = await Manual.connect(daemon)
    await m.login("alice", "liar")
    _, _, root = await m.post(payload="<message xmlns='jabber:client' from='bob@localhost/x' "
                                      "to='alice@localhost'/>")
    assert terminated(root, "remote-stream-error")
    err = root.find(f"{{{NS_STREAMS}}}error")
    assert err.find("{urn:ietf:params:xml:ns:xmpp-streams}invalid-from") is not None
    await m.close()


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [b"not xml at all", b"<body xmlns='http://jabber.org/protocol/httpbind'",
                                  b"<html><body/></html>", b"<body rid='1'/>",
                                  b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'/><x/>"])
async def test_malformed_bodies_are_bad_request(daemon, data):
    m = await Manual.connect(daemon)
    status, _, root = await m.post(raw=data)
    assert status == 400 and terminated(root, "bad-request")
    await m.close()


@pytest.mark.parametrize("rid", [None, "abc", "-5", "0", "99999999999999999999", "１２"])
async def test_missing_or_non_numeric_rid_is_bad_request_and_ends_the_session(daemon, rid):
    m = await Manual.connect(daemon)
    await m.create()
    rid_attr = "" if rid is None else f" rid='{rid}'"
    _, _, root = await m.post(raw=f"<body xmlns='{NS_HTTPBIND}' sid='{m.sid}'{rid_attr}/>")
    assert terminated(root, "bad-request")
    status, _, _ = await m.post()
    assert status == 404
    await m.close()


async def test_unknown_sid_is_404_item_not_found(daemon):
    m = await Manual.connect(daemon)
    m.sid = "no-such-session"
    status, _, root = await m.post()
    assert status == 404 and terminated(root, "item-not-found")
    await m.close()


async def test_character_data_in_the_body_is_bad_request(daemon):
    m = await Manual.connect(daemon)
    await m.create()
    _, _, root = await m.post(raw=f"<body xmlns='{NS_HTTPBIND}' sid='{m.sid}' rid='{m.rid}'>hello</body>")
    assert terminated(root, "bad-request")
    await m.close()


async def test_oversized_body_is_policy_violation_and_ends_the_session(daemon):
    m = await Manual.connect(daemon)
    await m.login("alice", "big")
    held = asyncio.ensure_future(m.post())
    await asyncio.sleep(0.2)
    big = "<message xmlns='jabber:client' to='bob@localhost'><body>" + "x" * 300_000 + "</body></message>"
    status, _, root = await m.post(payload=big)
    assert status == 413 and terminated(root, "policy-violation")
    _, _, r = await asyncio.wait_for(held, 5)  # the session's open request: the stream error
    assert terminated(r, "remote-stream-error")
    assert r.find(f"{{{NS_STREAMS}}}error").find(
        "{urn:ietf:params:xml:ns:xmpp-streams}policy-violation") is not None
    await m.close()


async def test_legacy_clients_get_http_error_codes(daemon):
    m = await Manual.connect(daemon)
    await m.create(extra="wait='60' hold='1' xmpp:version='1.0'")  # no 'ver': a legacy client
    status, _, _ = await m.post(rid=m.rid + 10)
    assert status == 404
    await m.close()


# -- HTTP: methods, CORS ------------------------------------------------------------------------
async def test_cors_for_our_origins_only(daemon):
    url = f"https://127.0.0.1:{daemon.http}/http-bind"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl())) as s:
        hdrs = {"Origin": "https://chat.example.net", "Access-Control-Request-Method": "POST"}
        async with s.options(url, headers=hdrs) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "https://chat.example.net"
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert "Access-Control-Allow-Credentials" not in r.headers
        async with s.options(url, headers={**hdrs, "Origin": FOREIGN}) as r:
            assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
        async with s.get(url) as r:
            assert r.status == 405
    m = await Manual.connect(daemon, origin=FOREIGN)
    status, _ = await m.c.post_raw(m.body("to='localhost' ver='1.11' xmpp:version='1.0'", sid=False))
    assert status == 403  # a page elsewhere does not ride on the user's network position
    await m.close()
    m = await Manual.connect(daemon, origin="https://chat.example.net")
    async with m.c.session.post(m.c.url, headers={"Origin": "https://chat.example.net"}, data=m.body(
            "to='localhost' ver='1.11' wait='60' hold='1' xmpp:version='1.0'", sid=False)) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "https://chat.example.net"
    await m.close()


async def test_sessions_per_address_are_limited():
    d = Daemon(extra='[limits]\nbosh_sessions_per_address = "1/h"\nbosh_sessions_per_address_burst = 2\n')
    d.start()
    try:
        m = await Manual.connect(d)
        for _ in range(2):
            _, _, root = await m.create()
            assert root.get("sid")
        _, _, root = await m.create()
        assert terminated(root, "policy-violation")
        await m.close()
    finally:
        d.finish()


async def test_metrics_count_bosh_sessions(daemon):
    c = await BoshRawClient.connect(daemon.http)
    await c.login("eve", PW, resource="metrics")
    async with aiohttp.ClientSession() as s, s.get(f"https://127.0.0.1:{daemon.http}/metrics",
                                                   ssl=client_ssl()) as r:
        text = await r.text()
    assert r.status == 200
    line = next(x for x in text.splitlines() if x.startswith('mbxmpp_connections{transport="bosh"}'))
    assert float(line.split()[-1]) >= 1
    await c.close()


async def test_control_lists_and_ends_bosh_sessions(daemon):
    """The operator's view and reach are the same whatever the transport."""
    await asyncio.to_thread(daemon.cli, "user", "add", "boshdel@localhost", "--password", PW)
    c = await BoshRawClient.connect(daemon.http)
    await c.login("boshdel", PW, resource="web")
    listed = (await asyncio.to_thread(daemon.cli, "sessions", "list")).stdout.splitlines()
    row = next(line.split() for line in listed if line.startswith("boshdel@localhost/web"))
    assert row[1] == "bosh"
    await asyncio.to_thread(daemon.cli, "user", "del", "boshdel@localhost")
    assert await c.stream_error() == "not-authorized"
    assert c.terminate_condition == "remote-stream-error"
    await c.close()
