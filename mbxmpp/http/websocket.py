"""XMPP over WebSocket (RFC 7395) at ``/xmpp-websocket``: the c2s stream, framed
(stream/framed.py), on the shared transport core (net/core.py).

The handshake: the ``xmpp`` sub-protocol is required. A request that does not offer it gets a
plain HTTP 400 and no upgrade: RFC 6455 §4.2.2 lets the server refuse a handshake it will not
accept with an HTTP error, and an upgrade without the sub-protocol would only be closed by the
client at once (RFC 7395 §3.1), after costing a connection. A browser's ``Origin`` must be one
of ours (the hosts' https origins, ``[http] public_url``'s, ``[http] websocket_origins``, or
the page's own: served by this HTTP side, like the web chat), else
403: a page elsewhere must not ride on the user's network position. Native clients send no
Origin and are served.

Messages: text only, each one complete element (RFC 7395 §3.3.3). A binary message is the
stream error <unsupported-encoding/> (the stream's encoding is UTF-8 text, RFC 7395 §3.2) and
the WebSocket closes with 1003 (RFC 6455 §7.4.1, "unsupported data"); text that is not exactly
one element is <not-well-formed/>; a message larger than ``[c2s] max_stanza_size`` is
<policy-violation/>. Every stream error is followed by <close/>, then the WebSocket close.

Output is written as ready-made frames straight to the connection's transport, coalesced per
loop iteration like TCP output: one message per element, many messages per write.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from ..errors import StreamError
from ..net.core import CLOSE_TIMEOUT, StreamConnection
from ..stream.framed import FramedC2SStream, standalone

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger(__name__)

PATH = "/xmpp-websocket"
CHARGE_EVERY = 16  # stanzas between charges of the [limits] stanzas_per_session throttle
SUBPROTOCOL = "xmpp"


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked text frame (RFC 6455 §5.2; a server never masks)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


class WebSocketConnection(StreamConnection):
    __slots__ = ("_close_task", "close_code", "max_message", "ws")
    transport_name = "websocket"

    def __init__(self, server: Server, ws: web.WebSocketResponse) -> None:
        cfg = server.config.c2s
        super().__init__(server, max_stanza_size=cfg.max_stanza_size, auth_timeout=cfg.auth_timeout,
                         admission=server.preauth)
        self.ws = ws
        self.close_code = WSCloseCode.OK
        self._close_task: asyncio.Future[Any] | None = None
        self.max_message = cfg.max_stanza_size
        stream = FramedC2SStream(server, self._write_message, max_stanza_size=cfg.max_stanza_size,
                                 require_encryption=cfg.require_encryption,
                                 allow_plain=cfg.allow_plain,
                                 max_auth_attempts=cfg.max_auth_attempts)
        stream.write_soon = self._write_message_soon
        self._attach(stream)

    def _write_message(self, data: bytes) -> None:
        self._write(text_frame(standalone(data)))

    def _write_message_soon(self, data: bytes, within: float) -> None:
        self._write_soon(text_frame(standalone(data)), within)

    async def run(self, request: web.Request) -> None:
        self.transport = request.transport  # type: ignore[assignment]
        t = self.transport
        self._started(t.get_extra_info("peername") if t is not None else None,
                      t.get_extra_info("ssl_object") if t is not None else None)
        receive = self.ws.receive
        stream = self.stream
        text = WSMsgType.TEXT
        throttle = self._throttle
        try:
            while True:
                msg = await receive()
                kind = msg.type
                if kind is text:
                    if self._closing:
                        continue  # what the peer sends after our <close/> is discarded
                    data = msg.data
                    if len(data) > self.max_message:
                        stream.fail(StreamError("policy-violation", "message larger than the "
                                                f"stanza size limit ({self.max_message} bytes)"))
                        continue
                    ticket = self._preauth
                    if ticket is None:
                        stream.receive_data(data)
                    else:
                        self._receive_preauth(ticket, data)
                    # A message is one stanza, not a read of many: the throttle is charged
                    # every few stanzas (the count is cumulative: nothing goes uncounted).
                    if throttle is not None and stream.stanzas_in - throttle.counted >= CHARGE_EVERY:
                        self._charge_reads()
                elif kind is WSMsgType.BINARY:
                    if not self._closing:
                        self.close_code = WSCloseCode.UNSUPPORTED_DATA
                        stream.fail(StreamError("unsupported-encoding",
                                                "XMPP over WebSocket is carried in text messages"))
                else:  # CLOSE, CLOSING, CLOSED, ERROR: the WebSocket is ending
                    break
        finally:
            if self._close_task is not None:
                try:
                    await self._close_task
                except (TimeoutError, OSError) as e:  # the peer went away meanwhile
                    log.debug("websocket %s: close: %s", stream.peer, e)
            self._connection_lost()

    def _shutdown(self, t: asyncio.Transport) -> bool:
        # RFC 7395 §3.6: after our <close/> (or the answer to the client's), the server closes
        # the WebSocket; aiohttp waits for the client's close frame (at most CLOSE_TIMEOUT).
        self._close_task = asyncio.ensure_future(self.ws.close(code=self.close_code))
        return True


class WebSocketEndpoint:
    """The route handler; ``allowed_origins`` is computed once the listener is bound."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._origins: frozenset[str] | None = None
        self._origins_for: tuple[str, ...] = ()  # the domains they were made for

    def allowed_origins(self) -> frozenset[str]:
        if self._origins is None or self._origins_for != self.server.config.server.domains:
            self._origins_for = self.server.config.server.domains  # (domains change at run time)
            http = self.server.http
            origins = set(self.server.config.http.websocket_origins)
            for host in self.server.config.server.domains:
                origins.add(f"https://{host}")
                origins.add(_origin(http.public_url(host)))
            self._origins = frozenset(o.lower().rstrip("/") for o in origins)
        return self._origins

    def origin_allowed(self, origin: str, request: web.Request) -> bool:
        origin = origin.lower().rstrip("/")
        # Same origin: a page this server served (the web chat, reached by whatever name).
        return (origin in self.allowed_origins()
                or origin == f"{request.scheme}://{request.host}".lower())

    async def handle(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and not self.origin_allowed(origin, request):
            log.info("websocket from %s refused: origin %r", request.remote, origin)
            raise web.HTTPForbidden(text="origin not allowed\n")
        cfg = self.server.config.c2s
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), compress=False, autoclose=True,
                                   autoping=True, timeout=CLOSE_TIMEOUT, decode_text=False,
                                   # larger than the limit we enforce, so that an oversized
                                   # message gets our stream error, not only aiohttp's close
                                   max_msg_size=2 * cfg.max_stanza_size + 4096)
        ready = ws.can_prepare(request)
        if not ready.ok:
            raise web.HTTPBadRequest(text="a WebSocket upgrade is expected here\n")
        if ready.protocol != SUBPROTOCOL:
            raise web.HTTPBadRequest(
                text="the 'xmpp' WebSocket sub-protocol is required (RFC 7395 §3.1)\n")
        await ws.prepare(request)
        await WebSocketConnection(self.server, ws).run(request)
        return ws


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def register(server: Server) -> WebSocketEndpoint:
    endpoint = WebSocketEndpoint(server)
    server.http.add_route("GET", PATH, endpoint.handle)
    return endpoint
