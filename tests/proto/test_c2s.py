"""The c2s stream without sockets: bytes in, bytes out (h11's test_connection style)."""

from __future__ import annotations

import base64

import pytest

from mbxmpp.jid import JID, JIDError
from mbxmpp.stream.c2s import ST_CLOSED, ST_READY, C2SStream
from mbxmpp.stream.scram import make_credentials
from mbxmpp.stream.smstate import SMState
from mbxmpp.xml import STREAM_END, Element, PyXMLParser, StreamHeader
from mbxmpp.xml.ns import NS_SASL, NS_STANZAS

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
        self.preauth_answers = False  # whether a module (XEP-0077) answers pre-auth IQs
        self.preauth_seen: list[Element] = []

    def get_credential(self, username, host, mech):
        return CREDS[mech] if username == "juliet" else None

    def check_password(self, username, host, password, peer_ip=None):
        return username == "juliet" and password == "pencil"

    def login_refusal(self, username, host):
        return self.refuse

    def authenticated(self, stream):
        self.authenticated_streams.append(stream)

    def login_failed(self, condition):
        pass

    def bind(self, stream, jid, resource):
        return FakeSession(jid.with_resource(resource or "gen"), stream)

    def route_from_client(self, stanza, session):
        self.routed.append(stanza)

    def post_auth_features(self, stream):
        return []

    def preauth_iq(self, stream, iq):
        self.preauth_seen.append(iq)
        return self.preauth_answers

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


