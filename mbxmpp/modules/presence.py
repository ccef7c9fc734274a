"""Presence (RFC 6121 §4) and presence subscriptions (RFC 6121 §3, state tables of Appendix A).

Outbound (from a local client, hook PRE_PRESENCE): broadcasts, directed presence, and the
user's side of the subscription state machine (Appendix A.2). Inbound (hooks PRESENCE_BARE /
PRESENCE_FULL, for stanzas addressed to local accounts whatever their origin): the contact's side
(Appendix A.3) and probes. Local-to-local subscriptions go through the router like remote ones, so
both halves are always exercised.

Subscription state = roster item (subscription + ask, "Pending Out") + the roster module's pending
store ("Pending In").
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING, Any

from ..core import events as ev
from ..core.modules import Module, hook
from ..errors import StanzaError
from ..jid import JID, JIDError
from ..util.lru import LRU
from ..xml.element import Element
from ..xml.ns import NS_CLIENT
from .offline import Offline
from .roster import Roster, RosterItem

if TYPE_CHECKING:
    from ..core.router import RouteEvent
    from ..core.sessions import Session
    from ..core.api import ModuleServer

SUBSCRIPTION_TYPES = frozenset(("subscribe", "subscribed", "unsubscribe", "unsubscribed"))
FROM_SUBS = ("from", "both")   # the contact receives the user's presence
TO_SUBS = ("to", "both")       # the user receives the contact's presence


def readdress(st: Element, frm: str | None, to: str | None) -> Element:
    """A copy of ``st`` with new addresses (children shared; the child list is the copy's own)."""
    attrs = dict(st.attrs)
    for k, v in (("from", frm), ("to", to)):
        if v is None:
            attrs.pop(k, None)
        else:
            attrs[k] = v
    return Element(st.tag, st.ns, attrs, list(st.children))


def parse_priority(st: Element) -> int:
    """RFC 6121 §4.7.2.3: an integer in -128..127; missing or garbage counts as 0."""
    p = st.findtext("priority", NS_CLIENT)
    if p is None:
        return 0
    try:
        v = int(p.strip())
    except ValueError:
        return 0
    return max(-128, min(127, v))


def _presence(type_: str | None, frm: str, to: str) -> Element:
    attrs = {"from": frm, "to": to}
    if type_ is not None:
        attrs["type"] = type_
    return Element("presence", NS_CLIENT, attrs)


class Presence(Module):
    name = "presence"
    description = "Presence broadcast and the presence subscription state machine"
    depends = (Roster,)
    uses = (Offline,)  # hands over what waited offline when a resource becomes eligible

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.roster = self.require(Roster)
        self.offline: Offline | None = None
        # RFC 6121 §4.3.2: a probe to an account without available resources may be answered
        # with its last unavailable presence; kept in memory for recently seen accounts only.
        self.last_unavailable: LRU[str, Element] = LRU(10000)

    async def start(self) -> None:
        self.offline = self.optional(Offline)

    # ========================================================================================
    # Outbound: stanzas a local client sends
    # ========================================================================================
    @hook(ev.PRE_PRESENCE)
    def outbound(self, e: RouteEvent) -> Any:
        session = e.origin
        assert session is not None
        st = e.stanza
        t = st.attrs.get("type")
        if t in SUBSCRIPTION_TYPES:
            self._outbound_subscription(session, st, t)
            return True
        if t is None or t == "unavailable":
            if e.to is None:
                if t is None:
                    self._available(session, st)
                else:
                    self._unavailable(session, st)
                return True
            self._directed(session, e.to, t)
        # Directed presence, probes and errors: the router takes them on.
        return None

    def _directed(self, session: Session, to: JID, t: str | None) -> None:
        """RFC 6121 §4.6: remember who got directed presence, to tell them when we go away."""
        if to.bare == session.bare:
            return
        target = to.full
        if t is None:
            if self.roster.subscription(session.bare, to.bare) not in FROM_SUBS:
                session.directed.add(target)
        else:
            session.directed.discard(target)

    def _available(self, session: Session, st: Element) -> None:
        first = not session.available
        old_priority = session.priority
        pres = readdress(st, session.full, None)
        session.available = True
        session.priority = parse_priority(st)
        session.presence = pres
        self._broadcast(session, pres)
        if first:
            self._initial(session)
            # Each time the session goes from unavailable to available (normally once).
            self.server.hooks.fire_all(ev.SESSION_AVAILABLE, session)
        elif old_priority < 0 <= session.priority:
            # Now eligible for messages to the bare JID: hand over what waited offline (XEP-0160).
            if self.offline is not None:
                self.offline.deliver_to(session)

    def _broadcast(self, session: Session, pres: Element) -> tuple[str, ...]:
        """RFC 6121 §4.2.2 / §4.4.2 / §4.5.2: to contacts subscribed to us, and to our own
        available resources (for available presence, including the sender itself).
        Returns the contacts it was sent to."""
        owner = session.bare
        route = self.server.route
        contacts = self.roster.contacts(owner, FROM_SUBS)
        if contacts:
            # What readdress(pres, session.full, contact) gives, with the work shared: the
            # attributes are copied from one prepared dict, and each child element is serialised
            # once here (its cached bytes are reused by every copy's serialisation).
            tag, ns, children = pres.tag, pres.ns, pres.children
            attrs = dict(pres.attrs)
            attrs["from"] = session.full
            if len(contacts) > 1:
                for c in children:
                    if c.__class__ is not str:
                        c.to_bytes()
            for contact in contacts:
                a = attrs.copy()
                a["to"] = contact
                route(Element(tag, ns, a, list(children)))
        deliver = self.server.router.deliver
        unavailable = pres.attrs.get("type") == "unavailable"
        for s in self.server.sessions.available(owner):
            if unavailable and s is session:
                continue
            deliver(s, readdress(pres, session.full, s.full))
        return contacts

    def _initial(self, session: Session) -> None:
        """What only the first available presence of a session triggers (RFC 6121 §4.2.2)."""
        owner = session.bare
        route = self.server.route
        deliver = self.server.router.deliver
        # Probes, from the full JID so that the answers come to this resource only.
        for contact in self.roster.contacts(owner, TO_SUBS):
            route(_presence("probe", session.full, contact))
        # The presence of our other available resources.
        for s in self.server.sessions.available(owner):
            if s is not session and s.presence is not None:
                deliver(session, readdress(s.presence, s.full, session.full))
        # RFC 6121 §3.1.3: subscription requests not yet answered.
        for contact, req in self.roster.pending_in(owner).items():
            deliver(session, readdress(req, contact, owner))

    def _unavailable(self, session: Session, st: Element) -> None:
        pres = readdress(st, session.full, None)
        was_available = session.available
        session.available = False
        session.presence = pres
        self._go_away(session, pres, was_available)

    def _go_away(self, session: Session, pres: Element, was_available: bool) -> None:
        """RFC 6121 §4.5.2: unavailable to contacts, own resources and directed recipients."""
        sent: set[str] = set()
        if was_available:
            sent = set(self._broadcast(session, pres))
            if not self.server.sessions.available(session.bare):
                last = readdress(pres, session.bare, None)
                last.children = [c for c in last.children
                                 if c.__class__ is str or c.tag != "priority"]
                last.clear_cache()
                self.last_unavailable.put(session.bare, last)
        route = self.server.route
        for target in list(session.directed):  # (a bounce may discard from it)
            if target not in sent and target.partition("/")[0] not in sent:
                route(readdress(pres, session.full, target))
        session.directed.clear()

    @hook(ev.SESSION_CLOSED, priority=100)
    def session_closed(self, session: Session) -> None:
        """The stream is gone without unavailable presence: send it on the client's behalf."""
        if not session.available and not session.directed:
            return
        pres = Element("presence", NS_CLIENT, {"type": "unavailable", "from": session.full})
        was_available = session.available
        session.available = False
        self._go_away(session, pres, was_available)

    @hook(ev.ACCOUNT_DELETED, priority=100)  # before the roster module drops its cache
    def account_deleted(self, e: Any) -> None:
        """A deleted account cancels every subscription, as its user could have one by one
        (RFC 6121 §3.2, §3.3; what Prosody does too): each contact's server updates the
        contact's roster item (local contacts' at once, with a roster push) and stops showing
        presence shared with the account. Runs while the account's roster is still stored."""
        owner = e.bare
        self.last_unavailable.pop(owner)
        route = self.server.route
        pending = self.roster.pending_in(owner)
        for contact, item in self.roster.items(owner).items():
            if item.subscription in FROM_SUBS or contact in pending:
                route(_presence("unsubscribed", owner, contact))
            if item.subscription in TO_SUBS or item.ask:
                route(_presence("unsubscribe", owner, contact))
        for contact in pending.keys() - self.roster.items(owner).keys():
            route(_presence("unsubscribed", owner, contact))  # requests never answered: refused

    # -- outbound subscription stanzas (RFC 6121 Appendix A.2) --------------------------------
    def _outbound_subscription(self, session: Session, st: Element, t: str) -> None:
        to_s = st.attrs.get("to")
        if to_s is None:
            return  # nowhere to send it
        try:
            contact = JID.parse(to_s).bare
        except JIDError:
            self.server.router.bounce(st, StanzaError("jid-malformed"))
            return
        owner = session.bare
        if contact == owner:
            return  # a subscription to oneself means nothing
        # RFC 6121 §3.1.2: stamped with the bare JIDs.
        out = readdress(st, owner, contact)
        item = self.roster.get_item(owner, contact)
        if t == "subscribe":
            wait = self.server.limits.take("subscriptions_per_account", owner)
            if wait:
                # [limits] subscriptions_per_account; RFC 6121 §3.1.3 lets the server refuse.
                self.server.router.bounce(st, StanzaError(
                    "policy-violation", "too many subscription requests; try again in "
                    f"{max(1, math.ceil(wait))} s", type="wait"))
                return
            self._out_subscribe(owner, contact, item)
            self.server.route(out)
        elif t == "unsubscribe":
            if item is not None and (item.ask or item.subscription in TO_SUBS):
                item.ask = None
                item.subscription = "from" if item.subscription == "both" else (
                    "none" if item.subscription == "to" else item.subscription)
                self.roster.set_item(owner, contact, item)
            self.server.route(out)
        elif t == "subscribed":
            self._out_subscribed(owner, contact, item, out)
        else:
            self._out_unsubscribed(owner, contact, item, out)

    def _out_subscribe(self, owner: str, contact: str, item: RosterItem | None) -> None:
        if item is None:
            item = RosterItem()
        elif item.ask or item.subscription in TO_SUBS:
            return  # A.2.1: no state change
        item.ask = "subscribe"
        self.roster.set_item(owner, contact, item)

    def _out_subscribed(self, owner: str, contact: str, item: RosterItem | None,
                        out: Element) -> None:
        if self.roster.is_pending_in(owner, contact):
            # A.2.3: None+PendingIn -> From, To+PendingIn -> Both.
            if item is None:
                item = RosterItem()  # RFC 6121 §3.1.5: the requester joins the roster
            item.subscription = "both" if item.subscription in TO_SUBS else "from"
            item.approved = False
            self.roster.set_pending_in(owner, contact, None)
            self.roster.set_item(owner, contact, item)
            self.server.route(out)
            self._send_current_presence(owner, contact)
        elif item is not None and item.subscription in FROM_SUBS:
            self.server.route(out)  # no state change; lets a confused peer resynchronise
        else:
            # RFC 6121 §3.4: pre-approval; stored, not routed.
            if item is None:
                item = RosterItem()
            elif item.approved:
                return
            item.approved = True
            self.roster.set_item(owner, contact, item)

    def _out_unsubscribed(self, owner: str, contact: str, item: RosterItem | None,
                          out: Element) -> None:
        if self.roster.is_pending_in(owner, contact):
            self.roster.set_pending_in(owner, contact, None)
        if item is not None and (item.approved or item.subscription in FROM_SUBS):
            lost = item.subscription in FROM_SUBS
            item.subscription = "to" if item.subscription == "both" else (
                "none" if item.subscription == "from" else item.subscription)
            item.approved = False  # RFC 6121 §3.4.1: also cancels a pre-approval
            self.roster.set_item(owner, contact, item)
            self.server.route(out)
            if lost:
                # RFC 6121 §3.2.2: the contact must learn that it no longer sees us.
                for s in self.server.sessions.available(owner):
                    self.server.route(_presence("unavailable", s.full, contact))
        else:
            self.server.route(out)

    def _send_current_presence(self, owner: str, to: str) -> None:
        """The presence of each available resource of ``owner``, to ``to`` (RFC 6121 §3.1.5)."""
        for s in self.server.sessions.available(owner):
            if s.presence is not None:
                self.server.route(readdress(s.presence, s.full, to))

    # ========================================================================================
    # Inbound: presence addressed to a local account
    # ========================================================================================
    @hook(ev.PRESENCE_BARE)
    def inbound_bare(self, e: RouteEvent) -> Any:
        t = e.stanza.attrs.get("type")
        if t is None or t == "unavailable":
            return None  # the router's default: to every available resource
        if t in SUBSCRIPTION_TYPES:
            self._inbound_subscription(e, t)
        elif t == "probe":
            self._probe(e)
        elif t == "error":
            for s in self.server.sessions.resources(e.to.bare):  # type: ignore[union-attr]
                s.directed.discard(e.frm.full)
                s.directed.discard(e.frm.bare)
        return True

    @hook(ev.PRESENCE_FULL)
    def inbound_full(self, e: RouteEvent) -> Any:
        t = e.stanza.attrs.get("type")
        if t is None or t == "unavailable":
            return None  # the router's default: to that resource
        if t in SUBSCRIPTION_TYPES:
            # RFC 6121 §3.1.3: a subscription stanza to a full JID is handled as to the bare JID.
            e.to = e.to.bare_jid()  # type: ignore[union-attr]
            self._inbound_subscription(e, t)
        elif t == "probe":
            self._probe(e)
        elif t == "error":
            s = self.server.sessions.get(e.to.full)  # type: ignore[union-attr]
            if s is not None:
                s.directed.discard(e.frm.full)
                s.directed.discard(e.frm.bare)
                self.server.router.deliver(s, e.stanza)
        return True

    def _probe(self, e: RouteEvent) -> None:
        """RFC 6121 §4.3.2: answer with the current presence if the prober is subscribed."""
        to = e.to
        assert to is not None
        owner = to.bare
        prober = e.frm
        if not self.server.accounts.exists(owner):
            self.server.route(_presence("unsubscribed", owner, prober.bare))
            return
        if prober.bare != owner and self.roster.subscription(owner, prober.bare) not in FROM_SUBS:
            if not self.roster.is_pending_in(owner, prober.bare):
                # The prober believes it is subscribed; it is not (resynchronisation).
                self.server.route(_presence("unsubscribed", owner, prober.bare))
            return
        sessions = self.server.sessions.available(owner)
        if to.resource is not None:
            sessions = [s for s in sessions if s.full == to.full]
        if sessions:
            for s in sessions:
                if s.presence is not None:
                    self.server.route(readdress(s.presence, s.full, prober.full))
        elif to.resource is None:
            last = self.last_unavailable.get(owner)
            if last is not None:
                self.server.route(readdress(last, owner, prober.full))

    # -- inbound subscription stanzas (RFC 6121 Appendix A.3) ---------------------------------
    def _inbound_subscription(self, e: RouteEvent, t: str) -> None:
        owner = e.to.bare  # type: ignore[union-attr]
        user = e.frm.bare
        if user == owner:
            return
        if not self.server.accounts.exists(owner):
            if t == "subscribe":
                # RFC 6121 §3.1.3: no such contact -> the request is refused.
                self.server.route(_presence("unsubscribed", owner, user))
            return
        st = readdress(e.stanza, user, owner)
        item = self.roster.get_item(owner, user)
        sub = item.subscription if item is not None else "none"
        if t == "subscribe":
            self._in_subscribe(owner, user, item, st)
        elif t == "unsubscribe":
            changed = False
            if self.roster.is_pending_in(owner, user):
                self.roster.set_pending_in(owner, user, None)
                changed = True
            if item is not None and sub in FROM_SUBS:
                item.subscription = "to" if sub == "both" else "none"
                self.roster.set_item(owner, user, item)
                changed = True
                for s in self.server.sessions.available(owner):
                    self.server.route(_presence("unavailable", s.full, user))
            if changed:
                self._deliver_all(owner, st)
        elif t == "subscribed":
            if item is not None and item.ask and sub not in TO_SUBS:
                item.subscription = "both" if sub == "from" else "to"
                item.ask = None
                self.roster.set_item(owner, user, item)
                self._deliver_all(owner, st)
        else:  # unsubscribed
            if item is not None and (item.ask or sub in TO_SUBS):
                item.subscription = "from" if sub in FROM_SUBS else "none"
                item.ask = None
                self.roster.set_item(owner, user, item)
                self._deliver_all(owner, st)

    def _in_subscribe(self, owner: str, user: str, item: RosterItem | None, st: Element) -> None:
        sub = item.subscription if item is not None else "none"
        if sub in FROM_SUBS:
            # A.3.1: already subscribed -> auto-reply on the contact's behalf.
            self.server.route(_presence("subscribed", owner, user))
            self._send_current_presence(owner, user)
        elif item is not None and item.approved:
            # RFC 6121 §3.4: pre-approved -> accept without asking the contact.
            item.subscription = "both" if sub == "to" else "from"
            item.approved = False
            self.roster.set_pending_in(owner, user, None)
            self.roster.set_item(owner, user, item)
            self.server.route(_presence("subscribed", owner, user))
            self._send_current_presence(owner, user)
        elif not self.roster.is_pending_in(owner, user):
            if not self.roster.add_pending_in(owner, user, st):
                self.log.info("dropping a subscription request to %s: too many pending", owner)
                return
            self._deliver_all(owner, st)
        # else: already pending, delivered before and again at each login

    def _deliver_all(self, owner: str, st: Element) -> None:
        deliver = self.server.router.deliver
        for s in self.server.sessions.available(owner):
            deliver(s, readdress(st, st.attrs.get("from"), owner))
