"""Push Notifications (XEP-0357) over real sockets with the spawned daemon: a client enables
Stream Management and push, loses its TCP connection, gets a notification through the app server
(a raw client with a full JID answering the publish IQs), then resumes and gets the message; and
a session nobody resumes gets a wake-up push before its hibernation expires."""

from __future__ import annotations

import asyncio
from typing import Iterator

import pytest

from mbxmpp.xml.element import Element
from tests.daemon import Daemon
from tests.integration.pushapp import AppServer
from tests.rawclient import RawClient, connect_client

PW = "push-pass"
NS_SM = "urn:xmpp:sm:3"
NS_PUSH = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DATA = "jabber:x:data"
APPF = "appserver@localhost/srv"
@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    # (BOSH: a client that vanished is lost after 1 s without a request; RawClient.loss_delay)
    d = Daemon(extra='[sm]\nresume_timeout = "2s"\npush_resume_timeout = "6s"\n',
               http_extra='bosh_inactivity = "1s"')
    for u in ("alice", "bob", "carol", "appserver"):
        d.add_user(f"{u}@localhost", PW)
    d.start()
    yield d
    d.finish()


def summary(iq: Element) -> dict[str, str]:
    n = iq.find("pubsub", NS_PUBSUB).find("publish").find("item").find("notification", NS_PUSH)
    x = n.find("x", NS_DATA)
    return {f.get("var"): f.findtext("value", NS_DATA) for f in x.findall("field", NS_DATA)}


async def push_client(daemon: Daemon, user: str, resource: str, node: str,
                      transport: str = "tcp") -> tuple[RawClient, str, str]:
    """Log in, enable SM (resumable) then push; every stanza read is counted in ``c.handled``."""
    c = await connect_client(daemon, transport)
    await c.auth(user, PW)
    jid = await c.bind(resource)
    await c.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    en = await c.element()
    assert en.tag == "enabled" and en.get("resume") == "true"
    c.handled = 0  # type: ignore[attr-defined]
    await c.send("<presence/>")
    await c.send(f"<iq type='set' id='push1'><enable xmlns='{NS_PUSH}' jid='{APPF}' node='{node}'>"
                 f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE'>"
                 "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
                 "<field var='secret'><value>s3cret</value></field></x></enable></iq>")
    while True:
        el = await c.element()
        if el.tag in ("message", "presence", "iq"):
            c.handled += 1  # type: ignore[attr-defined]
        if el.tag == "iq" and el.get("id") == "push1":
            assert el.get("type") == "result", el
            break
    return c, jid, en.get("id")  # type: ignore[return-value]


async def test_hibernated_client_notified_then_resumes(daemon, transport):
    app = await AppServer.start(daemon, PW)
    a, a_jid, sm_id = await push_client(daemon, "alice", "phone", "node-a", transport)
    a.abort()  # the phone loses its network
    # Longer than resume_timeout (2 s): a push-registered session hibernates for 6 s.
    await asyncio.sleep(2.5 + a.loss_delay)
    b = await RawClient.connect(daemon.c2s)
    await b.login("bob", PW, resource="desk")
    await b.send(f"<message to='{a_jid}' type='chat' id='w1'><body>wake up</body></message>")
    iq = await asyncio.wait_for(app.pushes.get(), 5)
    assert iq.get("from") == "alice@localhost" and iq.get("to") == APPF
    ps = iq.find("pubsub", NS_PUBSUB)
    assert ps.find("publish").get("node") == "node-a"
    s = summary(iq)
    assert s["FORM_TYPE"] == "urn:xmpp:push:summary"
    assert s["message-count"] == "1" and s["last-message-sender"] == "bob@localhost/desk"
    assert "last-message-body" not in s and b"wake up" not in iq.to_bytes()
    opts = ps.find("publish-options").find("x", NS_DATA)
    assert any(f.get("var") == "secret" and f.findtext("value", NS_DATA) == "s3cret"
               for f in opts.findall("field", NS_DATA))
    # The phone wakes up and resumes: the message was kept for it.
    a2 = await connect_client(daemon, transport)
    await a2.auth("alice", PW)
    await a2.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='{a.handled}'/>")
    res = await a2.element()
    assert res.tag == "resumed" and res.get("previd") == sm_id, res
    handled = a.handled
    while True:
        el = await a2.element()
        if el.tag in ("message", "presence", "iq"):
            handled += 1
        if el.tag == "message":
            break
    assert el.findtext("body") == "wake up" and el.get("id") == "w1"
    await a2.send(f"<a xmlns='{NS_SM}' h='{handled}'/>")
    await a2.send("</stream:stream>")
    await b.close()
    await a.close()
    await a2.close()
    await app.close()


async def test_wake_up_push_before_hibernation_expires(daemon):
    app = await AppServer.start(daemon, PW)
    c, _, _ = await push_client(daemon, "carol", "tablet", "node-c")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    c.writer.transport.abort()
    iq = await asyncio.wait_for(app.pushes.get(), 8)
    waited = loop.time() - t0
    # 6 s hibernation, wake-up 10% (0.6 s) before it ends.
    assert 4.5 < waited < 6.0, waited
    assert iq.find("pubsub", NS_PUBSUB).find("publish").get("node") == "node-c"
    assert summary(iq)["message-count"] == "0"
    await app.close()
