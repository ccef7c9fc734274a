"""XMPP over WebSocket (RFC 7395) at /xmpp-websocket: the handshake (the xmpp sub-protocol,
Origin), the framing (<open/>, <close/>, one element per message, standalone elements), and
what bad input gets."""

from __future__ import annotations

import asyncio

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
