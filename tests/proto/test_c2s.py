"""The c2s stream without sockets: bytes in, bytes out (h11's test_connection style)."""

from __future__ import annotations

import base64

import pytest

from mbxmpp.jid import JID
from mbxmpp.stream.c2s import ST_READY, C2SStream
from mbxmpp.stream.scram import make_credentials
from mbxmpp.xml import STREAM_END, Element, PyXMLParser, StreamHeader

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>")
CREDS = make_credentials("pencil", iterations=1024)


class FakeSession:
    def __init__(self, jid: JID, stream: C2SStream) -> None:
        self.jid = jid
        self.full = jid.full
        self.bare = jid.bare
        self.stream = stream


class FakeServer:
    hosts = {"example.org"}
    sasl_fake_secret = b"k" * 32

    def __init__(self) -> None:
        self.routed: list[Element] = []
        self.closed: list[C2SStream] = []
        self.refuse: str | None = None
        self.authenticated_streams: list[C2SStream] = []

    def get_credential(self, username, host, mech):
        return CREDS[mech] if username == "juliet" else None

    def check_password(self, username, host, password, peer_ip=None):
        return username == "juliet" and password == "pencil"

    def login_refusal(self, username, host):
        return self.refuse

    def authenticated(self, stream):
        self.authenticated_streams.append(stream)

    def bind(self, stream, jid, resource):
        return FakeSession(jid.with_resource(resource or "gen"), stream)

    def route_from_client(self, stanza, session):
        self.routed.append(stanza)

    def post_auth_features(self, stream):
        return []

    def handle_nonza(self, stream, el):
        return False

    def stream_closed(self, stream):
        self.closed.append(stream)


class Peer:
    """Both ends: the stream under test and a parser for what it wrote."""

    def __init__(self, secure: bool = True, **kw) -> None:
        self.server = FakeServer()
        self.out = PyXMLParser()
        self.events: list = []
        self.stream = C2SStream(self.server, self._write, secure=secure, **kw)

    def _write(self, data: bytes) -> None:
        self.events.extend(self.out.feed(data))

    def feed(self, data: bytes) -> list:
        self.stream.receive_data(data)
        ev, self.events = self.events, []
        return ev

    def restart_reader(self) -> None:
        self.out.reset()


def features(events) -> Element:
    return next(e for e in events if isinstance(e, Element) and e.tag == "features")


def stream_error(events) -> str:
    err = next(e for e in events if isinstance(e, Element) and e.tag == "error")
    return next(c.tag for c in err.elements() if c.tag != "text")


def login_plain(p: Peer, resource: str | None = "balcony") -> None:
    p.feed(HEADER)
    tok = base64.b64encode(b"\0juliet\0pencil").decode()
    ev = p.feed(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{tok}</auth>".encode())
    assert ev[0].tag == "success"
    p.restart_reader()
    ev = p.feed(HEADER)
    f = features(ev)
    assert f.find("bind", "urn:ietf:params:xml:ns:xmpp-bind") is not None
    r = f"<resource>{resource}</resource>" if resource else ""
    ev = p.feed(f"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{r}</bind></iq>".encode())
    assert ev[0].get("type") == "result"
    assert p.stream.stage == ST_READY


def test_header_and_features_before_tls():
    p = Peer(secure=False)
    ev = p.feed(HEADER)
    assert isinstance(ev[0], StreamHeader) and ev[0].get("from") == "example.org"
    f = features(ev)
    tls = f.find("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
    assert tls is not None and tls.find("required") is not None
    assert f.find("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl") is None


def test_starttls_drops_injected_plaintext():
    p = Peer(secure=False)
    p.feed(HEADER)
    ev = p.feed(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message to='x@y'><body>i</body></message>")
    assert ev[0].tag == "proceed"
    assert p.stream.tls_requested
    p.stream.tls_started({})
    assert p.server.routed == []


def test_mechanisms_after_tls_include_plus_with_cb():
    p = Peer(secure=True)
    p.stream.cb_data = {"tls-server-end-point": b"x" * 32}
    f = features(p.feed(HEADER))
    mechs = [m.text for m in f.find("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl").elements()]
    assert mechs[0] == "SCRAM-SHA-256-PLUS" and "PLAIN" in mechs
    cb = f.find("sasl-channel-binding", "urn:xmpp:sasl-cb:0")
    assert [c.get("type") for c in cb.elements()] == ["tls-server-end-point"]


def test_login_bind_and_route_with_stamped_from():
    p = Peer()
    login_plain(p)
    p.feed(b"<message to='romeo@example.org'><body>hi</body></message>")
    assert p.server.routed[0].get("from") == "juliet@example.org/balcony"


def test_forged_from_is_invalid_from():
    p = Peer()
    login_plain(p)
    ev = p.feed(b"<message from='romeo@example.org/x' to='a@example.org'/>")
    assert stream_error(ev) == "invalid-from"
    assert p.server.routed == []


@pytest.mark.parametrize("data,cond", [
    (b"<message><body>x</bo></message>", "not-well-formed"),
    (b"<!-- c -->", "restricted-xml"),
    (b"<iq type='get' id='1'><x xmlns='y'>&amp;&ent;</x></iq>", "restricted-xml"),
])
def test_bad_xml(data, cond):
    p = Peer()
    login_plain(p)
    assert stream_error(p.feed(data)) == cond


def test_stanza_before_auth_not_authorized():
    p = Peer()
    p.feed(HEADER)
    assert stream_error(p.feed(b"<message to='a@example.org'/>")) == "not-authorized"


def test_unknown_host():
    p = Peer()
    ev = p.feed(HEADER.replace(b"example.org", b"other.example"))
    assert isinstance(ev[0], StreamHeader)
    assert stream_error(ev) == "host-unknown"


def test_error_before_header_still_opens_stream():
    p = Peer()
    ev = p.feed(b"<<<")
    assert isinstance(ev[0], StreamHeader)
    assert stream_error(ev) == "not-well-formed"
    assert ev[-1] is STREAM_END


def test_sasl_failures_limited():
    p = Peer(max_auth_attempts=3)
    p.feed(HEADER)
    bad = base64.b64encode(b"\0juliet\0wrong").decode()
    for i in range(3):
        ev = p.feed(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{bad}</auth>".encode())
        assert ev[0].tag == "failure"
    assert stream_error(ev) == "policy-violation"


def test_plan_refusal_is_account_disabled_with_text():
    p = Peer()
    p.server.refuse = "no chat on this plan"
    p.feed(HEADER)
    tok = base64.b64encode(b"\0juliet\0pencil").decode()
    ev = p.feed(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{tok}</auth>".encode())
    assert ev[0].tag == "failure" and ev[0].find("account-disabled") is not None
    assert ev[0].findtext("text") == "no chat on this plan"
    assert p.server.authenticated_streams == []  # a refused login is no authentication


def test_sasl_success_tells_the_server_once():
    p = Peer()
    login_plain(p)
    assert p.server.authenticated_streams == [p.stream]


def test_bad_iq_is_bad_request():
    p = Peer()
    login_plain(p)
    ev = p.feed(b"<iq type='get' id='x'/>")
    assert ev[0].get("type") == "error"
    ev = p.feed(b"<iq type='bogus' id='y'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert ev[0].get("type") == "error"
    assert p.server.routed == []


def test_closing_stream():
    p = Peer()
    login_plain(p)
    ev = p.feed(b"</stream:stream>")
    assert ev[-1] is STREAM_END
    assert p.server.closed
