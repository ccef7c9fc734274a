"""Personal Eventing Protocol (XEP-0163): a XEP-0060 pubsub service on every account's bare JID,
with publish-options (XEP-0223) and caps-filtered notifications (XEP-0115).

What is implemented (and advertised): auto-create on publish, publish-options preconditions,
item retrieval (all, max_items, by id), retract (with notify), create/configure/delete/purge,
default configuration, affiliations (for the whitelist access model), explicit subscriptions,
access models open/presence/whitelist, persistent and transient items, last-published-item on
presence, filtered notifications. The protocol handlers are in ``handlers.py``; who gets what is
in ``notify.py``; storage in ``nodes.py``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable

from ...core import events as ev
from ...core.iq import IQContext
from ...core.modules import Module, hook
from ...errors import StanzaError
from ...storage import keys
from ...util.ids import new_id
from ...xml.element import Element
from ...xml.ns import NS_DATA, NS_DISCO_INFO, NS_PUBSUB, NS_PUBSUB_EVENT
from ..blocking import Blocking
from ..disco import Disco
from ..roster import Roster
from .access import may_access
from .caps import CapsCache
from .forms import check_preconditions, default_config, pubsub_error
from .handlers import HandlersMixin
from .nodes import Item, Node, NodeStore, valid_name
from .notify import NotifyMixin

if TYPE_CHECKING:
    from ...core.api import ModuleServer

MAX_PAYLOAD = 128 * 1024        # one item's payload (XEP-0060 §7.1.3.6 payload-too-big)
MAX_NODES = 1000                # nodes per account
MAX_SERVICE_BYTES = 16 * 1024 * 1024  # all payloads of one account

# Listener: (owner, node name, kind, data) with kind "publish" (data: [Item]), "retract"
# (data: [ids]), "purge" or "delete" (data: []).
Listener = Callable[[str, str, str, list], Any]

FEATURES = [NS_PUBSUB] + [f"{NS_PUBSUB}#{f}" for f in (
    "access-open", "access-presence", "access-whitelist", "auto-create", "auto-subscribe",
    "config-node", "create-and-configure", "create-nodes", "delete-items", "delete-nodes",
    "filtered-notifications", "item-ids", "last-published", "manage-affiliations", "meta-data",
    "manage-subscriptions", "member-affiliation", "modify-affiliations", "outcast-affiliation",
    "persistent-items", "presence-notifications", "presence-subscribe", "publish",
    "publish-options", "purge-nodes", "retract-items", "retrieve-affiliations", "retrieve-default",
    "retrieve-items", "retrieve-subscriptions", "subscribe")]


class PEP(HandlersMixin, NotifyMixin, Module):
    name = "pep"
    description = "Personal Eventing: avatars, nicknames, OMEMO keys, bookmarks on the account"
    xeps = {"0163": "1.2.2", "0060": "1.26.0", "0223": "1.1.1", "0115": "1.6.0"}
    account_features = FEATURES
    account_identities = [("pubsub", "pep", "")]
    # XEP-0223 §5 (and XEP-0163 §8.1 clients that ask the server): the domain too.
    features = FEATURES
    identities = [("pubsub", "pep", "")]
    depends = (Disco, Roster)
    uses = (Blocking,)  # no notifications to JIDs the owner blocked

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.store = NodeStore(server.storage)
        self.caps = CapsCache(server.router.iq.request)
        self.listeners: list[Listener] = []
        self.roster = self.require(Roster)
        self.blocking = None
        self._init_notify()

    async def start(self) -> None:
        self.blocking = self.optional(Blocking)
        disco = self.require(Disco)
        disco.account_items_providers.append(self.disco_items)
        disco.account_info_providers.append(self.disco_info)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()

    @hook(ev.ACCOUNT_DELETED)
    def _account_deleted(self, arg: Any) -> None:
        bare = getattr(arg, "bare", arg)
        if isinstance(bare, str):
            self.store.forget(bare)
            self.local.pop(bare, None)
            self._remote_count -= len(self.remote.pop(bare, {}))

    # -- the service API (handlers and other modules: bookmarks) -----------------------------
    def node(self, owner: str, name: str) -> Node | None:
        return self.store.service(owner).nodes.get(name)

    def _emit(self, owner: str, name: str, kind: str, data: list) -> None:
        for fn in self.listeners:
            try:
                fn(owner, name, kind, data)
            except Exception:
                self.log.exception("PEP listener %r failed", fn)

    async def create(self, owner: str, name: str, config: dict[str, Any]) -> Node:
        svc = self.store.service(owner)
        if name in svc.nodes:
            raise StanzaError("conflict", "the node exists")
        node = self._new_node(svc, name, config)
        await self.store.save_node(owner, node)
        return node

    def _new_node(self, svc: Any, name: str, config: dict[str, Any]) -> Node:
        if len(svc.nodes) >= MAX_NODES:
            raise StanzaError("policy-violation", f"at most {MAX_NODES} nodes per account")
        cfg = default_config(name)
        cfg.update(config)
        node = svc.nodes[name] = Node(name, cfg)
        return node

    async def publish(self, owner: str, name: str, item_id: str | None, payload: Element,
                      publisher: str | None = None, pre: dict[str, Any] | None = None,
                      notify: bool = True) -> str:
        """Publish (auto-creating the node with ``pre`` as its configuration); the item id."""
        if not valid_name(name):
            raise pubsub_error("bad-request", "nodeid-required", "invalid node name")
        if item_id is None or item_id == "":
            item_id = new_id()
        elif not valid_name(item_id):
            raise pubsub_error("bad-request", "invalid-payload", "invalid item id")
        if len(keys.owner_prefix(owner)) + len((name + "\n" + item_id).encode()) > keys.MAX_KEY:
            raise StanzaError("not-acceptable", "node name and item id are too long")
        data = payload.to_bytes()
        if len(data) > MAX_PAYLOAD:
            raise pubsub_error("not-acceptable", "payload-too-big",
                               f"the payload is over {MAX_PAYLOAD} bytes")
        svc = self.store.service(owner)
        node = svc.nodes.get(name)
        old = None if node is None else node.items.get(item_id)
        if svc.size - (len(old.data) if old else 0) + len(data) > MAX_SERVICE_BYTES:
            raise StanzaError("policy-violation", "the account's PEP storage is full")
        futs = []
        if node is not None and pre:
            check_preconditions(node.config, pre)
        # XEP-0060 §7.1.3.5: a payload not of the node's configured type (pubsub#type).
        ntype = (node.config if node is not None else (pre or {})).get("type") or ""
        if ntype and payload.ns != ntype:
            raise pubsub_error("bad-request", "invalid-payload",
                               f"this node takes {ntype} payloads")
        if node is None:
            node = self._new_node(svc, name, pre or {})
            futs.append(self.store.save_node(owner, node))
        item = Item(item_id, self.store.next_seq(), publisher or owner, data, payload)
        evicted = svc.add_item(node, item)
        if node.persistent:
            futs.append(self.store.put_item(owner, node, item))
            if evicted:
                futs.append(self.store.delete_items(owner, node, evicted))
        await asyncio.gather(*futs)
        if notify:
            self.broadcast(owner, node, self.items_element(
                node, [item], node.config.get("deliver_payloads", True)))
        self._emit(owner, name, "publish", [item])
        return item_id

    async def retract(self, owner: str, name: str, ids: list[str], notify: bool = True) -> None:
        svc = self.store.service(owner)
        node = svc.nodes.get(name)
        if node is None:
            raise StanzaError("item-not-found", "no such node")
        removed = svc.remove_items(node, ids)
        if not removed:
            raise StanzaError("item-not-found", "no such item")
        if node.persistent:
            await self.store.delete_items(owner, node, removed)
        if notify:
            el = Element("items", NS_PUBSUB_EVENT, {"node": name})
            for i in removed:
                el.add("retract", attrs={"id": i})
            self.broadcast(owner, node, el)
        self._emit(owner, name, "retract", removed)

    async def purge(self, owner: str, name: str) -> None:
        svc = self.store.service(owner)
        node = svc.nodes.get(name)
        if node is None:
            raise StanzaError("item-not-found", "no such node")
        removed = svc.clear(node)
        await self.store.delete_items(owner, node, removed)
        if node.config.get("notify_retract", True):
            self.broadcast(owner, node, Element("purge", NS_PUBSUB_EVENT, {"node": name}))
        self._emit(owner, name, "purge", [])

    async def delete(self, owner: str, name: str) -> None:
        svc = self.store.service(owner)
        node = svc.nodes.get(name)
        if node is None:
            raise StanzaError("item-not-found", "no such node")
        targets = self.recipients(owner, node) if node.config.get("notify_delete", True) else []
        fut = self.store.delete_node(owner, node)
        svc.drop(node)
        await fut
        self.broadcast(owner, node, Element("delete", NS_PUBSUB_EVENT, {"node": name}), targets)
        self._emit(owner, name, "delete", [])

    async def configure(self, owner: str, name: str, changes: dict[str, Any]) -> None:
        svc = self.store.service(owner)
        node = svc.nodes.get(name)
        if node is None:
            raise StanzaError("item-not-found", "no such node")
        was_persistent = node.persistent
        node.config.update(changes)
        evicted = svc.trim(node)
        futs = [self.store.save_node(owner, node)]
        if was_persistent and not node.persistent:
            futs.append(self.store.delete_items(owner, node, list(node.items) + evicted))
        elif node.persistent and not was_persistent:
            futs.append(self.store.put_items(owner, node))
        elif evicted and node.persistent:
            futs.append(self.store.delete_items(owner, node, evicted))
        await asyncio.gather(*futs)

    async def save(self, owner: str, node: Node) -> None:
        await self.store.save_node(owner, node)

    # -- disco#items on the account (XEP-0060 §5.2, §5.5) -----------------------------------
    def disco_items(self, ctx: IQContext, name: str | None
                    ) -> list[tuple[str, str | None, str | None]] | None:
        """The account's nodes, or the item ids of one (XEP-0060 §5.5: as 'name'); None for a
        node that does not exist or that the requester may not see (item-not-found)."""
        owner = ctx.to.bare
        svc = self.store.service(owner)
        bare = ctx.frm.bare
        if name is None:
            return [(owner, None, n) for n, node in sorted(svc.nodes.items())
                    if may_access(owner, node, bare, self.subscription)]
        node = svc.nodes.get(name)
        if node is None or not may_access(owner, node, bare, self.subscription):
            return None
        return [(owner, i, None) for i in node.items]

    def disco_info(self, ctx: IQContext, name: str) -> Element | None:
        """XEP-0060 §5.3 / §5.4: a node's identity (leaf) and meta-data; None (item-not-found)
        for a node that does not exist or that the requester may not see."""
        owner = ctx.to.bare
        node = self.store.service(owner).nodes.get(name)
        if node is None or not may_access(owner, node, ctx.frm.bare, self.subscription):
            return None
        q = Element("query", NS_DISCO_INFO, {"node": name})
        q.add("identity", attrs={"category": "pubsub", "type": "leaf"})
        q.add("feature", attrs={"var": NS_PUBSUB})
        x = q.add("x", NS_DATA, {"type": "result"})
        fields = [("FORM_TYPE", NS_PUBSUB + "#meta-data", "hidden"),
                  ("pubsub#type", node.config.get("type") or "", None),
                  ("pubsub#title", node.config.get("title") or "", None),
                  ("pubsub#description", node.config.get("description") or "", None),
                  ("pubsub#owner", owner, "jid-multi"),
                  ("pubsub#access_model", node.config.get("access_model", "presence"), None)]
        for var, value, ftype in fields:
            f = x.add("field", attrs={"var": var, "type": ftype} if ftype else {"var": var})
            f.add("value", text=value or None)
        return q
