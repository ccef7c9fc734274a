"""The TCP side of a client connection: moves bytes between the asyncio transport and the
sans-IO C2SStream, and upgrades to TLS on request (STARTTLS; direct TLS is TLS from the start).
``TCPStreamConnection`` is the part any stream over TCP shares (external components use it too).
Batching, output bounds, the closing sequence, timeouts and the pre-authentication limits are
the shared transport core's (net/core.py), which the WebSocket transport uses as well."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from ..stream.c2s import C2SStream
from .core import DeferredWrites, StreamConnection, cb_data

if TYPE_CHECKING:
    from ..core.admission import Ticket
    from ..server import Server

__all__ = ["C2SConnection", "DeferredWrites", "TCPStreamConnection"]

log = logging.getLogger(__name__)

TLS_HANDSHAKE_TIMEOUT = 30.0


class TCPStreamConnection(StreamConnection, asyncio.Protocol):
    """A stream over a TCP connection (TLS or not): what is read goes to the stream, and the
    connection ends after our closing element. The subclass creates and attaches the stream."""

    __slots__ = ()

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._started(transport.get_extra_info("peername"), transport.get_extra_info("ssl_object"))

    def data_received(self, data: bytes) -> None:
        if self._closing:
            # Reading is paused after our closing tag, but uvloop starts reading after
            # connection_made whatever it did (a refusal): pause again, read nothing more.
            if self.transport is not None:
                self.transport.pause_reading()
            return
        ticket = self._preauth
        if ticket is None:
            self.stream.receive_data(data)
        else:
            self._receive_preauth(ticket, data)
        self._charge_reads()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection_lost()

    def _shutdown(self, t: asyncio.Transport) -> bool:
        """After our </stream:stream> (RFC 6120 §4.4)."""
        if self.stream.clean_close:
            t.close()  # the peer closed its stream first: both are closed
            return False
        # Nothing after the end is read: a peer that keeps sending (an endless stanza after a
        # stream error) fills its own buffers, not our CPU, and is reset when the time is up.
        t.pause_reading()
        if t.can_write_eof():
            t.write_eof()  # FIN after our closing tag
        return True


class C2SConnection(TCPStreamConnection):
    __slots__ = ("ssl_context",)

    def __init__(self, server: Server, ssl_context: ssl.SSLContext, direct_tls: bool,
                 preauth: Ticket | None = None) -> None:
        cfg = server.config.c2s
        super().__init__(server, max_stanza_size=cfg.max_stanza_size, auth_timeout=cfg.auth_timeout,
                         admission=server.preauth)
        # admitted before its TLS handshake (direct TLS: net/listener.py), the slot is ours
        self._preauth = preauth
        self.ssl_context = ssl_context
        stream = C2SStream(server, self._write, secure=direct_tls,
                           max_stanza_size=cfg.max_stanza_size,
                           require_encryption=cfg.require_encryption,
                           allow_plain=cfg.allow_plain, max_auth_attempts=cfg.max_auth_attempts)
        stream.write_soon = self._write_soon
        self._attach(stream)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        t = self.transport
        if self.stream.tls_requested and not self._closing and t is not None and not t.is_closing():
            self._flush()
            t.pause_reading()
            asyncio.ensure_future(self._start_tls())

    # -- internals ----------------------------------------------------------------------------
    async def _start_tls(self) -> None:
        t = self.transport
        if t is None:
            return
        try:
            new = await self._loop.start_tls(t, self, self.ssl_context, server_side=True,
                                             ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (TimeoutError, ssl.SSLError, OSError, ConnectionError) as e:
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
        self.stream.tls_started(cb_data(sslobj) if sslobj is not None else {})
