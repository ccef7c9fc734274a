"""When the sm module answers an <r/>: at once only if nothing the acked stanzas imply can still
be uncommitted, and never out of order."""

from __future__ import annotations

import asyncio
import time

import pytest

from mbxmpp.stream.smstate import SMState
from tests.harness import ServerHarness, parse_stanza

R = parse_stanza("<r xmlns='urn:xmpp:sm:3'/>")


class AckSink:
    """The part of a c2s stream the sm module's <r/> handler uses."""

    stage = 4  # not ST_CLOSED

    def __init__(self, on_write=None) -> None:
        self.sm = SMState("x", True, 300, 10)
        self.out: list[bytes] = []
        self.on_write = on_write

        self.delays: list[float] = []  # `within` of every write_soon

    def write(self, data: bytes) -> None:
        self.out.append(data)
        if self.on_write is not None:
            self.on_write(data)

    def write_soon(self, data: bytes, within: float) -> None:
        self.delays.append(within)
        self.write(data)

    def hs(self) -> list[int]:
        return [int(x.split(b"h='")[1].split(b"'")[0]) for x in self.out]


@pytest.mark.asyncio
async def test_request_during_a_committed_flush_waits_its_turn():
    """The writer has committed the flush of an earlier <r/> but the loop has not resumed its
    waiter: a later <r/> must not overtake it (a falling h is 'too high' for the client)."""
    async with ServerHarness(modules=["sm"], storage="lmdb") as h:
        st, sm_mod, s = h.server.storage, h.server.module("sm"), AckSink()
        for _ in range(5):
            s.sm.inbound()
        st.keyval("k").set("a@x", 1)  # a write in flight
        sm_mod.request(s, R)          # waits for a flush, h=5
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        t = time.monotonic()
        while not st.idle() and time.monotonic() - t < 5:
            time.sleep(0.001)         # committed; the loop has not run the waiter yet
        assert st.idle()
        for _ in range(3):
            s.sm.inbound()
        sm_mod.request(s, R)          # h=8
        await asyncio.sleep(0.05)
        assert s.hs() == [5, 8]


@pytest.mark.asyncio
async def test_ack_after_an_async_iq_handlers_write_is_committed():
    """An <r/> right behind an IQ whose handler writes asynchronously (MAM prefs) is not
    answered before that write is committed (the IQ result says it is stored)."""
    async with ServerHarness(modules=["mam", "sm"], storage="lmdb") as h:
        a = await h.login("alice@localhost", "r")
        await h.server.storage.flush()
        seen: list[bool] = []
        s = AckSink(on_write=lambda d: seen.append(bool(a.received)))
        h.send(a, "<iq type='set' id='p1'><prefs xmlns='urn:xmpp:mam:2' default='never'/></iq>")
        s.sm.inbound()
        h.server.module("sm").request(s, R)
        await asyncio.sleep(0.3)
        assert s.hs() == [1]
        assert seen == [True]  # the IQ result (sent after the commit) went out first
        assert h.server.module("mam").prefs.get("alice@localhost").default == "never"


@pytest.mark.asyncio
async def test_idle_storage_answers_at_once():
    async with ServerHarness(modules=["sm"], storage="lmdb") as h:
        s = AckSink()
        s.sm.inbound()
        h.server.module("sm").request(s, R)
        assert s.hs() == [1]  # no loop iteration needed
        # handed to the connection, which may hold it up to [sm] ack_delay to share a write
        assert s.delays == [h.server.config.sm.ack_delay] == [0.05]


def test_too_high_ack_names_h_without_leading_zeros():
    from mbxmpp.errors import StreamError
    from mbxmpp.modules.sm import StreamManagement
    sm = SMState("x", True, 300, 10)
    sm.outbound(b"<message/>")
    with pytest.raises(StreamError) as e:
        StreamManagement._apply_ack(sm, "0" * 3000 + "7")
    assert e.value.condition == "undefined-condition"
    app = e.value.app
    assert app.tag == "handled-count-too-high" and app.get("h") == "7" and app.get("send-count") == "1"
    with pytest.raises(StreamError) as e:
        StreamManagement._apply_ack(sm, "+1")
    assert e.value.condition == "invalid-xml"
