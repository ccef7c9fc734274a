"""Bookmarks: PEP Native Bookmarks (XEP-0402) kept in step with the older XEP-0048 forms.

The truth is the ``urn:xmpp:bookmarks:1`` PEP node (one item per room, id = room JID). XEP-0402
§5 compatibility, as Prosody's mod_bookmarks does it:
- ``#compat``: the XEP-0049 private fragment ``{storage:bookmarks}storage`` is generated from
  that node on get; a set updates the node item by item (publish changed, retract removed, with
  notifications; unchanged items are left alone). URL bookmarks, which XEP-0402 lacks, stay in
  private storage.
- ``#compat-pep``: a publish to the XEP-0048 PEP node ``storage:bookmarks`` updates the node the
  same way, and when the native node changes, an existing ``storage:bookmarks`` node is
  republished.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..core.modules import Module
from ..errors import StanzaError
from ..xml.element import Element
from ..xml.ns import NS_BOOKMARKS2, NS_BOOKMARKS_LEGACY
from .pep import PEP
from .pep.forms import MAX_ITEMS
from .private import Private

if TYPE_CHECKING:
    from ..core.api import ModuleServer

LEGACY_ITEM = "current"
NODE_CONFIG = {"access_model": "whitelist", "persist_items": True, "max_items": MAX_ITEMS,
               "send_last_published_item": "never"}


def _true(v: str | None) -> bool:
    return v in ("1", "true")


def to_native(conf: Element) -> Element:
    """A XEP-0048 <conference/> -> a XEP-0402 <conference/> (the id is its jid)."""
    out = Element("conference", NS_BOOKMARKS2)
    if conf.get("name"):
        out.set("name", conf.get("name"))
    if _true(conf.get("autojoin")):
        out.set("autojoin", "true")
    ext = []
    for c in conf.elements():
        if c.tag in ("nick", "password") and c.ns == NS_BOOKMARKS_LEGACY:
            if c.text:
                out.add(c.tag, text=c.text)
        else:
            ext.append(c)
    if ext:
        out.add("extensions").children.extend(ext)
    return out


def to_legacy(jid: str, conf: Element) -> Element:
    out = Element("conference", NS_BOOKMARKS_LEGACY, {"jid": jid})
    if conf.get("name"):
        out.set("name", conf.get("name"))
    out.set("autojoin", "true" if _true(conf.get("autojoin")) else "false")
    for tag in ("nick", "password"):
        text = conf.findtext(tag, NS_BOOKMARKS2)
        if text:
            out.add(tag, text=text)
    return out


def _essence(conf: Element) -> tuple:
    """What both forms carry; an item that matches is left as it is (keeping its extensions)."""
    ns = conf.ns
    return (conf.get("name") or "", _true(conf.get("autojoin")),
            conf.findtext("nick", ns) or "", conf.findtext("password", ns) or "")


class Bookmarks(Module):
    name = "bookmarks"
    description = "Bookmarks 2 (PEP) unified with legacy private-storage and PEP bookmarks"
    xeps = {"0402": "1.2.0", "0048": "1.2"}
    account_features = [NS_BOOKMARKS2 + "#compat", NS_BOOKMARKS2 + "#compat-pep"]
    depends = (PEP, Private)

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.pep = self.require(PEP)
        self.private = self.require(Private)
        self._busy: set[str] = set()   # owners we are writing for (our own events are ignored)
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.private.register(NS_BOOKMARKS_LEGACY, "storage", self.legacy_get, self.legacy_set)
        self.pep.listeners.append(self._on_pep)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()

    # -- the legacy view ----------------------------------------------------------------------
    def native(self, owner: str) -> dict[str, Element]:
        node = self.pep.node(owner, NS_BOOKMARKS2)
        if node is None:
            return {}
        return {i: it.payload for i, it in node.items.items()}

    def legacy_get(self, owner: str) -> Element:
        storage = Element("storage", NS_BOOKMARKS_LEGACY)
        for jid, conf in self.native(owner).items():
            storage.append(to_legacy(jid, conf))
        extra = self.private.get(owner, NS_BOOKMARKS_LEGACY, "storage")
        if extra is not None:
            for c in extra.elements():
                if c.tag != "conference":
                    storage.append(c)
        return storage

    async def legacy_set(self, owner: str, storage: Element) -> None:
        await self._apply(owner, storage)
        extra = Element("storage", NS_BOOKMARKS_LEGACY)
        extra.children = [c for c in storage.elements() if c.tag != "conference"]
        await self.private.set(owner, extra)
        await self._refresh_legacy_pep(owner)

    # -- synchronisation -----------------------------------------------------------------------
    async def _apply(self, owner: str, storage: Element) -> None:
        """Make the native node hold exactly the conferences of a legacy <storage/>."""
        wanted: dict[str, Element] = {}
        for c in storage.findall("conference", NS_BOOKMARKS_LEGACY):
            jid = c.get("jid")
            if jid:
                wanted[jid] = c
        if len(wanted) > MAX_ITEMS:
            raise StanzaError("not-acceptable", f"at most {MAX_ITEMS} bookmarks")
        current = self.native(owner)
        pep = self.pep
        self._busy.add(owner)
        try:
            for jid, conf in wanted.items():
                old = current.get(jid)
                if old is not None and _essence(old) == _essence(conf):
                    continue
                exists = pep.node(owner, NS_BOOKMARKS2) is not None
                await pep.publish(owner, NS_BOOKMARKS2, jid, to_native(conf),
                                  pre=None if exists else NODE_CONFIG)
            gone = [jid for jid in current if jid not in wanted]
            if gone:
                await pep.retract(owner, NS_BOOKMARKS2, gone, notify=True)
        finally:
            self._busy.discard(owner)

    async def _refresh_legacy_pep(self, owner: str) -> None:
        """Republish an existing XEP-0048 PEP node from the native one (#compat-pep)."""
        if self.pep.node(owner, NS_BOOKMARKS_LEGACY) is None:
            return
        storage = Element("storage", NS_BOOKMARKS_LEGACY)
        for jid, conf in self.native(owner).items():
            storage.append(to_legacy(jid, conf))
        self._busy.add(owner)
        try:
            await self.pep.publish(owner, NS_BOOKMARKS_LEGACY, LEGACY_ITEM, storage)
        finally:
            self._busy.discard(owner)

    def _on_pep(self, owner: str, node: str, kind: str, data: list) -> None:
        if owner in self._busy or node not in (NS_BOOKMARKS2, NS_BOOKMARKS_LEGACY):
            return
        if node == NS_BOOKMARKS_LEGACY:
            payload = data[0].payload if kind == "publish" else None
            if payload is None or payload.tag != "storage" or payload.ns != NS_BOOKMARKS_LEGACY:
                return
            coro: Any = self._apply(owner, payload)
        else:
            coro = self._refresh_legacy_pep(owner)
        task = asyncio.ensure_future(self._run(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, coro: Any) -> None:
        try:
            await coro
        except StanzaError as e:
            self.log.info("bookmarks sync refused: %s", e)
        except Exception:
            self.log.exception("bookmarks sync failed")
