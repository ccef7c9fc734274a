"""The server-to-server stream (RFC 6120), both directions, sans-IO.

Incoming (we receive): our header answers the peer's; STARTTLS is required; then SASL EXTERNAL
(XEP-0178) when the peer's certificate authenticates the domain of its header, or Server Dialback
(XEP-0220) for each domain the peer claims (several per stream: "piggybacking"). Every stanza's
``from`` must be a domain authenticated on this stream and its ``to`` one of ours, as a pair.

Outgoing (we initiate): header, STARTTLS, then SASL EXTERNAL if offered, else dialback; the
connection is told when the stream is ready for stanzas. Dialback verification requests
(``<db:verify/>``, we ask an authoritative server) go out on any secured outgoing stream.

Bytes come in through ``receive_data`` and go out through ``write``; TLS is asked for with
``tls_requested`` and finished by the connection calling ``tls_started``.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any, Callable, Protocol

from ..errors import StreamError
from ..stream.feed import feed_events
from ..jid import JID, JIDError
from ..util.ids import new_id
from ..util.logjson import loggable
from ..xml import STREAM_END, Element, StreamHeader, XMLParser
from ..xml.build import stream_error_bytes
from ..xml.element import _escape_attr, _escape_text
from ..xml.ns import (
    NS_CLIENT,
    NS_DIALBACK,
    NS_DIALBACK_FEATURE,
    NS_SASL,
    NS_SERVER,
    NS_STANZAS,
    NS_STREAMS,
    NS_TLS,
)

log = logging.getLogger(__name__)

STANZAS = frozenset(("message", "presence", "iq"))
NS_BIDI = "urn:xmpp:bidi"                    # XEP-0288
NS_BIDI_FEATURE = "urn:xmpp:features:bidi"

ST_HEADER = 0      # waiting for the peer's stream header
ST_FEATURES = 1    # outgoing: waiting for <stream:features/>
ST_TLS = 2         # incoming: TLS offered, not done / outgoing: <starttls/> sent
ST_AUTH = 3        # secure; authentication (SASL or dialback) may go on
ST_SASL = 4        # outgoing: <auth/> sent, waiting for success or failure
ST_READY = 5       # outgoing: authenticated, stanzas flow / incoming: features sent after TLS
ST_CLOSED = 6


class S2SHost(Protocol):
    """What the stream needs from the federation service (mbxmpp.s2s.net.S2SService)."""

    def is_local(self, domain: str) -> bool: ...
    def default_host(self) -> str: ...
    def dialback_allowed(self, domain: str) -> bool: ...
    def dialback_key(self, receiving: str, originating: str, stream_id: str) -> str: ...
    def check_key(self, receiving: str, originating: str, stream_id: str, key: str) -> bool: ...
    def verify_dialback(self, stream: S2SStream, originating: str, receiving: str, key: str) -> None: ...
    def verify_answer(self, stream: S2SStream, el: Element) -> None: ...
    def route_incoming(self, stanza: Element, stream: S2SStream) -> None: ...
    def outgoing_ready(self, stream: S2SStream) -> None: ...
    def bidi_wanted(self) -> bool: ...
    def piggyback_done(self, stream: S2SStream, local: str, ok: bool) -> None: ...
    def incoming_authenticated(self, stream: S2SStream, remote: str, local: str) -> None: ...
    def stream_closed(self, stream: S2SStream) -> None: ...


class S2SStream:
    def __init__(self, host: S2SHost, write: Callable[[bytes], None], *, outgoing: bool,
                 local: str | None = None, remote: str | None = None, secure: bool = False,
                 peer: str = "", max_stanza_size: int = 524288) -> None:
        self.host = host
        self.write = write
        self.outgoing = outgoing
        self.local = local      # our domain (the header's 'from' when we initiate, 'to' when not)
        self.remote = remote    # the peer's domain as its header or our connector names it
        self.secure = secure
        self.peer = peer
        self.parser = XMLParser(max_stanza_size=max_stanza_size)
        self.stage = ST_HEADER
        self.header_sent = False
        self.stream_id = ""     # the id of the stream the receiving side created
        self.tls_requested = False
        # Set by the connection after the TLS handshake: does the peer's certificate
        # authenticate this domain (PKIX + RFC 6125)?
        self.cert_authenticates: Callable[[str], bool] = lambda domain: False
        self.tls_version = ""
        self.auth_method = ""   # "pkix" (SASL EXTERNAL) or "dialback"
        # Outgoing: DNSSEC-validated TLSA records for the peer (DANE), and how the peer's
        # certificate was found: "dane", "dane-mismatch", "pkix" or "none".
        self.dane_records: list[tuple[int, int, int, bytes]] = []
        self.peer_verified = ""
        # Incoming: the (remote domain, local domain) pairs authenticated on this stream.
        # Outgoing: the pair is (local, remote) once ``stage == ST_READY``.
        self.pairs: set[tuple[str, str]] = set()
        self.verifies: list[bytes] = []   # <db:verify/> waiting for a secured outgoing stream
        self.dialback_offered = False
        self.dialback_errors = False   # the peer handles dialback errors (XEP-0220 §2.4)
        self.piggybacking: set[str] = set()   # our other domains waiting for their db:result
        # XEP-0288: stanzas flow both ways on this stream (asked by the initiating side)
        self.bidi = False
        self.close_reason: str | None = None   # why an outgoing stream failed ("timeout", ...)
        self.on_close: Callable[[], None] | None = None
        self.stanzas_in = 0
        self.stanzas_out = 0

    # -- input ------------------------------------------------------------------------------
    def start(self) -> None:
        """Outgoing: send the initial header."""
        self._send_header()

    def receive_data(self, data: bytes) -> None:
        if self.stage == ST_CLOSED or self.tls_requested:
            return
        # (after <proceed/> or <starttls/> the rest is plaintext injection: dropped)
        error = feed_events(self.parser, data, self._event,
                            lambda: self.stage == ST_CLOSED or self.tls_requested)
        if error is not None:
            self.fail(error)

    def _event(self, event: Any) -> None:
        try:
            if event.__class__ is Element:
                if self.outgoing:
                    self._element_out(event)
                else:
                    self._element_in(event)
            elif event.__class__ is StreamHeader:
                self._header(event)
            elif event is STREAM_END:
                if self.close_reason is None:
                    self.close_reason = "closed by the peer"
                self.close()
        except StreamError as e:
            self.fail(e)
        except Exception:
            log.exception("s2s %s: internal error on %s", self.peer, loggable(event))
            self.fail(StreamError("internal-server-error"))

    # -- headers ------------------------------------------------------------------------------
    def _send_header(self, to: str | None = None) -> None:
        if self.header_sent:
            return
        self.header_sent = True
        attrs = ""
        if self.outgoing:
            attrs = f" from='{_escape_attr(self.local or '')}' to='{_escape_attr(self.remote or '')}'"
        else:
            self.stream_id = new_id(16)
            attrs = f" id='{self.stream_id}' from='{_escape_attr(self.local or self.host.default_host())}'"
            if to:
                attrs += f" to='{_escape_attr(to)}'"
        self.write(f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                   f"xmlns:stream='http://etherx.jabber.org/streams' "
                   f"xmlns:db='jabber:server:dialback'{attrs} version='1.0'>".encode())

    def _header(self, h: StreamHeader) -> None:
        if self.stage != ST_HEADER:
            raise StreamError("not-well-formed", "unexpected stream header")
        if not self.outgoing:
            to = _domain(h.attrs.get("to"))
            frm = _domain(h.attrs.get("from"))
            if to is not None and not self.host.is_local(to):
                self._send_header(frm)
                raise StreamError("host-unknown", "this server does not serve that domain")
            if self.local is None:
                self.local = to or self.host.default_host()
            elif to is not None and to != self.local:
                raise StreamError("host-unknown", "the domain changed on stream restart")
            if frm is not None:
                if self.remote is not None and frm != self.remote:
                    raise StreamError("invalid-from", "the domain changed on stream restart")
                self.remote = frm
            self._send_header(frm)
        else:
            self.stream_id = h.attrs.get("id", "")
        if h.tag != "stream" or h.ns != NS_STREAMS:
            raise StreamError("invalid-namespace", "the stream element must be <stream:stream>")
        if h.default_ns != NS_SERVER:
            raise StreamError("invalid-namespace", "the content namespace must be jabber:server")
        version = h.attrs.get("version", "0.9")
        major = version.split(".", 1)[0]
        if not major.isdigit() or int(major) < 1:
            # TLS is required, and only XMPP 1.0 streams negotiate it.
            raise StreamError("unsupported-version", "XMPP 1.0 or later is required")
        if self.outgoing:
            if not self.stream_id:
                raise StreamError("invalid-xml", "the stream header has no id")
            self.stage = ST_FEATURES
        else:
            self._send_features()

    # -- incoming side ------------------------------------------------------------------------
    def _send_features(self) -> None:
        out = [b"<stream:features>"]
        if not self.secure:
            out.append(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>")
            self.stage = ST_TLS
        else:
            remote = self.remote
            if remote is not None and (remote, self.local) not in self.pairs \
                    and self.cert_authenticates(remote):
                out.append(b"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                           b"<mechanism>EXTERNAL</mechanism></mechanisms>")
            # Dialback stays offered after SASL: other domains may piggyback (XEP-0220 §2.5).
            out.append(b"<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>")
            if not self.bidi and not self.pairs:
                out.append(b"<bidi xmlns='urn:xmpp:features:bidi'/>")
            self.stage = ST_AUTH
        out.append(b"</stream:features>")
        self.write(b"".join(out))

    def _element_in(self, el: Element) -> None:
        ns, tag = el.ns, el.tag
        if tag in STANZAS and ns == NS_CLIENT:  # (the tokenizer reads jabber:server as client)
            if self.stage != ST_AUTH:
                raise StreamError("not-authorized", "negotiate TLS and authenticate first")
            self._stanza_in(el)
        elif ns == NS_STREAMS and tag == "error":
            log.info("s2s in %s: the peer sent a stream error: %s", self.peer, _condition(el))
            self.close()
        elif ns == NS_TLS and tag == "starttls":
            if self.secure or self.stage != ST_TLS:
                self.write(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                self.close()
                return
            self.write(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            self.tls_requested = True
        elif not self.secure:
            raise StreamError("policy-violation", "TLS is required")  # RFC 6120 §5.3.1
        elif ns == NS_BIDI and tag == "bidi":
            if self.pairs:  # XEP-0288 §2: before authentication
                raise StreamError("policy-violation", "bidi must be enabled before authentication")
            self.bidi = True
        elif ns == NS_SASL and tag == "auth":
            self._sasl_in(el)
        elif ns == NS_SASL and tag == "abort":
            self.write(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><aborted/></failure>")
        elif ns == NS_DIALBACK and tag == "result":
            self._db_result_in(el)
        elif ns == NS_DIALBACK and tag == "verify":
            self._db_verify_in(el)
        else:
            raise StreamError("unsupported-stanza-type", f"unknown element {tag!r} in {ns!r}")

    def _sasl_in(self, el: Element) -> None:
        remote = self.remote
        if el.get("mechanism") != "EXTERNAL":
            self._sasl_failure("invalid-mechanism")
            return
        if remote is None or (remote, self.local) in self.pairs:
            self._sasl_failure("not-authorized", "no 'from' in the stream header" if remote is None
                               else "already authenticated")
            return
        text = el.text.strip()
        try:
            authzid = "" if text in ("", "=") else base64.b64decode(text, validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            self._sasl_failure("incorrect-encoding")
            return
        if authzid and authzid != remote:
            self._sasl_failure("invalid-authzid")  # XEP-0178 §3: it must be the header's 'from'
            return
        if not self.cert_authenticates(remote):
            self._sasl_failure("not-authorized", "the certificate does not authenticate " + remote)
            return
        self.pairs.add((remote, self.local or ""))
        self.auth_method = "pkix"
        log.info("s2s in %s: %s authenticated by certificate (SASL EXTERNAL)%s", self.peer, remote,
                 ", bidirectional" if self.bidi else "")
        self.write(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        self.restart()
        self.host.incoming_authenticated(self, remote, self.local or "")

    def _sasl_failure(self, condition: str, text: str | None = None) -> None:
        f = Element("failure", NS_SASL)
        f.add(condition)
        if text:
            f.add("text", attrs={"xml:lang": "en"}, text=text)
        self.write(f.to_bytes(""))

    def _db_result_in(self, el: Element) -> None:
        frm, to = _domain(el.get("from")), _domain(el.get("to"))
        key = el.text.strip()
        if frm is None or to is None or not key:
            raise StreamError("improper-addressing", "db:result needs from, to and a key")
        if not self.host.is_local(to):
            self.db_result(to, frm, "error", "item-not-found", "cancel")
            return
        if (frm, to) in self.pairs:
            self.db_result(to, frm, "valid")
            return
        # XEP-0344: a certificate that authenticates the originating domain is enough.
        if self.cert_authenticates(frm):
            self.dialback_done(frm, to, True, "pkix")
            return
        if not self.host.dialback_allowed(frm):
            log.info("s2s in %s: dialback refused for %s (a valid certificate is required)",
                     self.peer, frm)
            self.db_result(to, frm, "error", "not-acceptable", "cancel",
                           "a valid certificate is required for " + frm)
            return
        self.host.verify_dialback(self, frm, to, key)

    def dialback_done(self, originating: str, receiving: str, valid: bool | None,
                      method: str = "dialback") -> None:
        """The answer for a <db:result/> (None: the authoritative server was unreachable)."""
        if self.stage == ST_CLOSED:
            return
        if valid:
            self.pairs.add((originating, receiving))
            self.auth_method = self.auth_method or method
            log.info("s2s in %s: %s authenticated for %s (%s)%s", self.peer, originating, receiving,
                     method, ", bidirectional" if self.bidi else "")
            self.db_result(receiving, originating, "valid")
            self.host.incoming_authenticated(self, originating, receiving)
        elif valid is None:
            self.db_result(receiving, originating, "error", "remote-server-not-found", "cancel")
        else:
            # XEP-0220 §2.3: an invalid key ends the stream.
            self.db_result(receiving, originating, "invalid")
            self.fail(StreamError("not-authorized", "dialback key not valid"))

    def db_result(self, frm: str, to: str, type_: str, condition: str | None = None,
                  error_type: str = "cancel", text: str | None = None) -> None:
        el = Element("result", NS_DIALBACK, {"from": frm, "to": to, "type": type_})
        if condition:
            err = el.add("error", NS_CLIENT, {"type": error_type})
            err.add(condition, NS_STANZAS)
            if text:
                err.add("text", NS_STANZAS, {"xml:lang": "en"}, text=text)
        self.write(_db_bytes(el))

    def _db_verify_in(self, el: Element) -> None:
        # We are the authoritative server: was this key made by us for that stream?
        frm, to, sid = _domain(el.get("from")), _domain(el.get("to")), el.get("id")
        key = el.text.strip()
        if frm is None or to is None or not sid:
            raise StreamError("improper-addressing", "db:verify needs from, to and id")
        attrs = {"from": to, "to": frm, "id": sid}
        if not self.host.is_local(to):
            attrs["type"] = "error"
            reply = Element("verify", NS_DIALBACK, attrs)
            reply.add("error", NS_CLIENT, {"type": "cancel"}).add("item-not-found", NS_STANZAS)
        else:
            ok = bool(key) and self.host.check_key(frm, to, sid, key)
            attrs["type"] = "valid" if ok else "invalid"
            reply = Element("verify", NS_DIALBACK, attrs)
        self.write(_db_bytes(reply))

    def _stanza_in(self, st: Element) -> None:
        # RFC 6120 §8.1.1.1 / §8.1.2.1: both addresses are required between servers.
        frm = _address(st, "from", "invalid-from")
        to = _address(st, "to", "improper-addressing")
        if not self._accepts(frm.domain, to.domain):
            if not self.pairs:
                raise StreamError("not-authorized", "authenticate first")  # RFC 6120 §6.4.8
            if not self.host.is_local(to.domain):
                raise StreamError("host-unknown", f"{to.domain} is not served here")
            # RFC 6120 §4.9.3.10, XEP-0220 §2.4: a domain this stream did not authenticate.
            raise StreamError("invalid-from", f"{frm.domain} is not authenticated on this stream")
        self.stanzas_in += 1
        st._bytes = None
        self.host.route_incoming(st, self)

    def _accepts(self, frm: str, to: str) -> bool:
        """May a stanza from domain ``frm`` to domain ``to`` come in on this stream?"""
        if not self.outgoing:
            return (frm, to) in self.pairs
        # Our own stream: only with bidi, only for the reverse of what we authenticated.
        return self.bidi and self.stage == ST_READY and (to, frm) in self.pairs

    # -- outgoing side --------------------------------------------------------------------------
    def _element_out(self, el: Element) -> None:
        ns, tag = el.ns, el.tag
        if ns == NS_STREAMS and tag == "features":
            self._features_out(el)
        elif ns == NS_TLS and tag == "proceed" and self.stage == ST_TLS:
            self.tls_requested = True
        elif ns == NS_TLS and tag == "failure":
            self.close_reason = "TLS refused by the peer"
            self.close()
        elif ns == NS_SASL and self.stage == ST_SASL and tag == "success":
            self.auth_method = "pkix"
            self.restart()
            self._send_header()
        elif ns == NS_SASL and self.stage == ST_SASL and tag == "failure":
            if self.dialback_offered and self.host.dialback_allowed(self.remote or ""):
                self._dialback_out()
            else:
                self.close_reason = "SASL EXTERNAL refused and no dialback"
                self.close()
        elif ns == NS_DIALBACK and tag == "result":
            self._db_result_out(el)
        elif ns == NS_DIALBACK and tag == "verify":
            self.host.verify_answer(self, el)
        elif ns == NS_STREAMS and tag == "error":
            self.close_reason = "stream error from the peer: " + _condition(el)
            log.info("s2s out %s: %s", self.remote, self.close_reason)
            self.close()
        elif tag in STANZAS and ns == NS_CLIENT:
            if not self.bidi:
                raise StreamError("unsupported-stanza-type", "this stream is not bidirectional")
            self._stanza_in(el)  # XEP-0288: the peer's stanzas on our stream
        else:
            raise StreamError("unsupported-stanza-type", f"unexpected element {tag!r} in {ns!r}")

    def _features_out(self, features: Element) -> None:
        if self.stage != ST_FEATURES:
            raise StreamError("not-well-formed", "unexpected stream features")
        db_feature = features.find("dialback", NS_DIALBACK_FEATURE)
        self.dialback_offered = db_feature is not None
        self.dialback_errors = db_feature is not None and db_feature.find("errors") is not None
        if not self.secure:
            if features.find("starttls", NS_TLS) is None:
                self.close_reason = "the peer does not offer TLS"
                self.fail(StreamError("policy-violation", "TLS is required"))
                return
            self.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            self.stage = ST_TLS
            return
        self._flush_verifies()
        if self.stage == ST_CLOSED:
            return
        if self.auth_method:  # the features after the SASL restart
            self._ready()
            return
        if not self.bidi and features.find("bidi", NS_BIDI_FEATURE) is not None \
                and self.host.bidi_wanted():
            self.bidi = True  # XEP-0288 §2: asked for before authentication
            self.write(b"<bidi xmlns='urn:xmpp:bidi'/>")
        remote = self.remote or ""
        if self.peer_verified == "dane-mismatch":
            self.close_reason = f"the certificate of {remote} does not match its DANE TLSA records"
            self.fail(StreamError("policy-violation", "your certificate does not match your TLSA records"))
            return
        if not self.cert_authenticates(remote) and not self.host.dialback_allowed(remote):
            self.close_reason = f"the certificate of {remote} does not verify"
            self.fail(StreamError("policy-violation", "your certificate does not verify"))
            return
        mechs = features.find("mechanisms", NS_SASL)
        if mechs is not None and any(m.text.strip() == "EXTERNAL" for m in mechs.elements()):
            self.stage = ST_SASL
            self.write(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>"
                       + base64.b64encode((self.local or "").encode()) + b"</auth>")
        elif self.host.dialback_allowed(remote):
            self._dialback_out()
        else:
            self.close_reason = f"{remote} offers neither SASL EXTERNAL nor dialback"
            self.close()

    def _dialback_out(self) -> None:
        self.stage = ST_AUTH
        key = self.host.dialback_key(self.remote or "", self.local or "", self.stream_id)
        self.write(b"<db:result from='" + _escape_attr(self.local or "").encode() + b"' to='"
                   + _escape_attr(self.remote or "").encode() + b"'>" + key.encode() + b"</db:result>")

    def _db_result_out(self, el: Element) -> None:
        to = el.get("to") or ""
        if el.get("from") != self.remote:
            return
        if to in self.piggybacking:
            self.piggybacking.discard(to)
            ok = el.get("type") == "valid"
            if ok:
                self.pairs.add((to, self.remote or ""))
            self.host.piggyback_done(self, to, ok)
            return
        if to != self.local:
            return
        t = el.get("type")
        if t == "valid":
            self.auth_method = "dialback"
            self._ready()
        else:
            err = el.find("error", NS_CLIENT)
            cond = next((c.tag for c in err.elements()), "") if err is not None else ""
            self.close_reason = f"dialback {t}" + (f" ({cond})" if cond else "")
            self.close()

    def _ready(self) -> None:
        self.stage = ST_READY
        self.pairs.add((self.local or "", self.remote or ""))
        log.info("s2s out %s -> %s: ready (%s, %s, peer certificate: %s%s)", self.local, self.remote,
                 self.auth_method, self.tls_version, self.peer_verified or "none",
                 ", bidirectional" if self.bidi else "")
        self.host.outgoing_ready(self)

    def can_piggyback(self) -> bool:
        """May another of our domains authenticate on this stream? Only by dialback, and only
        with a peer that handles dialback errors (a refusal then fails that domain alone)."""
        return self.stage == ST_READY and self.dialback_offered and self.dialback_errors

    def piggyback(self, local: str) -> None:
        """Authenticate our domain ``local`` to the peer on this stream (XEP-0220 §2.5)."""
        self.piggybacking.add(local)
        key = self.host.dialback_key(self.remote or "", local, self.stream_id)
        self.write(b"<db:result from='" + _escape_attr(local).encode() + b"' to='"
                   + _escape_attr(self.remote or "").encode() + b"'>" + key.encode() + b"</db:result>")

    def send_verify(self, originating: str, receiving: str, stream_id: str, key: str) -> None:
        """Ask the authoritative server (our peer here) whether ``key`` is its key."""
        el = Element("verify", NS_DIALBACK, {"from": receiving, "to": originating, "id": stream_id})
        el.children.append(key)
        self.verifies.append(_db_bytes(el))
        if self.secure and self.stage in (ST_AUTH, ST_SASL, ST_READY):
            self._flush_verifies()

    def _flush_verifies(self) -> None:
        pending, self.verifies = self.verifies, []
        for data in pending:
            self.write(data)

    def send_stanza(self, stanza: Element) -> None:
        # Serialised under a jabber:client parent: the stanza's own namespace is left implicit,
        # so it is jabber:server here (the stream's default), as RFC 6120 §4.8.3 asks.
        if self.stage != ST_CLOSED:
            self.stanzas_out += 1
            self.write(stanza.to_bytes())

    # -- TLS, restart, close --------------------------------------------------------------------
    def tls_started(self, cert_authenticates: Callable[[str], bool], version: str) -> None:
        self.tls_requested = False
        self.secure = True
        self.cert_authenticates = cert_authenticates
        self.tls_version = version
        self.restart()
        if self.outgoing:
            self._send_header()

    def restart(self) -> None:
        self.parser.reset()
        self.header_sent = False
        self.stage = ST_HEADER

    def fail(self, err: StreamError) -> None:
        if self.stage == ST_CLOSED:
            return
        log.info("s2s %s %s: stream error %s", "out" if self.outgoing else "in", self.peer, err)
        if self.close_reason is None:
            self.close_reason = f"stream error {err.condition}"
        self._send_header()
        self.write(stream_error_bytes(err))
        self.close()

    def close(self) -> None:
        if self.stage == ST_CLOSED:
            return
        self.stage = ST_CLOSED
        if self.header_sent:
            self.write(b"</stream:stream>")
        self.host.stream_closed(self)
        if self.on_close is not None:
            self.on_close()

    def connection_lost(self) -> None:
        if self.stage != ST_CLOSED:
            self.stage = ST_CLOSED
            if self.close_reason is None:
                self.close_reason = "connection lost"
            self.host.stream_closed(self)


def _address(st: Element, attr: str, malformed: str) -> JID:
    value = st.attrs.get(attr)
    if value is None:
        raise StreamError("improper-addressing", f"a stanza without '{attr}'")
    try:
        return JID.parse(value)
    except JIDError:
        raise StreamError(malformed, f"malformed '{attr}'") from None


def _condition(error: Element) -> str:
    """The condition of a <stream:error/> (its text, if any, after it)."""
    cond = next((c.tag for c in error.elements() if c.tag != "text"), "undefined-condition")
    text = error.findtext("text", "urn:ietf:params:xml:ns:xmpp-streams")
    return f"{cond} ({text})" if text else cond


def _domain(s: str | None) -> str | None:
    """A domain from a header or dialback attribute (None: absent or not a bare domain)."""
    if not s:
        return None
    try:
        j = JID.parse(s)
    except JIDError:
        return None
    if j.local is not None or j.resource is not None:
        return None
    return j.domain


def _db_bytes(el: Element) -> bytes:
    """A dialback element with the 'db' prefix the stream header declares; its children in
    jabber:client are written unqualified (jabber:server, the stream's default namespace)."""
    attrs = "".join(f" {k}='{_escape_attr(v)}'" for k, v in el.attrs.items())
    inner = b"".join(c.to_bytes() if isinstance(c, Element) else _escape_text(c).encode()
                     for c in el.children)
    return f"<db:{el.tag}{attrs}>".encode() + inner + f"</db:{el.tag}>".encode()
