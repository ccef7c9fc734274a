"""A deliberately low-level XMPP client for adversarial tests: it writes exactly the bytes it is
given and reads the server's replies as parsed elements (with the stdlib-based tokenizer).

``RawClient`` speaks TCP; ``WSRawClient`` (same interface) speaks RFC 7395 WebSocket, one message
per ``send``; ``BoshRawClient`` speaks BOSH, one request per ``send``. ``connect_client(daemon,
transport)`` opens any of them, for tests parametrised over the transports (the ``transport``
fixture of tests/conftest.py)."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import xml.etree.ElementTree as ET
from typing import Any

import aiohttp

from mbxmpp.xml import STREAM_END, Element, PyXMLParser, StreamHeader, XMLError

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>")


def client_ssl() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RawClient:
    loss_delay = 0.0  # how long the server takes to notice abort() (BOSH: its inactivity period)

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = PyXMLParser(max_stanza_size=10 * 1024 * 1024)
        self.events: list = []
        self.closed = False

    @classmethod
    async def connect(cls, port: int, *, direct_tls: bool = False) -> RawClient:
        r, w = await asyncio.open_connection("127.0.0.1", port,
                                             ssl=client_ssl() if direct_tls else None)
        return cls(r, w)

    async def send(self, data: str | bytes) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def next(self, timeout: float = 5.0) -> Element | StreamHeader | object:
        """The next thing the server sent: a header, an element, or STREAM_END."""
        while not self.events:
            if self.closed:
                return STREAM_END
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                self.closed = True
                return STREAM_END
            try:
                self.events.extend(self.parser.feed(data))
            except XMLError as e:
                raise AssertionError(f"server sent bad XML: {e}") from e
        return self.events.pop(0)

    async def element(self, timeout: float = 5.0) -> Element:
        while True:
            ev = await self.next(timeout)
            if isinstance(ev, Element):
                return ev
            if ev is STREAM_END:
                raise AssertionError("stream closed")

    async def open(self, to: str = "localhost") -> Element:
        """Send a stream header; return the features."""
        self.parser.reset()
        await self.send(HEADER.format(to=to))
        ev = await self.next()
        assert isinstance(ev, StreamHeader), ev
        return await self.element()

    async def secure_open(self, to: str = "localhost") -> Element:
        """Open a secure stream (STARTTLS here); return the features."""
        await self.open(to)
        await self.starttls()
        return await self.open(to)

    def abort(self) -> None:
        """Cut the connection, as a client losing its network does."""
        self.writer.transport.abort()

    def ssl_object(self) -> ssl.SSLObject | None:
        return self.writer.get_extra_info("ssl_object")

    async def starttls(self) -> None:
        await self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        proceed = await self.element()
        assert proceed.tag == "proceed", proceed
        await self.writer.start_tls(client_ssl())

    async def auth(self, user: str, password: str, *, to: str = "localhost",
                   direct_tls: bool = False) -> Element:
        """STARTTLS (unless direct TLS) and SASL PLAIN; returns the post-auth features."""
        await self.open(to)
        if not direct_tls:
            await self.starttls()
            await self.open(to)
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        res = await self.element()
        assert res.tag == "success", res
        return await self.open(to)

    async def login(self, user: str, password: str, *, to: str = "localhost",
                    resource: str | None = "raw", direct_tls: bool = False) -> str:
        """STARTTLS (unless direct TLS), SASL PLAIN, bind; returns the bound full JID."""
        await self.auth(user, password, to=to, direct_tls=direct_tls)
        return await self.bind(resource)

    async def bind(self, resource: str | None = "raw") -> str:
        r = f"<resource>{resource}</resource>" if resource else ""
        await self.send(f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{r}</bind></iq>")
        res = await self.element()
        assert res.get("type") == "result", res
        return res.first_child().findtext("jid")  # type: ignore[union-attr,return-value]

    async def stream_error(self, timeout: float = 5.0) -> str:
        """Read until a stream error arrives; return its condition (and expect the close)."""
        while True:
            ev = await self.next(timeout)
            if ev is STREAM_END:
                raise AssertionError("stream closed without an error")
            if isinstance(ev, Element) and ev.tag == "error" and ev.ns == "http://etherx.jabber.org/streams":
                cond = next(c.tag for c in ev.elements()
                            if c.ns == "urn:ietf:params:xml:ns:xmpp-streams" and c.tag != "text")
                return cond

    async def expect_closed(self, timeout: float = 5.0) -> None:
        while True:
            ev = await self.next(timeout)
            if ev is STREAM_END:
                return

    async def close(self) -> None:
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except Exception:
            pass


NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{to}' version='1.0'/>"
CLOSE = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
_STANZA_TAGS = {"{jabber:client}message", "{jabber:client}presence", "{jabber:client}iq"}


class WSRawClient(RawClient):
    """RawClient's interface over RFC 7395: each ``send`` is one text message, sent verbatim
    (but the TCP closing tag ``</stream:stream>`` is sent as its framed equivalent, <close/>).
    Every message the server sends is checked to be one standalone element (namespaces
    declared, stanzas in jabber:client explicitly); the server's <open/> is returned as a
    StreamHeader, its <close/> and the end of the WebSocket as STREAM_END."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.parser = PyXMLParser(max_stanza_size=10 * 1024 * 1024, framed=True)
        self.events: list = []
        self.closed = False
        self.messages: list[str] = []  # every text message received, in order
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, port: int, *, direct_tls: bool = False, origin: str | None = None,
                      protocols: tuple[str, ...] = ("xmpp",)) -> WSRawClient:  # type: ignore[override]
        session = aiohttp.ClientSession()
        headers = {"Origin": origin} if origin else {}
        try:
            ws = await session.ws_connect(f"wss://127.0.0.1:{port}/xmpp-websocket",
                                          protocols=protocols, ssl=client_ssl(), headers=headers,
                                          autoclose=False, autoping=True, max_msg_size=0)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, bytes):  # exactly these bytes, as one text message (even if not UTF-8)
            await self.ws.send_frame(data, aiohttp.WSMsgType.TEXT)
            return
        await self.ws.send_str(CLOSE if data == "</stream:stream>" else data)

    async def secure_open(self, to: str = "localhost") -> Element:
        return await self.open(to)  # wss: secure from the start

    def abort(self) -> None:
        self._transport().abort()

    def ssl_object(self) -> ssl.SSLObject | None:
        return self._transport().get_extra_info("ssl_object")

    def _transport(self) -> asyncio.Transport:
        conn = self.ws._conn  # aiohttp keeps the connection here
        assert conn is not None and conn.transport is not None
        return conn.transport

    async def next(self, timeout: float = 5.0) -> Element | StreamHeader | object:
        while not self.events:
            if self.closed:
                return STREAM_END
            msg = await asyncio.wait_for(self.ws.receive(), timeout)
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.messages.append(msg.data)
                self.events.append(self._one_element(msg.data))
            elif msg.type is aiohttp.WSMsgType.CLOSE:
                self.close_code = msg.data
                await self.ws.close()
                self.closed = True
            elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                              aiohttp.WSMsgType.ERROR):
                self.closed = True
            else:
                raise AssertionError(f"server sent a {msg.type} message")
        ev = self.events.pop(0)
        if isinstance(ev, Element) and ev.ns == NS_FRAMING:
            if ev.tag == "open":
                return StreamHeader("stream", "http://etherx.jabber.org/streams", ev.attrs,
                                    "jabber:client", "stream")
            if ev.tag == "close":
                return STREAM_END
        return ev

    def _one_element(self, text: str) -> Any:
        try:
            root = ET.fromstring(text)  # a standalone document: its namespaces declared
            events = self.parser.feed(text.encode())
        except (ET.ParseError, XMLError) as e:
            raise AssertionError(f"server message is not one standalone element: {e}: {text!r}") from e
        assert len(events) == 1, text
        if root.tag.split("}")[-1] in ("message", "presence", "iq"):
            assert root.tag in _STANZA_TAGS, f"stanza without xmlns='jabber:client': {text!r}"
        return events[0]

    async def open(self, to: str = "localhost") -> Element:
        await self.send(OPEN.format(to=to))
        ev = await self.next()
        assert isinstance(ev, StreamHeader), ev
        return await self.element()

    async def auth(self, user: str, password: str, *, to: str = "localhost",
                   direct_tls: bool = False) -> Element:
        return await super().auth(user, password, to=to, direct_tls=True)  # wss is the TLS

    async def starttls(self) -> None:
        raise AssertionError("no STARTTLS over WebSocket")

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), 2)
        except Exception:
            pass
        await self.session.close()


NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"


class BoshRawClient(RawClient):
    """RawClient's interface over BOSH (XEP-0124/0206) at /http-bind: the first ``open`` creates
    the session (``hold='1'``), later ones are restarts (``xmpp:restart='true'``); each ``send``
    is one request with the next rid carrying the given elements (``</stream:stream>`` becomes
    ``type='terminate'``); whenever no request is open an empty one is, so the server always has
    one to answer. At most ``requests`` (the server's; hold + 1) are open at once: what is sent
    meanwhile waits and goes in one body with whatever else waits, as browsers' BOSH clients
    do. Responses are taken in rid order; each is checked to be one <body/> whose
    payloads are standalone (stanzas in jabber:client explicitly). The creation response is
    returned as a StreamHeader (its attributes: the body's), a terminate body as its payloads
    then STREAM_END (its condition in ``terminate_condition``).

    ``abort`` drops the HTTP connections and stops requesting: the server notices after its
    inactivity period plus its check of closed connections; ``loss_delay`` is that time with a
    daemon run with ``[http] bosh_inactivity = "1s"``."""

    loss_delay = 2.5

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.parser = PyXMLParser(max_stanza_size=10 * 1024 * 1024, framed=True)
        self.events: list = []
        self.closed = False
        self.sid: str | None = None
        self.rid = 1_000_000 + int.from_bytes(os.urandom(4), "big")
        self.next_answer = self.rid  # responses are taken in rid order
        self.answers: dict[int, str] = {}
        self.open_requests = 0
        self.max_open = 2
        self.queue: list[bytes] = []  # payloads waiting for a free request (b"": terminate)
        self.tasks: set[asyncio.Task] = set()
        self.arrived = asyncio.Event()
        self.bodies: list[str] = []  # every response body, in rid order
        self.creation: dict[str, str] = {}
        self.terminate_condition: str | None = None
        self.headers: dict[str, str] = {}
        self.error: BaseException | None = None
        self.aborted = False

    @classmethod
    async def connect(cls, port: int, *, direct_tls: bool = False,  # type: ignore[override]
                      origin: str | None = None) -> BoshRawClient:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl(), limit=8))
        c = cls(session, f"https://127.0.0.1:{port}/http-bind")
        if origin:
            c.headers["Origin"] = origin
        return c

    # -- requests -------------------------------------------------------------------------------
    async def post_raw(self, data: str | bytes) -> tuple[int, str]:
        """One request with exactly these bytes, outside the session's bookkeeping."""
        async with self.session.post(self.url, data=data, headers={
                "Content-Type": "text/xml; charset=utf-8", **self.headers}) as resp:
            return resp.status, await resp.text()

    def body(self, attrs: str = "", payload: str = "", rid: int | None = None) -> str:
        rid = self.take_rid() if rid is None else rid
        sid = f" sid='{self.sid}'" if self.sid else ""
        return (f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' rid='{rid}'{sid}"
                f"{' ' + attrs if attrs else ''}" + (f">{payload}</body>" if payload else "/>"))

    def take_rid(self) -> int:
        rid = self.rid
        self.rid += 1
        return rid

    def _request(self, attrs: str = "", payload: bytes = b"") -> None:
        rid = self.take_rid()
        # (the payload as given, even if it is not UTF-8)
        data = self.body(attrs, "\0", rid).encode().replace(b"\0", payload) if payload \
            else self.body(attrs, "", rid).encode()
        self.open_requests += 1
        task = asyncio.ensure_future(self._exchange(rid, data))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _exchange(self, rid: int, data: bytes) -> None:
        try:
            status, text = await self.post_raw(data)
        except (aiohttp.ClientError, OSError) as e:
            if not self.aborted:
                self.error = e
            self.arrived.set()
            return
        finally:
            self.open_requests -= 1
        if status != 200:
            self.error = AssertionError(f"HTTP {status}: {text}")
        self.answers[rid] = text
        while self.next_answer in self.answers:
            self._take(self.answers.pop(self.next_answer))
            self.next_answer += 1
        self.arrived.set()
        self._pump()

    def _pump(self) -> None:
        if self.closed or self.aborted:
            return
        while self.queue and self.open_requests < self.max_open:
            if self.queue[0] == b"":
                self.queue.pop(0)
                self._request("type='terminate'")
                continue
            n = self.queue.index(b"") if b"" in self.queue else len(self.queue)
            payload, self.queue[:n] = b"".join(self.queue[:n]), []
            self._request(payload=payload)
        if self.open_requests == 0 and self.sid:
            self._request()  # one always open, for the server to answer

    def _take(self, text: str) -> None:
        self.bodies.append(text)
        try:
            root = ET.fromstring(text)
        except ET.ParseError as e:
            raise AssertionError(f"server response is not XML: {e}: {text!r}") from e
        assert root.tag == f"{{{NS_HTTPBIND}}}body", text
        for child in root:
            if child.tag.split("}")[-1] in ("message", "presence", "iq"):
                assert child.tag in _STANZA_TAGS, f"stanza without xmlns='jabber:client': {text!r}"
        (body,) = self.parser.feed(text.encode())
        self.parser.reset()
        if "sid" in body.attrs and self.sid is None:
            self.sid = body.attrs["sid"]
            self.creation = dict(body.attrs)
            self.max_open = int(body.attrs.get("requests", "2"))
            self.events.append(StreamHeader("stream", "http://etherx.jabber.org/streams",
                                            body.attrs, "jabber:client", "stream"))
        self.events.extend(body.elements())
        if body.get("type") == "terminate":
            self.terminate_condition = body.get("condition")
            self.events.append(STREAM_END)
            self.closed = True

    async def next(self, timeout: float = 5.0) -> Element | StreamHeader | object:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.events:
            if self.error is not None:
                raise AssertionError(f"BOSH request failed: {self.error}")
            if self.closed or self.aborted:
                return STREAM_END
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), max(0.0, deadline - loop.time()))
        return self.events.pop(0)

    async def send(self, data: str | bytes) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.queue.append(b"" if raw == b"</stream:stream>" else raw)
        self._pump()

    async def open(self, to: str = "localhost") -> Element:
        if self.sid is None:
            self._request(f"to='{to}' xml:lang='en' ver='1.11' wait='60' hold='1' ack='1' "
                          "xmpp:version='1.0'")
        else:
            self._request(f"to='{to}' xml:lang='en' xmpp:restart='true'")
            ev = await self.element()
            assert ev.tag == "features", ev
            return ev
        ev = await self.next()
        assert isinstance(ev, StreamHeader), ev
        return await self.element()

    async def secure_open(self, to: str = "localhost") -> Element:
        return await self.open(to)  # https is the TLS

    async def auth(self, user: str, password: str, *, to: str = "localhost",
                   direct_tls: bool = False) -> Element:
        return await super().auth(user, password, to=to, direct_tls=True)

    async def starttls(self) -> None:
        raise AssertionError("no STARTTLS over BOSH")

    def ssl_object(self) -> ssl.SSLObject | None:
        return None  # the requests of one session may come over different TLS connections

    def abort(self) -> None:
        self.aborted = True
        for task in list(self.tasks):
            task.cancel()
        connector = self.session.connector
        if connector is not None:
            asyncio.ensure_future(connector.close())

    async def close(self) -> None:
        # What was sent goes out first, then a terminate: the session ends now, as it does
        # when a TCP connection closes (a BOSH server could only notice a vanished client
        # after its inactivity period).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        if self.sid is not None and not self.closed and not self.aborted and b"" not in self.queue:
            self.queue.append(b"")
            self._pump()
        while not self.closed and not self.aborted and self.sid is not None \
                and loop.time() < deadline:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), deadline - loop.time())
            except TimeoutError:
                break
        self.closed = True
        for task in list(self.tasks):
            task.cancel()
        await self.session.close()


async def connect_client(daemon: Any, transport: str, **kw: Any) -> RawClient:
    """A raw client of ``daemon`` over ``transport``: "tcp" (STARTTLS port), "ws" or "bosh"."""
    if transport == "bosh":
        return await BoshRawClient.connect(daemon.http, **kw)
    if transport == "ws":
        return await WSRawClient.connect(daemon.http, **kw)
    return await RawClient.connect(daemon.c2s, **kw)
