"""XMPP over WebSocket (RFC 7395) at /xmpp-websocket: the handshake (the xmpp sub-protocol,
Origin), the framing (<open/>, <close/>, one element per message, standalone elements), and
what bad input gets."""

from __future__ import annotations

import asyncio
import base64
import os
import socket

import aiohttp
import pytest

from tests.daemon import Daemon
from tests.rawclient import CLOSE, OPEN, STREAM_END, WSRawClient, client_ssl

PW = "ws-pass"


@pytest.fixture(scope="module")
def daemon():
    d = Daemon(domains=("localhost", "example.test"),
               http_extra='websocket_origins = ["https://chat.example.net"]',
               c2s_extra='max_stanza_size = "16KiB"')
    for u in ("alice@localhost", "bob@localhost"):
        d.add_user(u, PW)
    d.start()
    yield d
    d.finish()


async def test_login_and_chat_over_websocket(daemon):
    a = await WSRawClient.connect(daemon.http)
    feats = await a.open()
    assert feats.find("starttls", "urn:ietf:params:xml:ns:xmpp-tls") is None  # RFC 7395 §3.9
    mechs = [m.text for m in feats.find("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl").elements()]
    assert "SCRAM-SHA-256" in mechs and "PLAIN" in mechs
    await a.close()
    a = await WSRawClient.connect(daemon.http)
    jid = await a.login("alice", PW, resource="ws")
    assert jid == "alice@localhost/ws"
    b = await WSRawClient.connect(daemon.http)
    await b.login("bob", PW, resource="ws")
    await b.send("<message xmlns='jabber:client' to='alice@localhost/ws' type='chat' id='m1'>"
                 "<body>over websocket</body></message>")
    m = await a.element()
    assert m.tag == "message" and m.findtext("body") == "over websocket"
    assert m.get("from") == "bob@localhost/ws"
    # a clean close: our <close/>, the server's, then the WebSocket close
    await a.send(CLOSE)
    assert await a.next() is STREAM_END
    await a.expect_closed()
    assert a.close_code == aiohttp.WSCloseCode.OK
    await a.close()
    await b.close()


async def _http_upgrade(daemon, *, protocols=(), origin=None):
    async with aiohttp.ClientSession() as s:
        headers = {"Origin": origin} if origin else {}
        try:
            async with s.ws_connect(f"wss://127.0.0.1:{daemon.http}/xmpp-websocket",
                                    protocols=protocols, ssl=client_ssl(), headers=headers) as ws:
                return 101, ws.protocol
        except aiohttp.WSServerHandshakeError as e:
            return e.status, None


async def test_upgrade_without_the_xmpp_subprotocol_is_400(daemon):
    assert await _http_upgrade(daemon) == (400, None)
    assert await _http_upgrade(daemon, protocols=("chat",)) == (400, None)
    assert await _http_upgrade(daemon, protocols=("chat", "xmpp")) == (101, "xmpp")


async def test_plain_get_is_400(daemon):
    async with aiohttp.ClientSession() as s:
        async with s.get(f"https://127.0.0.1:{daemon.http}/xmpp-websocket", ssl=client_ssl()) as r:
            assert r.status == 400


async def test_foreign_origin_is_403_ours_and_none_are_served(daemon):
    assert (await _http_upgrade(daemon, protocols=("xmpp",), origin="https://evil.example"))[0] == 403
    assert (await _http_upgrade(daemon, protocols=("xmpp",), origin="http://localhost"))[0] == 403
    for ok in ("https://localhost", "https://example.test", "https://chat.example.net",
               f"https://localhost:{daemon.http}", None,
               f"https://127.0.0.1:{daemon.http}"):  # the page's own origin (Host: 127.0.0.1:port)
        assert await _http_upgrade(daemon, protocols=("xmpp",), origin=ok) == (101, "xmpp"), ok


async def _opened(daemon) -> WSRawClient:
    c = await WSRawClient.connect(daemon.http)
    await c.open()
    return c


async def _error_then_close(c: WSRawClient) -> str:
    cond = await c.stream_error()
    assert await c.next() is STREAM_END  # the error is followed by <close/>
    assert c.messages[-1].startswith("<close")
    await c.expect_closed()
    return cond


@pytest.mark.parametrize("text", [
    "<message xmlns='jabber:client' to='bob@localhost'><body>a</body>",      # not complete
    "<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>",   # two elements
    "<presence xmlns='jabber:client'/>tail<",                                # more than one
    "</message>",                                                             # an end tag alone
    "just text",
])
async def test_text_that_is_not_one_complete_element(daemon, text):
    c = await _opened(daemon)
    await c.send(text)
    assert await _error_then_close(c) == "not-well-formed"
    await c.close()


