"""Review of the core against RFC 6120/6121 and XEP-0198: the cases that were wrong, without
sockets (the c2s stream, the connection with a fake transport, the IQ dispatcher, the server)."""

from __future__ import annotations

import asyncio
import base64

import pytest

from mbxmpp.core import events as ev
from mbxmpp.core.iq import IQContext, IQDispatcher
from mbxmpp.core.modules import HOST
from mbxmpp.jid import JID, JIDError
from mbxmpp.net import core as transport_core
from mbxmpp.net.connection import C2SConnection
from mbxmpp.stream.c2s import ST_CLOSED, ST_READY
from mbxmpp.stream.smstate import SMState
from mbxmpp.xml import Element
from tests.harness import ServerHarness
from tests.proto.test_c2s import HEADER, Peer, login_plain

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


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
    p.feed(HEADER)
    tok = base64.b64encode(b"\0juliet\0pencil").decode()
    p.feed(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{tok}</auth>".encode())
    p.restart_reader()
    p.feed(HEADER)
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


# -- the IQ dispatcher --------------------------------------------------------------------------

async def test_server_request_answered_only_by_its_addressee():
    sent: list[Element] = []
    d = IQDispatcher(sent.append)
    req = Element("iq", attrs={"type": "get", "id": "q1", "from": "localhost", "to": "bob@localhost/phone"})
    req.add("ping", "urn:xmpp:ping")
    task = asyncio.ensure_future(d.request(req, timeout=2))
    await asyncio.sleep(0)
    ctx = IQContext(JID.parse("mallory@localhost/x"), JID.parse("localhost"), None, HOST)
    forged = Element("iq", attrs={"type": "result", "id": "q1", "from": "mallory@localhost/x", "to": "localhost"})
    d.dispatch(forged, ctx)
    await asyncio.sleep(0)
    assert not task.done()
    real = Element("iq", attrs={"type": "result", "id": "q1", "from": "bob@localhost/phone", "to": "localhost"})
    d.dispatch(real, ctx)
    assert (await task) is real


async def test_server_request_to_bare_jid_answered_by_it_or_a_resource():
    d = IQDispatcher(lambda st: None)
    req = Element("iq", attrs={"type": "set", "id": "p1", "from": "alice@localhost", "to": "push.example"})
    task = asyncio.ensure_future(d.request(req, timeout=2))
    await asyncio.sleep(0)
    ctx = IQContext(JID.parse("push.example"), JID.parse("alice@localhost"), None, HOST)
    d.dispatch(Element("iq", attrs={"type": "error", "id": "p1", "from": "push.example"}), ctx)
    assert (await task).get("type") == "error"


# -- the server -------------------------------------------------------------------------------

async def test_failing_stream_closed_hook_still_ends_the_session():
    async with ServerHarness(modules=[]) as h:
        def broken(stream):
            raise RuntimeError("hook bug")
        h.server.hooks.add(ev.STREAM_CLOSED, broken)
        c = await h.login("alice@localhost", "r")
        assert h.server.sessions.get(c.jid) is not None
        h.disconnect(c)
        assert h.server.sessions.get(c.jid) is None


async def test_conflicting_long_resource_still_binds():
    async with ServerHarness(modules=[]) as h:
        long = "r" * 1020
        a = await h.login("alice@localhost", long)
        b = await h.login("alice@localhost", long)
        assert a.jid != b.jid and b.jid.startswith("alice@localhost/")


# -- the connection: output bound and close ---------------------------------------------------

class FakeTransport(asyncio.Transport):
    """Records writes; ``stuck`` keeps everything written in the 'buffer' (a peer not reading)."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.stuck = False
        self.buffered = 0
        self.closed = self.aborted = self.eof = False

    def write(self, data) -> None:  # type: ignore[override]
        assert not (self.closed or self.aborted or self.eof), "write after close"
        self.data += data
        if self.stuck:
            self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def get_extra_info(self, name, default=None):  # type: ignore[override]
        return {"peername": ("127.0.0.1", 40000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _bound_connection(h: ServerHarness) -> tuple[C2SConnection, FakeTransport]:
    await h.create_user("alice@localhost", "pw")
    conn = C2SConnection(h.server, None, True)  # type: ignore[arg-type]
    t = FakeTransport()
    conn.connection_made(t)
    hdr = HEADER.replace(b"example.org", b"localhost")
    conn.data_received(hdr)
    tok = base64.b64encode(b"\0alice\0pw").decode()
    conn.data_received(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{tok}</auth>".encode())
    conn.data_received(hdr)
    conn.data_received(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    await asyncio.sleep(0)
    assert conn.stream.stage == ST_READY, bytes(t.data)
    return conn, t


async def test_unread_output_is_bounded(monkeypatch):
    monkeypatch.setattr(transport_core, "CLOSE_TIMEOUT", 0.05)
    async with ServerHarness(modules=[]) as h:
        conn, t = await _bound_connection(h)
        t.stuck = True
        conn.max_output = 100_000
        big = "x" * 40_000
        for i in range(5):  # each service-unavailable reply carries the payload back
            conn.data_received(f"<iq type='get' id='q{i}' to='localhost'><q xmlns='urn:x'>{big}</q></iq>".encode())
            await asyncio.sleep(0)
        assert conn.stream.stage == ST_CLOSED
        assert b"policy-violation" in t.data and bytes(t.data).endswith(b"</stream:stream>")
        size = len(t.data)
        assert size < 100_000 + 2 * 45_000
        # Nothing more is written or buffered for this client.
        conn.data_received(b"<iq type='get' id='late' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        conn.stream.write(b"<r xmlns='urn:xmpp:sm:3'/>")
        await asyncio.sleep(0)
        assert len(t.data) == size
        # It never drains: the connection is cut after the close timeout.
        await asyncio.sleep(0.1)
        assert t.aborted
        conn.connection_lost(None)
        assert h.server.sessions.count() == 0


async def test_server_close_waits_for_peer_then_times_out(monkeypatch):
    # RFC 6120 §4.4: our closing tag, a FIN, and the connection ends when the peer closes
    # (or after the timeout); nothing is written after </stream:stream>.
    monkeypatch.setattr(transport_core, "CLOSE_TIMEOUT", 0.05)
    async with ServerHarness(modules=[]) as h:
        conn, t = await _bound_connection(h)
        conn.data_received(b"<foo xmlns='urn:unknown'/>")
        assert bytes(t.data).endswith(b"</stream:stream>") and b"unsupported-stanza-type" in t.data
        assert t.eof and not t.closed and not t.aborted
        conn.data_received(b"<message to='bob@localhost'/>")  # discarded
        conn.stream.write(b"<a xmlns='urn:xmpp:sm:3' h='1'/>")
        await asyncio.sleep(0)
        assert bytes(t.data).endswith(b"</stream:stream>")
        await asyncio.sleep(0.1)
        assert t.aborted
        conn.connection_lost(None)


async def test_peer_close_closes_the_connection_at_once():
    async with ServerHarness(modules=[]) as h:
        conn, t = await _bound_connection(h)
        conn.data_received(b"</stream:stream>")
        assert bytes(t.data).endswith(b"</stream:stream>") and t.closed
        conn.connection_lost(None)
        assert h.server.sessions.count() == 0
        assert h.server.preauth.count() == 0


# -- stream header and STARTTLS -----------------------------------------------------------------

@pytest.mark.parametrize("header", [
    # RFC 6120 §4.9.3.2's own example: a prefix other than 'stream'.
    b"<foobar:stream xmlns='jabber:client' xmlns:foobar='http://etherx.jabber.org/streams' "
    b"to='example.org' version='1.0'>",
    # No prefix at all on the stream element.
    b"<stream xmlns='http://etherx.jabber.org/streams' to='example.org' version='1.0'>",
])
def test_stream_prefix_must_be_stream(header):
    from mbxmpp.xml import StreamHeader
    from tests.proto.test_c2s import stream_error
    p = Peer()
    ev_ = p.feed(header)
    assert isinstance(ev_[0], StreamHeader)
    assert stream_error(ev_) == "bad-namespace-prefix"


def test_starttls_when_already_secure_is_a_tls_failure():
    # RFC 6120 §5.4.2.2: <failure/> in the TLS namespace, then the stream is closed.
    from mbxmpp.xml import STREAM_END
    p = Peer(secure=True)
    p.feed(HEADER)
    ev_ = p.feed(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    (f,) = elements(ev_)
    assert f.tag == "failure" and f.ns == "urn:ietf:params:xml:ns:xmpp-tls"
    assert ev_[-1] is STREAM_END and p.stream.stage == ST_CLOSED


def test_nonzas_before_authentication_are_not_authorized():
    # RFC 6120 §4.9.3.12: before SASL, feature modules never see the client's elements.
    from tests.proto.test_c2s import stream_error
    p = Peer()
    seen = []
    p.server.handle_nonza = lambda stream, el: seen.append(el) or True
    p.feed(HEADER)
    assert stream_error(p.feed(b"<r xmlns='urn:xmpp:sm:3'/>")) == "not-authorized"
    assert seen == []


def test_bind_without_id_is_bad_request():
    p = Peer()
    p.feed(HEADER)
    tok = base64.b64encode(b"\0juliet\0pencil").decode()
    p.feed(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{tok}</auth>".encode())
    p.restart_reader()
    p.feed(HEADER)
    (r,) = elements(p.feed(b"<iq type='set'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"))
    assert condition(r) == "bad-request" and p.stream.session is None


def test_stream_language_added_to_stanzas():
    # RFC 6120 §8.1.5: a stanza without xml:lang gets the language of the client's stream.
    p = Peer()
    header = HEADER.replace(b"version='1.0'>", b"version='1.0' xml:lang='de-AT'>")
    p.feed(header)
    tok = base64.b64encode(b"\0juliet\0pencil").decode()
    p.feed(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{tok}</auth>".encode())
    p.restart_reader()
    p.feed(header)
    p.feed(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    p.feed(b"<message to='romeo@example.org'><body>Servus</body></message>"
           b"<message to='romeo@example.org' xml:lang='en'><body>Hi</body></message>")
    assert [m.get("xml:lang") for m in p.server.routed] == ["de-AT", "en"]


def test_no_language_added_without_one_on_the_stream():
    p = Peer()
    login_plain(p)
    p.feed(b"<message to='romeo@example.org'><body>x</body></message>")
    assert "xml:lang" not in p.server.routed[0].attrs


async def test_destroying_a_hibernated_session_cancels_its_timer():
    from mbxmpp.modules.sm import Hibernated
    async with ServerHarness(modules=["sm"]) as h:
        c = await h.login("alice@localhost", "phone")
        c.write = lambda data: None
        c.clean_close = False
        sm_mod = h.server.module("sm")
        sm_mod.enable(c, Element("enable", "urn:xmpp:sm:3", {"resume": "true"}))
        h.disconnect(c)
        session = c.session
        assert isinstance(session.stream, Hibernated)
        timer = session.stream.timer
        h.server.destroy_session(session)  # e.g. the account is deleted meanwhile
        assert timer.cancelled()
        assert sm_mod.by_id == {}
