"""Routing per RFC 6121 §8: local domains, components, or the federation, by the 'to' address.

Feature modules see stanzas through hooks named after the stanza kind and address kind
(``message/bare`` ...); what no module takes gets the RFC's default treatment here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import StanzaError, iq_shape_error
from ..jid import JID, JIDError
from ..xml.build import error_reply
from ..xml.element import Element
from . import events as ev
from .iq import IQContext, IQDispatcher
from .modules import BARE, HOST, SELF

if TYPE_CHECKING:
    from .hooks import HookBus
    from .sessions import Session, SessionManager

log = logging.getLogger(__name__)
_parse = JID.parse


class Component(Protocol):
    def receive(self, stanza: Element, frm: JID, to: JID) -> None: ...


class Remote(Protocol):
    def send(self, stanza: Element, frm: JID, to: JID) -> None: ...


class RouteEvent:
    """What a routing hook receives."""

    __slots__ = ("stanza", "origin", "frm", "to", "router", "session")

    def __init__(self, stanza: Element, origin: Session | None, frm: JID, to: JID | None,
                 router: Router, session: Session | None = None) -> None:
        self.stanza = stanza
        self.origin = origin    # the local client session that sent it, if any
        self.frm = frm
        self.to = to
        self.router = router
        self.session = session  # DELIVER: the session it is about to be delivered to

    @property
    def type(self) -> str | None:
        return self.stanza.attrs.get("type")


class Router:
    def __init__(self, hosts: set[str], hooks: HookBus, sessions: SessionManager,
                 user_exists: Any) -> None:
        self.hosts = hosts
        self.hooks = hooks
        self.sessions = sessions
        # bare JID str -> bool; None while an external account backend is asked, and then
        # when_known(bare, fn) runs fn once it has answered (False: too many are waiting)
        self.user_exists = user_exists
        self.when_known: Any = None
        self.components: dict[str, Component] = {}
        self.remote: Remote | None = None
        self.iq = IQDispatcher(self.route)
        # stanzas routed, and those handed to a component or to the federation (metrics; plain
        # attributes: an attribute's += costs less than half a dict item's, see perf/README.md)
        self.routed_messages = self.routed_presences = self.routed_iqs = 0
        self.routed_to_components = self.routed_to_s2s = 0

    # -- entry point --------------------------------------------------------------------------
    def route(self, stanza: Element, origin: Session | None = None) -> None:
        attrs = stanza.attrs
        tag = stanza.tag
        if tag == "message":
            self.routed_messages += 1
        elif tag == "presence":
            self.routed_presences += 1
        else:
            self.routed_iqs += 1
        try:
            frm = origin.jid if origin is not None else _parse(attrs["from"])
        except (KeyError, JIDError):
            # (its kind and addressing only: a message body never goes to the log)
            log.warning("dropping a <%s/> without a valid from (to=%r, from=%r)", tag,
                        attrs.get("to"), attrs.get("from"))
            return
        to_s = attrs.get("to")
        to: JID | None
        if to_s is None:
            to = None
        else:
            try:
                to = _parse(to_s)
            except JIDError:
                self.bounce(stanza, StanzaError("jid-malformed", "invalid 'to' address"))
                return
        e = RouteEvent(stanza, origin, frm, to, self)
        if origin is not None and self.hooks.fire(ev.PRE_EVENTS[tag], e) is not None:
            return
        to = e.to
        if to is None:
            if tag == "iq":
                self._iq_local(e, frm.bare_jid(), SELF)
            elif tag == "message":
                # RFC 6120 §10.3.1: no 'to' means the sender's own bare JID.
                e.to = frm.bare_jid()
                self._local(e, "bare")
            # Presence without 'to' is a broadcast: the presence module took it in PRE_PRESENCE.
            return
        domain = to.domain
        if domain in self.hosts:
            if to.local is None:
                kind = "host"
            elif to.resource is None:
                kind = "bare"
            else:
                kind = "full"
            if tag == "iq":
                if kind == "full":
                    self._iq_full(e)
                elif kind == "host":
                    self._iq_local(e, to, HOST)
                else:
                    self._iq_local(e, to, SELF if frm.bare == to.bare else BARE)
            else:
                self._local(e, kind)
            return
        comp = self.components.get(domain)
        if comp is not None:
            self.routed_to_components += 1
            comp.receive(stanza, frm, to)
        elif self.remote is not None:
            self.routed_to_s2s += 1
            self.remote.send(stanza, frm, to)
        else:
            self.bounce(stanza, StanzaError("remote-server-not-found",
                                            f"no route to {domain}"))

    # -- local delivery ---------------------------------------------------------------------
    def _local(self, e: RouteEvent, kind: str) -> None:
        tag = e.stanza.tag
        if self.hooks.fire(ev.ROUTE_EVENTS[(tag, kind)], e) is not None:
            return
        if tag == "message":
            if kind == "bare":
                self.message_to_bare(e)
            elif kind == "full":
                self._message_full(e)
            elif e.type not in ("error", "headline", "groupchat"):
                # A message to the server itself that no module took.
                self.bounce(e.stanza, StanzaError("service-unavailable"))
        elif kind == "full":
            s = self.sessions.get(e.to.full)  # type: ignore[union-attr]
            if s is not None and e.type != "error":
                self.deliver(s, e.stanza)
        elif kind == "bare" and e.type in (None, "unavailable"):
            for s in self.sessions.available(e.to.bare):  # type: ignore[union-attr]
                self.deliver(s, e.stanza)

    def message_to_bare(self, e: RouteEvent) -> None:
        """RFC 6121 §8.5.2: a message to a local account's bare JID."""
        t = e.type or "normal"
        bare = e.to.bare  # type: ignore[union-attr]
        if t == "error":
            return
        exists = self.user_exists(bare)
        if exists is None:
            if not self.when_known(bare, lambda: self.message_to_bare(e)):
                self.bounce(e.stanza, StanzaError("resource-constraint", "try again later", type="wait"))
            return
        if not exists:
            if t != "headline":
                self.bounce(e.stanza, StanzaError("service-unavailable"))
            return
        if t == "groupchat":
            self.bounce(e.stanza, StanzaError("service-unavailable"))
            return
        if t == "headline":
            targets = [s for s in self.sessions.available(bare) if s.priority >= 0]
        else:
            targets = self.sessions.top_priority(bare)
        if targets:
            for s in targets:
                self.deliver(s, e.stanza)
        elif t != "headline" and self.hooks.fire(ev.MESSAGE_OFFLINE, e) is None:
            self.bounce(e.stanza, StanzaError("service-unavailable"))

    def _message_full(self, e: RouteEvent) -> None:
        s = self.sessions.get(e.to.full)  # type: ignore[union-attr]
        if s is not None:
            self.deliver(s, e.stanza)
            return
        # RFC 6121 §8.5.3.2.1: no such resource.
        t = e.type or "normal"
        if t not in ("groupchat", "headline", "error"):  # RFC 6121 §5.2.2: unknown types are 'normal'
            e.to = e.to.bare_jid()  # type: ignore[union-attr]
            self.message_to_bare(e)
        elif t == "groupchat":
            self.bounce(e.stanza, StanzaError("service-unavailable"))

    def _iq_full(self, e: RouteEvent) -> None:
        if self.hooks.fire(ev.IQ_FULL, e) is not None:
            return
        s = self.sessions.get(e.to.full)  # type: ignore[union-attr]
        if s is not None:
            self.deliver(s, e.stanza)
        elif e.type in ("get", "set"):
            self.bounce(e.stanza, StanzaError("service-unavailable"))

    def _iq_local(self, e: RouteEvent, to: JID, scope: str) -> None:
        if scope == BARE:
            exists = self.user_exists(to.bare) if e.type in ("get", "set") else True
            if exists is None:
                if not self.when_known(to.bare, lambda: self._iq_local(e, to, scope)):
                    self.bounce(e.stanza, StanzaError("resource-constraint", "try again later", type="wait"))
                return
            if not exists:
                self.bounce(e.stanza, StanzaError("service-unavailable"))
                return
            if self.hooks.fire(ev.IQ_BARE, e) is not None:
                return
        self.iq.dispatch(e.stanza, IQContext(e.frm, to, e.origin, scope))

    def deliver(self, session: Session, stanza: Element) -> None:
        """Hand a stanza to a bound session, through the delivery filters."""
        if self.hooks.has(ev.DELIVER):
            d = RouteEvent(stanza, None, session.jid, session.jid, self, session)
            if self.hooks.fire(ev.DELIVER, d) is not None:
                return
        session.send(stanza)

    def route_from_peer(self, stanza: Element) -> None:
        """Route a stanza from a peer server or a component: a malformed IQ (RFC 6120 §8.2.3)
        or a stanza that cannot be routed is answered with its error."""
        shape = iq_shape_error(stanza) if stanza.tag == "iq" else None
        if shape is not None:
            self.bounce(stanza, shape)  # (an error is never answered)
            return
        try:
            self.route(stanza)
        except StanzaError as e:
            self.bounce(stanza, e)

    def bounce(self, stanza: Element, err: StanzaError) -> None:
        """Send the error reply for ``stanza``; errors are never answered with errors."""
        if stanza.attrs.get("type") == "error" or "from" not in stanza.attrs:
            return
        reply = error_reply(stanza, err)
        frm = reply.attrs.get("from")
        try:
            if frm is None:
                raise JIDError()
            _parse(frm)
        except JIDError:
            # The original 'to' was missing or malformed: the reply comes from the server.
            try:
                reply.attrs["from"] = _parse(reply.attrs["to"]).domain
            except (KeyError, JIDError):
                return
        self.route(reply)
