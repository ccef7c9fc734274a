"""The sans-IO s2s stream, the SRV order, dialback keys and certificate identities."""

from __future__ import annotations

import base64
import datetime
import functools
import random
import types

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mbxmpp.config import Config
from mbxmpp.core.router import Router
from mbxmpp.s2s.certs import identities
from mbxmpp.s2s.dialback import dialback_key, key_matches, load_secret
from mbxmpp.s2s.dns import Target, order_srv
from mbxmpp.s2s.net import S2SService
from mbxmpp.s2s.stream import ST_CLOSED, ST_READY, S2SStream
from mbxmpp.xml import Element, PyXMLParser, StreamHeader
from tests.harness import parse_stanza

SECRET = b"s" * 64
HEADER = ("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
          "xmlns:db='jabber:server:dialback' from='{frm}' to='{to}' version='1.0'{extra}>")


class Host:
    """The federation service as the stream sees it."""

    def __init__(self, dialback: bool = True) -> None:
        self.dialback = dialback
        self.routed: list[Element] = []
        self.verify_asked: list[tuple[str, str, str]] = []
        self.ready: list[S2SStream] = []
        self.closed: list[S2SStream] = []
        self.authenticated: list[tuple[str, str, bool]] = []
        self.piggybacked: list[tuple[str, bool]] = []

    def is_local(self, domain: str) -> bool:
        return domain in ("mb.example", "conference.mb.example")

    def default_host(self) -> str:
        return "mb.example"

    def dialback_allowed(self, domain: str) -> bool:
        return self.dialback

    def dialback_key(self, receiving: str, originating: str, stream_id: str) -> str:
        return dialback_key(SECRET, receiving, originating, stream_id)

    def check_key(self, receiving: str, originating: str, stream_id: str, key: str) -> bool:
        return key_matches(SECRET, receiving, originating, stream_id, key)

    def verify_dialback(self, stream, originating, receiving, key) -> None:
        self.verify_asked.append((originating, receiving, key))

    def verify_answer(self, stream, el) -> None:
        pass

    def route_incoming(self, stanza, stream) -> None:
        self.routed.append(stanza)

    def outgoing_ready(self, stream) -> None:
        self.ready.append(stream)

    def bidi_wanted(self) -> bool:
        return True

    def piggyback_done(self, stream, local, ok) -> None:
        self.piggybacked.append((local, ok))

    def incoming_authenticated(self, stream, remote, local) -> None:
        self.authenticated.append((remote, local, stream.bidi))

    def stream_closed(self, stream) -> None:
        self.closed.append(stream)


class Peer:
    """Reads what the stream writes."""

    def __init__(self) -> None:
        self.parser = PyXMLParser()
        self.events: list = []

    def write(self, data: bytes) -> None:
        if data.startswith(b"<?xml"):
            self.parser.reset()  # a new stream (after TLS or SASL)
        self.events.extend(self.parser.feed(data))

    def elements(self) -> list[Element]:
        out = [e for e in self.events if isinstance(e, Element)]
        self.events.clear()
        return out

    def reset(self) -> None:
        self.parser.reset()


