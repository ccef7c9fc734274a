"""Component hosts: domains served inside the process by one module each (conference.example.org,
upload.example.org, proxy.example.org).

A ``ComponentModule`` names its config section (``component_section = "muc"``); the server makes a
``ComponentHost`` for each virtual host from that section's ``domain = "conference.{domain}"``
pattern, registers it with the router and lists it in the parent domain's disco#items. Every
stanza to a JID at the domain arrives at the host: IQs go through the host's own dispatch table
(the module's ``COMPONENT`` / ``COMPONENT_JID`` handlers), messages and presence to the module.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar

from ..errors import StanzaError
from ..jid import JID
from ..xml.build import error_reply
from ..xml.element import Element
from ..xml.ns import NS_DISCO_INFO, NS_DISCO_ITEMS
from .iq import IQContext, IQDispatcher
from .modules import COMPONENT, COMPONENT_JID, Module, OptionsT

if TYPE_CHECKING:
    from .router import Router

log = logging.getLogger(__name__)

DiscoItem = tuple[str, "str | None", "str | None"]  # (jid, name, node)


class ComponentModule(Module[OptionsT]):
    """A module that answers for a whole domain of its own."""

    component_section: ClassVar[str] = ""      # config section with `domain` and `enabled`
    component_name: ClassVar[str] = ""         # its name in the parent domain's disco#items
    component_identities: ClassVar[list[tuple[str, str, str]]] = []
    component_features: ClassVar[list[str]] = []

    def host_added(self, host: ComponentHost) -> None:
        """The server now routes ``host.domain`` to this module."""

    def host_removed(self, host: ComponentHost) -> None:
        """``host.domain`` is no longer served (a virtual host was dropped, or shutdown)."""

    def component_message(self, host: ComponentHost, stanza: Element, frm: JID, to: JID) -> None:
        if stanza.attrs.get("type") not in ("error", "groupchat", "headline"):
            host.bounce(stanza, StanzaError("service-unavailable"))

    def component_presence(self, host: ComponentHost, stanza: Element, frm: JID, to: JID) -> None:
        """Presence to the component; ignored unless the module cares (RFC 6121 §4.3)."""

    def component_items(self, host: ComponentHost, ctx: IQContext, node: str | None) -> list[DiscoItem]:
        """disco#items of the component domain itself."""
        return []

    def component_forms(self, host: ComponentHost) -> list[Element]:
        """Extended disco#info forms (XEP-0128) of the component domain itself."""
        return []


class ComponentHost:
    """One served component domain: routing target, IQ dispatch and disco of that domain."""

    __slots__ = ("domain", "parent", "module", "router", "iq")

    def __init__(self, domain: str, parent: str, module: ComponentModule, router: Router) -> None:
        self.domain = domain
        self.parent = parent      # the virtual host it belongs to
        self.module = module
        self.router = router
        self.iq = IQDispatcher(router.route)
        iqs, _hooks, _nonzas = module.handlers()
        for t, ns, tag, scope, fn in iqs:
            if scope in (COMPONENT, COMPONENT_JID):
                self.iq.register(t, ns, tag, scope, fn)
        for t, ns, fn in (("get", NS_DISCO_INFO, self._disco_info), ("get", NS_DISCO_ITEMS, self._disco_items)):
            if self.iq.lookup(t, ns, "query", COMPONENT) is None:
                self.iq.register(t, ns, "query", COMPONENT, fn)

    def __repr__(self) -> str:
        return f"<ComponentHost {self.domain} ({self.module.name} of {self.parent})>"

    # -- what the router calls --------------------------------------------------------------
    def receive(self, stanza: Element, frm: JID, to: JID) -> None:
        tag = stanza.tag
        try:
            if tag == "iq":
                scope = COMPONENT if to.local is None and to.resource is None else COMPONENT_JID
                self.iq.dispatch(stanza, IQContext(frm, to, None, scope, self))
            elif tag == "message":
                self.module.component_message(self, stanza, frm, to)
            elif tag == "presence":
                self.module.component_presence(self, stanza, frm, to)
        except StanzaError as e:
            self.bounce(stanza, e)
        except Exception:
            # A module's bug must not take the router down with it.
            log.exception("%s failed on %s", self, tag)
            self.bounce(stanza, StanzaError("internal-server-error"))

    # -- for the module -----------------------------------------------------------------------
    def bounce(self, stanza: Element, err: StanzaError) -> None:
        """The error reply to ``stanza``, from the address it was sent to."""
        if stanza.attrs.get("type") == "error" or "from" not in stanza.attrs:
            return
        reply = error_reply(stanza, err)
        reply.attrs.setdefault("from", self.domain)
        self.router.route(reply)

    async def request(self, iq: Element, timeout: float = 30.0) -> Element:
        """Send an IQ get/set from a JID at this domain and wait for the answer."""
        iq.attrs.setdefault("from", self.domain)
        return await self.iq.request(iq, timeout)

    # -- disco of the domain itself -------------------------------------------------------------
    def _disco_info(self, iq: Element, ctx: IQContext) -> Element:
        mod = self.module
        q = Element("query", NS_DISCO_INFO)
        node = iq.first_child().get("node")  # type: ignore[union-attr]
        if node is not None:
            raise StanzaError("item-not-found")
        for cat, typ, name in mod.component_identities:
            attrs = {"category": cat, "type": typ}
            if name:
                attrs["name"] = name
            q.add("identity", attrs=attrs)
        for f in sorted({NS_DISCO_INFO, NS_DISCO_ITEMS, *mod.component_features}):
            q.add("feature", attrs={"var": f})
        for form in mod.component_forms(self):
            q.append(form)
        return q

    def _disco_items(self, iq: Element, ctx: IQContext) -> Element:
        node = iq.first_child().get("node")  # type: ignore[union-attr]
        q = Element("query", NS_DISCO_ITEMS)
        if node is not None:
            q.set("node", node)
        for jid, name, item_node in self.module.component_items(self, ctx, node):
            attrs = {"jid": jid}
            if name:
                attrs["name"] = name
            if item_node:
                attrs["node"] = item_node
            q.add("item", attrs=attrs)
        return q


def component_hosts_of(hosts: dict[str, ComponentHost], parent: str) -> list[ComponentHost]:
    return [h for h in hosts.values() if h.parent == parent]


__all__ = ["ComponentHost", "ComponentModule", "COMPONENT", "COMPONENT_JID", "component_hosts_of"]
