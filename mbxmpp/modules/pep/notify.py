"""Who gets PEP notifications, and when (XEP-0163 §4, XEP-0060 §9.2 filtered notifications).

The service keeps, per available entity, the XEP-0115 caps it announced and the features behind
them (verified through ``caps.CapsCache``):
- ``local[bare][full]``: the resources of local accounts, from their broadcast presence;
- ``remote[owner][full]``: remote contacts, from the presence they send to a local account.
A notification for ``node`` goes to each such resource that advertises ``node+notify``, shares
presence with the owner (or is the owner) and passes the node's access model; plus explicit
subscribers. A resource that becomes available, or whose caps gain ``node+notify``, gets the last
published item of the nodes it can see (``send_last_published_item`` != never).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable, Iterable

from ...core import events as ev
from ...core.modules import hook
from ...jid import JID, JIDError
from ...util.ids import new_id
from ...xml.element import Element
from ...xml.ns import NS_CLIENT, NS_PUBSUB_EVENT
from .access import SHARES_PRESENCE, may_access
from .caps import Caps, Features, from_presence
from .nodes import Item, Node

if TYPE_CHECKING:
    from ...core.api import ModuleServer
    from ...core.router import RouteEvent
    from ..blocking import Blocking
    from ..roster import Roster
    from ...core.sessions import Session
    from .caps import CapsCache
    from .nodes import NodeStore

MAX_REMOTE = 100_000  # remote resources tracked over all accounts
NOTIFY = "+notify"
_EMPTY: Features = frozenset()


class Entry:
    __slots__ = ("caps", "features", "served", "task")

    def __init__(self) -> None:
        self.caps: Caps | None = None
        self.features: Features = _EMPTY
        self.served: set[str] = set()  # owners whose last items this resource got
        self.task: asyncio.Task | None = None  # resolving ``caps`` (one at a time per resource)


def interests(features: Iterable[str]) -> set[str]:
    return {f[:-len(NOTIFY)] for f in features if f.endswith(NOTIFY)}


def bare_of(jid: str) -> str:
    return jid.partition("/")[0]


class NotifyMixin:
    server: ModuleServer
    roster: Roster
    blocking: Blocking | None
    store: NodeStore
    caps: CapsCache

    def _init_notify(self) -> None:
        self.local: dict[str, dict[str, Entry]] = {}
        self.remote: dict[str, dict[str, Entry]] = {}
        self._remote_count = 0
        self._tasks: set[asyncio.Task] = set()

    # -- relations -------------------------------------------------------------------------
    def subscription(self, owner: str, contact: str) -> str:
        return self.roster.subscription(owner, contact)

    def _roster(self, owner: str) -> dict[str, str]:
        return {c: it.subscription for c, it in self.roster.items(owner).items()}

    def _blocked(self, owner: str, jid: str) -> bool:
        blocking = self.blocking
        if blocking is None or not blocking.blocklist(owner):
            return False
        try:
            return bool(blocking.is_blocked(owner, JID.parse(jid)))
        except JIDError:
            return True

    def may_receive(self, owner: str, node: Node, bare: str, sub: str | None = None) -> bool:
        """Presence-based delivery to ``bare`` (XEP-0163 §4: shares presence + access model)."""
        if bare == owner:
            return True
        if sub is None:
            sub = self.subscription(owner, bare)
        if sub not in SHARES_PRESENCE:
            return False
        return may_access(owner, node, bare, lambda o, c: sub) and not self._blocked(owner, bare)

    def _local_owners(self, bare: str) -> list[str]:
        """The local accounts whose PEP nodes ``bare`` follows through presence (and itself)."""
        hosts = self.server.hosts
        out = [bare]
        for c, sub in self._roster(bare).items():
            if sub in ("to", "both") and c != bare and c.partition("@")[2] in hosts and "@" in c:
                out.append(c)
        return out

    # -- presence tracking -----------------------------------------------------------------
    @hook(ev.PRE_PRESENCE, priority=90)
    def _own_presence(self, e: RouteEvent) -> None:
        s = e.origin
        st = e.stanza
        if s is None or "to" in st.attrs:
            return None
        t = st.attrs.get("type")
        if t is None:
            entries = self.local.setdefault(s.bare, {})
            bare = s.bare
            self._set_caps(entries, s.full, bare, from_presence(st),
                           lambda: self._local_owners(bare), s.host)
        elif t == "unavailable":
            self._drop_local(s.bare, s.full)
        return None

    @hook(ev.SESSION_CLOSED)
    def _session_closed(self, session: Session) -> None:
        self._drop_local(session.bare, session.full)

    def _drop_local(self, bare: str, full: str) -> None:
        entries = self.local.get(bare)
        if entries is not None:
            entry = entries.pop(full, None)
            if entry is not None and entry.task is not None:
                entry.task.cancel()
            if not entries:
                del self.local[bare]

    @hook(ev.PRESENCE_BARE, priority=90)
    @hook(ev.PRESENCE_FULL, priority=90)
    def _contact_presence(self, e: RouteEvent) -> None:
        frm, to = e.frm, e.to
        if to is None or frm.resource is None or frm.local is None:
            return None
        owner = to.bare
        t = e.stanza.attrs.get("type")
        if frm.domain in self.server.hosts:
            # A local contact: its caps come from its own presence; serve this owner if new.
            if t is None:
                self._serve_local(frm.bare, frm.full, owner)
            return None
        entries = self.remote.get(owner)
        if t is None:
            if self.subscription(owner, frm.bare) not in SHARES_PRESENCE:
                return None
            if entries is None:
                entries = self.remote[owner] = {}
            if frm.full not in entries:
                if self._remote_count >= MAX_REMOTE:
                    return None
                self._remote_count += 1
            self._set_caps(entries, frm.full, frm.bare, from_presence(e.stanza),
                           lambda: [owner], owner)
        elif t == "unavailable" and entries is not None:
            if entries.pop(frm.full, None) is not None:
                self._remote_count -= 1
            if not entries:
                del self.remote[owner]
        return None

    def _serve_local(self, bare: str, full: str, owner: str) -> None:
        entry = self.local.get(bare, {}).get(full)
        if entry is None or owner in entry.served or owner == bare:
            return
        entry.served.add(owner)
        self._send_interesting(owner, full, bare, interests(entry.features))

    def _set_caps(self, entries: dict[str, Entry], full: str, bare: str, caps: Caps | None,
                  owners: Callable[[], list[str]], query_from: str) -> None:
        entry = entries.get(full)
        if entry is None:
            entry = entries[full] = Entry()
        elif caps is None or entry.caps == caps:
            return  # not an initial presence, nothing new (XEP-0163 §4.3.2 footnote)
        if caps is None:
            return
        entry.caps = caps
        feats = self.caps.lookup(caps)
        if feats is not None:
            self._features(entry, full, bare, feats, owners)
            return
        if entry.task is not None:
            entry.task.cancel()  # announced other caps meanwhile
        task = entry.task = asyncio.ensure_future(
            self._resolve(entries, entry, full, bare, caps, owners, query_from))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, entries: dict[str, Entry], entry: Entry, full: str, bare: str,
                       caps: Caps, owners: Callable[[], list[str]], query_from: str) -> None:
        try:
            feats = await self.caps.resolve(caps, full, query_from)
        except Exception:
            self.log.exception("caps resolution for %s failed", full)  # type: ignore[attr-defined]
            return
        finally:
            if entry.task is asyncio.current_task():
                entry.task = None
        if feats is None or entries.get(full) is not entry or entry.caps != caps:
            return  # gone, or announced other caps meanwhile
        self._features(entry, full, bare, feats, owners)

    def _features(self, entry: Entry, full: str, bare: str, feats: Features,
                  owners: Callable[[], list[str]]) -> None:
        new = interests(feats) - interests(entry.features)
        entry.features = feats
        targets = owners()
        targets += [o for o in entry.served if o not in targets]
        for owner in targets:
            entry.served.add(owner)
            if new:
                self._send_interesting(owner, full, bare, new)

    def _send_interesting(self, owner: str, full: str, bare: str, names: set[str]) -> None:
        if not names:
            return
        svc = self.store.service(owner)
        sub = None if owner == bare else self.subscription(owner, bare)
        for name in names:
            node = svc.nodes.get(name)
            if node is None or node.config.get("send_last_published_item") == "never":
                continue
            if not node.config.get("deliver_notifications", True):
                continue
            if self.may_receive(owner, node, bare, sub):
                self.send_last(owner, node, full)

    # -- sending ------------------------------------------------------------------------------
    def recipients(self, owner: str, node: Node) -> list[str]:
        feature = node.name + NOTIFY
        out: list[str] = []
        for full, en in self.local.get(owner, {}).items():
            if feature in en.features:
                out.append(full)
        roster = self._roster(owner)
        for contact, sub in roster.items():
            entries = self.local.get(contact)
            if not entries or contact == owner:
                continue
            wanting = [full for full, en in entries.items() if feature in en.features]
            if wanting and self.may_receive(owner, node, contact, sub):
                out.extend(wanting)
        for full, en in self.remote.get(owner, {}).items():
            if feature in en.features:
                bare = bare_of(full)
                if self.may_receive(owner, node, bare, roster.get(bare, "none")):
                    out.append(full)
        if node.subs:
            reached = {bare_of(j) for j in out}
            for jid in node.subs:
                bare = bare_of(jid)
                if jid in out or (jid == bare and bare in reached):
                    continue
                if bare == owner or (may_access(owner, node, bare, lambda o, c: roster.get(c, "none"))
                                     and not self._blocked(owner, bare)):
                    out.append(jid)
        return out

    def broadcast(self, owner: str, node: Node, child: Element,
                  to: Iterable[str] | None = None) -> None:
        """Send ``<event>child</event>`` from the owner's bare JID to ``to`` (default: every
        recipient of the node)."""
        if not node.config.get("deliver_notifications", True):
            return
        targets = self.recipients(owner, node) if to is None else list(to)
        if not targets:
            return
        event = Element("event", NS_PUBSUB_EVENT, children=[child])
        mtype = node.config.get("notification_type", "headline")
        for jid in targets:
            msg = Element("message", NS_CLIENT,
                          {"from": owner, "to": jid, "type": mtype, "id": new_id()}, [event])
            self.server.route(msg)

    def items_element(self, node: Node, items: Iterable[Item], payloads: bool = True) -> Element:
        el = Element("items", NS_PUBSUB_EVENT, {"node": node.name})
        for it in items:
            i = el.add("item", attrs={"id": it.id})
            if payloads:
                i.children.append(it.payload)
        return el

    def send_last(self, owner: str, node: Node, jid: str) -> None:
        last = node.last()
        if last is None:
            return
        self.broadcast(owner, node, self.items_element(
            node, [last], node.config.get("deliver_payloads", True)), [jid])
