"""Pre-authentication limits: a timeout for idle unauthenticated connections, and the per-address
bucket of new connections (refunded by those that authenticate). The limits are lowered here to
see each one act within a second and a handful of sockets; the shipped defaults are exercised
in test_preauth_admission.py."""

from __future__ import annotations

import asyncio

import pytest

from tests.daemon import Daemon
from tests.integration.test_stream_end import MAX_ACCEPTED, blast_until_reset, blocking_socket, read_until
from tests.rawclient import RawClient



@pytest.fixture(scope="module")
def daemon():
    d = Daemon()
    # Lowered on purpose (see the module's docstring): the timeout to 1 s instead of 30, the
    # address's bucket to 5 connections at once instead of 300.
    with open(d.config_path) as f:
        text = f.read()
    text = text.replace("[c2s]\n", '[c2s]\nauth_timeout = "1s"\nconnection_burst_per_ip = 5\n'
                        'connection_rate_per_ip = 1\n', 1)
    with open(d.config_path, "w") as f:
        f.write(text)
    d.add_user("alice@localhost", "pw")
    d.start()
    yield d
    assert d.stop() == 0
    d.cleanup()


async def test_unauthenticated_connection_times_out(daemon):
    c = await RawClient.connect(daemon.c2s)
    await c.open()
    assert await c.stream_error(timeout=5) == "connection-timeout"


async def test_authenticated_connection_does_not_time_out(daemon):
    c = await RawClient.connect(daemon.c2s)
    await c.login("alice", "pw")
    await asyncio.sleep(1.5)
    await c.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await c.element()).get("type") == "result"
    await c.close()


async def test_new_connections_per_address_are_bucketed(daemon):
    await asyncio.sleep(5)  # the earlier tests' tokens are back
    # Logins give their token back: many more than the burst, one after the other.
    for i in range(8):
        c = await RawClient.connect(daemon.c2s)
        assert (await c.login("alice", "pw", resource=f"r{i}")).startswith("alice@localhost/")
        await c.close()
    # Connections that never authenticate keep theirs: the sixth of a burst is refused.
    # (connected back to back: the bucket gets a token back only each second)
    idle = [await RawClient.connect(daemon.c2s) for _ in range(5)]
    extra = blocking_socket()
    extra.connect(("127.0.0.1", daemon.c2s))
    for c in idle:
        await c.open()
    # Refused at once, and what it sends after the refusal is not read (a reset ends it).
    reply = read_until(extra, b"</stream:stream>")
    assert b"<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in reply
    accepted, reset = blast_until_reset(extra)
    assert reset and accepted < MAX_ACCEPTED[False], accepted
    extra.close()
    for c in idle:
        await c.close()
    # The bucket refills (1 a second here): the address is welcome again.
    await asyncio.sleep(1.5)
    ok = await RawClient.connect(daemon.c2s)
    assert (await ok.login("alice", "pw")).startswith("alice@localhost/")
    await ok.close()
