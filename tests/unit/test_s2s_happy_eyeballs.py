"""Happy Eyeballs across SRV targets (issue 15), with real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator

import dns.exception
import pytest

from mbxmpp.s2s.dns import Target
from mbxmpp.s2s.net import Held, open_held, race_targets
from tests.unit.test_s2s_peercert import self_signed

ADDRESSES = {"blackhole.example": ["127.0.0.1"], "good.example": ["127.0.0.1"],
             "refused.example": ["127.0.0.1"], "empty.example": []}


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that drops SYNs: a listener with a backlog of 0 already holding one connection
    nobody accepts (Linux then ignores new SYNs, so a connect() hangs until its own timeout)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    probe = socket.socket()
    probe.settimeout(0.2)
    with pytest.raises(TimeoutError):   # it does swallow SYNs here
        probe.connect(("127.0.0.1", port))
    probe.close()
    yield port
    filler.close()
    listener.close()


def listening() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    s = listening()
    yield s
    s.close()


async def lookup(target: Target) -> list[str]:
    if target.host == "nxdomain.example":
        raise dns.exception.Timeout()
    return ADDRESSES[target.host]


async def test_a_blackholed_first_target_does_not_hold_up_the_second(blackhole, listener):
    port = listener.getsockname()[1]
    targets = [Target("blackhole.example", blackhole, False), Target("good.example", port, False)]
    # The blackholed target never completes (the kernel retries its SYN for minutes); the
    # second one starts 50 ms later and wins; the whole race is bounded far below any
    # connect timeout.
    index, sock = await asyncio.wait_for(race_targets(targets, lookup, delay=0.05), 5)
    with sock:
        assert index == 1
        assert sock.getpeername() == ("127.0.0.1", port)
        listener.accept()[0].close()


async def test_the_first_target_wins_when_it_answers(listener):
    port = listener.getsockname()[1]
    with listening() as other:
        targets = [Target("good.example", port, False), Target("good.example", other.getsockname()[1], True)]
        index, sock = await race_targets(targets, lookup, delay=1.0)
        with sock:
            assert index == 0 and sock.getpeername()[1] == port


async def test_failed_targets_hand_over_at_once_and_all_failing_is_an_oserror(listener):
    port = listener.getsockname()[1]
    closed = listening()
    refused_port = closed.getsockname()[1]
    closed.close()   # nothing listens there any more: connection refused
    targets = [Target("nxdomain.example", 5269, False), Target("empty.example", 5269, False),
               Target("refused.example", refused_port, False), Target("good.example", port, False)]
    # Each failure starts the next target at once: no 10 s delay is ever waited for.
    index, sock = await asyncio.wait_for(race_targets(targets, lookup, delay=10.0), 5)
    assert index == 3
    sock.close()
    with pytest.raises(OSError) as err:
        await race_targets(targets[:3], lookup, delay=10.0)
    text = str(err.value)
    assert "nxdomain.example" in text and "empty.example has no address" in text
    assert f"refused.example:{refused_port}" in text


async def test_for_direct_tls_the_first_completed_handshake_wins_and_the_loser_is_closed(tmp_path):
    """The first target accepts TCP but never answers the TLS ClientHello; the second completes
    TLS 50 ms later and wins; the first connection is closed (its server sees the end)."""
    silent_ends: asyncio.Queue = asyncio.Queue()

    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()          # never answers; returns when the client goes away
        silent_ends.put_nowait(True)
        w.close()

    async def tls_peer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()
        w.close()

    cert, key, _ = self_signed(tmp_path, "good.example")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    stalled = await asyncio.start_server(silent, "127.0.0.1", 0)
    good = await asyncio.start_server(tls_peer, "127.0.0.1", 0, ssl=server_ctx)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    targets = [Target("good.example", stalled.sockets[0].getsockname()[1], True),
               Target("good.example", good.sockets[0].getsockname()[1], True)]

    def finish(target: Target, sock: socket.socket):
        return open_held(target, sock, client_ctx, "us.example", "good.example", 30)

    try:
        index, held = await asyncio.wait_for(race_targets(targets, lookup, finish, delay=0.05), 5)
        assert index == 1 and isinstance(held, Held)
        assert held.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        assert await asyncio.wait_for(silent_ends.get(), 5)   # the loser was closed
        held.transport.close()
    finally:
        stalled.close()
        good.close()


async def test_what_arrives_before_the_hand_over_is_handed_over(listener):
    port = listener.getsockname()[1]
    index, held = await race_targets([Target("good.example", port, False)], lookup,
                                     lambda t, s: open_held(t, s, None, "us.example", "good.example", 5))
    peer, _ = listener.accept()
    peer.sendall(b"<early/>")
    peer.close()

    class Sink(asyncio.Protocol):
        def __init__(self) -> None:
            self.data = b""
            self.ended: asyncio.Future = asyncio.get_running_loop().create_future()

        def data_received(self, data: bytes) -> None:
            self.data += data

        def connection_lost(self, exc: Exception | None) -> None:
            self.ended.set_result(exc)

    while held.lost is None:      # the peer's data and its end reach the held connection
        await asyncio.sleep(0.01)
    sink = Sink()
    held.hand_over(sink)
    assert sink.data == b"<early/>"
    assert sink.ended.done()


STARTTLS_HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                   b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='good.example' "
                   b"to='us.example' version='1.0'>")


async def test_starttls_targets_race_through_their_tls_too(tmp_path):
    """Two STARTTLS targets: the first accepts TCP and never says a word, the second goes
    through header, features, <starttls/>, <proceed/> and TLS; it wins, the first is closed,
    and what the winner's peer sends over TLS afterwards reaches whoever takes it over."""
    silent_ends: asyncio.Queue = asyncio.Queue()
    heard: list[bytes] = []

    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()
        silent_ends.put_nowait(True)
        w.close()

    cert, key, _ = self_signed(tmp_path, "good.example")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)

    async def starttls_peer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        heard.append(await r.readuntil(b"version='1.0'>"))
        w.write(STARTTLS_HEADER + b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
                b"<required/></starttls></stream:features>")
        heard.append(await r.readuntil(b"/>"))
        w.write(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await w.drain()
        await w.start_tls(server_ctx)
        w.write(b"after tls")
        await w.drain()
        await r.read()
        w.close()

    stalled = await asyncio.start_server(silent, "127.0.0.1", 0)
    good = await asyncio.start_server(starttls_peer, "127.0.0.1", 0)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    targets = [Target("good.example", stalled.sockets[0].getsockname()[1], False),
               Target("good.example", good.sockets[0].getsockname()[1], False)]
    try:
        index, held = await asyncio.wait_for(race_targets(
            targets, lookup, lambda t, s: open_held(t, s, client_ctx, "us.example", "good.example", 30),
            delay=0.05), 5)
        assert index == 1
        assert held.transport.get_extra_info("ssl_object") is not None
        assert b"from='us.example' to='good.example'" in heard[0]
        assert heard[1] == b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
        assert await asyncio.wait_for(silent_ends.get(), 5)
        assert await asyncio.wait_for(held.read(), 5) == b"after tls"
        held.transport.close()
    finally:
        stalled.close()
        good.close()


@pytest.mark.parametrize("answer, why", [
    (b"<stream:features/>", "the peer offers no STARTTLS (TLS is required)"),
    (b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>"
     b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", "STARTTLS refused (<failure/>)"),
    (b"<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
     "stream error: host-unknown"),
])
async def test_a_peer_that_will_not_do_starttls_loses(answer, why):
    async def peer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"version='1.0'>")
        w.write(STARTTLS_HEADER + answer)
        await r.read()
        w.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        with pytest.raises(OSError) as err:
            await race_targets([Target("good.example", server.sockets[0].getsockname()[1], False)], lookup,
                               lambda t, s: open_held(t, s, ctx, "us.example", "good.example", 5))
        assert why in str(err.value)
    finally:
        server.close()
