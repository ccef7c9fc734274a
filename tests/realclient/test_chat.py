"""Two users chat with slixmpp over the wire: roster, subscriptions, messages, offline delivery."""

from __future__ import annotations

import asyncio

import pytest

from tests.realclient.conftest import connect, disconnect

pytestmark = pytest.mark.realclient


async def _message(c, pred=lambda m: True, timeout=5.0):
    while True:
        m = await asyncio.wait_for(c.messages.get(), timeout)
        if pred(m):
            return m


async def test_message_between_users_and_resources(daemon):
    a = await connect(daemon, "alice@localhost/one")
    a2 = await connect(daemon, "alice@localhost/two")
    b = await connect(daemon, "bob@localhost/desk")
    b.send_message(mto="alice@localhost/two", mbody="hello two", mtype="chat")
    m = await _message(a2, lambda m: m["body"] == "hello two")
    assert m["from"] == b.boundjid
    a.send_message(mto="bob@localhost", mbody="hi bob", mtype="chat")
    m = await _message(b, lambda m: m["body"] == "hi bob")
    assert m["from"].full == a.boundjid.full
    await disconnect(a, a2, b)


async def test_subscription_handshake_and_presence(daemon):
    a = await connect(daemon, "alice@localhost/sub")
    c = await connect(daemon, "carol@localhost/sub")
    c.auto_authorize = True
    c.auto_subscribe = True
    a.send_presence(pto="carol@localhost", ptype="subscribe")
    # Carol auto-approves and subscribes back; Alice auto-approves too.
    a.auto_authorize = True
    # Roster pushes keep slixmpp's client_roster current (a versioned get would rightly be empty).
    for _ in range(100):
        await asyncio.sleep(0.05)
        if a.client_roster[c.boundjid.bare]["subscription"] == "both" and \
                c.client_roster[a.boundjid.bare]["subscription"] == "both":
            break
    assert a.client_roster[c.boundjid.bare]["subscription"] == "both"
    assert c.client_roster[a.boundjid.bare]["subscription"] == "both"
    await disconnect(a, c)


async def test_offline_message_delivered_at_login(daemon):
    b = await connect(daemon, "bob@localhost/off")
    b.send_message(mto="carol@localhost", mbody="while you were out", mtype="chat")
    await asyncio.sleep(0.3)
    await disconnect(b)
    await asyncio.sleep(0.2)
    c = await connect(daemon, "carol@localhost/back", plugins=("xep_0203",))
    m = await _message(c, lambda m: m["body"] == "while you were out", timeout=10)
    assert m["delay"]["stamp"] is not None
    await disconnect(c)
