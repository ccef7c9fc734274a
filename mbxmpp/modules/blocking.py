"""Blocking Command (XEP-0191): a user's list of JIDs with whom all communication is refused.

Storage: map store "blocklist", owner (bare JID) -> {blocked JID (prepared): 1}. Reads are
inline; the per-owner set is cached (bounded LRU) and replaced on every change.

Matching (XEP-0191 §6, as XEP-0016 §2.1): an item ``user@domain/resource`` matches only that
full JID, ``user@domain`` any of its resources, ``domain/resource`` only that JID, and ``domain``
the domain itself and every JID at it. A user's own resources are never blocked from one another
(XEP-0191 §5).

Effects, both directions (§3.3):
- inbound from a blocked JID: messages and IQ get/set get <service-unavailable/>, presence and
  other IQs are dropped without a word (the user appears offline);
- outbound to a blocked JID from the user's client: <not-acceptable/> with
  <blocked xmlns='urn:xmpp:blocking:errors'/> (errors and IQ results dropped);
- what the server itself sends on a user's behalf to a blocked *local* JID (presence broadcast,
  probe answers) is dropped on arrival at the contact's side.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Iterable

from ..core import events as ev
from ..core.modules import SELF, Module, hook, iq_handler
from ..errors import StanzaError
from ..jid import JID, JIDError
from ..util.ids import new_id
from ..util.lru import LRU
from ..xml.build import error_reply
from ..xml.element import Element
from ..xml.ns import NS_BLOCKING, NS_BLOCKING_ERRORS, NS_CLIENT
from .roster import Roster
from .abuse_reports import NS_REPORTING, Reports, parse_report

if TYPE_CHECKING:
    from ..core.iq import IQContext
    from ..core.router import RouteEvent
    from ..core.sessions import Session
    from ..core.api import ModuleServer

log = logging.getLogger(__name__)

_EMPTY: frozenset[str] = frozenset()
FROM_SUBS = ("from", "both")  # the contact receives the user's presence (RFC 6121)


def matches(item: str, jid: JID) -> bool:
    """Does blocklist ``item`` (a prepared JID string) cover ``jid``?"""
    return item == jid.full or item == jid.bare or item == jid.domain


class Blocking(Module):
    name = "blocking"
    description = "Blocking Command: refuse all communication with chosen JIDs"
    xeps = {"0191": "1.3", "0377": "0.3"}
    features = [NS_BLOCKING, NS_REPORTING]
    max_items = 10000        # per account
    cache_size = 10000       # owners whose blocklist is kept in memory
    uses = (Roster,)  # presence to subscribed contacts on block / unblock

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.store = server.storage.map("blocklist")
        self._cache: LRU[str, frozenset[str]] = LRU(self.cache_size)
        self.reports = Reports(server.storage)  # XEP-0377, for the operator
        self.roster: Roster | None = None

    async def start(self) -> None:
        self.roster = self.optional(Roster)

    # -- public API (presence, MUC, admin tools) ----------------------------------------------
    def blocklist(self, owner: str) -> frozenset[str]:
        s = self._cache.get(owner)
        if s is None:
            stored = self.store.get_all(owner)
            s = frozenset(stored) if stored else _EMPTY
            self._cache.put(owner, s)
        return s

    def is_blocked(self, owner: str, jid: JID) -> bool:
        """Has local account ``owner`` (bare JID) blocked ``jid``?"""
        if jid.bare == owner:
            return False  # §5: never between a user's own resources
        s = self.blocklist(owner)
        if not s:
            return False
        return jid.full in s or jid.bare in s or jid.domain in s

    # -- IQ: blocklist / block / unblock (§3.2 - §3.5) ----------------------------------------
    @iq_handler("get", NS_BLOCKING, "blocklist", scope=SELF)
    def get_blocklist(self, iq: Element, ctx: IQContext) -> Element:
        if ctx.origin is not None:
            ctx.origin.mod[Blocking] = True  # §3.3: pushes go to resources that asked
        el = Element("blocklist", NS_BLOCKING)
        for j in sorted(self.blocklist(ctx.frm.bare)):
            el.add("item", attrs={"jid": j})
        return el

    # The changes take effect at once (the next stanza on the stream already sees them, RFC 6120
    # §10.1); the IQ result waits until they are durable, then the pushes follow it.
    @iq_handler("set", NS_BLOCKING, "block", scope=SELF)
    def block(self, iq: Element, ctx: IQContext) -> Any:
        owner = ctx.frm.bare
        jids = self._parse_items(iq.first_child())  # type: ignore[arg-type]
        if not jids:
            raise StanzaError("bad-request", "<block/> needs at least one <item/>")
        reports = self._reports(iq.first_child())  # type: ignore[arg-type]
        current = self.blocklist(owner)
        new = [j for j in jids if j not in current]
        if len(current) + len(new) > self.max_items:
            raise StanzaError("policy-violation", f"at most {self.max_items} blocked JIDs")
        fut = None
        if new:
            try:
                fut = self.store.set_many(owner, dict.fromkeys(new, 1))
            except ValueError:  # owner + key over the storage key limit
                raise StanzaError("not-acceptable", "JID too long to block") from None
            # §3.3: the newly blocked stop seeing us, before the block hides it from them.
            self._presence_to(owner, new, unavailable=True)
            self._cache.put(owner, current.union(new))
        for jid, report in reports:
            self._record(owner, jid, report)
        return self._commit(owner, fut, "block", jids)

    @iq_handler("set", NS_BLOCKING, "unblock", scope=SELF)
    def unblock(self, iq: Element, ctx: IQContext) -> Any:
        owner = ctx.frm.bare
        jids = self._parse_items(iq.first_child())  # type: ignore[arg-type]
        current = self.blocklist(owner)
        if not jids:
            # §3.5: an empty <unblock/> unblocks everyone.
            removed: Iterable[str] = sorted(current)
            fut = self.store.delete_all(owner) if current else None
            self._cache.put(owner, _EMPTY)
        else:
            removed = [j for j in jids if j in current]
            fut = self.store.set_many(owner, dict.fromkeys(removed)) if removed else None
            self._cache.put(owner, current.difference(removed))
        # §3.4: the unblocked see our current presence again, if they may.
        self._presence_to(owner, list(removed), unavailable=False)
        return self._commit(owner, fut, "unblock", jids)

    # -- XEP-0377 reports ------------------------------------------------------------------------
    def _reports(self, payload: Element) -> list[tuple[str, dict[str, Any]]]:
        """(reported JID, report) of the items that carry one; validated before anything is
        blocked (XEP-0377: block or fail as without the report)."""
        out = []
        for c in payload.elements():
            if c.tag == "item" and c.ns == NS_BLOCKING:
                report = parse_report(c)
                if report is not None:
                    out.append((JID.parse(c.attrs["jid"]).full, report))  # parsed before
        return out

    def _record(self, owner: str, jid: str, report: dict[str, Any]) -> None:
        if self.server.limits.take("reports_per_account", owner):
            log.info("report of %s by %s not recorded: over reports_per_account", jid, owner)
            return
        self.reports.record(owner, jid, report)
        log.info("abuse report: %s reported %s (%s)", owner, jid, report["reason"])

    def _parse_items(self, payload: Element) -> list[str]:
        """The prepared JIDs of the <item/> children, without duplicates, in order."""
        out: dict[str, None] = {}
        for c in payload.elements():
            if c.tag != "item" or c.ns != NS_BLOCKING:
                continue
            raw = c.attrs.get("jid")
            if raw is None:
                raise StanzaError("bad-request", "<item/> without a 'jid'")
            try:
                jid = JID.parse(raw)
            except JIDError as e:
                raise StanzaError("jid-malformed", f"{raw!r}: {e.text or 'not a JID'}") from None
            out[jid.full] = None
            if len(out) > self.max_items:
                raise StanzaError("policy-violation", f"at most {self.max_items} blocked JIDs")
        return list(out)

    async def _commit(self, owner: str, fut: Any, action: str, jids: list[str]) -> None:
        """Awaited by the IQ dispatcher: the result is sent once the change is durable."""
        if fut is not None:
            try:
                await fut
            except Exception:
                self._cache.pop(owner)  # re-read what is really stored
                raise
        # The dispatcher sends the result as this returns; the pushes come after it.
        asyncio.get_running_loop().call_soon(self._push, owner, action, jids)
        return None

    def _push(self, owner: str, action: str, jids: list[str]) -> None:
        """§3.3 / §3.4 / §3.5: an IQ-set to every resource that requested the blocklist."""
        deliver = self.server.router.deliver
        for s in self.server.sessions.resources(owner):
            if s.mod.get(Blocking) is not True:
                continue
            iq = Element("iq", NS_CLIENT, {"type": "set", "id": "block-" + new_id(6),
                                            "from": owner, "to": s.full})
            el = iq.add(action, NS_BLOCKING)
            for j in jids:
                el.add("item", attrs={"jid": j})
            deliver(s, iq)

    # -- presence on block / unblock ----------------------------------------------------------
    def _presence_to(self, owner: str, items: list[str], unavailable: bool) -> None:
        """Presence of each available resource of ``owner`` to what ``items`` cover, where it
        may see it: subscribed contacts (RFC 6121 'from'/'both') and, for unavailable, the
        recipients of directed presence (RFC 6121 §4.6). Each target gets it once."""
        sessions = self.server.sessions.available(owner)
        if not sessions or not items:
            return  # offline already, as far as anyone can see
        targets: dict[str, None] = {}
        roster = self.roster
        if roster is not None:
            contacts: dict[str, Any] | None = None
            for item in items:
                try:
                    ij = JID.parse(item)
                except JIDError:  # not from this code: items are prepared before storing
                    continue
                if ij.local is not None:
                    # One account (or one resource of it): a direct lookup.
                    if roster.subscription(owner, ij.bare) in FROM_SUBS:
                        targets[item] = None
                    continue
                if contacts is None:
                    contacts = roster.items(owner)
                for contact, ri in contacts.items():
                    # A domain item covers the domain and every account at it.
                    if ri.subscription in FROM_SUBS and contact.rpartition("@")[2] == ij.domain:
                        if ij.resource is None or contact == ij.domain:
                            targets[item if ij.resource is not None else contact] = None
        # A blocked bare JID covers its full JIDs: send to the bare one only.
        bare_targets = {t for t in targets if "/" not in t}
        route = self.server.route
        for s in sessions:
            sent = set()
            for t in targets:
                if "/" in t and t.split("/", 1)[0] in bare_targets:
                    continue
                route(self._presence(s, t, unavailable))
                sent.add(t)
            if unavailable and s.directed:
                for d in list(s.directed):
                    try:
                        dj = JID.parse(d)
                    except JIDError:
                        continue
                    if any(matches(item, dj) for item in items):
                        s.directed.discard(d)
                        if d not in sent and dj.bare not in sent:
                            route(self._presence(s, d, True))

    @staticmethod
    def _presence(s: Session, to: str, unavailable: bool) -> Element:
        if unavailable or s.presence is None:
            return Element("presence", NS_CLIENT, {"type": "unavailable", "from": s.full, "to": to})
        p = s.presence
        attrs = dict(p.attrs)
        attrs["from"] = s.full
        attrs["to"] = to
        return Element(p.tag, p.ns, attrs, list(p.children))

    # -- enforcement --------------------------------------------------------------------------
    def _inbound(self, e: RouteEvent) -> int:
        """0: pass; 1: blocked by the addressee; 2: sent on behalf of a local account to a JID
        it blocked (the server routes those itself: presence broadcast, probe answers)."""
        to = e.to
        if to is None:
            return 0
        frm = e.frm
        owner = to.bare
        if frm.bare == owner:
            return 0
        if self.is_blocked(owner, frm):
            return 1
        if (e.origin is None and frm.local is not None and frm.domain in self.server.hosts
                and e.stanza.attrs.get("type") != "error"
                and self.is_blocked(frm.bare, to)):
            return 2
        return 0

    @hook(ev.MESSAGE_BARE, priority=100)
    @hook(ev.MESSAGE_FULL, priority=100)
    def inbound_message(self, e: RouteEvent) -> Any:
        r = self._inbound(e)
        if r == 0:
            return None
        if r == 1:
            # §3.3: messages SHOULD get <service-unavailable/> (bounce never answers errors).
            self.server.router.bounce(e.stanza, StanzaError("service-unavailable"))
        return True

    @hook(ev.PRESENCE_BARE, priority=100)
    @hook(ev.PRESENCE_FULL, priority=100)
    def inbound_presence(self, e: RouteEvent) -> Any:
        # §3.3: presence of any kind is dropped without a reply.
        return True if self._inbound(e) else None

    @hook(ev.IQ_BARE, priority=100)
    @hook(ev.IQ_FULL, priority=100)
    def inbound_iq(self, e: RouteEvent) -> Any:
        r = self._inbound(e)
        if r == 0:
            return None
        if r == 1 and e.type in ("get", "set"):
            # §3.3: IQ get/set MUST get an error (service-unavailable); others are dropped.
            self.server.router.bounce(e.stanza, StanzaError("service-unavailable"))
        return True

    @hook(ev.PRE_MESSAGE, priority=100)
    @hook(ev.PRE_PRESENCE, priority=100)
    @hook(ev.PRE_IQ, priority=100)
    def outbound(self, e: RouteEvent) -> Any:
        to = e.to
        origin = e.origin
        if to is None or origin is None or not self.is_blocked(origin.bare, to):
            return None
        st = e.stanza
        t = st.attrs.get("type")
        if t != "error" and not (t == "result" and st.tag == "iq"):
            # §3.3: "an outbound stanza" (directed presence and subscription requests included)
            # is not routed but answered with <not-acceptable/> + <blocked/>, straight to the
            # sender (routing it from the blocked JID would meet the block again).
            # Type 'cancel' as in the XEP's example (retrying cannot help until unblocked).
            err = StanzaError("not-acceptable", "you have blocked this JID", type="cancel",
                              app_condition=(NS_BLOCKING_ERRORS, "blocked"))
            self.server.router.deliver(origin, error_reply(st, err))
        return True

    # -- lifecycle ----------------------------------------------------------------------------
    @hook(ev.ACCOUNT_DELETED)
    @hook(ev.ACCOUNT_CREATED)
    def forget(self, arg: Any) -> None:
        bare = getattr(arg, "bare", arg)
        if isinstance(bare, str):
            self._cache.pop(bare)