def authenticate(p: Peer, header: bytes = HEADER) -> list:
    """Header, SASL PLAIN as juliet, the restarted stream's header; the events of the last."""
    p.feed(header)
    tok = base64.b64encode(b"\0juliet\0pencil").decode()
    ev = p.feed(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{tok}</auth>".encode())
    assert ev[0].tag == "success"
    p.restart_reader()
    return p.feed(header)


def login_plain(p: Peer, resource: str | None = "balcony") -> None:
    f = features(authenticate(p))
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


@pytest.mark.parametrize("secure,require_encryption,offered", [
    (True, True, True),     # after TLS
    (False, False, True),   # a plaintext stream where encryption is not required
    (False, True, False),   # before the required TLS: never (the stream ends)
])
def test_preauth_iq_offered_to_the_modules_only_where_sasl_is(secure, require_encryption, offered):
    p = Peer(secure=secure, require_encryption=require_encryption)
    p.server.preauth_answers = True
    p.feed(HEADER)
    ev = p.feed(b"<iq type='get' id='r'><query xmlns='jabber:iq:register'/></iq>")
    assert len(p.server.preauth_seen) == (1 if offered else 0)
    assert (ev == []) if offered else stream_error(ev) == "not-authorized"
    assert p.stream.stage != ST_CLOSED if offered else p.stream.stage == ST_CLOSED
    if offered:  # not answered by any module: the stream ends
        p.server.preauth_answers = False
        assert stream_error(p.feed(b"<iq type='get' id='v'><query xmlns='jabber:iq:version'/></iq>")) \
            == "not-authorized"


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
    for _ in range(3):
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


def elements(events) -> list[Element]:
    return [e for e in events if isinstance(e, Element)]


def condition(el: Element) -> str:
    err = el.find("error")
    assert err is not None, el
    return next(c.tag for c in err.elements() if c.ns == NS_STANZAS and c.tag != "text")


# -- the c2s stream ---------------------------------------------------------------------------

def test_iq_error_without_id_is_not_answered():
    # RFC 6120 §8.3.1: an error stanza is never answered with an error.
    p = Peer()
    login_plain(p)
    assert elements(p.feed(b"<iq type='error'><error type='cancel'/></iq>")) == []
    # A result without an id is still a bad request.
    (r,) = elements(p.feed(b"<iq type='result'/>"))
    assert r.get("type") == "error" and condition(r) == "bad-request"


def test_result_during_bind_stage_is_not_answered():
    p = Peer()
    authenticate(p)
    assert elements(p.feed(b"<iq type='result' id='x'/><iq type='error' id='y'/>")) == []
    ev_ = p.feed(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert elements(ev_)[0].get("id") == "b" and p.stream.stage == ST_READY


def test_second_bind_not_allowed():
    # RFC 6120 §7.6.2.2: one resource per stream.
    p = Peer()
    login_plain(p)
    (r,) = elements(p.feed(b"<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                           b"<resource>other</resource></bind></iq>"))
    assert r.get("id") == "b2" and condition(r) == "not-allowed"
    assert p.server.routed == []


@pytest.mark.parametrize("to", ["", " to='example.org'", " to='juliet@example.org'"])
def test_legacy_session_iq(to):
    # RFC 3921 §3: clients send it with or without the domain as 'to'.
    p = Peer()
    login_plain(p)
    (r,) = elements(p.feed(f"<iq type='set' id='s'{to}><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>"
                           f"</iq>".encode()))
    assert r.get("type") == "result" and r.get("id") == "s"
    assert p.server.routed == []


def test_sm_counts_stanzas_refused_with_an_error():
    # XEP-0198 §4: h counts every stanza received, also those answered with bad-request.
    p = Peer()
    login_plain(p)
    p.stream.sm = SMState("id", False, 60)
    p.feed(b"<iq type='get' id='nopayload'/>")
    p.feed(b"<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
    p.feed(b"<presence type='bogus'/>")
    p.feed(b"<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    p.feed(b"<message to='romeo@example.org'/>")
    assert p.stream.sm.h_in == 5


def test_exception_while_routing_is_a_stanza_error():
    p = Peer()
    login_plain(p)

    def boom(stanza, session):
        raise RuntimeError("a module bug")
    p.server.route_from_client = boom
    (r,) = elements(p.feed(b"<message id='m1' to='romeo@example.org'><body>x</body></message>"))
    assert r.get("id") == "m1" and condition(r) == "internal-server-error"
    assert p.stream.stage == ST_READY
    # An error stanza that fails is not answered.
    assert elements(p.feed(b"<message type='error' to='romeo@example.org'/>")) == []

    def bad_jid(stanza, session):
        raise JIDError("bad address in a payload")
    p.server.route_from_client = bad_jid
    (r,) = elements(p.feed(b"<iq type='get' id='i1' to='example.org'><q xmlns='urn:x'/></iq>"))
    assert condition(r) == "jid-malformed" and p.stream.stage == ST_READY


def test_sasl_retry_after_abort_on_plaintext_stream():
    # RFC 6120 §6.4.5: the client may retry; also where TLS is not required.
    p = Peer(secure=False, require_encryption=False)
    p.feed(HEADER)
    first = base64.b64encode(b"n,,n=juliet,r=abcdefghijklmnop").decode()
    (ch,) = elements(p.feed(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>{first}</auth>".encode()))
    assert ch.tag == "challenge"
    (f,) = elements(p.feed(f"<abort xmlns='{NS_SASL}'/>".encode()))
    assert f.tag == "failure" and f.find("aborted") is not None
    (again,) = elements(p.feed(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>{first}</auth>".encode()))
    assert again.tag == "challenge", again


# -- stream header and STARTTLS -----------------------------------------------------------------

@pytest.mark.parametrize("header", [
    # RFC 6120 §4.9.3.2's own example: a prefix other than 'stream'.
    b"<foobar:stream xmlns='jabber:client' xmlns:foobar='http://etherx.jabber.org/streams' "
    b"to='example.org' version='1.0'>",
    # No prefix at all on the stream element.
    b"<stream xmlns='http://etherx.jabber.org/streams' to='example.org' version='1.0'>",
])
def test_stream_prefix_must_be_stream(header):
    p = Peer()
    ev_ = p.feed(header)
    assert isinstance(ev_[0], StreamHeader)
    assert stream_error(ev_) == "bad-namespace-prefix"


def test_starttls_when_already_secure_is_a_tls_failure():
    # RFC 6120 §5.4.2.2: <failure/> in the TLS namespace, then the stream is closed.
    p = Peer(secure=True)
    p.feed(HEADER)
    ev_ = p.feed(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    (f,) = elements(ev_)
    assert f.tag == "failure" and f.ns == "urn:ietf:params:xml:ns:xmpp-tls"
    assert ev_[-1] is STREAM_END and p.stream.stage == ST_CLOSED


def test_nonzas_before_authentication_are_not_authorized():
    # RFC 6120 §4.9.3.12: before SASL, feature modules never see the client's elements.
    p = Peer()
    seen = []
    p.server.handle_nonza = lambda stream, el: seen.append(el) or True
    p.feed(HEADER)
    assert stream_error(p.feed(b"<r xmlns='urn:xmpp:sm:3'/>")) == "not-authorized"
    assert seen == []


def test_bind_without_id_is_bad_request():
    p = Peer()
    authenticate(p)
    (r,) = elements(p.feed(b"<iq type='set'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"))
    assert condition(r) == "bad-request" and p.stream.session is None


def test_stream_language_added_to_stanzas():
    # RFC 6120 §8.1.5: a stanza without xml:lang gets the language of the client's stream.
    p = Peer()
    header = HEADER.replace(b"version='1.0'>", b"version='1.0' xml:lang='de-AT'>")
    authenticate(p, header)
    p.feed(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    p.feed(b"<message to='romeo@example.org'><body>Servus</body></message>"
           b"<message to='romeo@example.org' xml:lang='en'><body>Hi</body></message>")
    assert [m.get("xml:lang") for m in p.server.routed] == ["de-AT", "en"]


def test_no_language_added_without_one_on_the_stream():
    p = Peer()
    login_plain(p)
    p.feed(b"<message to='romeo@example.org'><body>x</body></message>")
    assert "xml:lang" not in p.server.routed[0].attrs
