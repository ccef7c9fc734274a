"""The server's connections and sessions without sockets: a fake transport, output bounded for
a peer that does not read, closing (RFC 6120 §4.4), hooks and session teardown."""

from __future__ import annotations

import asyncio
import base64

from mbxmpp.core import events as ev
from mbxmpp.net import core as transport_core
from mbxmpp.net.connection import C2SConnection
from mbxmpp.stream.c2s import ST_CLOSED, ST_READY
from mbxmpp.xml import Element
from mbxmpp.xml.ns import NS_SASL
from tests.harness import ServerHarness
from tests.proto.test_c2s import HEADER

# -- the server -------------------------------------------------------------------------------

async def test_failing_stream_closed_hook_still_ends_the_session():
    async with ServerHarness(modules=[]) as h:
        def broken(stream):
            raise RuntimeError("hook bug")
        h.server.hooks.add(ev.STREAM_CLOSED, broken)
        c = await h.login("alice@localhost", "r")
        assert h.server.sessions.get(c.jid) is not None
        h.disconnect(c)
        assert h.server.sessions.get(c.jid) is None


async def test_conflicting_long_resource_still_binds():
    async with ServerHarness(modules=[]) as h:
        long = "r" * 1020
        a = await h.login("alice@localhost", long)
        b = await h.login("alice@localhost", long)
        assert a.jid != b.jid and b.jid.startswith("alice@localhost/")


# -- the connection: output bound and close ---------------------------------------------------

class FakeTransport(asyncio.Transport):
    """Records writes; ``stuck`` keeps everything written in the 'buffer' (a peer not reading)."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.stuck = False
        self.buffered = 0
        self.closed = self.aborted = self.eof = False

    def write(self, data) -> None:  # type: ignore[override]
        assert not (self.closed or self.aborted or self.eof), "write after close"
        self.data += data
        if self.stuck:
            self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def get_extra_info(self, name, default=None):  # type: ignore[override]
        return {"peername": ("127.0.0.1", 40000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _bound_connection(h: ServerHarness) -> tuple[C2SConnection, FakeTransport]:
    await h.create_user("alice@localhost", "pw")
    conn = C2SConnection(h.server, None, True)  # type: ignore[arg-type]
    t = FakeTransport()
    conn.connection_made(t)
    hdr = HEADER.replace(b"example.org", b"localhost")
    conn.data_received(hdr)
    tok = base64.b64encode(b"\0alice\0pw").decode()
    conn.data_received(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{tok}</auth>".encode())
    conn.data_received(hdr)
    conn.data_received(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    for _ in range(500):  # the password is hashed in a thread (Accounts.login); input waits for it
        await asyncio.sleep(0.01)
        if conn.stream.stage == ST_READY:
            break
    assert conn.stream.stage == ST_READY, bytes(t.data)
    return conn, t


async def test_unread_output_is_bounded(monkeypatch):
    monkeypatch.setattr(transport_core, "CLOSE_TIMEOUT", 0.05)
    async with ServerHarness(modules=[]) as h:
        conn, t = await _bound_connection(h)
        t.stuck = True
        conn.max_output = 100_000
        big = "x" * 40_000
        for i in range(5):  # each service-unavailable reply carries the payload back
            conn.data_received(f"<iq type='get' id='q{i}' to='localhost'><q xmlns='urn:x'>{big}</q></iq>".encode())
            await asyncio.sleep(0)
        assert conn.stream.stage == ST_CLOSED
        assert b"policy-violation" in t.data and bytes(t.data).endswith(b"</stream:stream>")
        size = len(t.data)
        assert size < 100_000 + 2 * 45_000
        # Nothing more is written or buffered for this client.
        conn.data_received(b"<iq type='get' id='late' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        conn.stream.write(b"<r xmlns='urn:xmpp:sm:3'/>")
        await asyncio.sleep(0)
        assert len(t.data) == size
        # It never drains: the connection is cut after the close timeout.
        await asyncio.sleep(0.1)
        assert t.aborted
        conn.connection_lost(None)
        assert h.server.sessions.count() == 0


async def test_server_close_waits_for_peer_then_times_out(monkeypatch):
    # RFC 6120 §4.4: our closing tag, a FIN, and the connection ends when the peer closes
    # (or after the timeout); nothing is written after </stream:stream>.
    monkeypatch.setattr(transport_core, "CLOSE_TIMEOUT", 0.05)
    async with ServerHarness(modules=[]) as h:
        conn, t = await _bound_connection(h)
        conn.data_received(b"<foo xmlns='urn:unknown'/>")
        assert bytes(t.data).endswith(b"</stream:stream>") and b"unsupported-stanza-type" in t.data
        assert t.eof and not t.closed and not t.aborted
        conn.data_received(b"<message to='bob@localhost'/>")  # discarded
        conn.stream.write(b"<a xmlns='urn:xmpp:sm:3' h='1'/>")
        await asyncio.sleep(0)
        assert bytes(t.data).endswith(b"</stream:stream>")
        await asyncio.sleep(0.1)
        assert t.aborted
        conn.connection_lost(None)


async def test_peer_close_closes_the_connection_at_once():
    async with ServerHarness(modules=[]) as h:
        conn, t = await _bound_connection(h)
        conn.data_received(b"</stream:stream>")
        assert bytes(t.data).endswith(b"</stream:stream>") and t.closed
        conn.connection_lost(None)
        assert h.server.sessions.count() == 0
        assert h.server.preauth.count() == 0


async def test_destroying_a_hibernated_session_cancels_its_timer():
    from mbxmpp.modules.sm import Hibernated
    async with ServerHarness(modules=["sm"]) as h:
        c = await h.login("alice@localhost", "phone")
        c.write = lambda data: None
        c.clean_close = False
        sm_mod = h.server.module("sm")
        sm_mod.enable(c, Element("enable", "urn:xmpp:sm:3", {"resume": "true"}))
        h.disconnect(c)
        session = c.session
        assert isinstance(session.stream, Hibernated)
        timer = session.stream.timer
        h.server.destroy_session(session)  # e.g. the account is deleted meanwhile
        assert timer.cancelled()
        assert sm_mod.by_id == {}
