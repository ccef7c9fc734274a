"""A deliberately low-level XMPP client for adversarial tests: it writes exactly the bytes it is
given and reads the server's replies as parsed elements (with the stdlib-based tokenizer)."""

from __future__ import annotations

import asyncio
import base64
import ssl

from mbxmpp.xml import STREAM_END, Element, PyXMLParser, StreamHeader, XMLError

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>")


def client_ssl() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RawClient:
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
