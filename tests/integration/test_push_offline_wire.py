"""Push Notifications (XEP-0357) for a user with no session at all, over real sockets with the
spawned daemon: the user enables push and logs out cleanly; a message for them goes to offline
storage and to the app server (a raw client with a full JID answering the publish IQs) as a
summary without the body; the user logs in again and gets the message from offline storage; the
count starts again from zero after that login."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest

from mbxmpp.xml.element import Element
from tests.daemon import Daemon
from tests.integration.pushapp import AppServer
from tests.rawclient import RawClient

PW = "push-offline-pass"
NS_PUSH = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DATA = "jabber:x:data"
NS_DELAY = "urn:xmpp:delay"
APPF = "appserver@localhost/srv"
NODE = "node-offline-alice"


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon()  # push and offline are default modules; default [push] settings (no bodies)
    for u in ("alice", "bob", "carol", "appserver"):
        d.add_user(f"{u}@localhost", PW)
    d.start()
    yield d
    d.finish()


def summary(iq: Any) -> dict[str, Any]:
    n = iq.find("pubsub", NS_PUBSUB).find("publish").find("item").find("notification", NS_PUSH)
    x = n.find("x", NS_DATA)
    return {f.get("var"): f.findtext("value", NS_DATA) for f in x.findall("field", NS_DATA)}


async def login(daemon: Daemon, user: str, resource: str) -> tuple[RawClient, str]:
    c = await RawClient.connect(daemon.c2s)
    jid = await c.login(user, PW, resource=resource)
    return c, jid


async def until(c: RawClient, pred, what: str) -> Element:  # type: ignore[no-untyped-def]
    while True:
        el = await c.element()
        if pred(el):
            return el
        assert not (el.tag == "iq" and el.get("type") == "error"), f"{what}: {el}"


async def logout(c: RawClient) -> None:
    """A clean logout: the closing tag, then the server closes its stream too."""
    await c.send("</stream:stream>")
    await c.expect_closed()
    await c.close()


async def test_offline_user_gets_push_then_offline_message(daemon):
    app = await AppServer.start(daemon, PW)
    a, a_jid = await login(daemon, "alice", "phone")
    assert a_jid == "alice@localhost/phone"
    await a.send("<presence/>")
    await a.send(f"<iq type='set' id='push1'><enable xmlns='{NS_PUSH}' jid='{APPF}' node='{NODE}'>"
                 f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE'>"
                 "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
                 "<field var='secret'><value>t0ps3cret</value></field></x></enable></iq>")
    res = await until(a, lambda el: el.tag == "iq" and el.get("id") == "push1", "enable")
    assert res.get("type") == "result", res
    await logout(a)  # no Stream Management: the session is gone, not hibernated

    b, b_jid = await login(daemon, "bob", "desk")
    await b.send("<presence/>")
    await b.send("<message to='alice@localhost' type='chat' id='off1'>"
                 "<body>secret plans for tonight</body></message>")
    iq = await asyncio.wait_for(app.pushes.get(), 5)
    assert iq.get("from") == "alice@localhost" and iq.get("to") == APPF
    ps: Any = iq.find("pubsub", NS_PUBSUB)
    assert ps.find("publish").get("node") == NODE
    s = summary(iq)
    assert s["FORM_TYPE"] == "urn:xmpp:push:summary"
    assert s["message-count"] == "1"
    assert s["last-message-sender"] == b_jid == "bob@localhost/desk"
    # XEP-0357 §9: the body does not go to the (third-party) app server by default.
    assert "last-message-body" not in s
    assert b"secret plans" not in iq.to_bytes()
    opts: Any = ps.find("publish-options").find("x", NS_DATA)
    assert {f.get("var"): f.findtext("value", NS_DATA) for f in opts.findall("field", NS_DATA)} \
        == {"FORM_TYPE": "http://jabber.org/protocol/pubsub#publish-options", "secret": "t0ps3cret"}

    # Alice comes back: the message waits in offline storage, with its delay stamp.
    a, _ = await login(daemon, "alice", "phone")
    await a.send("<presence/>")
    m = await until(a, lambda el: el.tag == "message", "offline delivery")
    assert m.get("id") == "off1" and m.get("from") == b_jid
    assert m.findtext("body") == "secret plans for tonight"
    assert m.find("delay", NS_DELAY) is not None

    # While she is online, messages are not pushed ...
    await b.send("<message to='alice@localhost' type='chat' id='live1'><body>hi</body></message>")
    m = await until(a, lambda el: el.tag == "message", "live delivery")
    assert m.get("id") == "live1"
    await app.ping("barrier1")  # a push would have been sent before this round trip ended
    assert app.pushes.empty(), app.pushes.get_nowait()

    # ... and after the next clean logout the count starts again from 1 (the summary was reset
    # when she came online), with the latest sender; the registration survived (the app server
    # answered with a result).
    await logout(a)
    c, c_jid = await login(daemon, "carol", "laptop")
    await c.send("<message to='alice@localhost' type='chat' id='off2'><body>call me</body></message>")
    iq = await asyncio.wait_for(app.pushes.get(), 5)  # min_interval (2 s) may delay it
    s = summary(iq)
    assert s["message-count"] == "1" and s["last-message-sender"] == c_jid
    assert "last-message-body" not in s and b"call me" not in iq.to_bytes()

    a, _ = await login(daemon, "alice", "phone")
    await a.send("<presence/>")
    m = await until(a, lambda el: el.tag == "message", "offline delivery")
    assert m.get("id") == "off2" and m.findtext("body") == "call me"
    await logout(a)
    await b.close()
    await c.close()
    await app.close()
