"""The ``jabber:component:accept`` stream (XEP-0114), the server's side, sans-IO.

The component opens with ``to`` = the domain it serves; we answer with a header carrying a new
stream id; the component proves it knows the domain's secret with
``<handshake>hex(SHA-1(stream id + secret))</handshake>``; we answer ``<handshake/>`` and stanzas
flow both ways. Errors, as XEP-0114 §3 and Prosody: a header in another namespace is
``<invalid-namespace/>``, a domain not configured ``<host-unknown/>`` (no ``to``:
``<improper-addressing/>``), a wrong handshake ``<not-authorized/>`` (as is anything else sent
before it), a domain whose component is already connected ``<conflict/>`` (the newcomer is
refused, the connected one stays: an unauthenticated peer can never end it), and a stanza from
outside the component's domain ``<invalid-from/>``.

Stanzas arrive in ``jabber:component:accept``; they are moved to ``jabber:client`` (the
namespace every other layer sees, as the tokenizer does for ``jabber:server``) and written back
without a namespace, which the stream's default makes ``jabber:component:accept`` again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any, Callable, Protocol

from ..errors import StreamError
from ..stream.feed import feed_events
from ..s2s.stream import _domain  # (a header's bare domain, or None)
from ..util.ids import new_id
from ..util.logjson import loggable
from ..xml import STREAM_END, Element, StreamHeader, XMLParser
from ..xml.build import stream_error_bytes
from ..xml.element import _escape_attr
from ..xml.ns import NS_CLIENT, NS_STREAMS

log = logging.getLogger(__name__)

NS_ACCEPT = "jabber:component:accept"
STANZAS = frozenset(("message", "presence", "iq"))

ST_HEADER = 0      # waiting for the component's stream header
ST_HANDSHAKE = 1   # header answered, waiting for <handshake/>
ST_READY = 2       # authenticated: stanzas flow
ST_CLOSED = 3


class ComponentHub(Protocol):
    """What the stream needs from the service (mbxmpp.components.service.ComponentService)."""

    def secret_of(self, domain: str) -> str | None: ...
    def authenticated(self, stream: ComponentStream) -> StreamError | None: ...
    def stanza_from(self, stream: ComponentStream, stanza: Element) -> None: ...
    def stream_closed(self, stream: ComponentStream) -> None: ...


def handshake_digest(stream_id: str, secret: str) -> str:
    """XEP-0114 §3: lowercase hex of SHA-1(stream id + secret)."""
    return hashlib.sha1((stream_id + secret).encode()).hexdigest()


class ComponentStream:
    # (``session``, ``auth_failures``, ``tls_requested``, ``cb_data``, ``clean_close``,
    # ``username``, ``host``: what net/core.py's StreamConnection and the server read of a stream)
    __slots__ = ("auth_failures", "cb_data", "clean_close", "domain", "header_sent", "hub",
                 "on_authenticated", "on_close", "parser", "peer", "session", "stage",
                 "stanzas_in", "stanzas_out", "stream_id", "tls_requested", "username", "write")

    def __init__(self, hub: ComponentHub, write: Callable[[bytes], None], *,
                 max_stanza_size: int) -> None:
        self.hub = hub
        self.write = write
        self.parser = XMLParser(max_stanza_size=max_stanza_size)
        self.stage = ST_HEADER
        self.header_sent = False
        self.stream_id = new_id(16)
        self.domain = ""          # the component's domain, from its header
        self.session: str | None = None   # the domain once the handshake is accepted
        self.peer = ""
        self.auth_failures = 0
        self.tls_requested = False
        self.cb_data: dict[str, bytes] = {}
        self.clean_close = False
        self.username = None      # (never an account's stream)
        self.stanzas_in = 0
        self.stanzas_out = 0
        self.on_close: Callable[[], None] | None = None
        self.on_authenticated: Callable[[], None] | None = None

    @property
    def host(self) -> str:
        return self.domain

    # -- input ------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self.stage == ST_CLOSED:
            return
        error = feed_events(self.parser, data, self._event, lambda: self.stage == ST_CLOSED)
        if error is not None:
            self.fail(error)

    def _event(self, event: Any) -> None:
        try:
            if event.__class__ is Element:
                self._element(event)
            elif event.__class__ is StreamHeader:
                self._header(event)
            elif event is STREAM_END:
                self.clean_close = True
                self.close()
        except StreamError as e:
            self.fail(e)
        except Exception:  # a bug must not take the server down, nor leave the stream open
            log.exception("component %s: internal error on %s", self.peer, loggable(event))
            self.fail(StreamError("internal-server-error"))

    def _header(self, h: StreamHeader) -> None:
        if self.stage != ST_HEADER:
            raise StreamError("not-well-formed", "unexpected stream header")
        to = h.attrs.get("to")
        domain = _domain(to)
        if domain is not None and self.hub.secret_of(domain) is not None:
            self.domain = domain
        self._send_header()
        if h.tag != "stream" or h.ns != NS_STREAMS:
            raise StreamError("invalid-namespace", "the stream element must be <stream:stream>")
        if h.prefix != "stream":
            raise StreamError("bad-namespace-prefix", "the stream namespace prefix must be 'stream'")
        if h.default_ns != NS_ACCEPT:
            raise StreamError("invalid-namespace", f"the content namespace must be {NS_ACCEPT}")
        if not to:
            raise StreamError("improper-addressing", "the header needs 'to': the component's domain")
        if not self.domain:
            raise StreamError("host-unknown", "no component is configured for that domain")
        self.stage = ST_HANDSHAKE

    def _send_header(self) -> None:
        if self.header_sent:
            return
        self.header_sent = True
        frm = f" from='{_escape_attr(self.domain)}'" if self.domain else ""
        self.write(f"<?xml version='1.0'?><stream:stream xmlns:stream='{NS_STREAMS}' "
                   f"xmlns='{NS_ACCEPT}' id='{self.stream_id}'{frm}>".encode())

    def _element(self, el: Element) -> None:
        ns, tag = el.ns, el.tag
        if ns == NS_STREAMS and tag == "error":
            log.info("component %s (%s): it sent a stream error", self.peer, self.domain)
            self.close()
        elif self.stage == ST_READY:
            if tag in STANZAS and (ns == NS_ACCEPT or ns == NS_CLIENT):
                _to_client_ns(el)
                self.stanzas_in += 1
                self.hub.stanza_from(self, el)
            elif tag == "handshake" and ns == NS_ACCEPT:
                raise StreamError("policy-violation", "already authenticated")
            else:
                raise StreamError("unsupported-stanza-type", f"unknown element {tag!r} in {ns!r}")
        elif tag == "handshake" and ns == NS_ACCEPT:
            self._handshake(el)
        else:
            raise StreamError("not-authorized", "send the handshake first")

    def _handshake(self, el: Element) -> None:
        secret = self.hub.secret_of(self.domain)
        given = el.text.strip().lower().encode()
        if secret is None or not hmac.compare_digest(given, handshake_digest(self.stream_id, secret).encode()):
            self.auth_failures += 1
            log.info("component %s: wrong handshake for %s", self.peer, self.domain)
            raise StreamError("not-authorized", "the handshake does not match the secret")
        refusal = self.hub.authenticated(self)
        if refusal is not None:
            raise refusal
        self.stage = ST_READY
        self.session = self.domain
        self.write(b"<handshake/>")
        if self.on_authenticated is not None:
            self.on_authenticated()

    # -- output -----------------------------------------------------------------------------
    def send_stanza(self, stanza: Element) -> None:
        # Serialised under a jabber:client parent: the stanza's own namespace is left implicit,
        # so the stream's default (jabber:component:accept) is what the component reads.
        if self.stage == ST_READY:
            self.stanzas_out += 1
            self.write(stanza.to_bytes())

    # -- closing ----------------------------------------------------------------------------
    def fail(self, err: StreamError) -> None:
        if self.stage == ST_CLOSED:
            return
        log.info("component %s (%s): stream error %s", self.peer, self.domain or "?", err)
        self._send_header()
        self.write(stream_error_bytes(err))
        self.close()

    def close(self, error: Any = None) -> None:
        if error is not None:
            self.fail(error)
            return
        if self.stage == ST_CLOSED:
            return
        self.stage = ST_CLOSED
        if self.header_sent:
            self.write(b"</stream:stream>")
        self.hub.stream_closed(self)
        if self.on_close is not None:
            self.on_close()

    def connection_lost(self) -> None:
        if self.stage != ST_CLOSED:
            self.stage = ST_CLOSED
            self.hub.stream_closed(self)


def _to_client_ns(el: Element) -> None:
    """Move a stanza from jabber:component:accept to jabber:client, with its children that
    inherited the namespace (<body/>, <error/>...); children in other namespaces keep theirs."""
    el.ns = NS_CLIENT
    for c in el.children:
        if c.__class__ is Element and c.ns == NS_ACCEPT:  # type: ignore[union-attr]
            _to_client_ns(c)  # type: ignore[arg-type]
