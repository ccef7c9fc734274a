"""Mobile-session features with slixmpp's own plugins over the wire: carbons, blocking, CSI."""

from __future__ import annotations

import asyncio

import pytest

from tests.realclient.conftest import connect, disconnect
from tests.realclient.conftest import next_match as _next

pytestmark = pytest.mark.realclient


async def test_carbons_between_two_resources(daemon):
    a1 = await connect(daemon, "alice@localhost/c1", plugins=("xep_0280",))
    a2 = await connect(daemon, "alice@localhost/c2", plugins=("xep_0280",))
    b = await connect(daemon, "bob@localhost/cb")
    sent, received = asyncio.Queue(), asyncio.Queue()
    a2.add_event_handler("carbon_sent", sent.put_nowait)
    a2.add_event_handler("carbon_received", received.put_nowait)
    await a1.plugin["xep_0280"].enable()
    await a2.plugin["xep_0280"].enable()
    a1.send_message(mto="bob@localhost", mbody="from c1", mtype="chat")
    m = await _next(sent, lambda m: m["carbon_sent"]["body"] == "from c1")
    assert m["from"].full == "alice@localhost"
    b.send_message(mto="alice@localhost/c1", mbody="to c1", mtype="chat")
    m = await _next(received, lambda m: m["carbon_received"]["body"] == "to c1")
    assert m["carbon_received"]["from"].bare == "bob@localhost"
    await disconnect(a1, a2, b)


async def test_blocking_both_ways(daemon):
    a = await connect(daemon, "alice@localhost/blk", plugins=("xep_0191",))
    c = await connect(daemon, "carol@localhost/blk")
    await a.plugin["xep_0191"].block("carol@localhost")
    blocked = await a.plugin["xep_0191"].get_blocked_jids()
    assert "carol@localhost" in {j.bare for j in blocked}
    errors = asyncio.Queue()
    c.add_event_handler("message_error", errors.put_nowait)
    c.send_message(mto="alice@localhost", mbody="let me in", mtype="chat")
    err = await _next(errors, lambda m: True)
    assert err["error"]["condition"] == "service-unavailable"
    a_errors = asyncio.Queue()
    a.add_event_handler("message_error", a_errors.put_nowait)
    a.send_message(mto="carol@localhost", mbody="you are blocked", mtype="chat")
    err = await _next(a_errors, lambda m: True)
    assert err["error"]["condition"] == "not-acceptable"
    await a.plugin["xep_0191"].unblock("carol@localhost")
    c.send_message(mto="alice@localhost/blk", mbody="hello again", mtype="chat")
    m = await _next(a.messages, lambda m: m["body"] == "hello again")
    assert m["from"].bare == "carol@localhost"
    await disconnect(a, c)


async def test_csi_holds_presence_and_flushes(daemon):
    a = await connect(daemon, "alice@localhost/csi", plugins=("xep_0352",))
    b = await connect(daemon, "bob@localhost/csi")
    # Presence updates are only broadcast to subscribed contacts; use directed presence.
    await asyncio.sleep(0.2)
    while not a.presences.empty():
        a.presences.get_nowait()
    a.plugin["xep_0352"].send_inactive()
    await asyncio.sleep(0.2)
    b.send_presence(pto=a.boundjid.full, pstatus="away for lunch", pshow="away")
    await asyncio.sleep(0.5)
    held = [p for p in list(a.presences._queue) if p["from"] == b.boundjid]  # type: ignore[attr-defined]
    assert held == [], "presence must be held while inactive"
    a.plugin["xep_0352"].send_active()
    p = await _next(a.presences, lambda p: p["from"] == b.boundjid)
    assert p["status"] == "away for lunch"
    # A message with a body is urgent: delivered at once even while inactive.
    a.plugin["xep_0352"].send_inactive()
    await asyncio.sleep(0.2)
    b.send_message(mto=a.boundjid.full, mbody="urgent", mtype="chat")
    m = await _next(a.messages, lambda m: m["body"] == "urgent", timeout=2)
    assert m["body"] == "urgent"
    await disconnect(a, b)
