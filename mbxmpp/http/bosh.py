"""BOSH (XEP-0124, XEP-0206) at ``/http-bind``: the c2s stream carried by a sequence of HTTP
requests. A ``BoshSession`` is a ``StreamConnection`` (net/core.py) whose transport is that
sequence: what the core writes (one batch per loop iteration) answers the oldest request held
open, or waits for the next one; batching, output bounds, the authentication timeout, the
pre-auth admission and the [limits] stanza throttle are the core's, as over TCP and WebSocket.
The stream is the RFC 7395 framed one (stream/framed.py: standalone elements, no header
bytes); the session creation response carries what a stream header would.

The rules of XEP-0124 kept here:
- session creation: ``to`` required (else improper-addressing; not ours: host-unknown),
  ``wait`` capped at 60 s, ``hold`` at 1, ``requests`` = hold + 1, ``xmpp:version`` required
  (else the stream error unsupported-version), the first response carries the stream features;
- requests are processed and answered in ``rid`` order, within a window of ``requests`` rids
  after the last one processed (beyond: item-not-found); a repeated rid gets its buffered
  response again, or item-not-found once that is gone; a repeat of a request still open takes
  its place (the old one gets a recoverable ``type='error'`` body);
- more than ``requests`` requests open at once (one more for pause or terminate) is
  policy-violation;
- ``ack``: reported on responses when the client asked for acknowledgements at creation; the
  client's ``ack`` drops the buffered responses it covers (``report``/``time`` are not sent);
- ``pause`` (up to ``[http] bosh_max_pause``): every open request is answered at once and the
  session may stay without one for that long;
- inactivity (``[http] bosh_inactivity``): without a live request for that long the session is
  lost, as a dropped TCP connection is (Stream Management may hibernate it); a held request
  whose HTTP connection closed does not count as live (checked every second);
- ``polling`` is announced (2 s) but not enforced: a ``hold='0'`` client is answered at once;
- ``type='terminate'`` from the client: its payloads are processed, then the stream ends cleanly;
- ``xmpp:restart='true'`` after SASL success: the features again.
Errors are ``<body type='terminate' condition='...'/>`` (HTTP 200; for a client that sent no
``ver``, XEP-0124's legacy HTTP codes), a stream error is ``remote-stream-error`` with the
``<stream:error/>`` inside. Requests that name no live session get HTTP 404 with item-not-found
(400 bad-request when the body is not a BOSH body at all, 413 policy-violation when too large).

Payloads in the httpbind namespace (stanzas without an xmlns) are taken as jabber:client, as
most servers do. The ``content`` attribute (a client-chosen response Content-Type) is ignored:
responses are always text/xml. No cookies. A browser ``Origin`` must be one the WebSocket
endpoint allows (CORS answers only those); OPTIONS answers the CORS preflight. New sessions per
address are limited by ``[limits] bosh_sessions_per_address`` (a burst for carrier NATs).
Channel binding (SCRAM-PLUS) is not offered: the requests of one session may come over
different TLS connections, so there is no one channel to bind to.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..core.admission import address_key
from ..errors import StreamError
from ..jid import JID, JIDError
from ..net.core import StreamConnection
from ..stream.c2s import ST_CLOSED, ST_HEADER
from ..stream.framed import FramedC2SStream, standalone
from ..xml import Element, XMLError, XMLParser
from ..xml.element import _escape_attr
from ..xml.ns import NS_CLIENT, NS_FRAMING
from .websocket import WebSocketEndpoint

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger(__name__)

PATH = "/http-bind"
NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
CONTENT_TYPE = "text/xml; charset=utf-8"
VERSION = (1, 11)
MAX_WAIT = 60
MAX_HOLD = 1
POLLING = 2           # announced shortest polling interval (seconds)
MAX_RID = 2 ** 53 - 1
MAX_REPEATS = 5       # repeats of one open request before policy-violation (XEP-0124 §14.3)
SWEEP = 1.0           # how often held requests are checked for a closed HTTP connection
LEGACY_STATUS = {"bad-request": 400, "policy-violation": 403, "item-not-found": 404}
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*\?>")
_SID_ATTR = re.compile(rb"""\ssid\s*=\s*['"]([A-Za-z0-9_-]{1,64})['"]""")
_BODY_NS = (b" xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'"
            b" xmlns:stream='http://etherx.jabber.org/streams'")


