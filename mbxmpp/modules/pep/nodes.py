"""PEP nodes and items, in memory (an LRU of accounts) and in storage.

Storage (map stores; owner = the account's bare JID, so ``storage.delete_owner`` removes all):
- ``pep_nodes``: node name -> ``{"config": {...}, "aff": {bare: affiliation},
  "subs": {jid: "subscribed"}}``
- ``pep_items``: ``node + "\\n" + item id`` -> ``[seq, publisher, payload bytes]``; ``seq`` orders
  the items of a node (microseconds, strictly increasing per process).
Items of nodes with ``persist_items`` false live in memory only (XEP-0060 transient nodes).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from ...util.lru import LRU
from ...xml.element import Element
from ...xml.fragment import parse_fragment
from .forms import default_config

SEP = "\n"  # node names and item ids are refused if they hold control characters
MAX_NAME_BYTES = 256


def valid_name(s: str | None) -> bool:
    if not s:
        return False
    return len(s.encode("utf-8")) <= MAX_NAME_BYTES and not any(ord(c) < 0x20 for c in s)


class Item:
    __slots__ = ("id", "seq", "publisher", "data", "_el")

    def __init__(self, id: str, seq: int, publisher: str, data: bytes,
                 el: Element | None = None) -> None:
        self.id = id
        self.seq = seq
        self.publisher = publisher
        self.data = data      # the payload, serialised
        self._el = el

    @property
    def payload(self) -> Element:
        if self._el is None:
            self._el = parse_fragment(self.data)
        return self._el


class Node:
    __slots__ = ("name", "config", "aff", "subs", "items")

    def __init__(self, name: str, config: dict[str, Any] | None = None,
                 aff: dict[str, str] | None = None, subs: dict[str, str] | None = None) -> None:
        self.name = name
        self.config = default_config(name) if config is None else config
        self.aff = {} if aff is None else aff      # bare JID -> member/publisher/outcast
        self.subs = {} if subs is None else subs   # explicit subscriptions: JID -> "subscribed"
        self.items: OrderedDict[str, Item] = OrderedDict()  # oldest first

    def record(self) -> dict[str, Any]:
        return {"config": self.config, "aff": self.aff, "subs": self.subs}

    def last(self) -> Item | None:
        if not self.items:
            return None
        return self.items[next(reversed(self.items))]

    @property
    def persistent(self) -> bool:
        return bool(self.config.get("persist_items", True))

    @property
    def max_items(self) -> int:
        return int(self.config.get("max_items", 1))


class Service:
    """One account's PEP service; ``size`` is the bytes of all its payloads (the quota)."""

    __slots__ = ("owner", "nodes", "size")

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.nodes: dict[str, Node] = {}
        self.size = 0

    def add_item(self, node: Node, item: Item) -> list[str]:
        """Insert (or replace, moving it to newest) ``item``; returns the ids evicted by max_items."""
        old = node.items.pop(item.id, None)
        if old is not None:
            self.size -= len(old.data)
        node.items[item.id] = item
        self.size += len(item.data)
        return self.trim(node)

    def trim(self, node: Node) -> list[str]:
        evicted = []
        while len(node.items) > node.max_items:
            _, it = node.items.popitem(last=False)
            self.size -= len(it.data)
            evicted.append(it.id)
        return evicted

    def remove_items(self, node: Node, ids: list[str]) -> list[str]:
        removed = []
        for i in ids:
            it = node.items.pop(i, None)
            if it is not None:
                self.size -= len(it.data)
                removed.append(i)
        return removed

    def clear(self, node: Node) -> list[str]:
        return self.remove_items(node, list(node.items))

    def drop(self, node: Node) -> None:
        self.clear(node)
        self.nodes.pop(node.name, None)


class NodeStore:
    def __init__(self, storage: Any, cache_size: int = 5000) -> None:
        self.node_db = storage.map("pep_nodes")
        self.item_db = storage.map("pep_items")
        self._cache: LRU[str, Service] = LRU(cache_size)
        self._seq = 0

    def next_seq(self) -> int:
        self._seq = max(self._seq + 1, time.time_ns() // 1000)
        return self._seq

    def service(self, owner: str) -> Service:
        svc = self._cache.get(owner)
        if svc is None:
            svc = self._load(owner)
            self._cache.put(owner, svc)
        return svc

    def forget(self, owner: str) -> None:
        self._cache.pop(owner)

    def _load(self, owner: str) -> Service:
        svc = Service(owner)
        for name, rec in self.node_db.get_all(owner).items():
            cfg = default_config(name)
            cfg.update(rec.get("config") or {})
            svc.nodes[name] = Node(name, cfg, rec.get("aff") or {}, rec.get("subs") or {})
        loaded = []
        for key, rec in self.item_db.get_all(owner).items():
            name, _, item_id = key.partition(SEP)
            node = svc.nodes.get(name)
            if node is None:
                continue
            seq, publisher, data = rec[:3]
            loaded.append((seq, node, Item(item_id, seq, publisher, data)))
        loaded.sort(key=lambda t: t[0])
        for seq, node, item in loaded:
            node.items[item.id] = item
            svc.size += len(item.data)
            self._seq = max(self._seq, seq)
        return svc

    # -- writes (each returns the storage future) --------------------------------------------
    def save_node(self, owner: str, node: Node) -> Any:
        return self.node_db.set(owner, node.name, node.record())

    def delete_node(self, owner: str, node: Node) -> Any:
        self.node_db.set(owner, node.name, None)
        return self.item_db.set_many(owner, {node.name + SEP + i: None for i in node.items})

    def put_item(self, owner: str, node: Node, item: Item) -> Any:
        return self.item_db.set(owner, node.name + SEP + item.id,
                                [item.seq, item.publisher, item.data])

    def delete_items(self, owner: str, node: Node, ids: list[str]) -> Any:
        return self.item_db.set_many(owner, {node.name + SEP + i: None for i in ids})

    def put_items(self, owner: str, node: Node) -> Any:
        return self.item_db.set_many(owner, {node.name + SEP + it.id: [it.seq, it.publisher, it.data]
                                             for it in node.items.values()})
