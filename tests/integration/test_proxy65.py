"""SOCKS5 Bytestreams proxy (XEP-0065) against the spawned daemon: a 5 MiB transfer between two
slixmpp clients whose only streamhost is the proxy, and raw SOCKS5/XMPP clients for the rest."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from typing import Iterator

import pytest

from tests.daemon import Daemon
from tests.rawclient import RawClient
from tests.realclient.conftest import PASSWORD, connect, disconnect

NS_BS = "http://jabber.org/protocol/bytestreams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
MiB = 1024 * 1024
USERS = ("alice", "bob", "eve", "dave")


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(extra='activation_timeout = "4s"\nidle_timeout = "4s"\n')
    for u in USERS:
        d.add_user(f"{u}@localhost", PASSWORD)
    d.start()
    yield d
    d.finish()


async def login(d: Daemon, user: str) -> tuple[RawClient, str]:
    c = await RawClient.connect(d.c2s)
    full = await c.login(user, PASSWORD, resource="r")
    return c, full


async def iq(c: RawClient, body: str, to: str = "proxy.localhost", type_: str = "get"):  # type: ignore[no-untyped-def]
    i = os.urandom(4).hex()
    await c.send(f"<iq type='{type_}' id='{i}' to='{to}'>{body}</iq>")
    while True:
        el = await c.element(10)
        if el.tag == "iq" and el.get("id") == i:
            return el


def condition(reply) -> str:  # type: ignore[no-untyped-def]
    err = reply.find("error")
    assert err is not None, reply
    return next(c.tag for c in err.elements() if c.ns == NS_STANZAS and c.tag != "text")


async def activate(c: RawClient, sid: str, target: str):  # type: ignore[no-untyped-def]
    return await iq(c, f"<query xmlns='{NS_BS}' sid='{sid}'><activate>{target}</activate></query>", type_="set")


def digest(sid: str, requester: str, target: str) -> bytes:
    return hashlib.sha1((sid + requester + target).encode()).hexdigest().encode()


async def socks(port: int, name: bytes = b"", *, atyp: int = 3, dst_port: int = 0, addr: bytes = b""
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Greet with no-auth, CONNECT; returns the stream and the reply (empty if closed)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"\x05\x01\x00")
    assert await r.readexactly(2) == b"\x05\x00"
    target = bytes((len(name),)) + name if atyp == 3 else addr
    w.write(b"\x05\x01\x00" + bytes((atyp,)) + target + dst_port.to_bytes(2, "big"))
    reply = await asyncio.wait_for(r.read(4), 10)
    if reply[1:2] == b"\x00":
        await r.readexactly(1 + len(name) + 2)   # BND.ADDR (length, name) and BND.PORT
    return r, w, reply


def rss(d: Daemon) -> int:
    with open(f"/proc/{d.proc.pid}/status") as f:  # type: ignore[union-attr]
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb * 1024


async def closed(r: asyncio.StreamReader, timeout: float = 10) -> bool:
    while True:
        data = await asyncio.wait_for(r.read(65536), timeout)
        if not data:
            return True


async def pair(d: Daemon, requester: RawClient, req_full: str, target_full: str, sid: str):  # type: ignore[no-untyped-def]
    h = digest(sid, req_full, target_full)
    t = await socks(d.proxy, h)
    i = await socks(d.proxy, h)
    assert t[2][1] == 0 and i[2][1] == 0
    res = await activate(requester, sid, target_full)
    assert res.get("type") == "result", res
    return t, i


# -- discovery -----------------------------------------------------------------------------------------
async def test_disco_and_streamhost(daemon):
    c, _ = await login(daemon, "alice")
    info = await iq(c, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
    ident = info.first_child().find("identity", "http://jabber.org/protocol/disco#info")
    assert (ident.get("category"), ident.get("type")) == ("proxy", "bytestreams")
    res = await iq(c, f"<query xmlns='{NS_BS}'/>")
    sh = res.first_child().find("streamhost", NS_BS)
    assert (sh.get("jid"), sh.get("host"), sh.get("port")) == ("proxy.localhost", "127.0.0.1", str(daemon.proxy))
    await c.close()


# -- a real transfer -------------------------------------------------------------------------------------
async def test_five_mib_between_slixmpp_clients_through_the_proxy(daemon):
    alice = await connect(daemon, "alice@localhost", plugins=("xep_0030", "xep_0065"))
    bob = await connect(daemon, "bob@localhost", plugins=("xep_0030", "xep_0065"))
    try:
        bob.plugin["xep_0065"].auto_accept = True
        received = bytearray()
        got_all = asyncio.Event()
        payload = os.urandom(5 * MiB)

        def on_data(data: bytes) -> None:
            received.extend(data)
            if len(received) >= len(payload):
                got_all.set()
        bob.add_event_handler("socks5_data", on_data)

        proxies = await alice.plugin["xep_0065"].discover_proxies()
        assert set(map(str, proxies)) == {"proxy.localhost"}          # the only streamhost offered
        sock = await asyncio.wait_for(alice.plugin["xep_0065"].handshake(bob.boundjid.full), 20)
        assert sock is not None
        peer = sock.transport.get_extra_info("peername")
        assert peer[1] == daemon.proxy                                   # the bytes go through the proxy
        for off in range(0, len(payload), 64 * 1024):
            await sock.write(payload[off:off + 64 * 1024])
        await asyncio.wait_for(got_all.wait(), 60)
        assert bytes(received) == payload
        sock.transport.close()
    finally:
        await disconnect(alice, bob)


# -- refusals of the SOCKS5 side ------------------------------------------------------------------------------
async def test_never_an_open_proxy(daemon):
    # An address (127.0.0.1:22, ::1): not allowed by ruleset.
    r, w, reply = await socks(daemon.proxy, atyp=1, addr=socket.inet_aton("127.0.0.1"), dst_port=22)
    assert reply[:2] == b"\x05\x02" and await closed(r)
    r, w, reply = await socks(daemon.proxy, atyp=4, addr=socket.inet_pton(socket.AF_INET6, "::1"), dst_port=22)
    assert reply[:2] == b"\x05\x02" and await closed(r)
    # A name that is not a bytestream hash, or a hash with a port: refused.
    for name, port in ((b"example.com", 80), (b"localhost", 22), (digest("s", "a", "b"), 22)):
        r, w, reply = await socks(daemon.proxy, name, dst_port=port)
        assert reply[:2] == b"\x05\x05", name
        assert await closed(r)
    # Another command (BIND) and a client without the no-auth method.
    r, w = await asyncio.open_connection("127.0.0.1", daemon.proxy)
    w.write(b"\x05\x01\x00\x05\x02\x00\x03\x28" + digest("s", "a", "b") + b"\x00\x00")
    assert await r.readexactly(2) == b"\x05\x00" and await r.readexactly(2) == b"\x05\x07"
    r, w = await asyncio.open_connection("127.0.0.1", daemon.proxy)
    w.write(b"\x05\x01\x02")
    assert await r.readexactly(2) == b"\x05\xff" and await closed(r)


async def test_silent_client_closed_after_the_timeout(daemon):
    r, w = await asyncio.open_connection("127.0.0.1", daemon.proxy)
    assert await closed(r, 15)       # activation_timeout (4s) in this config
    h = digest("lonely", "x@localhost/r", "y@localhost/r")
    r, w, reply = await socks(daemon.proxy, h)
    assert reply[1] == 0 and await closed(r, 15)   # connected but never activated


# -- activation ---------------------------------------------------------------------------------------------
async def test_activation_only_by_the_requester_with_both_connected(daemon):
    alice, a_full = await login(daemon, "alice")
    bob, b_full = await login(daemon, "bob")
    eve, e_full = await login(daemon, "eve")
    sid = "sid-" + os.urandom(4).hex()
    h = digest(sid, a_full, b_full)
    t = await socks(daemon.proxy, h)
    assert t[2][1] == 0
    # Only one side is connected.
    assert condition(await activate(alice, sid, b_full)) == "not-allowed"
    i = await socks(daemon.proxy, h)
    assert i[2][1] == 0
    # A third connection with the same hash is refused (one target per stream).
    extra = await socks(daemon.proxy, h)
    assert extra[2][:2] == b"\x05\x05"
    # A third party, and the requester with a wrong sid or target: no such stream.
    assert condition(await activate(eve, sid, b_full)) == "item-not-found"
    assert condition(await activate(alice, sid + "x", b_full)) == "item-not-found"
    assert condition(await activate(alice, sid, e_full)) == "item-not-found"
    assert condition(await iq(alice, f"<query xmlns='{NS_BS}' sid='{sid}'/>", type_="set")) == "bad-request"
    # Nothing is relayed before activation.
    i[1].write(b"early")
    await asyncio.sleep(0.2)
    assert (await activate(alice, sid, b_full)).get("type") == "result"
    i[1].write(b"hello target")
    assert await t[0].readexactly(12) == b"hello target"
    t[1].write(b"hello requester")
    assert await i[0].readexactly(15) == b"hello requester"
    # Once active, the stream cannot be activated again.
    assert condition(await activate(alice, sid, b_full)) == "item-not-found"
    for c in (alice, bob, eve):
        await c.close()
    i[1].close()
    t[1].close()


async def test_half_open_relay(daemon):
    alice, a_full = await login(daemon, "alice")
    (tr, tw, _), (ir, iw, _) = await pair(daemon, alice, a_full, "bob@localhost/r", "half")
    iw.write(b"x" * 100_000)
    iw.write_eof()                                      # the requester is done sending
    assert await tr.readexactly(100_000) == b"x" * 100_000
    assert await asyncio.wait_for(tr.read(1), 10) == b""   # the target sees the EOF...
    tw.write(b"still talking")                          # ...and can still answer
    assert await ir.readexactly(13) == b"still talking"
    tw.close()
    assert await closed(ir)
    await alice.close()


async def test_idle_stream_closed(daemon):
    alice, a_full = await login(daemon, "alice")
    (tr, tw, _), (ir, iw, _) = await pair(daemon, alice, a_full, "bob@localhost/r", "idle")
    iw.write(b"ping")
    assert await tr.readexactly(4) == b"ping"
    assert await closed(tr, 15) and await closed(ir, 15)   # idle_timeout (4s)
    await alice.close()


async def test_back_pressure_holds_the_sender(daemon):
    """A target that does not read: the proxy stops reading from the requester instead of
    buffering, so the requester's writes stall well before the data could all be buffered."""
    dave, d_full = await login(daemon, "dave")
    (tr, tw, _), (ir, iw, _) = await pair(daemon, dave, d_full, "bob@localhost/r", "slow")
    rss_before = rss(daemon)
    sent = 0
    chunk = b"b" * 65536
    try:
        while sent < 128 * MiB:
            iw.write(chunk)
            await asyncio.wait_for(iw.drain(), 1.5)
            sent += len(chunk)
    except asyncio.TimeoutError:
        pass
    # Held back: the kernel's socket buffers hold what was sent, not the proxy's memory.
    assert sent < 48 * MiB
    assert rss(daemon) - rss_before < 16 * MiB
    got = 0
    while got < sent:                # everything sent so far still arrives, in order
        data = await asyncio.wait_for(tr.read(1 << 20), 10)
        assert data and set(data) == {ord("b")}
        got += len(data)
    iw.close()
    tw.close()
    await dave.close()


