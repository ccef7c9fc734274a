"""Service Discovery (XEP-0030), fed by the features and identities every module declares."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..core.iq import IQContext
from ..core.api import Advertised
from ..core.modules import BARE, HOST, SELF, Module, iq_handler
from ..errors import StanzaError
from ..xml.element import Element
from ..xml.ns import NS_DISCO_INFO, NS_DISCO_ITEMS

if TYPE_CHECKING:
    from ..core.api import ModuleServer

NodeHandler = Callable[[IQContext, str], Element]


class Disco(Module):
    name = "disco"
    description = "Service Discovery: what this server and its accounts support"
    xeps = {"0030": "2.5rc3"}
    features = [NS_DISCO_INFO, NS_DISCO_ITEMS]
    account_features = [NS_DISCO_INFO, NS_DISCO_ITEMS]
    identities = [("server", "im", "mbxmpp")]

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        # Extra items of the server domain (components add theirs), node -> handler.
        self.host_items: list[Callable[[str], list[tuple[str, str | None, str | None]]]] = []
        self.info_nodes: dict[str, NodeHandler] = {}
        # disco#items of a node of the server domain (ad-hoc commands): (ctx, node) -> items.
        self.items_nodes: dict[str, Callable[[IQContext, str], list[tuple[str, str | None, str | None]]]] = {}
        # Items of an account's bare JID (PEP nodes...): (ctx, node) -> [(jid, name, node)], or
        # None for a node the provider does not know (no provider knows it: item-not-found).
        self.account_items_providers: list[Callable[[IQContext, str | None], list | None]] = []
        # disco#info of a node of an account (PEP nodes): (ctx, node) -> <query/> or None.
        self.account_info_providers: list[Callable[[IQContext, str], Element | None]] = []
        self.extra_forms: list[Callable[[str], Element | None]] = []

    def _collect(self, attr: Advertised) -> list:
        return self.server.advertised(attr)

    def _info(self, identities: list[tuple[str, str, str]], features: list[str],
              node: str | None) -> Element:
        q = Element("query", NS_DISCO_INFO)
        if node is not None:
            q.set("node", node)
        for cat, typ, name in identities:
            attrs = {"category": cat, "type": typ}
            if name:
                attrs["name"] = name
            q.add("identity", attrs=attrs)
        for f in sorted(set(features)):
            q.add("feature", attrs={"var": f})
        return q

    @iq_handler("get", NS_DISCO_INFO, "query", scope=HOST)
    def host_info(self, iq: Element, ctx: IQContext) -> Element:
        node = iq.first_child().get("node")  # type: ignore[union-attr]
        if node is not None:
            return self._node(ctx, node)
        q = self._info(self._collect("identities"), self._collect("features"), None)
        for form in self.extra_forms:
            f = form(ctx.to.domain)
            if f is not None:
                q.append(f)
        return q

    @iq_handler("get", NS_DISCO_INFO, "query", scope=(SELF, BARE))
    def account_info(self, iq: Element, ctx: IQContext) -> Element:
        node = iq.first_child().get("node")  # type: ignore[union-attr]
        if node is not None:
            if node not in self.info_nodes:
                for provider in self.account_info_providers:
                    q = provider(ctx, node)
                    if q is not None:
                        return q
            return self._node(ctx, node)
        identities = [("account", "registered", "")] + self._collect("account_identities")
        return self._info(identities, self._collect("account_features"), None)

    def _node(self, ctx: IQContext, node: str) -> Element:
        h = self.info_nodes.get(node)
        if h is None:
            raise StanzaError("item-not-found")
        return h(ctx, node)

    @iq_handler("get", NS_DISCO_ITEMS, "query", scope=HOST)
    def host_items_query(self, iq: Element, ctx: IQContext) -> Element:
        req = iq.first_child()
        node = req.get("node")  # type: ignore[union-attr]
        q = Element("query", NS_DISCO_ITEMS)
        if node is not None:
            items_of = self.items_nodes.get(node)
            if items_of is None:
                raise StanzaError("item-not-found")
            q.set("node", node)
            self._add_items(q, items_of(ctx, node))
            return q
        for provider in self.host_items:
            self._add_items(q, provider(ctx.to.domain))
        return q

    @staticmethod
    def _add_items(q: Element, items: list[tuple[str, str | None, str | None]]) -> None:
        for jid, name, inode in items:
            attrs = {"jid": jid}
            if name:
                attrs["name"] = name
            if inode:
                attrs["node"] = inode
            q.add("item", attrs=attrs)

    @iq_handler("get", NS_DISCO_ITEMS, "query", scope=(SELF, BARE))
    def account_items(self, iq: Element, ctx: IQContext) -> Element:
        req = iq.first_child()
        q = Element("query", NS_DISCO_ITEMS)
        node = req.get("node")  # type: ignore[union-attr]
        if node is not None:
            q.set("node", node)
        # XEP-0030 §4.3: the resources of the account, only for the account itself.
        if ctx.scope == SELF and node is None:
            for s in self.server.sessions.resources(ctx.to.bare):
                q.add("item", attrs={"jid": s.full})
        known = node is None
        for provider in self.account_items_providers:
            items = provider(ctx, node)
            if items is None:
                continue
            known = True
            self._add_items(q, items)
        if not known:
            raise StanzaError("item-not-found")  # XEP-0030 §4.3: no such node
        return q