def incoming(host: Host, *, authenticates=lambda d: False, secure_now: bool = True):
    peer = Peer()
    s = S2SStream(host, peer.write, outgoing=False)
    s.receive_data(HEADER.format(frm="pro.example", to="mb.example", extra="").encode())
    features = peer.elements()[0]
    assert features.find("starttls", "urn:ietf:params:xml:ns:xmpp-tls") is not None
    if secure_now:
        s.receive_data(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert peer.elements()[0].tag == "proceed" and s.tls_requested
        s.tls_started(authenticates, "TLSv1.3")
        peer.reset()
        s.receive_data(HEADER.format(frm="pro.example", to="mb.example", extra="").encode())
    return s, peer


def stream_error(peer: Peer) -> str:
    for e in peer.elements():
        if e.tag == "error" and e.ns == "http://etherx.jabber.org/streams":
            return e.first_child().tag
    raise AssertionError("no stream error")


def test_incoming_requires_tls_before_anything():
    host = Host()
    s, peer = incoming(host, secure_now=False)
    s.receive_data(b"<db:result from='pro.example' to='mb.example'>k</db:result>")
    assert stream_error(peer) == "policy-violation"
    assert s.stage == ST_CLOSED


def test_incoming_sasl_external_only_when_the_certificate_names_the_domain():
    host = Host()
    s, peer = incoming(host, authenticates=lambda d: d == "pro.example")
    features = peer.elements()[0]
    mechs = features.find("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl")
    assert [m.text for m in mechs.elements()] == ["EXTERNAL"]
    # An authzid other than the header's 'from' is refused (XEP-0178 §3).
    other = base64.b64encode(b"evil.example").decode()
    s.receive_data(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{other}</auth>".encode())
    f = peer.elements()[0]
    assert f.tag == "failure" and f.first_child().tag == "invalid-authzid"
    s.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
    assert peer.elements()[0].tag == "success"
    assert ("pro.example", "mb.example") in s.pairs

    s2, peer2 = incoming(Host(), authenticates=lambda d: False)
    assert peer2.elements()[0].find("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl") is None
    s2.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
    f = peer2.elements()[0]
    assert f.tag == "failure" and f.first_child().tag == "not-authorized"


def test_stanzas_checked_against_the_authenticated_pairs():
    host = Host()
    s, peer = incoming(host, authenticates=lambda d: d == "pro.example")
    peer.elements()
    s.receive_data(b"<message from='a@pro.example' to='b@mb.example'><body>x</body></message>")
    assert stream_error(peer) == "not-authorized"  # before authentication

    s, peer = incoming(host, authenticates=lambda d: d == "pro.example")
    s.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
    peer.reset()
    s.receive_data(HEADER.format(frm="pro.example", to="mb.example", extra="").encode())
    peer.elements()
    s.receive_data(b"<message from='a@pro.example/r' to='b@mb.example'><body>ok</body></message>")
    assert len(host.routed) == 1 and host.routed[0].findtext("body") == "ok"
    s.receive_data(b"<message from='a@other.example' to='b@mb.example'><body>no</body></message>")
    assert stream_error(peer) == "invalid-from"
    assert len(host.routed) == 1


def test_stanza_to_a_domain_we_do_not_serve_and_without_from():
    host = Host()
    s, peer = incoming(host, authenticates=lambda d: True)
    s.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
    peer.reset()
    s.receive_data(HEADER.format(frm="pro.example", to="mb.example", extra="").encode())
    s.receive_data(b"<message to='b@mb.example'/>")
    assert stream_error(peer) == "improper-addressing"
    s, peer = incoming(host, authenticates=lambda d: True)
    s.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
    peer.reset()
    s.receive_data(HEADER.format(frm="pro.example", to="mb.example", extra="").encode())
    s.receive_data(b"<message from='a@pro.example' to='b@elsewhere.example'/>")
    assert stream_error(peer) == "host-unknown"


def test_header_for_a_domain_we_do_not_serve():
    peer = Peer()
    s = S2SStream(Host(), peer.write, outgoing=False)
    s.receive_data(HEADER.format(frm="pro.example", to="nope.example", extra="").encode())
    assert stream_error(peer) == "host-unknown"


def test_incoming_dialback_asks_the_authoritative_server_and_piggybacks():
    host = Host()
    s, peer = incoming(host)
    peer.elements()
    s.receive_data(b"<db:result from='pro.example' to='mb.example'>abc</db:result>")
    assert host.verify_asked == [("pro.example", "mb.example", "abc")]
    s.dialback_done("pro.example", "mb.example", True)
    res = peer.elements()[0]
    assert (res.tag, res.get("type"), res.get("from"), res.get("to")) == (
        "result", "valid", "mb.example", "pro.example")
    # A second domain on the same stream (XEP-0220 §2.5), to our component.
    s.receive_data(b"<db:result from='chat.pro.example' to='conference.mb.example'>def</db:result>")
    s.dialback_done("chat.pro.example", "conference.mb.example", True)
    assert ("chat.pro.example", "conference.mb.example") in s.pairs
    s.receive_data(b"<message from='r@chat.pro.example' to='x@conference.mb.example'/>")
    assert len(host.routed) == 1
    # An invalid key ends the stream.
    s.receive_data(b"<db:result from='third.example' to='mb.example'>bad</db:result>")
    s.dialback_done("third.example", "mb.example", False)
    els = peer.elements()
    assert any(e.tag == "result" and e.get("type") == "invalid" for e in els)
    assert s.stage == ST_CLOSED


def test_incoming_dialback_refused_by_policy_and_to_unknown_host():
    host = Host(dialback=False)
    s, peer = incoming(host)
    peer.elements()
    s.receive_data(b"<db:result from='pro.example' to='mb.example'>abc</db:result>")
    res = peer.elements()[0]
    assert res.get("type") == "error" and res.find("error", "jabber:client").first_child().tag == "not-acceptable"
    assert host.verify_asked == []
    s.receive_data(b"<db:result from='pro.example' to='nope.example'>abc</db:result>")
    res = peer.elements()[0]
    assert res.get("type") == "error" and res.find("error", "jabber:client").first_child().tag == "item-not-found"


def test_db_verify_answered_as_the_authoritative_server():
    host = Host()
    s, peer = incoming(host)
    peer.elements()
    key = dialback_key(SECRET, "pro.example", "mb.example", "sid1")
    s.receive_data(f"<db:verify from='pro.example' to='mb.example' id='sid1'>{key}</db:verify>".encode())
    s.receive_data(f"<db:verify from='pro.example' to='mb.example' id='sid2'>{key}</db:verify>".encode())
    a, b = peer.elements()
    assert (a.tag, a.get("type"), a.get("from"), a.get("to"), a.get("id")) == \
        ("verify", "valid", "mb.example", "pro.example", "sid1")
    assert b.get("type") == "invalid"  # a key is bound to its stream id


def outgoing(host: Host, authenticates=lambda d: True):
    peer = Peer()
    s = S2SStream(host, peer.write, outgoing=True, local="mb.example", remote="pro.example")
    s.start()
    hdr = peer.events.pop(0)
    assert isinstance(hdr, StreamHeader) and hdr.attrs["from"] == "mb.example" and hdr.attrs["to"] == "pro.example"
    s.receive_data(HEADER.format(frm="pro.example", to="mb.example", extra=" id='S1'").encode())
    s.receive_data(b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"
                   b"</starttls></stream:features>")
    assert peer.elements()[0].tag == "starttls"
    s.receive_data(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert s.tls_requested
    peer.reset()
    s.tls_started(authenticates, "TLSv1.3")
    peer.events.clear()
    s.receive_data(HEADER.format(frm="pro.example", to="mb.example", extra=" id='S2'").encode())
    return s, peer


def sasl_external(o: S2SStream) -> None:
    """The peer offers SASL EXTERNAL and accepts it; the restarted stream's header arrives."""
    o.receive_data(b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                   b"<mechanism>EXTERNAL</mechanism></mechanisms></stream:features>")
    o.receive_data(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    o.receive_data(HEADER.format(frm="pro.example", to="mb.example", extra=" id='S3'").encode())


def test_outgoing_sasl_external_then_ready():
    host = Host()
    s, peer = outgoing(host)
    s.receive_data(b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                   b"<mechanism>EXTERNAL</mechanism></mechanisms></stream:features>")
    auth = peer.elements()[0]
    assert auth.get("mechanism") == "EXTERNAL" and base64.b64decode(auth.text) == b"mb.example"
    s.receive_data(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    peer.reset()
    s.receive_data(HEADER.format(frm="pro.example", to="mb.example", extra=" id='S3'").encode())
    s.receive_data(b"<stream:features/>")
    assert s.stage == ST_READY and host.ready == [s] and s.auth_method == "pkix"


def test_outgoing_dialback_key_uses_the_receiving_stream_id():
    host = Host()
    s, peer = outgoing(host, authenticates=lambda d: False)
    s.receive_data(b"<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>")
    res = peer.elements()[0]
    assert res.tag == "result" and res.text == dialback_key(SECRET, "pro.example", "mb.example", "S2")
    s.receive_data(b"<db:result from='pro.example' to='mb.example' type='valid'/>")
    assert s.stage == ST_READY and s.auth_method == "dialback"


def test_outgoing_refuses_an_unverified_peer_when_dialback_is_off():
    host = Host(dialback=False)
    s, peer = outgoing(host, authenticates=lambda d: False)
    s.receive_data(b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                   b"<mechanism>EXTERNAL</mechanism></mechanisms><dialback xmlns='urn:xmpp:features:dialback'/>"
                   b"</stream:features>")
    assert stream_error(peer) == "policy-violation"
    assert s.stage == ST_CLOSED and "does not verify" in (s.close_reason or "")
    assert host.ready == []


def test_outgoing_requires_tls():
    host = Host()
    peer = Peer()
    s = S2SStream(host, peer.write, outgoing=True, local="mb.example", remote="pro.example")
    s.start()
    s.receive_data(HEADER.format(frm="pro.example", to="mb.example", extra=" id='S1'").encode())
    s.receive_data(b"<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>")
    assert stream_error(peer) == "policy-violation"


def test_srv_order_priority_then_weight():
    recs = [(10, 0, "c", 5269, False), (0, 10, "a", 5270, True), (0, 90, "b", 5269, False)]
    counts = {"a": 0, "b": 0}
    rng = random.Random(1)
    for _ in range(400):
        order = order_srv(recs, rng)
        assert order[-1] == Target("c", 5269, False)  # the higher priority value comes last
        counts[order[0].host] += 1
    assert counts["b"] > counts["a"] > 0  # weight 90 first far more often than weight 10


def test_dialback_secret_is_kept(tmp_path):
    a = load_secret(str(tmp_path))
    assert load_secret(str(tmp_path)) == a and len(a) >= 32
    assert (tmp_path / "s2s-dialback.secret").stat().st_mode & 0o077 == 0


def test_certificate_identities_dns_srv_xmppaddr():
    key = ec.generate_private_key(ec.SECP256R1())
    srv = b"_xmpp-server.srv.example"
    xmpp = b"xmpp.example"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("Dns.Example"),
                x509.OtherName(x509.ObjectIdentifier("1.3.6.1.5.5.7.8.7"), bytes([0x16, len(srv)]) + srv),
                x509.OtherName(x509.ObjectIdentifier("1.3.6.1.5.5.7.8.5"), bytes([0x0C, len(xmpp)]) + xmpp),
            ]), critical=False)
            .sign(key, hashes.SHA256()))
    assert identities(cert) == {"dns": ["dns.example"], "srv": ["srv.example"], "xmpp": ["xmpp.example"]}


@pytest.mark.parametrize("text", ["", "="])
def test_empty_authzid_means_the_header_domain(text):
    host = Host()
    s, peer = incoming(host, authenticates=lambda d: d == "pro.example")
    peer.elements()
    s.receive_data(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{text}</auth>".encode())
    assert peer.elements()[0].tag == "success"


def test_tor_socks_config():
    from mbxmpp.config import ConfigError, _build
    base = {"server": {"domains": ["a.example"]}}
    assert _build({**base, "s2s": {"tor_socks": "[::1]:9050"}}, None).s2s.tor_socks == ("::1", 9050)
    assert _build({**base, "s2s": {"tor_socks": ""}}, None).s2s.tor_socks is None
    with pytest.raises(ConfigError, match="s2s.tor_socks"):
        _build({**base, "s2s": {"tor_socks": "localhost"}}, None)


async def test_happy_eyeballs_falls_back_to_the_next_address():
    import socket

    from mbxmpp.s2s.net import happy_connect
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        # The first address cannot be reached (IPv6 documentation prefix, no route here).
        sock = await happy_connect(["2001:db8::1", "127.0.0.1"], port, delay=0.05)
        assert sock.getpeername() == ("127.0.0.1", port)
        sock.close()
        with pytest.raises(OSError):
            await happy_connect(["127.0.0.1"], 1, delay=0.05)  # nothing listens on port 1
    finally:
        listener.close()


def _ca_and_leaf(name: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(2)
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(3)
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    der = serialization.Encoding.DER
    return ca.public_bytes(der), leaf.public_bytes(der)


def test_dane_ee_ta_and_mismatch():
    from mbxmpp.s2s.certs import TrustStore, dane_authenticates, tlsa_record
    ca, leaf = _ca_and_leaf("peer.example")
    nobody = TrustStore(None, system=False)  # PKIX trusts nothing here
    chain = [leaf, ca]
    assert dane_authenticates(chain, [tlsa_record(leaf, 3, 1, 1)], nobody, "peer.example")
    assert dane_authenticates(chain, [tlsa_record(leaf, 3, 0, 2)], nobody, "whatever.example")  # EE: no name check
    # DANE-TA: the CA of the chain is the trust anchor, and the name must match.
    assert dane_authenticates(chain, [tlsa_record(ca, 2, 0, 1)], nobody, "peer.example")
    assert not dane_authenticates(chain, [tlsa_record(ca, 2, 0, 1)], nobody, "other.example")
    # PKIX-EE needs PKIX too.
    assert not dane_authenticates(chain, [tlsa_record(leaf, 1, 1, 1)], nobody, "peer.example")
    other_ca, other_leaf = _ca_and_leaf("peer.example")
    assert not dane_authenticates(chain, [tlsa_record(other_leaf, 3, 1, 1), tlsa_record(other_ca, 2, 1, 1)],
                                  nobody, "peer.example")


def test_bidi_both_directions():
    # Incoming: the peer asks for bidi before authenticating; we are told, to send on it.
    host = Host()
    s, peer = incoming(host, authenticates=lambda d: d == "pro.example")
    assert peer.elements()[0].find("bidi", "urn:xmpp:features:bidi") is not None
    s.receive_data(b"<bidi xmlns='urn:xmpp:bidi'/>")
    s.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
    assert host.authenticated == [("pro.example", "mb.example", True)]
    # Outgoing: we ask for it when offered, and take the peer's stanzas for the reverse pair only.
    host = Host()
    o, peer = outgoing(host, authenticates=lambda d: True)
    o.receive_data(b"<stream:features><bidi xmlns='urn:xmpp:features:bidi'/><mechanisms "
                   b"xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms>"
                   b"</stream:features>")
    bidi, auth = peer.elements()
    assert (bidi.tag, bidi.ns, auth.tag) == ("bidi", "urn:xmpp:bidi", "auth")
    o.receive_data(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    o.receive_data(HEADER.format(frm="pro.example", to="mb.example", extra=" id='S3'").encode())
    o.receive_data(b"<stream:features/>")
    assert o.stage == ST_READY
    o.receive_data(b"<message from='p@pro.example' to='a@mb.example'><body>back</body></message>")
    assert host.routed[0].findtext("body") == "back"
    o.receive_data(b"<message from='p@evil.example' to='a@mb.example'/>")
    assert stream_error(peer) == "invalid-from"


def test_stanzas_on_an_outgoing_stream_without_bidi():
    host = Host()
    o, peer = outgoing(host, authenticates=lambda d: True)
    sasl_external(o)
    o.receive_data(b"<stream:features/>")
    peer.elements()
    o.receive_data(b"<message from='p@pro.example' to='a@mb.example'/>")
    assert stream_error(peer) == "unsupported-stanza-type"


def test_outgoing_piggybacking_needs_dialback_errors():
    host = Host()
    o, peer = outgoing(host, authenticates=lambda d: True)
    sasl_external(o)
    o.receive_data(b"<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>"
                   b"</stream:features>")
    assert o.stage == ST_READY and o.can_piggyback()
    peer.elements()
    o.piggyback("conference.mb.example")
    res = peer.elements()[0]
    assert (res.tag, res.get("from"), res.get("to")) == ("result", "conference.mb.example", "pro.example")
    assert res.text == dialback_key(SECRET, "pro.example", "conference.mb.example", "S3")
    o.receive_data(b"<db:result from='pro.example' to='conference.mb.example' type='valid'/>")
    assert host.piggybacked == [("conference.mb.example", True)]
    assert ("conference.mb.example", "pro.example") in o.pairs and o.stage == ST_READY
    # A peer without dialback errors: no piggybacking.
    o2, _ = outgoing(Host(), authenticates=lambda d: True)
    o2.receive_data(b"<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>")
    o2.receive_data(b"<db:result from='pro.example' to='mb.example' type='valid'/>")
    assert o2.stage == ST_READY and not o2.can_piggyback()


def test_check_config_reads_the_ca_file(tmp_path):
    from mbxmpp.config import _build, check_config
    base = {"server": {"domains": ["a.example"], "data_dir": str(tmp_path / "data")}}
    missing = _build({**base, "s2s": {"ca_file": str(tmp_path / "nope.pem")}}, None)
    assert any(e.startswith("s2s.ca_file: cannot read") for e in check_config(missing))
    (tmp_path / "junk.pem").write_text("not a certificate")
    junk = _build({**base, "s2s": {"ca_file": str(tmp_path / "junk.pem")}}, None)
    assert any("holds no PEM certificate" in e for e in check_config(junk))


@pytest.mark.parametrize("iq, text", [
    ("<iq from='eve@evil.example/x' to='mb.example' type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
     "IQ needs an id and a valid type"),
    ("<iq from='eve@evil.example/x' to='mb.example' id='1' type='fetch'><ping xmlns='urn:xmpp:ping'/></iq>",
     "IQ needs an id and a valid type"),
    ("<iq from='eve@evil.example/x' to='mb.example' id='2' type='get'/>", "IQ get/set needs exactly one payload"),
    ("<iq from='eve@evil.example/x' to='mb.example' id='3' type='set'><a xmlns='x'/><b xmlns='x'/></iq>",
     "IQ get/set needs exactly one payload"),
])
def test_malformed_iq_from_a_peer_is_refused_with_bad_request(tmp_path, iq, text):
    """RFC 6120 §8.2.3: what the c2s stream refuses of clients is refused of peer servers too."""
    routed: list = []
    bounced: list = []
    router = types.SimpleNamespace(route=routed.append, bounce=lambda st, e: bounced.append((st, e)))
    router.route_from_peer = functools.partial(Router.route_from_peer, router)  # the real check
    service = S2SService(types.SimpleNamespace(router=router, data_dir=str(tmp_path), config=Config()))
    service.route_incoming(parse_stanza(iq), None)  # type: ignore[arg-type]
    assert routed == [] and [(e.condition, e.text) for _, e in bounced] == [("bad-request", text)]
    service.route_incoming(parse_stanza(
        "<iq from='eve@evil.example/x' to='mb.example' id='4' type='get'><ping xmlns='urn:xmpp:ping'/></iq>"),
        None)  # type: ignore[arg-type]
    assert len(routed) == 1
