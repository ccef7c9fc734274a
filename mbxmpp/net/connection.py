"""The asyncio side of a client connection: moves bytes between the transport and the
sans-IO C2SStream, upgrades to TLS on request, applies the pre-authentication limits (through
the server's PreauthAdmission)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from ..errors import StreamError
from ..stream.c2s import C2SStream
from ..stream.sasl import cb_data_from_ssl

if TYPE_CHECKING:
    from ..core.admission import Ticket
    from ..server import Server

log = logging.getLogger(__name__)

# RFC 6120 §4.4: after our </stream:stream>, how long we wait for the peer to close its side
# (and for what we wrote to drain) before the TCP connection is cut. Nothing is read meanwhile.
CLOSE_TIMEOUT = 2.0
# Output a client leaves unread, beyond the kernel's buffers, before its stream is closed:
# a client that does not read must not make the server buffer without bound.
MIN_MAX_OUTPUT = 8 * 1024 * 1024
TLS_HANDSHAKE_TIMEOUT = 30.0


def _cb_data(sslobj: ssl.SSLObject) -> dict[str, bytes]:
    # The context that served the handshake (after SNI) knows its certificate.
    return cb_data_from_ssl(sslobj, getattr(sslobj.context, "mb_cert_der", None))


class DeferredWrites:
    """The connections whose small writes wait for company (``C2SConnection._write_soon``),
    under one timer for all of them: arming and cancelling a uvloop timer per write would cost
    about 3 µs, a quarter of what routing a message costs. A write waits at most ``within``."""

    __slots__ = ("_waiting", "_timer", "_due")

    def __init__(self) -> None:
        self._waiting: dict[C2SConnection, None] = {}  # insertion-ordered set
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    def add(self, conn: C2SConnection, loop: asyncio.AbstractEventLoop, within: float) -> None:
        self._waiting[conn] = None
        due = loop.time() + within
        if self._timer is None or due < self._due:
            if self._timer is not None:
                self._timer.cancel()
            self._due = due
            self._timer = loop.call_later(within, self._fire)

    def discard(self, conn: C2SConnection) -> None:
        self._waiting.pop(conn, None)

    def __len__(self) -> int:
        return len(self._waiting)

    def _fire(self) -> None:
        self._timer = None
        waiting, self._waiting = self._waiting, {}
        for conn in waiting:
            try:
                conn._later_due()
            except Exception:  # one connection's failure must not hold back the others' bytes
                log.exception("deferred write of %s failed", conn.stream.peer)


class C2SConnection(asyncio.Protocol):
    __slots__ = ("server", "ssl_context", "transport", "stream", "peer_ip", "_wbuf", "_auth_timer",
                 "_preauth", "_loop", "_closing", "_close_timer", "_lost", "max_output",
                 "_later", "_last_out")

    def __init__(self, server: Server, ssl_context: ssl.SSLContext, direct_tls: bool) -> None:
        self.server = server
        self.ssl_context = ssl_context
        self.transport: asyncio.Transport | None = None
        self._wbuf: list[bytes] = []
        self._later: list[bytes] | None = None  # bytes that may wait for company (write_soon)
        self._last_out = 0.0  # loop time of the last batch of output (write_soon's own excepted)
        self._loop = asyncio.get_event_loop()
        self._auth_timer: asyncio.TimerHandle | None = None
        self._preauth: Ticket | None = None  # our pre-auth slot, until authenticated
        self._closing = False   # our stream is closed: nothing more is written or read
        self._close_timer: asyncio.TimerHandle | None = None
        self._lost = False
        self.peer_ip = ""
        cfg = server.config.c2s
        self.max_output = max(MIN_MAX_OUTPUT, 32 * cfg.max_stanza_size)
        self.stream = C2SStream(server, self._write, secure=direct_tls,
                                max_stanza_size=cfg.max_stanza_size,
                                require_encryption=cfg.require_encryption,
                                allow_plain=cfg.allow_plain, max_auth_attempts=cfg.max_auth_attempts)
        self.stream.write_soon = self._write_soon
        self.stream.on_close = self._close_transport
        self.stream.on_authenticated = self._authenticated

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else ""
        self.stream.peer = f"{self.peer_ip}:{peer[1]}" if peer else "?"
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self.stream.cb_data = _cb_data(sslobj)
        self.server.connections.add(self)
        try:
            self._preauth = self.server.preauth.admit(self.peer_ip, self._preauth_evicted)
        except StreamError as e:
            log.info("c2s %s: refused: %s", self.stream.peer, e)
            self.stream.fail(e)
            return
        self._auth_timer = self._loop.call_later(self.server.config.c2s.auth_timeout,
                                                 self._auth_timeout)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            # Reading is paused after our closing tag, but uvloop starts reading after
            # connection_made whatever it did (a refusal): pause again, read nothing more.
            if self.transport is not None:
                self.transport.pause_reading()
            return
        stream = self.stream
        ticket = self._preauth
        if ticket is None:
            stream.receive_data(data)
        else:
            if not ticket.take_bytes(len(data)):
                stream.fail(StreamError("policy-violation", "too much data before authentication"))
                return
            before = (stream.stage, stream.auth_failures)
            stream.receive_data(data)
            if (stream.stage, stream.auth_failures) != before:
                ticket.progress()  # a header, a SASL step: not stalled
        if stream.tls_requested and self.transport is not None and not self.transport.is_closing():
            self._flush()
            self.transport.pause_reading()
            asyncio.ensure_future(self._start_tls())

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._uncount()
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.server.connections.discard(self)
        self.transport = None
        self._wbuf.clear()
        self._drop_later()
        self.stream.connection_lost()

    # -- internals ----------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self._closing:
            return  # nothing may follow our </stream:stream> (RFC 6120 §4.4)
        # Writes are coalesced per loop iteration: one TLS record and one syscall per batch.
        buf = self._wbuf
        if not buf:
            self._last_out = self._loop.time()
            self._loop.call_soon(self._flush)
        if self._later is not None:
            self._take_later()  # what was written before goes first
        buf.append(data)

    def _write_soon(self, data: bytes, within: float) -> None:
        """Write ``data`` with this loop iteration's output if there is any; else, if other
        output went to this client within the last ``within`` seconds (more is likely to
        follow), with the next write, at the latest after ``within`` seconds; else at once.
        For small nonzas such as SM's <a/>: alone they cost a TLS record and a system call on
        both ends, and they break up the batches that a busy client and the server settle
        into. What goes out at once does not count as output: a client that waits for each
        <a/> before it sends on never waits for the timeout."""
        if self._wbuf or within <= 0:
            self._write(data)
            return
        if self._closing:
            return
        later = self._later
        if later is not None:
            later.append(data)
        elif self._loop.time() - self._last_out > within:
            self._wbuf.append(data)
            self._loop.call_soon(self._flush)
        else:
            self._later = [data]
            self.server.deferred_writes.add(self, self._loop, within)

    def _later_due(self) -> None:
        if self._later is not None and not self._closing:
            self._take_later()
            self._loop.call_soon(self._flush)

    def _take_later(self) -> None:
        later = self._later
        self._drop_later()
        if later is not None:
            self._wbuf.extend(later)

    def _drop_later(self) -> None:
        self._later = None
        self.server.deferred_writes.discard(self)

    def _flush(self) -> None:
        buf = self._wbuf
        if not buf:
            return
        data = b"".join(buf)
        buf.clear()
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)
            if t.get_write_buffer_size() > self.max_output and not self._closing:
                log.warning("c2s %s: more than %d bytes of unread output, closing",
                            self.stream.peer, self.max_output)
                self.stream.fail(StreamError("policy-violation", "too much unread output"))

    def _close_transport(self) -> None:
        """The stream wrote its closing tag: flush, then close the connection (RFC 6120 §4.4)."""
        if self._later is not None:
            self._take_later()
        self._flush()
        self._closing = True
        self._uncount()
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        t = self.transport
        if t is None or t.is_closing():
            return
        if self.stream.clean_close:
            t.close()  # the peer closed its stream first: both are closed
            return
        # Nothing after the end is read: a peer that keeps sending (an endless stanza after a
        # stream error) fills its own buffers, not our CPU, and is reset when the time is up.
        t.pause_reading()
        if t.can_write_eof():
            t.write_eof()  # FIN after our closing tag
        # Whatever happens, the connection is gone after the timeout (unread output included).
        self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, self._close_expired)

    def _close_expired(self) -> None:
        self._close_timer = None
        t = self.transport
        if t is not None:
            t.abort()

    async def _start_tls(self) -> None:
        t = self.transport
        if t is None:
            return
        try:
            new = await self._loop.start_tls(t, self, self.ssl_context, server_side=True,
                                             ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, OSError, ConnectionError, asyncio.TimeoutError) as e:
            log.info("c2s %s: TLS handshake failed: %s", self.stream.peer, e)
            if self.transport is not None:
                self.transport.abort()
            # asyncio's own loop does not call connection_lost() when the handshake times out
            # (uvloop does): release the connection here, or its pre-auth slot leaks.
            self.connection_lost(e)
            return
        if new is None or self._lost:
            return
        self.transport = new  # type: ignore[assignment]
        if self._preauth is not None:
            self._preauth.progress()
        sslobj = new.get_extra_info("ssl_object")
        self.stream.tls_started(_cb_data(sslobj) if sslobj is not None else {})

    def _authenticated(self) -> None:
        # The slot is given back (the timer runs on until a resource is bound).
        if self._preauth is not None:
            self._preauth.authenticated()
            self._preauth = None

    def _uncount(self) -> None:
        if self._preauth is not None:
            self._preauth.release()
            self._preauth = None

    def _preauth_evicted(self, err: StreamError) -> None:
        """The admission takes our slot back for a newcomer (we stalled)."""
        self._preauth = None
        log.info("c2s %s: ended to make room: %s", self.stream.peer, err)
        self._end_unauthenticated(err)

    def _auth_timeout(self) -> None:
        self._auth_timer = None
        # Until a resource is bound (or a session resumed): authenticating without binding
        # must not hold a connection forever either.
        if self.stream.session is None:
            self._end_unauthenticated(StreamError("connection-timeout", "authentication took too long"))

    def _end_unauthenticated(self, err: StreamError) -> None:
        if self._closing or self._lost:
            return
        if self.stream.tls_requested:
            # Mid-handshake: a stream error cannot be sent in clear now.
            if self.transport is not None:
                self.transport.abort()
            return
        self.stream.fail(err)