@pytest.fixture
def limited() -> Iterator[Daemon]:
    d = Daemon(extra='max_streams_per_user = 2\nmax_bytes_per_user = "6MiB"\n')
    d.add_user("carl@localhost", PASSWORD)
    d.start()
    yield d
    d.finish()


async def test_per_user_stream_and_volume_limits(limited):
    daemon = limited
    carl, c_full = await login(daemon, "carl")
    pairs = [await pair(daemon, carl, c_full, f"bob@localhost/{n}", f"lim{n}") for n in range(2)]
    h = digest("lim2", c_full, "bob@localhost/2")
    waiting = [await socks(daemon.proxy, h), await socks(daemon.proxy, h)]
    r = await activate(carl, "lim2", "bob@localhost/2")
    assert condition(r) == "resource-constraint"                      # max_streams_per_user = 2
    (tr, tw, _), (ir, iw, _) = pairs[0]
    # Volume: 6 MiB an hour in this config; the stream is cut once it is used up.
    total = 0
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        while total < 8 * MiB:
            iw.write(b"v" * MiB)
            await iw.drain()
            total += len(await tr.readexactly(MiB))
    assert 5 * MiB <= total <= 7 * MiB
    for (a, b) in pairs:
        a[1].close()
        b[1].close()
    await asyncio.sleep(0.3)
    h = digest("lim3", c_full, "bob@localhost/3")
    waiting += [await socks(daemon.proxy, h), await socks(daemon.proxy, h)]
    r = await activate(carl, "lim3", "bob@localhost/3")
    assert condition(r) == "resource-constraint" and "volume" in r.find("error").findtext("text", NS_STANZAS)
    for _r, w, _ in waiting:
        w.close()
    await carl.close()


