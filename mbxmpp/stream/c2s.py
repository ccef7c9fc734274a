"""The client-to-server stream (RFC 6120): negotiation (STARTTLS, SASL, bind) and stanza intake.

Sans-IO: bytes come in through ``receive_data``; bytes go out through the ``write`` callable the
connection gives; TLS is requested by setting ``tls_requested`` and finished by the connection
calling ``tls_started``. Nothing here imports asyncio or touches a socket.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..errors import StanzaError, StreamError
from ..jid import JID, JIDError
from ..util.ids import new_id
from ..util.logjson import loggable
from ..xml import SM_REQUEST, STREAM_END, Element, StreamHeader, XMLError, XMLParser
from ..xml.build import error_reply, iq_result, stream_error_bytes
from ..xml.element import _escape_attr
from ..xml.ns import NS_BIND, NS_CLIENT, NS_SASL, NS_SASL_CB, NS_SESSION, NS_SM, NS_STREAMS, NS_TLS
from .sasl import SaslFailure, SaslServer, channel_binding_element_types, mechanisms

if TYPE_CHECKING:
    from ..core.sessions import Session

log = logging.getLogger(__name__)

STANZAS = frozenset(("message", "presence", "iq"))
SM_REQUEST_BYTES = f"<r xmlns='{NS_SM}'/>".encode()
_TLS_PROCEED = f"<proceed xmlns='{NS_TLS}'/>".encode()
_TLS_FAILURE = f"<failure xmlns='{NS_TLS}'/>".encode()
_SASL_CHALLENGE = f"<challenge xmlns='{NS_SASL}'>".encode()
_SASL_SUCCESS = f"<success xmlns='{NS_SASL}'>".encode()
_SASL_SUCCESS_EMPTY = f"<success xmlns='{NS_SASL}'/>".encode()
_LANG_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")

# Negotiation stages.
ST_HEADER = 0      # waiting for a stream header
ST_TLS = 1         # TLS not yet negotiated (features offered: starttls)
ST_SASL = 2        # secure, waiting for SASL
ST_SASL_STEP = 3   # a SASL exchange is in progress
ST_BIND = 4        # authenticated, waiting for resource binding
ST_READY = 5       # bound: stanzas flow
ST_CLOSED = 6

# The stages that may follow each stage (a restart goes back to ST_HEADER; a SASL failure stays
# or goes back to ST_SASL/ST_TLS). Anything else is a bug: IllegalTransition.
_NEXT: dict[int, frozenset[int]] = {
    ST_HEADER: frozenset((ST_TLS, ST_SASL, ST_BIND, ST_CLOSED)),
    ST_TLS: frozenset((ST_HEADER, ST_TLS, ST_SASL_STEP, ST_CLOSED)),
    ST_SASL: frozenset((ST_HEADER, ST_SASL, ST_SASL_STEP, ST_CLOSED)),
    ST_SASL_STEP: frozenset((ST_HEADER, ST_TLS, ST_SASL, ST_SASL_STEP, ST_CLOSED)),
    ST_BIND: frozenset((ST_READY, ST_CLOSED)),
    ST_READY: frozenset((ST_CLOSED,)),
    ST_CLOSED: frozenset(),
}
STAGE_NAMES = ("header", "tls", "sasl", "sasl-step", "bind", "ready", "closed")


class IllegalTransition(RuntimeError):
    """A stream stage change the state machine does not allow: a bug in the server. Not turned
    into a stream error like other internal errors: it propagates, so that tests fail loudly
    (and the transport drops the connection, logged)."""


class C2SHost(Protocol):
    """What the stream needs from the server (implemented by mbxmpp.server.Server)."""

    hosts: set[str]
    sasl_fake_secret: bytes | None  # keys the made-up SCRAM salts of unknown users

    def get_credential(self, username: str, host: str, mech: str) -> Any: ...
    def check_password(self, username: str, host: str, password: str,
                       peer_ip: str | None = None) -> Any: ...  # bool, or an awaitable verdict
    def await_login(self, verdict: Any, done: Callable[[Any], None]) -> None: ...
    def login_refusal(self, username: str, host: str) -> str | None: ...
    def authenticated(self, stream: C2SStream) -> None: ...
    def login_failed(self, condition: str) -> None: ...
    def bind(self, stream: C2SStream, jid: JID, resource: str | None) -> Session: ...
    def route_from_client(self, stanza: Element, session: Session) -> None: ...
    def post_auth_features(self, stream: C2SStream) -> list[Element]: ...
    def preauth_iq(self, stream: C2SStream, iq: Element) -> bool: ...  # answered by a module
    def handle_nonza(self, stream: C2SStream, el: Element) -> bool: ...
    def stream_closed(self, stream: C2SStream) -> None: ...


class C2SStream:
    """The stream as RFC 6120 frames it over TCP. FramedC2SStream (stream/framed.py) overrides
    the framing hooks below for RFC 7395 WebSocket; the state machine is shared."""

    # -- framing hooks ------------------------------------------------------------------------
    FRAMED = False                           # the tokenizer's mode (framed: one element per message)
    FEATURES_START = b"<stream:features>"
    CLOSE_TAG = b"</stream:stream>"

    # One per connection: slots keep the memory of an idle connection down.
    __slots__ = ("allow_plain", "auth_failures", "cb_data", "clean_close", "header_sent",
                 "host", "lang", "max_auth_attempts", "on_authenticated", "on_close",
                 "parser", "peer", "require_encryption", "sasl", "secure", "server",
                 "session", "sm", "sm_request", "stage", "stanzas_in", "stream_id", "stream_lang",
                 "tls_requested", "auth_held",
                 "username", "write", "write_soon")

    def __init__(self, server: C2SHost, write: Callable[[bytes], None], *, secure: bool,
                 peer: str = "", max_stanza_size: int = 262144, require_encryption: bool = True,
                 allow_plain: bool = True, max_auth_attempts: int = 5) -> None:
        self.server = server
        self.write = write
        # write_soon(data, within): may wait up to `within` seconds to share a write with other
        # output; the connection sets it (without one, it writes at once)
        self.write_soon: Callable[[bytes, float], None] = self._write_at_once
        self.secure = secure
        self.peer = peer
        self.require_encryption = require_encryption
        self.allow_plain = allow_plain
        self.max_auth_attempts = max_auth_attempts
        self.parser = XMLParser(max_stanza_size=max_stanza_size, framed=self.FRAMED)
        self.stage = ST_HEADER  # changed only through _enter()
        self.header_sent = False
        self.host: str | None = None
        self.stream_id = ""
        self.lang = "en"
        self.stream_lang: str | None = None  # the xml:lang of the client's stream header
        self.cb_data: dict[str, bytes] = {}
        self.sasl: SaslServer | None = None
        self.auth_failures = 0
        self.username: str | None = None
        self.session: Session | None = None
        self.stanzas_in = 0  # for the connection's [limits] stanzas_per_session
        self.tls_requested = False
        # input that arrived while an external account backend decides a login (None: none)
        self.auth_held: list[bytes] | None = None
        self.clean_close = False
        self.on_close: Callable[[], None] | None = None   # the connection closes the transport
        self.on_authenticated: Callable[[], None] | None = None
        # Stream Management (XEP-0198) counters; the sm module owns the logic (enable_sm).
        self.sm: Any = None
        self.sm_request: Callable[[C2SStream], None] | None = None

    # -- input ------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self.stage == ST_CLOSED or self.tls_requested:
            return
        if self.auth_held is not None:  # held until the login is decided, then replayed
            self.auth_held.append(data)
            return
        try:
            events = self.parser.feed(data)
        except XMLError as e:
            # Over TCP what came before the error is handled first; a bad WebSocket message
            # is refused whole.
            for event in () if self.FRAMED else e.events:
                self._event(event)
                if self.stage == ST_CLOSED:
                    return
            self.fail(e)
            return
        for event in events:
            self._event(event)
            # After <starttls/> the rest of the buffer is plaintext injection: drop it.
            if self.stage == ST_CLOSED or self.tls_requested:
                return

    def _event(self, event: Any) -> None:
        try:
            if event is SM_REQUEST and self.sm_request is not None:
                self.sm_request(self)  # the most frequent nonza: no dispatch
            elif event.__class__ is Element:
                if self.stage == ST_READY:
                    if event.tag in STANZAS and event.ns == NS_CLIENT:
                        self._stanza(event)
                        return
                    if self.server.handle_nonza(self, event):  # SM's <a/> and the rest
                        return
                self._negotiation_element(event)
            elif event.__class__ is StreamHeader:
                self._header(event)
            elif event is STREAM_END:
                self.clean_close = True  # the client ended the session on purpose
                self.close()
        except StreamError as e:
            self.fail(e)
        except IllegalTransition:
            raise
        except Exception:  # a bug must not take the server down, nor leave the stream open
            log.exception("c2s stream %s: internal error on %s", self.peer, loggable(event))
            self.fail(StreamError("internal-server-error"))

    # -- stream header and features -------------------------------------------------------
    def _header(self, h: StreamHeader) -> None:
        self._accept_open(h.attrs)
        if h.tag != "stream" or h.ns != NS_STREAMS:
            raise StreamError("invalid-namespace", "the stream element must be <stream:stream>")
        if h.prefix != "stream":
            # RFC 6120 §4.8.5/§4.9.3.2: the stream namespace is bound to the prefix 'stream'.
            raise StreamError("bad-namespace-prefix", "the stream namespace prefix must be 'stream'")
        if h.default_ns != NS_CLIENT:
            raise StreamError("invalid-namespace", f"the content namespace must be {NS_CLIENT}")
        self._check_version(h.attrs)
        self._send_features()

    def _accept_open(self, attrs: dict[str, str]) -> None:
        """What a stream header (or an RFC 7395 <open/>) says: 'to', 'xml:lang'. Sends ours."""
        if self.stage != ST_HEADER:
            raise StreamError("not-well-formed", "unexpected stream header")
        to = attrs.get("to")
        if to is not None:
            try:
                to = JID.parse(to).full
            except JIDError:
                to = None
            if to not in self.server.hosts:
                self._send_header(None)
                raise StreamError("host-unknown", "this server does not serve that domain")
        if self.host is None:
            self.host = to if to is not None else next(iter(sorted(self.server.hosts)))
        elif to is not None and to != self.host:
            raise StreamError("host-unknown", "the domain changed on stream restart")
        lang = attrs.get("xml:lang")
        if lang and len(lang) <= 35 and _LANG_TAG.fullmatch(lang):  # an RFC 5646 tag, roughly
            self.lang = self.stream_lang = lang
        self._send_header(attrs.get("from"))

    @staticmethod
    def _check_version(attrs: dict[str, str]) -> None:
        # RFC 6120 §4.7.5: no version is 0.9 (pre-1.0 streams are not served); a higher minor
        # version is answered as 1.0 (our header says version='1.0'); a higher major version
        # is one we cannot speak (§4.9.3.25).
        version = attrs.get("version", "0.9")
        major = version.split(".", 1)[0]
        if not (major.isascii() and major.isdigit()) or int(major) < 1:
            raise StreamError("unsupported-version", "XMPP 1.0 or later is required")
        if int(major) > 1:
            raise StreamError("unsupported-version", "this server speaks XMPP 1.x")

    def _send_header(self, peer_from: str | None) -> None:
        if self.header_sent:
            return
        self.header_sent = True
        self.stream_id = new_id(16)
        to = ""
        if peer_from:
            try:
                to = f" to='{_escape_attr(JID.parse(peer_from).full)}'"
            except JIDError:
                to = ""
        host = self.host or next(iter(sorted(self.server.hosts)))
        self.write(self._header_bytes(f"id='{self.stream_id}' from='{_escape_attr(host)}'{to} "
                                      f"version='1.0' xml:lang='en'"))

    def _header_bytes(self, attrs: str) -> bytes:
        return (f"<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' "
                f"xmlns:stream='{NS_STREAMS}' {attrs}>").encode()

    def _send_features(self) -> None:
        f = Element("features", NS_STREAMS)
        if not self.secure:
            tls = f.add("starttls", NS_TLS)
            if self.require_encryption:
                tls.add("required")
            self._enter(ST_TLS)
        if self.secure or not self.require_encryption:
            if self.username is None:
                cb_types = channel_binding_element_types(self.cb_data) if self.secure else []
                if getattr(self.server, "offers_scram", True):
                    mechs = mechanisms(self.secure, cb_types)
                else:  # an external account backend checks passwords: PLAIN over TLS only
                    cb_types = []
                    mechs = ["PLAIN"] if self.secure else []
                if not self.allow_plain:
                    mechs = [m for m in mechs if m != "PLAIN"]
                m = f.add("mechanisms", NS_SASL)
                for name in mechs:
                    m.add("mechanism", text=name)
                if cb_types:
                    # XEP-0440: which channel-binding types this server can do.
                    cb = f.add("sasl-channel-binding", NS_SASL_CB)
                    for t in cb_types:
                        cb.add("channel-binding", attrs={"type": t})
                if self.secure:
                    self._enter(ST_SASL)
            else:
                f.add("bind", NS_BIND)
                f.add("session", NS_SESSION).add("optional")
                f.children.extend(self.server.post_auth_features(self))
                self._enter(ST_BIND)
        self.write(self.FEATURES_START + b"".join(c.to_bytes(NS_STREAMS) for c in f.elements())
                   + b"</stream:features>")

    def restart(self) -> None:
        """A stream restart (after TLS or SASL): new parser, new header expected."""
        self.parser.reset()
        self.header_sent = False
        self._enter(ST_HEADER)

    def _enter(self, stage: int) -> None:
        """The one way the stage changes: only along _NEXT."""
        if stage not in _NEXT[self.stage]:
            raise IllegalTransition(f"c2s {self.peer}: {STAGE_NAMES[self.stage]} -> "
                                    f"{STAGE_NAMES[stage]}")
        self.stage = stage

    # -- negotiation ------------------------------------------------------------------------
    def _negotiation_element(self, el: Element) -> None:
        ns = el.ns
        if ns == NS_TLS and el.tag == "starttls":
            self._starttls()
        elif ns == NS_SASL:
            self._sasl(el)
        elif el.tag in STANZAS and ns == NS_CLIENT:
            if self.stage == ST_BIND and el.tag == "iq":
                self._bind_iq(el)
            elif self.username is None:
                # A module may answer an IQ before authentication (XEP-0077 registration,
                # refused with its stanza error), once the stream is secure enough for SASL.
                if not (el.tag == "iq" and self.stage in (ST_TLS, ST_SASL)
                        and (self.secure or not self.require_encryption)
                        and self.server.preauth_iq(self, el)):
                    raise StreamError("not-authorized", "authenticate first")
            else:
                raise StreamError("not-authorized", "bind a resource first")
        elif self.username is None:
            # RFC 6120 §4.9.3.12: nothing but TLS and SASL before authentication (feature
            # modules' nonzas included).
            raise StreamError("not-authorized", "authenticate first")
        elif self.server.handle_nonza(self, el):
            pass
        else:
            raise StreamError("unsupported-stanza-type", f"unknown element {el.tag!r} in {ns!r}")

    def _starttls(self) -> None:
        if self.secure or self.stage != ST_TLS:
            # RFC 6120 §5.4.2.2: the failure case is <failure/>, then the stream is closed.
            self.write(_TLS_FAILURE)
            self.close()
            return
        self.write(_TLS_PROCEED)
        self.tls_requested = True

    def tls_started(self, cb_data: dict[str, bytes]) -> None:
        """The connection finished the TLS handshake after <proceed/>."""
        self.tls_requested = False
        self.secure = True
        self.cb_data = cb_data
        self.restart()

    def _sasl(self, el: Element) -> None:
        tag = el.tag
        if self.username is not None:
            raise StreamError("policy-violation", "already authenticated")
        if tag == "auth":
            if not self.secure and self.require_encryption:
                self._sasl_failure("encryption-required", "use STARTTLS first")
                return
            if self.stage not in (ST_SASL, ST_TLS):
                self._sasl_failure("malformed-request", "an exchange is already in progress")
                return
            mech = el.get("mechanism") or ""
            try:
                initial = self._b64(el.text, initial=True)
            except ValueError:
                self._sasl_failure("incorrect-encoding")
                return
            if (mech == "PLAIN" and not self.allow_plain) or (
                    mech != "PLAIN" and not getattr(self.server, "offers_scram", True)):
                self._sasl_failure("invalid-mechanism")
                return
            if self._login_limited(None, False):
                return
            try:
                self.sasl = SaslServer(
                    mech, self.host or "", self._get_credential, self._check_password,
                    cb_data=self.cb_data, tls=self.secure,
                    plus_advertised=bool(self.cb_data) and self.secure,
                    fake_secret=self.server.sasl_fake_secret)
                self._sasl_step(self.sasl.start(initial))
            except SaslFailure as f:
                self._sasl_refused(f)
        elif tag == "response":
            if self.sasl is None or self.stage != ST_SASL_STEP:
                self._sasl_failure("malformed-request", "no exchange in progress")
                return
            try:
                data = self._b64(el.text, initial=False)
                self._sasl_step(self.sasl.respond(data or b""))
            except ValueError:
                self._sasl_failure("incorrect-encoding")
            except SaslFailure as f:
                self._sasl_refused(f)
        elif tag == "abort":
            self.sasl = None
            self._sasl_failure("aborted")
        else:
            raise StreamError("unsupported-stanza-type", f"unknown SASL element {tag!r}")

    @staticmethod
    def _b64(text: str, initial: bool) -> bytes | None:
        text = text.strip()
        if text == "":
            return None if initial else b""
        if text == "=":
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("bad base64") from None

    def _get_credential(self, username: str, mech: str) -> Any:
        return self.server.get_credential(username, self.host or "", mech)

    def _check_password(self, username: str, password: str) -> Any:
        return self.server.check_password(username, self.host or "", password,
                                          self.peer.rsplit(":", 1)[0])

    def _sasl_step(self, result: tuple[str, Any]) -> None:
        kind, data = result
        if kind == "pending":
            # An external backend decides (an awaitable Verdict): hold all input until then.
            self.auth_held = []
            self._enter(ST_SASL_STEP)
            self.server.await_login(data, self._login_decided)
            return
        if kind == "challenge":
            self._enter(ST_SASL_STEP)
            self.write(_SASL_CHALLENGE
                       + (base64.b64encode(data) if data else b"=") + b"</challenge>")
            return
        assert self.sasl is not None
        username = self.sasl.username
        if self._login_limited(username or "", True):
            return
        refusal = self.server.login_refusal(username or "", self.host or "")
        if refusal is not None:
            self.sasl = None
            self._sasl_failure("account-disabled", refusal)
            return
        self.username = username
        self.sasl = None
        if data:
            self.write(_SASL_SUCCESS
                       + base64.b64encode(data) + b"</success>")
        else:
            self.write(_SASL_SUCCESS_EMPTY)
        if self.on_authenticated is not None:
            self.on_authenticated()
        self.server.authenticated(self)
        if self.stage != ST_CLOSED:  # a hook may have ended the stream (account gone)
            self.restart()

    def _login_decided(self, verdict: Any) -> None:
        """The external backend's answer: success, not-authorized, or (no answer from it)
        <temporary-auth-failure/> (RFC 6120 §6.5.12), never a wrong password."""
        held, self.auth_held = self.auth_held, None
        if self.stage == ST_CLOSED or self.sasl is None:
            return
        outcome = getattr(verdict, "outcome", None)
        try:
            if outcome is not None and outcome.value == "ok":
                self._sasl_step(self.sasl.plain_succeeded())
            elif outcome is not None and outcome.value == "unavailable":
                self._sasl_failure("temporary-auth-failure", "the account service did not answer; try again")
            else:
                self._sasl_refused(SaslFailure("not-authorized"))
        except SaslFailure as f:
            self._sasl_refused(f)
        for data in held or ():
            self.receive_data(data)

    def _sasl_refused(self, f: SaslFailure) -> None:
        claimed = self.sasl.claimed if self.sasl is not None else None
        if f.condition == "not-authorized" and claimed is not None and \
                self._login_limited(claimed, False):
            return
        self._sasl_failure(f.condition, f.text)

    def _login_limited(self, username: str | None, ok: bool) -> bool:
        """The [limits] on logins (core/limits.py): before an exchange (``username`` None) and
        when SASL has decided, whose verdict a refusal replaces: a guess over the limit learns
        nothing. RFC 6120 §6.5.10 <temporary-auth-failure/>: the client may try again later."""
        limits = getattr(self.server, "limits", None)
        if limits is None:
            return False
        ip = self.peer.rsplit(":", 1)[0]
        why = (limits.login_attempt(ip) if username is None
               else limits.login_outcome(ip, f"{username}@{self.host}", ok))
        if why is None:
            return False
        self._sasl_failure("temporary-auth-failure", why)
        return True

    def _sasl_failure(self, condition: str, text: str | None = None) -> None:
        self.sasl = None
        # RFC 6120 §6.4.5: after a failure the client may retry (also on a plaintext stream).
        self._enter(ST_SASL if self.secure else ST_TLS)
        f = Element("failure", NS_SASL)
        f.add(condition)
        if text:
            f.add("text", attrs={"xml:lang": "en"}, text=text)
        self.write(f.to_bytes(""))
        if condition != "aborted":
            self.auth_failures += 1
            self.server.login_failed(condition)
            if self.auth_failures >= self.max_auth_attempts:
                # RFC 6120 §6.4.5: a bounded number of retries, then the stream is closed.
                self.fail(StreamError("policy-violation", "too many failed authentication attempts"))

    def _bind_iq(self, iq: Element) -> None:
        if iq.get("type") in ("result", "error"):
            return  # RFC 6120 §8.3.1: never answer a result or an error with an error
        payload = iq.first_child()
        if "id" not in iq.attrs:  # RFC 6120 §8.2.3: an IQ without an id is a bad request
            self.write(error_reply(iq, StanzaError("bad-request", "IQ needs an id")).to_bytes())
            return
        if iq.get("type") != "set" or payload is None or payload.ns != NS_BIND or payload.tag != "bind":
            if payload is not None and payload.ns == NS_SESSION:
                raise StreamError("not-authorized", "bind a resource first")
            self.write(error_reply(iq, StanzaError("not-authorized", "bind a resource first")).to_bytes())
            return
        resource = payload.findtext("resource")
        if resource is not None:
            resource = resource.strip() or None
        username, host = self.username, self.host
        assert username is not None and host is not None  # bind comes after the header and SASL
        bare = JID(username, host, None)
        if resource is not None:
            try:
                resource = JID(username, host, resource).resource
            except JIDError:
                self.write(error_reply(iq, StanzaError("bad-request", "invalid resource")).to_bytes())
                return
        try:
            self.session = self.server.bind(self, bare, resource)
        except StanzaError as e:
            self.write(error_reply(iq, e).to_bytes())
            return
        result = Element("bind", NS_BIND)
        result.add("jid", text=self.session.full)
        reply = Element("iq", NS_CLIENT, {"type": "result", "id": iq.get("id") or ""})
        reply.children.append(result)
        self.write(reply.to_bytes())
        self._enter(ST_READY)

    # -- stanzas ----------------------------------------------------------------------------
    def _stanza(self, st: Element) -> None:
        self.stanzas_in += 1
        session = self.session
        assert session is not None
        attrs = st.attrs
        frm = attrs.get("from")
        if frm is not None and frm != session.full:
            # RFC 6120 §8.1.2.1: the client may only claim its own address.
            try:
                j = JID.parse(frm)
            except JIDError:
                raise StreamError("invalid-from", "malformed 'from'") from None
            if j.full != session.full and j.full != session.bare:
                raise StreamError("invalid-from", "'from' is not your address")
        attrs["from"] = session.full
        if self.stream_lang is not None and "xml:lang" not in attrs:
            attrs["xml:lang"] = self.stream_lang  # RFC 6120 §8.1.5: the stream's language
        st._bytes = None
        # XEP-0198 §4: every stanza received counts, including those refused below.
        if self.sm is not None:
            self.sm.inbound()
        t = attrs.get("type")
        if st.tag == "iq":
            if "id" not in attrs or t not in ("get", "set", "result", "error"):
                if t != "error":  # RFC 6120 §8.3.1: an error is never answered with an error
                    self.send_stanza(error_reply(st, StanzaError("bad-request", "IQ needs an id and a valid type")))
                return
            if t in ("get", "set"):
                if sum(1 for _ in st.elements()) != 1:
                    self.send_stanza(error_reply(
                        st, StanzaError("bad-request", "IQ get/set needs exactly one payload")))
                    return
                payload = st.first_child()
                assert payload is not None
                if t == "set" and payload.ns in (NS_SESSION, NS_BIND) and self._to_own_account(attrs.get("to")):
                    if payload.ns == NS_SESSION:
                        # RFC 3921 session establishment (often sent to the domain): a no-op kept
                        # for old clients.
                        self.send_stanza(iq_result(st))
                        return
                    if payload.ns == NS_BIND:
                        # RFC 6120 §7.6.2.2: one resource per stream.
                        self.send_stanza(error_reply(st, StanzaError("not-allowed", "a resource is already bound")))
                        return
        elif st.tag == "presence":
            if t is not None and t not in ("unavailable", "subscribe", "subscribed", "unsubscribe",
                                           "unsubscribed", "probe", "error"):
                self.send_stanza(error_reply(st, StanzaError("bad-request", "unknown presence type")))
                return
        try:
            self.server.route_from_client(st, session)
        except StanzaError as e:
            # e.g. a JIDError from a module: the stanza fails, not the stream (RFC 6120 §8.3).
            if t != "error":
                self.send_stanza(error_reply(st, e))
        except StreamError:
            raise
        except Exception:
            # A bug in a feature module costs this stanza, not the client's stream.
            log.exception("c2s %s: internal error routing %s", self.peer, loggable(st))
            if t != "error":
                self.send_stanza(error_reply(st, StanzaError("internal-server-error")))

    def _to_own_account(self, to: str | None) -> bool:
        """No 'to', or the client's own domain or bare JID (what the server answers itself)."""
        if to is None:
            return True
        try:
            j = JID.parse(to)
        except JIDError:
            return False
        session = self.session
        assert session is not None
        return j.full == session.jid.domain or j.full == session.bare

    # -- output -----------------------------------------------------------------------------
    def send_stanza(self, stanza: Element) -> None:
        if self.stage == ST_CLOSED:
            return
        data = stanza.to_bytes()
        sm = self.sm
        # Stream Management keeps the bytes, not the tree: the stanza is freed now, while its
        # objects are hot, and the garbage collector never walks an unacked queue.
        if sm is not None and sm.outbound(data):
            self._write_with_request(data)
            return
        self.write(data)

    def _write_with_request(self, data: bytes) -> None:
        """A stanza and the SM ack request that follows it (once per [sm] request_every)."""
        self.write(data + SM_REQUEST_BYTES)

    def _write_at_once(self, data: bytes, within: float) -> None:
        self.write(data)

    def enable_sm(self, sm: Any, answer: Callable[[C2SStream], None]) -> None:
        """Stream Management is on: `sm` counts, `answer` answers each <r/> (the tokenizer's
        SM_REQUEST). The compiled tokenizer now handles the common SM nonzas without expat,
        and applies valid acks to `sm` itself."""
        self.sm = sm
        self.sm_request = answer
        self.parser.sm = sm

    def attach_session(self, session: Session) -> None:
        """Take over a session (Stream Management resumption) instead of binding a new one."""
        self.session = session
        session.stream = self
        self._enter(ST_READY)

    def fail(self, err: StreamError) -> None:
        """Send a stream error and close (RFC 6120 §4.9.1)."""
        if self.stage == ST_CLOSED:
            return
        log.info("c2s %s: stream error %s", self.peer, err)
        self._send_header(None)
        self.write(self._error_bytes(err))
        self.close()

    @staticmethod
    def _error_bytes(err: StreamError) -> bytes:
        return stream_error_bytes(err)

    def close(self, error: Any = None) -> None:
        """Close our side of the stream (and, through the connection, the transport)."""
        if error is not None:
            self.fail(error)
            return
        if self.stage == ST_CLOSED:
            return
        self._enter(ST_CLOSED)
        if self.header_sent:
            self.write(self.CLOSE_TAG)
        self.server.stream_closed(self)
        if self.on_close is not None:
            self.on_close()

    def connection_lost(self) -> None:
        if self.stage != ST_CLOSED:
            self._enter(ST_CLOSED)
            self.server.stream_closed(self)
