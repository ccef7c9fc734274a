"""Roster management (RFC 6121 §2) with versioning (XEP-0237, RFC 6121 §2.6) and the storage of
subscription state that the presence module drives (RFC 6121 §3).

Storage (both map stores, owner = the user's bare JID, values versioned by the storage layer):
- ``roster``: contact bare JID -> ``[name, subscription, ask, groups, approved]`` and the key
  ``"\\0ver"`` -> ``[epoch, counter]`` (a JID never contains NUL, so it cannot collide).
- ``roster_pending``: contact bare JID -> the inbound subscription request, as stanza bytes
  (RFC 6121 §3.1.3: kept until answered and re-delivered at each login).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from ..core.iq import IQContext
from ..core.modules import BARE, SELF, Module, hook, iq_handler
from ..errors import StanzaError
from ..jid import JID, JIDError
from ..util.ids import new_id
from ..xml.element import Element
from ..xml.fragment import parse_fragment
from ..xml.ns import NS_CLIENT, NS_PRE_APPROVAL, NS_ROSTER, NS_ROSTER_VER

if TYPE_CHECKING:
    from ..core.api import ModuleServer

VER_KEY = "\0ver"
SUBSCRIPTIONS = ("none", "to", "from", "both")
MAX_NAME = 1023    # RFC 6121 §2.3.3: server-configured limits on name and group lengths
MAX_GROUP = 1023
MAX_GROUPS = 100
MAX_PENDING = 1000  # unanswered inbound subscription requests kept per account
# The in-memory roster cache (see _Snapshot): at most this many owners, and this many items over all
# of them (the least recently used owners are dropped first).
CACHE_OWNERS = 2000
CACHE_ITEMS = 20_000  # about 1 kB each (records, elements, serialised queries)


class RosterItem:
    """One roster entry. ``ask`` is 'subscribe' while our request to the contact is pending
    (RFC 6121 "Pending Out"); ``approved`` marks a pre-approval (RFC 6121 §3.4)."""

    __slots__ = ("name", "subscription", "ask", "groups", "approved")

    def __init__(self, name: str | None = None, subscription: str = "none",
                 ask: str | None = None, groups: list[str] | None = None,
                 approved: bool = False) -> None:
        self.name = name
        self.subscription = subscription
        self.ask = ask
        self.groups = [] if groups is None else groups
        self.approved = approved

    @classmethod
    def from_record(cls, rec: list[Any]) -> RosterItem:
        name, sub, ask, groups, approved = rec[:5]
        return cls(name, sub, ask, list(groups), bool(approved))

    def to_record(self) -> list[Any]:
        return [self.name, self.subscription, self.ask, list(self.groups), self.approved]

    def copy(self) -> RosterItem:
        return RosterItem(self.name, self.subscription, self.ask, list(self.groups), self.approved)

    def element(self, jid: str) -> Element:
        attrs = {"jid": jid, "subscription": self.subscription}
        if self.name:
            attrs["name"] = self.name
        if self.ask:
            attrs["ask"] = self.ask
        if self.approved and self.subscription in ("none", "to"):
            attrs["approved"] = "true"
        el = Element("item", NS_ROSTER, attrs)
        for g in self.groups:
            el.add("group", text=g)
        return el

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RosterItem):
            return NotImplemented
        return self.to_record() == other.to_record()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"<RosterItem sub={self.subscription} ask={self.ask} approved={self.approved}"
                f" name={self.name!r} groups={self.groups!r}>")


class _Snapshot:
    """An owner's roster as stored at roster version ``ver`` (the ``VER_KEY`` record), and what is
    derived from it on demand: the ``<item/>`` elements with the serialised ``<query/>`` (roster
    gets), and contact lists by subscription state (presence broadcasts and probes).

    Every change of a roster goes through ``Roster.set_item``, which bumps the version, so a
    snapshot whose ``ver`` equals the stored one is current. ``ver`` None marks a stale snapshot,
    kept only so that a rebuild can reuse the elements of unchanged items. The records, elements and
    lists are shared: never handed out to be modified."""

    __slots__ = ("ver", "recs", "els", "queries", "by_sub")

    def __init__(self, ver: list[Any], recs: dict[str, list[Any]]) -> None:
        self.ver: list[Any] | None = ver
        self.recs = recs                            # contact -> stored record, storage order
        self.els: dict[str, Element] | None = None  # contact -> its <item/>
        self.queries: dict[str | None, bytes] = {}  # 'ver' attribute -> serialised <query/>
        self.by_sub: dict[tuple[str, ...], tuple[str, ...]] = {}

    def elements(self) -> dict[str, Element]:
        els = self.els
        if els is None:
            els = self.els = {c: RosterItem.from_record(rec).element(c)
                              for c, rec in self.recs.items()}
        return els

    def reuse(self, old: _Snapshot) -> None:
        """Take over the elements of ``old`` (an earlier snapshot) for the unchanged items."""
        old_els = old.els
        if old_els is None or self.els is not None:
            return
        old_recs = old.recs
        els = {}
        for c, rec in self.recs.items():
            el = old_els.get(c)
            els[c] = el if el is not None and old_recs.get(c) == rec else (
                RosterItem.from_record(rec).element(c))
        self.els = els

    def query(self, ver_attr: str | None) -> Element:
        """A new ``<query/>`` holding the (shared) item elements, its serialisation cached."""
        q = Element("query", NS_ROSTER, {} if ver_attr is None else {"ver": ver_attr},
                    list(self.elements().values()))
        b = self.queries.get(ver_attr)
        if b is None:
            self.queries[ver_attr] = q.to_bytes()
        else:
            q._bytes = b
        return q

    def contacts(self, subs: tuple[str, ...]) -> tuple[str, ...]:
        out = self.by_sub.get(subs)
        if out is None:
            out = self.by_sub[subs] = tuple(c for c, rec in self.recs.items() if rec[1] in subs)
        return out


class _SnapshotCache:
    """Least recently used snapshots, bounded by owners and by items in total."""

    __slots__ = ("max_owners", "max_items", "items", "_d")

    def __init__(self, max_owners: int, max_items: int) -> None:
        self.max_owners = max_owners
        self.max_items = max_items
        self.items = 0
        self._d: OrderedDict[str, _Snapshot] = OrderedDict()

    def get(self, owner: str) -> _Snapshot | None:
        snap = self._d.get(owner)
        if snap is not None:
            self._d.move_to_end(owner)
        return snap

    def put(self, owner: str, snap: _Snapshot) -> None:
        self.pop(owner)
        n = len(snap.recs) + 1
        if n > self.max_items:
            return
        d = self._d
        d[owner] = snap
        self.items += n
        while len(d) > self.max_owners or self.items > self.max_items:
            _, old = d.popitem(last=False)
            self.items -= len(old.recs) + 1

    def pop(self, owner: str) -> _Snapshot | None:
        snap = self._d.pop(owner, None)
        if snap is not None:
            self.items -= len(snap.recs) + 1
        return snap

    def __len__(self) -> int:
        return len(self._d)


class Roster(Module):
    name = "roster"
    description = "Roster management with versioning and subscription pre-approval"
    xeps = {"0237": "1.3"}
    features = [NS_ROSTER_VER, NS_PRE_APPROVAL]

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.store = server.storage.map("roster")
        self.pending = server.storage.map("roster_pending")
        self._cache = _SnapshotCache(CACHE_OWNERS, CACHE_ITEMS)

    def _snapshot(self, owner: str) -> _Snapshot:
        """The owner's roster as stored now; cached while its version stays the same."""
        cache = self._cache
        old = cache.get(owner)
        if old is not None:
            ver = old.ver
            if ver is not None and ver == self.store.get(owner, VER_KEY):
                return old
        recs = self.store.get_all(owner)
        ver = recs.pop(VER_KEY, None)
        snap = _Snapshot(ver, recs)
        if ver is not None:
            if old is not None:
                snap.reuse(old)
            cache.put(owner, snap)
        elif old is not None:
            cache.pop(owner)
        return snap

    # -- public API (presence, last, blocking, admin tools) ----------------------------------
    def get_item(self, owner: str, contact: str) -> RosterItem | None:
        rec = self.store.get(owner, contact)
        return None if rec is None else RosterItem.from_record(rec)

    def subscription(self, owner: str, contact: str) -> str:
        """'none', 'to', 'from' or 'both' ('none' when the contact is not in the roster)."""
        rec = self.store.get(owner, contact)
        return "none" if rec is None else rec[1]

    def items(self, owner: str) -> dict[str, RosterItem]:
        """contact -> a new RosterItem (the caller's to change), in storage order."""
        from_record = RosterItem.from_record
        return {k: from_record(v) for k, v in self._snapshot(owner).recs.items()}

    def contacts(self, owner: str, subscriptions: tuple[str, ...]) -> tuple[str, ...]:
        """The contacts whose subscription state is one of ``subscriptions``, in storage order."""
        return self._snapshot(owner).contacts(subscriptions)

    def version(self, owner: str) -> str:
        rec = self.store.get(owner, VER_KEY)
        return "0" if rec is None else f"{rec[0]}-{rec[1]}"

    def set_item(self, owner: str, contact: str, item: RosterItem | None, *,
                 push: bool = True) -> asyncio.Future[None]:
        """Store (or, with None, remove) an item, bump the roster version and push the change to
        the owner's interested resources. The future resolves once the write is durable."""
        rec = self.store.get(owner, VER_KEY)
        # The epoch makes versions of a deleted and re-created account differ (XEP-0237 §3).
        ver = [rec[0], rec[1] + 1] if rec is not None else [format(int(time.time()), "x"), 1]
        snap = self._cache.get(owner)
        if snap is not None:
            snap.ver = None  # stale from now on (whatever the stored version says)
        fut: asyncio.Future[None] = self.store.set_many(
            owner, {contact: None if item is None else item.to_record(), VER_KEY: ver})
        if push:
            self.push(owner, contact, item, f"{ver[0]}-{ver[1]}")
        return fut

    def remove_item(self, owner: str, contact: str, *, push: bool = True) -> asyncio.Future[None]:
        """Forget the item (and any pending request from the contact); no presence is sent
        (the roster remove handler does that)."""
        self.pending.set(owner, contact, None)
        return self.set_item(owner, contact, None, push=push)

    def push(self, owner: str, contact: str, item: RosterItem | None, ver: str | None = None) -> None:
        """RFC 6121 §2.1.6: a roster push to each resource that requested the roster."""
        el = item.element(contact) if item is not None else Element(
            "item", NS_ROSTER, {"jid": contact, "subscription": "remove"})
        if ver is None:
            ver = self.version(owner)
        router = self.server.router
        for s in self.server.sessions.resources(owner):
            if not s.interested:
                continue
            iq = Element("iq", NS_CLIENT, {"type": "set", "id": "push-" + new_id(6),
                                            "from": owner, "to": s.full})
            q = iq.add("query", NS_ROSTER, {"ver": ver})
            q.append(el.copy())
            router.deliver(s, iq)

    # Pending inbound subscription requests (RFC 6121 §3.1.3) -------------------------------
    def is_pending_in(self, owner: str, contact: str) -> bool:
        return self.pending.get(owner, contact) is not None

    def pending_in(self, owner: str) -> dict[str, Element]:
        """contact -> the stored subscription request, oldest storage order."""
        out = {}
        for contact, data in self.pending.get_all(owner).items():
            try:
                out[contact] = parse_fragment(data)
            except Exception:
                self.log.warning("unreadable pending subscription for %s from %s", owner, contact)
        return out

    def add_pending_in(self, owner: str, contact: str, stanza: Element) -> bool:
        """Keep a new inbound request, unless the owner already has MAX_PENDING of them
        (a bound against request floods); False when refused."""
        if len(self.pending.get_all(owner)) >= MAX_PENDING:
            return False
        self.set_pending_in(owner, contact, stanza)
        return True

    def set_pending_in(self, owner: str, contact: str, stanza: Element | None) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self.pending.set(
            owner, contact, None if stanza is None else stanza.to_bytes())
        return fut

    @hook(ev.ACCOUNT_DELETED)
    @hook(ev.ACCOUNT_CREATED)
    def _forget(self, arg: Any) -> None:
        bare = getattr(arg, "bare", arg)
        if isinstance(bare, str):
            self._cache.pop(bare)

    # -- stream features --------------------------------------------------------------------
    @hook(ev.STREAM_FEATURES)
    def stream_features(self, e: Any) -> None:
        e.features.append(Element("ver", NS_ROSTER_VER))
        e.features.append(Element("sub", NS_PRE_APPROVAL))

    # -- roster get / set (RFC 6121 §2.1, §2.3, §2.5) -----------------------------------------
    @iq_handler("get", NS_ROSTER, "query", scope=BARE)
    @iq_handler("set", NS_ROSTER, "query", scope=BARE)
    def other_roster(self, iq: Element, ctx: IQContext) -> None:
        # RFC 6121 §2.1.5 / §2.3.3: only the account itself may read or change its roster.
        raise StanzaError("forbidden", "this is not your roster")

    @iq_handler("get", NS_ROSTER, "query", scope=SELF)
    def roster_get(self, iq: Element, ctx: IQContext) -> Element | None:
        owner = ctx.frm.bare
        if ctx.origin is not None:
            ctx.origin.interested = True
        q = iq.first_child()
        assert q is not None
        client_ver = q.get("ver")
        snap = self._snapshot(owner)
        ver = snap.ver
        current = "0" if ver is None else f"{ver[0]}-{ver[1]}"
        if client_ver is not None and client_ver == current:
            return None  # RFC 6121 §2.6.3: up to date; changes come as pushes
        # The items' elements and the serialised <query/> are built once per roster version.
        return snap.query(None if client_ver is None else current)

    @iq_handler("set", NS_ROSTER, "query", scope=SELF)
    async def roster_set(self, iq: Element, ctx: IQContext) -> None:
        owner = ctx.frm.bare
        q = iq.first_child()
        assert q is not None
        children = list(q.elements())
        if len(children) != 1 or children[0].tag != "item" or children[0].ns != NS_ROSTER:
            raise StanzaError("bad-request", "a roster set holds exactly one item")
        el = children[0]
        jid_s = el.get("jid")
        if not jid_s:
            raise StanzaError("bad-request", "the item has no jid")
        try:
            j = JID.parse(jid_s)
        except JIDError:
            raise StanzaError("jid-malformed", "the item's jid is not a valid JID") from None
        if j.resource is not None:
            raise StanzaError("bad-request", "roster items are bare JIDs")
        contact = j.bare
        if contact == owner:
            raise StanzaError("not-allowed", "you cannot add yourself to your roster")
        if el.get("subscription") == "remove":
            await self._remove(owner, contact)
            return None
        name = el.get("name") or None
        if name is not None and len(name) > MAX_NAME:
            raise StanzaError("not-acceptable", "the name is too long")
        groups: list[str] = []
        for g in el.elements():
            if g.tag != "group" or g.ns != NS_ROSTER:
                continue
            text = g.text
            if not text:
                raise StanzaError("not-acceptable", "empty group name")
            if len(text) > MAX_GROUP:
                raise StanzaError("not-acceptable", "the group name is too long")
            if text in groups:
                raise StanzaError("bad-request", "duplicate group")
            groups.append(text)
        if len(groups) > MAX_GROUPS:
            raise StanzaError("not-acceptable", "too many groups")
        # RFC 6121 §2.1.2.5 / §2.3.2: 'subscription' (except remove), 'ask' and 'approved' from a
        # client are ignored; subscription state only changes through presence.
        old = self.get_item(owner, contact)
        item = old.copy() if old is not None else RosterItem()
        item.name = name
        item.groups = groups
        if old is not None and item == old:
            return None
        await self.set_item(owner, contact, item)
        return None

    async def _remove(self, owner: str, contact: str) -> None:
        """RFC 6121 §2.5.2: cancel both directions of the subscription, then remove the item."""
        item = self.get_item(owner, contact)
        if item is None:
            raise StanzaError("item-not-found", "not in your roster")
        pending = self.is_pending_in(owner, contact)
        route = self.server.route
        if item.subscription in ("to", "both") or item.ask:
            route(Element("presence", NS_CLIENT,
                          {"type": "unsubscribe", "from": owner, "to": contact}))
        if pending or item.subscription in ("from", "both"):
            route(Element("presence", NS_CLIENT,
                          {"type": "unsubscribed", "from": owner, "to": contact}))
        if item.subscription in ("from", "both"):
            # RFC 6121 §3.2.2: the contact no longer gets our presence; tell it we are gone.
            for s in self.server.sessions.available(owner):
                route(Element("presence", NS_CLIENT,
                              {"type": "unavailable", "from": s.full, "to": contact}))
        await self.remove_item(owner, contact)
