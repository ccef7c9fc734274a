"""slixmpp's own XEP-0198 plugin resumes its session across a graceful restart of the daemon
(SIGTERM, <system-shutdown/>, start on the same data): no new session, same bound resource,
what was sent to it meanwhile arrives, PEP events included (its caps' +notify interest was
kept)."""

from __future__ import annotations

import asyncio

import pytest

from tests.daemon import Daemon
from tests.realclient.conftest import PASSWORD, connect, disconnect
from tests.realclient.test_pep import DEVICELIST, PLUGINS, devicelist, event_items, watch_events

pytestmark = pytest.mark.realclient


async def _body(q: asyncio.Queue, timeout: float = 10.0) -> str:
    while True:
        m = await asyncio.wait_for(q.get(), timeout)
        if m["body"]:
            return str(m["body"])


async def test_slixmpp_resumes_across_a_restart():
    d = Daemon()
    try:
        for u in ("alice", "bob"):
            d.add_user(f"{u}@localhost", PASSWORD)
        d.start()
        a = await connect(d, "alice@localhost/phone", plugins=PLUGINS + ("xep_0198",),
                          send_presence=False)
        a.plugin["xep_0030"].add_feature(DEVICELIST + "+notify")  # (OMEMO's device list)
        await a.plugin["xep_0115"].update_caps(broadcast=False)
        a.send_presence()
        events = watch_events(a)
        sm = a.plugin["xep_0198"]
        for _ in range(100):
            if sm.sm_id:
                break
            await asyncio.sleep(0.05)
        assert sm.sm_id, "slixmpp did not enable Stream Management"
        gone, resumed, errors = asyncio.Event(), asyncio.Event(), []
        a.add_event_handler("disconnected", lambda _e: gone.set())
        a.add_event_handler("session_resumed", lambda _e: resumed.set())
        a.add_event_handler("stream_error", lambda e: errors.append(e["condition"]))
        b = await connect(d, "bob@localhost/desk")
        b.send_message(mto=a.boundjid.full, mbody="before", mtype="chat")
        assert await _body(a.messages) == "before"
        await disconnect(b)

        assert d.stop() == 0  # SIGTERM: the daemon saves the session
        await asyncio.wait_for(gone.wait(), 10)
        assert errors == ["system-shutdown"]
        d.start()
        b = await connect(d, "bob@localhost/desk")
        b.send_message(mto=a.boundjid.full, mbody="while away", mtype="chat")
        await asyncio.sleep(0.3)
        a.connect("127.0.0.1", d.c2s)
        await asyncio.wait_for(resumed.wait(), 10)
        assert a.boundjid.full == "alice@localhost/phone"
        assert await _body(a.messages) == "while away"
        b.send_message(mto="alice@localhost/phone", mbody="after", mtype="chat")
        assert await _body(a.messages) == "after"
        # Another device of alice's publishes her device list: the resumed phone hears of it.
        other = await connect(d, "alice@localhost/laptop", plugins=PLUGINS)
        await other.plugin["xep_0060"].publish(None, DEVICELIST, id="current",
                                               payload=devicelist(42))
        m = await asyncio.wait_for(events.get(), 10)
        while event_items(m) is None or event_items(m).get("node") != DEVICELIST:
            m = await asyncio.wait_for(events.get(), 10)
        await disconnect(other)
        await disconnect(a, b)
        assert d.stop() == 0
        assert "Traceback" not in d.log(), d.log()
    finally:
        d.cleanup()
