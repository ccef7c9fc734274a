"""Pre-authentication limits: a timeout for idle unauthenticated connections and a cap per IP."""

from __future__ import annotations

import asyncio

import pytest

from tests.daemon import Daemon
from tests.rawclient import RawClient

pytestmark = pytest.mark.realclient


@pytest.fixture(scope="module")
def daemon():
    d = Daemon()
    # Tight limits in the c2s section.
    with open(d.config_path) as f:
        text = f.read()
    text = text.replace("[c2s]\n", '[c2s]\nauth_timeout = "1s"\nmax_unauthenticated_per_ip = 3\n', 1)
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


async def test_unauthenticated_connections_per_ip_capped(daemon):
    idle = [await RawClient.connect(daemon.c2s) for _ in range(3)]
    extra = await RawClient.connect(daemon.c2s)
    await extra.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                     "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
    assert await extra.stream_error() == "policy-violation"
    for c in idle:
        await c.close()
    await asyncio.sleep(0.2)
    # Once they are gone, a newcomer is welcome again.
    ok = await RawClient.connect(daemon.c2s)
    assert (await ok.login("alice", "pw")).startswith("alice@localhost/")
    await ok.close()
