"""Carbons, CSI and MAM over real sockets, on each client transport (TCP and RFC 7395
WebSocket): the features work the same whatever carries the stream."""

from __future__ import annotations

import pytest

from tests.daemon import Daemon
from tests.rawclient import connect_client

PW = "features-pw"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_MAM = "urn:xmpp:mam:2"
NS_CSI = "urn:xmpp:csi:0"
NS_PING = "urn:xmpp:ping"


@pytest.fixture(scope="module")
def daemon():
    d = Daemon()
    for u in ("alice", "bob", "carol", "dave"):
        d.add_user(f"{u}@localhost", PW)
    d.start()
    yield d
    d.finish()


async def client(daemon, transport, user, resource):
    c = await connect_client(daemon, transport)
    jid = await c.login(user, PW, resource=resource)
    return c, jid


async def until(c, pred):
    while True:
        el = await c.element()
        if pred(el):
            return el


def is_message(el):
    return el.tag == "message"


async def test_carbons_copy_sent_and_received(daemon, transport):
    a1, _ = await client(daemon, transport, "alice", "one")
    a2, a2_jid = await client(daemon, transport, "alice", "two")
    b, b_jid = await client(daemon, "tcp", "bob", "b")
    await a1.send(f"<iq xmlns='jabber:client' type='set' id='c1'><enable xmlns='{NS_CARBONS}'/></iq>")
    assert (await until(a1, lambda e: e.get("id") == "c1")).get("type") == "result"
    await b.send(f"<message to='{a2_jid}' type='chat' id='in'><body>to two</body></message>")
    got = await until(a1, is_message)
    fwd = got.find("received", NS_CARBONS).find("forwarded", NS_FORWARD)
    assert fwd.find("message", "jabber:client").findtext("body") == "to two"
    assert (await until(a2, is_message)).findtext("body") == "to two"
    await a2.send(f"<message xmlns='jabber:client' to='{b_jid}' type='chat' id='out'><body>from two</body></message>")
    got = await until(a1, is_message)
    fwd = got.find("sent", NS_CARBONS).find("forwarded", NS_FORWARD)
    assert fwd.find("message", "jabber:client").findtext("body") == "from two"
    for c in (a1, a2, b):
        await c.close()


async def test_csi_holds_and_collapses_until_active(daemon, transport):
    """Two chat states for an inactive client: held, the newer replacing the older, both
    released by <active/> (were they delivered at once, both would arrive)."""
    c, c_jid = await client(daemon, transport, "carol", "phone")
    d, _ = await client(daemon, "tcp", "dave", "desk")
    await c.send(f"<inactive xmlns='{NS_CSI}'/>")
    await c.send(f"<iq xmlns='jabber:client' type='get' id='p0' to='localhost'><ping xmlns='{NS_PING}'/></iq>")
    await until(c, lambda e: e.get("id") == "p0")  # <inactive/> is in effect
    for state in ("composing", "paused"):
        await d.send(f"<message to='{c_jid}' type='chat' id='{state}'>"
                     f"<{state} xmlns='http://jabber.org/protocol/chatstates'/></message>")
    await d.send(f"<iq type='get' id='d1' to='localhost'><ping xmlns='{NS_PING}'/></iq>")
    await until(d, lambda e: e.get("id") == "d1")  # dave's messages went through the router
    await c.send(f"<active xmlns='{NS_CSI}'/>")
    await c.send(f"<iq xmlns='jabber:client' type='get' id='p1' to='localhost'><ping xmlns='{NS_PING}'/></iq>")
    seen = []
    while not seen or seen[-1] != "p1":
        seen.append((await c.element()).get("id"))
    assert seen == ["paused", "p1"]
    await c.close()
    await d.close()


async def test_mam_archives_and_answers_a_query(daemon, transport):
    b, b_jid = await client(daemon, "tcp", "bob", "mamsender")
    a, a_jid = await client(daemon, transport, "alice", "mam")
    await b.send(f"<message to='{a_jid}' type='chat' id='arch1'><body>keep me</body></message>")
    await until(a, is_message)
    await a.send(f"<iq xmlns='jabber:client' type='set' id='q1'><query xmlns='{NS_MAM}' queryid='x'/></iq>")
    bodies = []
    while True:
        el = await a.element()
        if el.tag == "message":
            res = el.find("result", NS_MAM)
            assert res is not None and res.get("queryid") == "x"
            bodies.append(res.find("forwarded", NS_FORWARD).find("message", "jabber:client").findtext("body"))
        elif el.tag == "iq" and el.get("id") == "q1":
            assert el.get("type") == "result" and el.find("fin", NS_MAM) is not None
            break
    assert "keep me" in bodies
    await a.close()
    await b.close()
