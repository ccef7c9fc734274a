"""The asyncio side of a client connection: moves bytes between the transport and the
sans-IO C2SStream, upgrades to TLS on request, enforces the pre-authentication limits."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from ..errors import StreamError
from ..stream.c2s import C2SStream
from ..stream.sasl import cb_data_from_ssl

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger(__name__)


def _cb_data(sslobj: ssl.SSLObject) -> dict[str, bytes]:
    # The context that served the handshake (after SNI) knows its certificate.
    return cb_data_from_ssl(sslobj, getattr(sslobj.context, "mb_cert_der", None))


class C2SConnection(asyncio.Protocol):
    __slots__ = ("server", "ssl_context", "transport", "stream", "peer_ip", "_wbuf", "_auth_timer",
                 "_counted_unauth", "_loop")

    def __init__(self, server: Server, ssl_context: ssl.SSLContext, direct_tls: bool) -> None:
        self.server = server
        self.ssl_context = ssl_context
        self.transport: asyncio.Transport | None = None
        self._wbuf: list[bytes] = []
        self._loop = asyncio.get_event_loop()
        self._auth_timer: asyncio.TimerHandle | None = None
        self._counted_unauth = False
        self.peer_ip = ""
        cfg = server.config.c2s
        self.stream = C2SStream(server, self._write, secure=direct_tls,
                                max_stanza_size=cfg.max_stanza_size,
                                require_encryption=cfg.require_encryption,
                                allow_plain=cfg.allow_plain, max_auth_attempts=cfg.max_auth_attempts)
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
        limits = self.server.config.c2s
        n = self.server.unauth_per_ip.get(self.peer_ip, 0)
        self.server.unauth_per_ip[self.peer_ip] = n + 1
        self._counted_unauth = True
        if n >= limits.max_unauthenticated_per_ip:
            self.stream.fail(StreamError("policy-violation", "too many unauthenticated connections"))
            return
        self._auth_timer = self._loop.call_later(limits.auth_timeout, self._auth_timeout)

    def data_received(self, data: bytes) -> None:
        stream = self.stream
        stream.receive_data(data)
        if stream.tls_requested and self.transport is not None and not self.transport.is_closing():
            self._flush()
            self.transport.pause_reading()
            asyncio.ensure_future(self._start_tls())

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._uncount()
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        self.server.connections.discard(self)
        self.transport = None
        self.stream.connection_lost()

    # -- internals ----------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        # Writes are coalesced per loop iteration: one TLS record and one syscall per batch.
        buf = self._wbuf
        buf.append(data)
        if len(buf) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        buf = self._wbuf
        if not buf:
            return
        data = b"".join(buf)
        buf.clear()
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def _close_transport(self) -> None:
        self._flush()
        t = self.transport
        if t is not None:
            self._loop.call_soon(self._flush_and_close, t)

    def _flush_and_close(self, t: asyncio.Transport) -> None:
        self._flush()
        if not t.is_closing():
            t.close()

    async def _start_tls(self) -> None:
        t = self.transport
        if t is None:
            return
        try:
            new = await self._loop.start_tls(t, self, self.ssl_context, server_side=True,
                                             ssl_handshake_timeout=30)
        except (ssl.SSLError, OSError, ConnectionError, asyncio.TimeoutError) as e:
            log.info("c2s %s: TLS handshake failed: %s", self.stream.peer, e)
            if self.transport is not None:
                self.transport.abort()
            return
        if new is None:
            return
        self.transport = new  # type: ignore[assignment]
        sslobj = new.get_extra_info("ssl_object")
        self.stream.tls_started(_cb_data(sslobj) if sslobj is not None else {})

    def _authenticated(self) -> None:
        self._uncount()
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None

    def _uncount(self) -> None:
        if self._counted_unauth:
            self._counted_unauth = False
            n = self.server.unauth_per_ip.get(self.peer_ip, 1) - 1
            if n <= 0:
                self.server.unauth_per_ip.pop(self.peer_ip, None)
            else:
                self.server.unauth_per_ip[self.peer_ip] = n

    def _auth_timeout(self) -> None:
        self._auth_timer = None
        if self.stream.username is None:
            self.stream.fail(StreamError("connection-timeout", "authentication took too long"))