async def test_unactivated_connections_per_address_are_capped(daemon):
    held = [await asyncio.open_connection("127.0.0.1", daemon.proxy) for _ in range(64)]
    r, w = await asyncio.open_connection("127.0.0.1", daemon.proxy)
    assert await closed(r)                       # the 65th waiting connection of 127.0.0.1
    hr, hw = held[0]
    hw.write(b"\x05\x01\x00")                    # while the first ones are still served
    assert await hr.readexactly(2) == b"\x05\x00"
    for _, hw in held:
        hw.close()
    await asyncio.sleep(0.2)
    r, w = await asyncio.open_connection("127.0.0.1", daemon.proxy)
    w.write(b"\x05\x01\x00")
    assert await r.readexactly(2) == b"\x05\x00"  # released when they close
    w.close()


async def test_wrong_hash_is_never_joined(daemon):
    alice, a_full = await login(daemon, "alice")
    sid = "wrong-" + os.urandom(4).hex()
    good = await socks(daemon.proxy, digest(sid, a_full, "bob@localhost/r"))
    bad = await socks(daemon.proxy, digest(sid, a_full, "bob@localhost/other"))   # a wrong target in the hash
    assert good[2][1] == 0 and bad[2][1] == 0
    r = await activate(alice, sid, "bob@localhost/r")
    assert condition(r) == "not-allowed"            # only one party of this stream is connected
    bad[1].write(b"not for you")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(good[0].read(1), 0.5)
    good[1].close()
    bad[1].close()
    await alice.close()