def body_bytes(attrs: str = "", payload: bytes = b"") -> bytes:
    head = b"<body" + _BODY_NS + (b" " + attrs.encode() if attrs else b"")
    return head + b"/>" if not payload else head + b">" + payload + b"</body>"


def terminate_bytes(condition: str | None = None, payload: bytes = b"") -> bytes:
    return body_bytes("type='terminate'" + (f" condition='{condition}'" if condition else ""), payload)


class BoshError(Exception):
    """A terminal binding condition (XEP-0124 §17.2)."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition


class BoshC2SStream(FramedC2SStream):
    """The framed stream without framing elements: BOSH's session creation and restart
    requests stand for <open/>, its terminate body for <close/>."""

    CLOSE_TAG = b""
    __slots__ = ("errored",)

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.errored = False

    def _header_bytes(self, attrs: str) -> bytes:
        return b""  # the session creation response carries the stream's id and host

    def fail(self, err: StreamError) -> None:
        if self.stage != ST_CLOSED:
            self.errored = True  # the terminate body says remote-stream-error
        super().fail(err)

    def open_stream(self, attrs: dict[str, str]) -> None:
        """What a stream header does: at session creation and at each restart."""
        try:
            self._accept_open(attrs)
            self._check_version(attrs)
            self._send_features()
        except StreamError as e:
            self.fail(e)

    def receive_elements(self, elements: list[Element]) -> None:
        for el in elements:
            if self.stage == ST_CLOSED:
                return
            if self.auth_held is not None:  # an external backend decides a login: held
                self.auth_held.append(el)  # type: ignore[arg-type]
                continue
            self._event(el)

    def receive_data(self, data: Any) -> None:
        # Only the input held during a login comes back this way: one payload element.
        self.receive_elements([data])

    def _negotiation_element(self, el: Element) -> None:
        if el.ns == NS_FRAMING:
            raise StreamError("unsupported-stanza-type", "no RFC 7395 framing over BOSH")
        if self.stage == ST_HEADER:
            raise StreamError("invalid-namespace", "restart the stream first (xmpp:restart='true')")
        super()._negotiation_element(el)


class _Request:
    """One HTTP request of a session, from its arrival to its response."""

    __slots__ = ("creation", "future", "http", "kind", "pause", "payload", "repeats", "rid", "size",
                 "timer")

    def __init__(self, rid: int, http: web.Request | None, payload: list[Element], kind: str,
                 size: int = 0, pause: int = 0, creation: bool = False) -> None:
        self.rid = rid
        self.size = size    # the HTTP body's length (the pre-auth byte budget)
        self.pause = pause  # seconds, for kind "pause"
        self.http = http
        self.future: asyncio.Future[bytes] = asyncio.get_event_loop().create_future()
        self.payload = payload
        self.kind = kind  # "", "pause", "terminate", "restart"
        self.creation = creation
        self.timer: asyncio.TimerHandle | None = None
        self.repeats = 0

    def live(self) -> bool:
        t = self.http.transport if self.http is not None else None
        return t is not None and not t.is_closing()

    def answer(self, data: bytes) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.future.done():
            self.future.set_result(data)


class BoshSession(StreamConnection):
    """A BOSH session; it is its own transport (``write`` is the core's output)."""

    __slots__ = ("acks", "ended", "endpoint", "final", "held", "hold", "idle_for", "inactivity",
                 "inactivity_timer", "last_rid", "legacy", "out", "out_size", "paused",
                 "requests", "responses", "settle_due", "sid", "ver", "wait", "waiting")
    transport_name = "bosh"

    def __init__(self, server: Server, endpoint: BoshEndpoint, *, wait: int, hold: int,
                 ver: str | None, acks: bool) -> None:
        cfg = server.config.c2s
        super().__init__(server, max_stanza_size=cfg.max_stanza_size, auth_timeout=cfg.auth_timeout,
                         admission=server.preauth)
        self.endpoint = endpoint
        self.sid = secrets.token_urlsafe(24)
        self.wait = wait
        self.hold = hold
        self.requests = hold + 1
        self.ver = ver
        self.legacy = ver is None
        self.acks = acks
        self.inactivity = server.config.http.bosh_inactivity
        self.idle_for = self.inactivity  # changed by a pause until the next request
        self.inactivity_timer: asyncio.TimerHandle | None = None
        self.last_rid = 0  # the highest rid processed (all below it were too)
        self.waiting: dict[int, _Request] = {}  # received, not processed yet (a gap, a pause)
        self.held: list[_Request] = []          # processed, waiting for output (rid order)
        self.responses: OrderedDict[int, bytes] = OrderedDict()  # for repeated rids
        self.out: list[bytes] = []
        self.out_size = 0
        self.paused = False   # the [limits] stanza throttle holds our input
        self.settle_due = False
        self.ended = False
        self.final: bytes | None = None  # the terminate body once the stream has ended
        stream = BoshC2SStream(server, self._write_payload, max_stanza_size=cfg.max_stanza_size,
                               require_encryption=cfg.require_encryption,
                               allow_plain=cfg.allow_plain, max_auth_attempts=cfg.max_auth_attempts)
        stream.write_soon = self._write_payload_soon
        self._attach(stream)
        self.transport = self  # type: ignore[assignment]

    # -- the stream's output ------------------------------------------------------------------
    def _write_payload(self, data: bytes) -> None:
        if data:
            self._write(data)

    def _write_payload_soon(self, data: bytes, within: float) -> None:
        self._write_soon(standalone(data), within)

    # -- the transport interface the core writes to -------------------------------------------
    def write(self, data: bytes) -> None:
        self.out.append(data)
        self.out_size += len(data)
        if self.held and self.stream.stage != ST_CLOSED:  # (a closed stream's end: _shutdown)
            self._answer_oldest()

    def is_closing(self) -> bool:
        return self.ended

    def get_write_buffer_size(self) -> int:
        return self.out_size

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        self._process()

    def can_write_eof(self) -> bool:
        return False

    def abort(self) -> None:
        self._end()

    close = abort

    def _shutdown(self, t: asyncio.Transport) -> bool:
        """The stream has ended (its error, if any, is in the output): the oldest open request
        carries <body type='terminate'/>, the others empty bodies; without one, the next
        request gets it, for CLOSE_TIMEOUT."""
        payload = self._take_out()
        self.final = terminate_bytes("remote-stream-error" if self.stream.errored else None, payload)
        if self.held or self.waiting:
            self._deliver_final()
            self._end()
            return False
        return True

    # -- requests -----------------------------------------------------------------------------
    async def request(self, http: web.Request, body: Element, rid: int, size: int) -> tuple[int, bytes]:
        ack = body.get("ack")
        if ack is not None and ack.isascii() and ack.isdigit():
            for old in [r for r in self.responses if r <= int(ack)]:
                del self.responses[old]
        if self.final is not None:  # ended, the terminate not delivered yet
            data = self.final
            self._end()
            return 200, data
        if rid <= self.last_rid or rid in self.waiting:
            return await self._repeat(http, rid)
        kind = _kind(body)
        pause = 0
        allowed = self.requests + (1 if kind in ("pause", "terminate") else 0)
        if len(self.held) + len(self.waiting) + 1 > allowed:
            raise BoshError("policy-violation", f"more than {self.requests} requests at once")
        if rid > self.last_rid + self.requests:
            raise BoshError("item-not-found", "rid outside the window")
        if kind == "pause":
            text = body.get("pause") or ""
            if not text.isascii() or not text.isdigit():
                raise BoshError("bad-request", "'pause' is a number of seconds")
            pause = int(text)
            if pause > self.server.config.http.bosh_max_pause:
                raise BoshError("policy-violation", "pause longer than maxpause")
        req = _Request(rid, http, _payloads(body), kind, size, pause)
        self._cancel_inactivity()  # (armed again when no request is open)
        self.waiting[rid] = req
        self._process()
        return 200, await asyncio.shield(req.future)

    async def _repeat(self, http: web.Request, rid: int) -> tuple[int, bytes]:
        cached = self.responses.get(rid)
        if cached is not None:
            return 200, cached
        old = self.waiting.get(rid) or next((r for r in self.held if r.rid == rid), None)
        if old is None:
            raise BoshError("item-not-found", "no response to repeat for that rid")
        old.repeats += 1
        if old.repeats > MAX_REPEATS:
            raise BoshError("policy-violation", "the same request repeated too often")
        # The new request takes the old one's place; the old one is told to recover.
        previous, old.future = old.future, asyncio.get_event_loop().create_future()
        old.http = http
        self._cancel_inactivity()
        if not previous.done():
            previous.set_result(body_bytes("type='error'"))
        return 200, await asyncio.shield(old.future)

    def _process(self) -> None:
        while not self.paused and not self.ended:
            req = self.waiting.pop(self.last_rid + 1, None)
            if req is None:
                break
            self.last_rid = req.rid
            self.idle_for = self.inactivity
            self._handle(req)
        if not self.settle_due and not self.ended:
            self.settle_due = True
            self._loop.call_soon(self._settle)

    def _handle(self, req: _Request) -> None:
        stream = self.stream
        if req.kind == "pause":
            # XEP-0124 §10: every open request is answered now, the pause without payloads.
            self.idle_for = float(max(1, req.pause))
            while self.held:
                self._answer_oldest()
            self._respond(req, body_bytes(), cache=False)
            self._arm_inactivity()
            return
        self.held.append(req)
        req.timer = self._loop.call_later(self.wait, self._expire, req)
        if req.kind == "restart":
            if req.payload or stream.stage != ST_HEADER or stream.username is None:
                self._binding_error("bad-request", "a restart comes alone, after SASL success")
                return
            stream.open_stream(self._open_attrs())
            return
        if req.payload:
            ticket = self._preauth
            if ticket is None:
                stream.receive_elements(req.payload)
            else:
                self._feed_preauth(ticket, req.size, stream.receive_elements, req.payload)
            self._charge_reads()
        if req.kind == "terminate" and not self.ended:
            stream.clean_close = True  # the client ended the session on purpose
            stream.close()

    def _settle(self) -> None:
        """After a batch of requests and its output: no more than ``hold`` requests stay open."""
        self.settle_due = False
        while len(self.held) > self.hold:
            self._answer_oldest()
        if self.out and self.held and self.stream.stage != ST_CLOSED:
            self._answer_oldest()  # output that waited for a request

    def _expire(self, req: _Request) -> None:
        req.timer = None
        while self.held and self.held[0].rid <= req.rid:
            self._answer_oldest()

    def _answer_oldest(self) -> None:
        req = self.held.pop(0)
        self._respond(req, self._body_for(req, self._take_out()))
        if not self.held:
            self._arm_inactivity()

    def _take_out(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        self.out_size = 0
        return data

    def _body_for(self, req: _Request, payload: bytes) -> bytes:
        attrs = []
        if req.creation:
            stream = self.stream
            attrs += [f"sid='{self.sid}'", f"wait='{self.wait}'", f"requests='{self.requests}'",
                      f"hold='{self.hold}'", f"inactivity='{int(self.inactivity + 0.999)}'",
                      f"polling='{POLLING}'",
                      f"maxpause='{int(self.server.config.http.bosh_max_pause)}'",
                      f"from='{_escape_attr(stream.host or '')}'", "secure='true'",
                      f"authid='{stream.stream_id}'", "xmpp:version='1.0'",
                      "xmpp:restartlogic='true'"]
            if self.ver is not None:
                attrs.append(f"ver='{self.ver}'")
            if self.acks:
                attrs.append(f"ack='{req.rid}'")
        elif self.acks and self.last_rid != req.rid:
            attrs.append(f"ack='{self.last_rid}'")
        return body_bytes(" ".join(attrs), payload)

    def _respond(self, req: _Request, data: bytes, cache: bool = True) -> None:
        if cache:
            self.responses[req.rid] = data
            while len(self.responses) > self.requests:
                self.responses.popitem(last=False)
        req.answer(data)

    # -- ending -------------------------------------------------------------------------------
    def _binding_error(self, condition: str, text: str = "") -> None:
        log.info("bosh %s: %s %s", self.stream.peer, condition, text)
        self.final = terminate_bytes(condition)
        self._deliver_final()
        self._end()

    def _deliver_final(self) -> None:
        """The terminate body on the oldest open request, empty bodies on the others."""
        pending = self.held + sorted(self.waiting.values(), key=lambda r: r.rid)
        self.held = []
        self.waiting.clear()
        for i, req in enumerate(pending):
            req.answer(self.final if i == 0 else body_bytes())  # type: ignore[arg-type]

    def _end(self) -> None:
        """The session is gone: forgotten, and its stream lost (Stream Management may keep
        the XMPP session for resumption) unless it had ended already."""
        if self.ended:
            return
        self.ended = True
        self.endpoint.sessions.pop(self.sid, None)
        self._cancel_inactivity()
        if self.final is None:
            self.final = terminate_bytes()
        self._deliver_final()
        self.out.clear()
        self._connection_lost()

    def _arm_inactivity(self) -> None:
        if self.inactivity_timer is None and not self.ended:
            self.inactivity_timer = self._loop.call_later(self.idle_for, self._inactive)

    def _cancel_inactivity(self) -> None:
        if self.inactivity_timer is not None:
            self.inactivity_timer.cancel()
            self.inactivity_timer = None

    def _inactive(self) -> None:
        self.inactivity_timer = None
        if self.held and any(r.live() for r in self.held):
            return
        log.info("bosh %s: no request for %.0f s, session lost", self.stream.peer, self.idle_for)
        self._end()

    def sweep(self) -> None:
        """Held requests whose HTTP connection closed do not keep the session alive."""
        if self.held and self.inactivity_timer is None and not any(r.live() for r in self.held):
            self._arm_inactivity()

    def _open_attrs(self) -> dict[str, str]:
        return {"to": self.stream.host or "", "version": "1.0"}


def _kind(body: Element) -> str:
    if body.get("type") == "terminate":
        return "terminate"
    if body.get("pause") is not None:
        return "pause"
    if body.get(f"{{{NS_XBOSH}}}restart") == "true":
        return "restart"
    return ""


def _payloads(body: Element) -> list[Element]:
    out = []
    for c in body.children:
        if c.__class__ is str:
            if c.strip():
                raise BoshError("bad-request", "character data in <body/>")
            continue
        if c.ns == NS_HTTPBIND:
            _as_client(c)
        out.append(c)
    return out


def _as_client(el: Element) -> None:
    """A payload without an xmlns of its own inherited httpbind's: it means jabber:client."""
    el.ns = NS_CLIENT
    el._bytes = None
    for c in el.elements():
        if c.ns == NS_HTTPBIND:
            _as_client(c)


class BoshEndpoint:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.sessions: dict[str, BoshSession] = {}
        self.max_body = server.config.c2s.max_stanza_size
        self._origins = WebSocketEndpoint(server)  # the same allow-list as /xmpp-websocket
        self._sweeper: asyncio.Task[None] | None = None

    # -- HTTP ---------------------------------------------------------------------------------
    def _cors(self, request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Vary"] = "Origin"
        return resp

    def _origin_refused(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        return origin is not None and not self._origins.origin_allowed(origin, request)

    async def preflight(self, request: web.Request) -> web.StreamResponse:
        if self._origin_refused(request):
            raise web.HTTPForbidden(text="origin not allowed\n")
        resp = web.Response(status=204)
        resp.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        resp.headers["Access-Control-Allow-Headers"] = "Content-Type"
        resp.headers["Access-Control-Max-Age"] = "86400"
        return self._cors(request, resp)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._origin_refused(request):
            log.info("bosh from %s refused: origin %r", request.remote, request.headers.get("Origin"))
            raise web.HTTPForbidden(text="origin not allowed\n")
        status, data = await self._answer(request)
        resp = web.Response(status=status, body=data, headers={"Content-Type": CONTENT_TYPE,
                                                                "Cache-Control": "no-store"})
        return self._cors(request, resp)

    async def _read(self, request: web.Request) -> tuple[bytes, bool]:
        """The body, and whether it fits ``max_body`` (if not: only its start)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.readany()
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_body or (request.content_length or 0) > self.max_body:
                return chunks[0], False

    async def _answer(self, request: web.Request) -> tuple[int, bytes]:
        data, whole = await self._read(request)
        if not whole:
            # Like a stanza over the size limit on TCP: the session the body names (if it is
            # one of ours) ends with that stream error.
            session = self._named(data)
            if session is not None:
                session.stream.fail(StreamError(
                    "policy-violation", f"body larger than the stanza size limit ({self.max_body} bytes)"))
            return 413, terminate_bytes("policy-violation")
        try:
            body = _parse(data, self.max_body)
        except BoshError as e:
            # Bad XML in a session's body ends that session, as it ends a TCP stream.
            named = self._named(data)
            if named is not None:
                named._binding_error(e.condition, str(e))
                return (200 if not named.legacy else 400), terminate_bytes(e.condition)
            return 400, terminate_bytes(e.condition)
        sid = body.get("sid")
        rid_text = body.get("rid") or ""
        session = self.sessions.get(sid) if sid is not None else None
        if sid is not None and session is None:
            return 404, terminate_bytes("item-not-found")
        legacy = session.legacy if session is not None else body.get("ver") is None
        try:
            if not rid_text.isascii() or not rid_text.isdigit() or not 0 < int(rid_text) <= MAX_RID:
                raise BoshError("bad-request", "'rid' must be a positive integer")
            rid = int(rid_text)
            if session is None:
                return await self._create(request, body, rid)
            return await session.request(request, body, rid, len(data))
        except BoshError as e:
            if session is not None:
                session._binding_error(e.condition, str(e))
            status = LEGACY_STATUS.get(e.condition, 200) if legacy else 200
            return status, terminate_bytes(e.condition)

    def _named(self, data: bytes) -> BoshSession | None:
        """The live session a body that cannot be parsed names (its start tag's sid)."""
        m = _SID_ATTR.search(data[:1024])
        return self.sessions.get(m.group(1).decode()) if m else None

    async def _create(self, request: web.Request, body: Element, rid: int) -> tuple[int, bytes]:
        server = self.server
        to = body.get("to")
        if not to:
            raise BoshError("improper-addressing", "'to' is required")
        try:
            host = JID.parse(to).full
        except JIDError:
            host = ""
        if host not in server.hosts:
            raise BoshError("host-unknown")
        try:
            wait = min(MAX_WAIT, int(body.get("wait") or MAX_WAIT))
            hold = min(MAX_HOLD, int(body.get("hold") or 1))
        except ValueError:
            raise BoshError("bad-request", "'wait' and 'hold' are integers") from None
        if wait < 0 or hold < 0:
            raise BoshError("bad-request", "'wait' and 'hold' are not negative")
        ver = _version(body.get("ver"))
        ip = request.remote or ""
        if server.limits.take("bosh_sessions_per_address", address_key(ip)):
            raise BoshError("policy-violation", "too many new sessions from your address")
        session = BoshSession(server, self, wait=wait, hold=hold, ver=ver,
                              acks=body.get("ack") is not None)
        self.sessions[session.sid] = session
        self._start_sweeper()
        req = _Request(rid, request, [], "", creation=True)
        session.last_rid = rid
        session.held.append(req)
        req.timer = session._loop.call_later(wait, session._expire, req)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        session._started((ip, peer[1] if peer else 0), None)
        stream = session.stream
        if stream.stage != ST_CLOSED:
            attrs = {"to": host, "version": body.get(f"{{{NS_XBOSH}}}version") or "0.9"}
            lang = body.get("xml:lang")
            if lang:
                attrs["xml:lang"] = lang
            stream.open_stream(attrs)
        session._process()
        return 200, await asyncio.shield(req.future)

    # -- housekeeping -------------------------------------------------------------------------
    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def stop(self, app: web.Application) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def _sweep(self) -> None:
        while self.sessions:
            await asyncio.sleep(SWEEP)
            for session in list(self.sessions.values()):
                session.sweep()


def _parse(data: bytes, limit: int) -> Element:
    data = _XML_DECL.sub(b"", data, count=1)
    parser = XMLParser(max_stanza_size=limit + 1, framed=True)
    try:
        events = parser.feed(data)
    except XMLError as e:
        raise BoshError("bad-request", f"not XML: {e}") from None
    if len(events) != 1 or not isinstance(events[0], Element):
        raise BoshError("bad-request", "one <body/> element is expected")
    body = events[0]
    if body.tag != "body" or body.ns != NS_HTTPBIND:
        raise BoshError("bad-request", f"the root must be <body xmlns='{NS_HTTPBIND}'/>")
    return body


def _version(ver: str | None) -> str | None:
    """The BOSH version we answer: the client's or ours, whichever is lower."""
    if ver is None:
        return None
    major, _, minor = ver.partition(".")
    if not (major.isascii() and major.isdigit() and minor.isascii() and minor.isdigit()):
        raise BoshError("bad-request", "'ver' is <major>.<minor>")
    v = min((int(major), int(minor)), VERSION)
    return f"{v[0]}.{v[1]}"


def register(server: Server) -> BoshEndpoint:
    endpoint = BoshEndpoint(server)
    server.http.add_route("POST", PATH, endpoint.handle)
    server.http.add_route("OPTIONS", PATH, endpoint.preflight)
    server.http.app.on_cleanup.append(endpoint.stop)
    return endpoint
