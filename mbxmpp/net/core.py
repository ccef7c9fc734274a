"""What every client transport does around its sans-IO stream, whatever carries the bytes (TCP
with STARTTLS or direct TLS, a WebSocket): output coalesced per loop iteration and small writes
deferred for company, a bound on output the client leaves unread, the closing sequence with its
grace timer, the authentication timeout and the pre-authentication limits.

A transport subclasses ``StreamConnection``, sets ``transport`` (an asyncio transport: the
bytes written to it are what the peer receives, already framed), creates its stream and hands it
to ``_attach``, calls ``_started`` once the peer is known, feeds what it reads to the stream
(through ``_receive_preauth`` while ``_preauth`` is set: the pre-auth byte budget and progress
of core/admission.py), calls ``_connection_lost`` when the connection is gone, and implements
``_shutdown`` (what follows our closing element on the wire).
The limits come from the subclass (stanza size, authentication timeout, the admission of
pre-auth connections); nothing here reads the c2s configuration or needs more of the stream
than a small interface (fail, session, peer, stage, auth_failures, clean_close, tls_requested,
cb_data, connection_lost, the on_* callbacks): s2s streams can use it as well.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any

from ..errors import StreamError
from ..stream.sasl import cb_data_from_ssl
from ..util.ratelimit import ReadThrottle

if TYPE_CHECKING:
    from ..core.admission import PreauthAdmission, Ticket
    from ..server import Server

log = logging.getLogger(__name__)

# RFC 6120 §4.4: after our closing element, how long we wait for the peer to close its side
# (and for what we wrote to drain) before the connection is cut.
CLOSE_TIMEOUT = 2.0
# Output a client leaves unread, beyond the kernel's buffers, before its stream is closed:
# a client that does not read must not make the server buffer without bound.
MIN_MAX_OUTPUT = 8 * 1024 * 1024


class DeferredWrites:
    """The connections whose small writes wait for company (``StreamConnection._write_soon``),
    under one timer for all of them: arming and cancelling a uvloop timer per write would cost
    about 3 µs, a quarter of what routing a message costs. A write waits at most ``within``."""

    __slots__ = ("_due", "_timer", "_waiting")

    def __init__(self) -> None:
        self._waiting: dict[StreamConnection, None] = {}  # insertion-ordered set
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    def add(self, conn: StreamConnection, loop: asyncio.AbstractEventLoop, within: float) -> None:
        self._waiting[conn] = None
        due = loop.time() + within
        if self._timer is None or due < self._due:
            if self._timer is not None:
                self._timer.cancel()
            self._due = due
            self._timer = loop.call_later(within, self._fire)

    def discard(self, conn: StreamConnection) -> None:
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


def cb_data(sslobj: Any) -> dict[str, bytes]:
    """Channel-binding data of a TLS connection (SCRAM-PLUS)."""
    # The context that served the handshake (after SNI) knows its certificate.
    return cb_data_from_ssl(sslobj, getattr(sslobj.context, "mb_cert_der", None))


class StreamConnection:
    __slots__ = (
        "_admission",
        "_auth_after",
        "_auth_timer",
        "_close_timer",
        "_closing",
        "_last_out",
        "_throttle",
        "_later",
        "_loop",
        "_lost",
        "_preauth",
        "_wbuf",
        "max_output",
        "peer_ip",
        "server",
        "stream",
        "transport",
    )

    def __init__(self, server: Server, *, max_stanza_size: int, auth_timeout: float,
                 admission: PreauthAdmission) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.stream: Any = None
        self.peer_ip = ""
        self._wbuf: list[bytes] = []
        self._later: list[bytes] | None = None  # bytes that may wait for company (write_soon)
        self._last_out = 0.0  # loop time of the last batch of output (write_soon's own excepted)
        self._loop = asyncio.get_event_loop()
        self._auth_timer: asyncio.TimerHandle | None = None
        self._preauth: Ticket | None = None  # our pre-auth slot, until authenticated
        self._closing = False   # our stream is closed: nothing more is written or read
        self._close_timer: asyncio.TimerHandle | None = None
        self._lost = False
        self.max_output = max(MIN_MAX_OUTPUT, 32 * max_stanza_size)
        self._auth_after = auth_timeout    # until bound (c2s) or authenticated
        self._admission = admission        # who may hold a pre-auth slot
        # [limits] stanzas_per_session: reading pauses while a session is over its rate
        rate = server.config.limits.rates["stanzas_per_session"]
        self._throttle = ReadThrottle(rate, self._loop.time()) if rate.per_second else None

    def _attach(self, stream: Any) -> None:
        self.stream = stream
        stream.on_close = self._close_transport
        stream.on_authenticated = self._authenticated

    def _started(self, peer: tuple[Any, ...] | None, sslobj: ssl.SSLObject | None) -> None:
        """The connection is up: who the peer is, its TLS, the pre-auth admission."""
        self.peer_ip = peer[0] if peer else ""
        self.stream.peer = f"{self.peer_ip}:{peer[1]}" if peer else "?"
        if sslobj is not None:
            self.stream.cb_data = cb_data(sslobj)
        self.server.connections.add(self)  # type: ignore[arg-type]
        if self._preauth is not None:  # admitted before its TLS handshake, now done
            self._preauth.hand_over(self._preauth_evicted)
            self._preauth.progress()
        else:
            try:
                self._preauth = self._admission.admit(self.peer_ip, self._preauth_evicted)
            except StreamError as e:
                log.info("c2s %s: refused: %s", self.stream.peer, e)
                self.stream.fail(e)
                return
        self._auth_timer = self._loop.call_later(self._auth_after, self._auth_timeout)

    def _receive_preauth(self, ticket: Ticket, data: bytes) -> None:
        """``stream.receive_data`` before authentication: within the byte budget, and a
        negotiation step counts as progress (not stalled)."""
        self._feed_preauth(ticket, len(data), self.stream.receive_data, data)

    def _feed_preauth(self, ticket: Ticket, size: int, feed: Any, what: Any) -> None:
        """``feed(what)`` (``size`` bytes of input) under the pre-auth budget: for transports
        that hand the stream parsed elements (BOSH)."""
        stream = self.stream
        if not ticket.take_bytes(size):
            stream.fail(StreamError("policy-violation", "too much data before authentication"))
            return
        before = (stream.stage, stream.auth_failures)
        feed(what)
        if (stream.stage, stream.auth_failures) != before:
            ticket.progress()  # a header, a SASL step: not stalled

    def _charge_reads(self) -> None:
        """After each read: what the stream counted comes off the session's stanza budget."""
        if self._throttle is not None and self.stream.stanzas_in:
            self._throttle.charge(self.stream.stanzas_in, self.transport, self._loop)

    def _connection_lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        if self._throttle is not None:
            self._throttle.cancel()
        self._uncount()
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.server.connections.discard(self)  # type: ignore[arg-type]
        self.transport = None
        self._wbuf.clear()
        self._drop_later()
        self.stream.connection_lost()

    # -- output -------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self._closing:
            return  # nothing may follow our closing element (RFC 6120 §4.4)
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

    # -- closing ------------------------------------------------------------------------------
    def _close_transport(self) -> None:
        """The stream wrote its closing element: flush, then end the connection."""
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
        if self._shutdown(t):
            # Whatever happens, the connection is gone after the timeout (unread output included).
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, self._close_expired)

    def _shutdown(self, t: asyncio.Transport) -> bool:
        """After our closing element: end the connection (the transport's way). True: the
        peer is waited for, at most CLOSE_TIMEOUT."""
        raise NotImplementedError

    def _close_expired(self) -> None:
        self._close_timer = None
        t = self.transport
        if t is not None:
            t.abort()

    # -- pre-authentication -------------------------------------------------------------------
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
