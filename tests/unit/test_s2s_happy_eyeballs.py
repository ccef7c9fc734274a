"""Happy Eyeballs across SRV targets (issue 15), with real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import dns.exception
import pytest

from mbxmpp.s2s.dns import Target
from mbxmpp.s2s.net import race_targets

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


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
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
    try:
        assert index == 1
        assert sock.getpeername() == ("127.0.0.1", port)
        accepted, _ = listener.accept()
        accepted.close()
    finally:
        sock.close()


async def test_the_first_target_wins_when_it_answers(listener):
    port = listener.getsockname()[1]
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(8)
    try:
        targets = [Target("good.example", port, False), Target("good.example", other.getsockname()[1], True)]
        index, sock = await race_targets(targets, lookup, delay=1.0)
        assert index == 0 and sock.getpeername()[1] == port
        sock.close()
    finally:
        other.close()


async def test_failed_targets_hand_over_at_once_and_all_failing_is_an_oserror(listener):
    port = listener.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()   # nothing listens there: connection refused
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
