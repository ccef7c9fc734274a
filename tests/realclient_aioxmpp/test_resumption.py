"""Stream management (XEP-0198) with aioxmpp's own resumption: the TCP connection under a client
dies, messages are sent to it and by it meanwhile, aioxmpp reconnects and resumes the same stream,
and nothing is lost or doubled in either direction."""

from __future__ import annotations

import asyncio
import socket

import aioxmpp
import pytest

from tests.daemon import Daemon
from tests.realclient_aioxmpp.conftest import (PASSWORD, body, chat, inbox, make_client,
                                                next_match, online)

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


async def test_server_restart_replaces_the_stream():
    """A restarted server has no session to resume: aioxmpp gets <failed/>, binds a new stream
    by itself, and the new stream carries messages."""
    d = Daemon()
    for u in ("alice@localhost", "bob@localhost"):
        d.add_user(u, PASSWORD)
    d.start()
    try:
        async with online(d, "alice@localhost/sm") as a:
            established, destroyed = asyncio.Event(), asyncio.Event()
            a.on_stream_destroyed.connect(lambda *_a, **_kw: destroyed.set())
            a.on_stream_established.connect(lambda: established.set())
            a.backoff_start = a.backoff_start / 10
            old_sm_id = a.stream.sm_id
            await asyncio.to_thread(d.stop)
            await asyncio.to_thread(d.start)
            await asyncio.wait_for(established.wait(), 30)
            assert destroyed.is_set(), "the old stream's state was dropped, not resumed"
            assert a.stream.sm_enabled and a.stream.sm_id != old_sm_id
            a_in = inbox(a)
            async with online(d, "bob@localhost/sm") as b:
                await b.send(chat(str(a.local_jid), "after the restart"))
                await next_match(a_in, lambda m: body(m) == "after the restart")
    finally:
        d.finish()


async def test_offline_messages_arrive_stamped_at_login(daemon):
    async with online(daemon, "bob@localhost/off") as b:
        for i in range(2):
            await b.send(chat("carol@localhost", f"offline {i}"))
    client = make_client(daemon, "carol@localhost/back")
    got = inbox(client)
    client.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True))
    async with client.connected():
        for i in range(2):
            m = await next_match(got, lambda m: body(m) is not None)
            assert body(m) == f"offline {i}" and m.xep0203_delay, "XEP-0160 with XEP-0203 stamp"
