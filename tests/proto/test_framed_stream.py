"""The stream state machine's one guarded transition, and the RFC 7395 framing of the c2s stream
without sockets: each write is one message, a standalone element."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import pytest

from mbxmpp.stream.c2s import (
    ST_BIND,
    ST_CLOSED,
    ST_HEADER,
    ST_READY,
    ST_SASL,
    ST_TLS,
    C2SStream,
    IllegalTransition,
)
from mbxmpp.stream.framed import FramedC2SStream, standalone
from mbxmpp.xml import Element
from tests.proto.test_c2s import FakeServer, Peer

OPEN = b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.org' version='1.0'/>"
NS_FRAMING = "{urn:ietf:params:xml:ns:xmpp-framing}"


class FramedPeer:
    def __init__(self) -> None:
        self.server = FakeServer()
        self.messages: list[bytes] = []
        self.stream = FramedC2SStream(self.server, lambda data: self.messages.append(standalone(data)))

    def feed(self, data: bytes) -> list[ET.Element]:
        self.messages.clear()
        self.stream.receive_data(data)
        # every message parses alone: one element, its namespaces declared
        return [ET.fromstring(m) for m in self.messages]


def _login(p: FramedPeer) -> None:
    p.feed(OPEN)
    tok = base64.b64encode(b"\0juliet\0pencil").decode()
    assert p.feed(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{tok}</auth>"
                  .encode())[0].tag.endswith("success")
    p.feed(OPEN)
    (res,) = p.feed(b"<iq xmlns='jabber:client' type='set' id='b'>"
                    b"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert res.tag == "{jabber:client}iq" and res.get("type") == "result"
    assert p.stream.stage == ST_READY


def test_open_features_and_close():
    p = FramedPeer()
    opened, feats = p.feed(OPEN)
    assert opened.tag == NS_FRAMING + "open" and opened.get("from") == "example.org"
    assert opened.get("version") == "1.0" and opened.get("id")
    assert feats.tag == "{http://etherx.jabber.org/streams}features"
    assert feats.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None  # the transport's TLS
    assert p.stream.stage == ST_SASL
    (closed,) = p.feed(b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
    assert closed.tag == NS_FRAMING + "close"
    assert p.stream.stage == ST_CLOSED and p.stream.clean_close


def test_stanzas_written_with_their_namespace_and_requests_alone():
    p = FramedPeer()
    _login(p)
    p.messages.clear()

    class SM:  # asks for an ack after every stanza
        def outbound(self, data: bytes) -> bool:
            return True
    p.stream.sm = SM()
    p.stream.send_stanza(Element("message", attrs={"to": "juliet@example.org/balcony"}))
    msg, req = (ET.fromstring(m) for m in p.messages)
    assert msg.tag == "{jabber:client}message" and req.tag == "{urn:xmpp:sm:3}r"


def test_stream_error_is_standalone_then_close():
    p = FramedPeer()
    p.feed(OPEN)
    err, close = p.feed(b"<message xmlns='jabber:client'><body>cut</body>")
    assert err.tag == "{http://etherx.jabber.org/streams}error"
    assert err[0].tag == "{urn:ietf:params:xml:ns:xmpp-streams}not-well-formed"
    assert close.tag == NS_FRAMING + "close"


def test_a_bad_message_is_refused_whole():
    """Over TCP the stanza before a parse error is handled; a WebSocket message is one unit."""
    p = FramedPeer()
    _login(p)
    p.feed(b"<message xmlns='jabber:client' to='romeo@example.org'/><message/>")
    assert p.server.routed == []


@pytest.mark.parametrize("data,out", [
    (b"<message to='a@b'/>", b"<message xmlns='jabber:client' to='a@b'/>"),
    (b"<iq>x</iq>", b"<iq xmlns='jabber:client'>x</iq>"),
    (b"<presence/>", b"<presence xmlns='jabber:client'/>"),
    (b"<presence xmlns='jabber:client'/>", b"<presence xmlns='jabber:client'/>"),
    (b"<a xmlns='urn:xmpp:sm:3' h='1'/>", b"<a xmlns='urn:xmpp:sm:3' h='1'/>"),
    (b"<iqx xmlns='urn:x'/>", b"<iqx xmlns='urn:x'/>"),
    (b"<m xmlns='urn:x'/>", b"<m xmlns='urn:x'/>"),
    (b"<pres xmlns='urn:x'/>", b"<pres xmlns='urn:x'/>"),
])
def test_standalone(data, out):
    assert standalone(data) == out


def test_illegal_transition_raises():
    p = Peer()
    s = p.stream
    with pytest.raises(IllegalTransition):
        s._enter(ST_READY)  # header -> ready: never without authentication and bind
    s._enter(ST_SASL)
    with pytest.raises(IllegalTransition):
        s._enter(ST_BIND)   # only through a SASL success (a restart, then the features)
    s._enter(ST_CLOSED)
    for stage in (ST_HEADER, ST_TLS, ST_SASL, ST_READY):
        with pytest.raises(IllegalTransition):
            s._enter(stage)  # nothing after closed


def test_illegal_transition_is_not_swallowed_as_an_internal_error():
    """A bug in the state machine fails loudly instead of becoming a stream error."""
    class Buggy(C2SStream):
        __slots__ = ()

        def _send_features(self) -> None:
            self._enter(ST_READY)

    s = Buggy(FakeServer(), lambda data: None, secure=True)
    with pytest.raises(IllegalTransition):
        s.receive_data(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                       b"xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>")