async def test_binary_message_is_unsupported_encoding_and_close_1003(daemon):
    c = await _opened(daemon)
    await c.ws.send_bytes(b"<presence xmlns='jabber:client'/>")
    assert await _error_then_close(c) == "unsupported-encoding"
    assert c.close_code == aiohttp.WSCloseCode.UNSUPPORTED_DATA
    await c.close()


async def test_oversized_message_is_policy_violation(daemon):
    c = await WSRawClient.connect(daemon.http)
    await c.login("alice", PW, resource="big")
    await c.send("<message xmlns='jabber:client' to='bob@localhost'><body>"
                 + "x" * 17000 + "</body></message>")
    assert await _error_then_close(c) == "policy-violation"
    await c.close()


async def test_open_with_a_host_we_do_not_serve(daemon):
    c = await WSRawClient.connect(daemon.http)
    await c.send(OPEN.format(to="elsewhere.example"))
    opened = await c.next()  # our <open/> comes first, then the error
    assert opened.attrs.get("from") in ("localhost", "example.test")
    assert await _error_then_close(c) == "host-unknown"
    await c.close()


async def test_open_for_the_second_host(daemon):
    c = await WSRawClient.connect(daemon.http)
    await c.send(OPEN.format(to="example.test"))
    opened = await c.next()
    assert opened.attrs.get("from") == "example.test" and opened.attrs.get("version") == "1.0"
    assert c.messages[0].startswith("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'")
    await c.close()


@pytest.mark.parametrize("first", [
    "<message xmlns='jabber:client' to='bob@localhost'><body>hi</body></message>",
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>",
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
    "to='localhost' version='1.0'/>",
])
async def test_element_before_open(daemon, first):
    c = await WSRawClient.connect(daemon.http)
    await c.send(first)
    assert isinstance(await c.next(), type(await _header_type()))
    assert await _error_then_close(c) == "invalid-namespace"
    await c.close()


async def _header_type():
    from mbxmpp.xml import StreamHeader
    return StreamHeader("stream", "", {}, "", "")


