"""Stream management (XEP-0198) with aioxmpp's own resumption: the TCP connection under a client
dies, messages are sent to it and by it meanwhile, aioxmpp reconnects and resumes the same stream,
and nothing is lost or doubled in either direction."""

from __future__ import annotations

import asyncio
import socket

import aioxmpp
import pytest

from tests.realclient_aioxmpp.conftest import body, chat, inbox, next_match, online

pytestmark = pytest.mark.realclient


def cut_connection(client: aioxmpp.Client) -> None:
    """Shut the client's TCP socket down under TLS and aioxmpp, as a lost network does."""
    transport = client.stream._xmlstream.transport  # type: ignore[attr-defined]
    sock = transport.get_extra_info("socket")
    sock.shutdown(socket.SHUT_RDWR)


async def test_resume_after_lost_connection_loses_nothing(daemon):
    async with online(daemon, "alice@localhost/sm") as a, online(daemon, "bob@localhost/sm") as b:
        assert a.stream.sm_enabled and a.stream.sm_id, "the server enabled resumable SM"
        resumed, destroyed = asyncio.Event(), asyncio.Event()
        a.on_stream_resumed.connect(lambda: resumed.set())
        a.on_stream_destroyed.connect(lambda *_a, **_kw: destroyed.set())
        a.backoff_start = a.backoff_start / 10
        a_in, b_in = inbox(a), inbox(b)
        first_jid, sm_id = a.local_jid, a.stream.sm_id

        cut_connection(a)
        for i in range(3):
            await b.send(chat(str(first_jid), f"while away {i}"))
        a.enqueue(chat("bob@localhost/sm", "written offline"))  # aioxmpp queues it for resumption

        await asyncio.wait_for(resumed.wait(), 30)
        assert not destroyed.is_set(), "the stream was resumed, not replaced"
        assert a.local_jid == first_jid and a.stream.sm_id == sm_id

        got = [body(await next_match(a_in, lambda m: (body(m) or "").startswith("while away")))
               for _ in range(3)]
        assert got == [f"while away {i}" for i in range(3)]
        m = await next_match(b_in, lambda m: body(m) == "written offline")
        assert m.from_ == first_jid

        # Exactly once: a marker sent after them arrives next, with no redelivered copy between.
        await b.send(chat(str(first_jid), "marker"))
        m = await next_match(a_in, lambda m: body(m) is not None)
        assert body(m) == "marker"
