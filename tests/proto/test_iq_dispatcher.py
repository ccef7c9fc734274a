"""The IQ dispatcher: the server's own requests and who may answer them."""

from __future__ import annotations

import asyncio

from mbxmpp.core.iq import IQContext, IQDispatcher
from mbxmpp.core.modules import HOST
from mbxmpp.jid import JID
from mbxmpp.xml import Element


async def test_server_request_answered_only_by_its_addressee():
    sent: list[Element] = []
    d = IQDispatcher(sent.append)
    req = Element("iq", attrs={"type": "get", "id": "q1", "from": "localhost", "to": "bob@localhost/phone"})
    req.add("ping", "urn:xmpp:ping")
    task = asyncio.ensure_future(d.request(req, timeout=2))
    await asyncio.sleep(0)
    ctx = IQContext(JID.parse("mallory@localhost/x"), JID.parse("localhost"), None, HOST)
    forged = Element("iq", attrs={"type": "result", "id": "q1", "from": "mallory@localhost/x", "to": "localhost"})
    d.dispatch(forged, ctx)
    await asyncio.sleep(0)
    assert not task.done()
    real = Element("iq", attrs={"type": "result", "id": "q1", "from": "bob@localhost/phone", "to": "localhost"})
    d.dispatch(real, ctx)
    assert (await task) is real


async def test_server_request_to_bare_jid_answered_by_it_or_a_resource():
    d = IQDispatcher(lambda st: None)
    req = Element("iq", attrs={"type": "set", "id": "p1", "from": "alice@localhost", "to": "push.example"})
    task = asyncio.ensure_future(d.request(req, timeout=2))
    await asyncio.sleep(0)
    ctx = IQContext(JID.parse("push.example"), JID.parse("alice@localhost"), None, HOST)
    d.dispatch(Element("iq", attrs={"type": "error", "id": "p1", "from": "push.example"}), ctx)
    assert (await task).get("type") == "error"