async def test_stanza_before_open_after_sasl(daemon):
    """After SASL the stream restarts: a new <open/> is due before anything else."""
    c = await WSRawClient.connect(daemon.http)
    await c.open()
    import base64
    token = base64.b64encode(b"\0alice\0" + PW.encode()).decode()
    await c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    assert (await c.element()).tag == "success"
    await c.send("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert isinstance(await c.next(), type(await _header_type()))
    assert await _error_then_close(c) == "invalid-namespace"
    await c.close()


async def test_starttls_over_websocket_fails(daemon):
    c = await _opened(daemon)
    await c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert (await c.element()).tag == "failure"
    assert await c.next() is STREAM_END
    await c.close()


async def test_server_output_one_element_per_message(daemon):
    """Stream Management's ack request after a stanza, and resumed stanzas, each in a message
    of their own (WSRawClient checks every message is one standalone element)."""
    a = await WSRawClient.connect(daemon.http)
    await a.login("alice", PW, resource="sm")
    await a.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    assert (await a.element()).tag == "enabled"
    b = await WSRawClient.connect(daemon.http)
    await b.login("bob", PW, resource="sm")
    for i in range(12):
        await b.send(f"<message xmlns='jabber:client' to='alice@localhost/sm' id='n{i}'><body>{i}</body></message>")
    got = []
    while len(got) < 13:
        el = await a.element()
        got.append(el.tag)
    assert "r" in got and got.count("message") == 12
    await a.close()
    await b.close()


async def test_shutdown_ends_websocket_streams_with_system_shutdown():
    d = Daemon()
    d.add_user("alice@localhost", PW)
    d.start()
    try:
        c = await WSRawClient.connect(d.http)
        await c.login("alice", PW)
        loop = asyncio.get_running_loop()
        stopping = loop.run_in_executor(None, d.stop)
        assert await c.stream_error(timeout=10) == "system-shutdown"
        assert await c.next() is STREAM_END
        await c.close()
        assert await stopping == 0  # not killed after the stop timeout
    finally:
        d.cleanup()


class _TinyWS:
    """A hand-made WebSocket client over a socket with a small receive buffer: it reads only
    when told to (aiohttp's client always reads)."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        r, w = await asyncio.open_connection(sock=sock, ssl=client_ssl(), server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        w.write(f"GET /xmpp-websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: xmpp\r\n\r\n".encode())
        head = await r.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(r, w)

    async def send(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        head = bytes((0x81, 0x80 | n)) if n < 126 else (
            bytes((0x81, 0xFE)) + n.to_bytes(2, "big") if n < 65536 else bytes((0x81, 0xFF)) + n.to_bytes(8, "big"))
        self.writer.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        await self.writer.drain()

    async def receive(self) -> str:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        return (await self.reader.readexactly(n)).decode()


async def test_client_that_does_not_read_is_disconnected(daemon):
    c = await _TinyWS.connect(daemon.http)
    await c.send(OPEN.format(to="localhost"))
    while "</stream:features>" not in await c.receive():
        pass
    token = base64.b64encode(b"\0bob\0" + PW.encode()).decode()
    await c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    assert (await c.receive()).startswith("<success")
    await c.send(OPEN.format(to="localhost"))
    while "</stream:features>" not in await c.receive():
        pass
    await c.send("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert "type='result'" in await c.receive()
    big = "x" * (15 * 1024)
    closed = False
    try:
        # Each service-unavailable error carries the 15 KB payload back: 15 MB never read.
        for i in range(1000):
            await asyncio.wait_for(c.send(f"<iq xmlns='jabber:client' type='get' id='q{i}' to='localhost'>"
                                          f"<q xmlns='urn:x'>{big}</q></iq>"), 10)
        for _ in range(100):
            await asyncio.sleep(0.1)
            await c.send(" ")
    except (TimeoutError, ConnectionError, OSError):
        closed = True
    assert closed, "the server kept buffering for a client that does not read"
    assert "unread output" in daemon.log()
    c.writer.transport.abort()


async def test_preauth_byte_budget_applies_to_websocket(daemon):
    """The shared core's pre-authentication limits hold on every transport: here the byte
    budget (64 KiB before authenticating), spent in messages the stream itself ignores."""
    c = await _opened(daemon)
    for _ in range(8):
        await c.send(" " * 10000)
    assert await _error_then_close(c) == "policy-violation"
    assert "too much data before authentication" in c.messages[-2]
    await c.close()


async def test_websocket_closed_without_close_element_hibernates_the_session(daemon):
    """A WebSocket that ends without <close/> is a lost connection, not a clean end: the
    Stream Management session waits for resumption."""
    a = await WSRawClient.connect(daemon.http)
    await a.login("alice", PW, resource="gone")
    await a.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    enabled = await a.element()
    await a.ws.close()  # a close frame, no <close/>
    await a.close()
    b = await WSRawClient.connect(daemon.http)
    await b.auth("alice", PW)
    await b.send(f"<resume xmlns='urn:xmpp:sm:3' previd='{enabled.get('id')}' h='0'/>")
    assert (await b.element()).tag == "resumed"
    await b.send("</stream:stream>")
    await b.close()


async def test_metrics_count_websocket_connections(daemon):
    c = await WSRawClient.connect(daemon.http)
    await c.login("bob", PW, resource="counted")
    async with aiohttp.ClientSession() as s, s.get(f"https://127.0.0.1:{daemon.http}/metrics",
                                                   ssl=client_ssl()) as r:
        text = await r.text()
    assert r.status == 200
    line = next(x for x in text.splitlines() if x.startswith('mbxmpp_connections{transport="websocket"}'))
    assert float(line.split()[-1]) >= 1
    await c.close()


async def test_control_lists_and_ends_websocket_sessions(daemon):
    """The operator's view and reach are the same whatever the transport."""
    await asyncio.to_thread(daemon.cli, "user", "add", "wsdel@localhost", "--password", PW)
    c = await WSRawClient.connect(daemon.http)
    await c.login("wsdel", PW, resource="web")
    listed = (await asyncio.to_thread(daemon.cli, "sessions", "list")).stdout.splitlines()
    row = next(line.split() for line in listed if line.startswith("wsdel@localhost/web"))
    assert row[1] == "websocket"
    await asyncio.to_thread(daemon.cli, "user", "del", "wsdel@localhost")
    assert await _error_then_close(c) == "not-authorized"
    await c.close()


async def test_a_stanza_flood_over_websocket_is_slowed_down_not_refused():
    """[limits] stanzas_per_session holds on WebSocket too (charged every CHARGE_EVERY
    stanzas there: a message is one stanza, not a read of many)."""
    d = Daemon(extra='[limits]\nstanzas_per_session = "1/s"\nstanzas_per_session_burst = 5\n')
    for u in ("alice@localhost", "bob@localhost"):
        d.add_user(u, PW)
    d.start()
    try:
        a = await WSRawClient.connect(d.http)
        await a.login("alice", PW)
        b = await WSRawClient.connect(d.http)
        await b.login("bob", PW)
        for i in range(40):
            await a.send(f"<iq xmlns='jabber:client' type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>")
        first = await a.element()
        assert (first.get("id"), first.get("type")) == ("p0", "result")
        await b.send("<iq xmlns='jabber:client' type='get' id='bob'><ping xmlns='urn:xmpp:ping'/></iq>")
        answered = await b.element()
        assert answered.get("id") == "bob"
        async def the_rest():
            return [await a.element(60) for _ in range(39)]
        rest = asyncio.ensure_future(the_rest())
        await asyncio.sleep(0)
        assert not rest.done()  # alice is held back while bob is served
        got = await rest  # then answered, all of them: nothing refused, the stream stays up
        assert [e.get("id") for e in got] == [f"p{i}" for i in range(1, 40)]
        await a.close()
        await b.close()
    finally:
        d.finish()
