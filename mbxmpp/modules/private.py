"""Private XML Storage (XEP-0049): arbitrary XML fragments a user keeps on the server, one per
(namespace, element name).

Storage: map ``private``, owner = the account's bare JID, key ``"{ns}name"`` -> the fragment's
bytes. Other modules may take over a fragment (bookmarks keeps ``{storage:bookmarks}storage`` in
PEP, XEP-0402 §5): ``register(ns, name, getter, setter)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable

from ..core.iq import IQContext
from ..core.modules import BARE, SELF, Module, iq_handler
from ..errors import StanzaError
from ..xml.element import Element
from ..xml.ns import NS_CLIENT, NS_PRIVATE, NS_SERVER
from ..xml.fragment import parse_fragment

if TYPE_CHECKING:
    from ..core.api import ModuleServer

MAX_FRAGMENT = 128 * 1024       # one stored element
MAX_TOTAL = 1024 * 1024         # everything one account stores
MAX_FRAGMENTS = 1000
# XEP-0049 §3: reserved namespaces may be refused; these would only confuse clients.
RESERVED = frozenset((NS_CLIENT, NS_SERVER, NS_PRIVATE, ""))

Getter = Callable[[str], "Element | None"]
Setter = Callable[[str, Element], Awaitable[None]]


def key_of(ns: str, name: str) -> str:
    return "{" + ns + "}" + name


class Private(Module):
    name = "private"
    description = "Private XML storage (client settings, legacy bookmarks)"
    xeps = {"0049": "1.2"}
    account_features = [NS_PRIVATE]

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.store = server.storage.map("private")
        self.overrides: dict[tuple[str, str], tuple[Getter, Setter]] = {}

    def register(self, ns: str, name: str, getter: Getter, setter: Setter) -> None:
        """Let another module own the fragment {ns}name (read and write it elsewhere)."""
        self.overrides[(ns, name)] = (getter, setter)

    # -- the store API --------------------------------------------------------------------------
    def get(self, owner: str, ns: str, name: str) -> Element | None:
        data = self.store.get(owner, key_of(ns, name))
        return None if data is None else parse_fragment(data)

    async def set(self, owner: str, el: Element) -> None:
        data = el.to_bytes()
        key = key_of(el.ns, el.tag)
        stored = self.store.get_all(owner)
        total = sum(len(v) for k, v in stored.items() if k != key) + len(data)
        if len(data) > MAX_FRAGMENT or total > MAX_TOTAL:
            raise StanzaError("not-acceptable", "private storage quota exceeded")
        if key not in stored and len(stored) >= MAX_FRAGMENTS:
            raise StanzaError("not-acceptable", "too many private storage elements")
        await self.store.set(owner, key, data)

    # -- jabber:iq:private ----------------------------------------------------------------------
    @iq_handler("get", NS_PRIVATE, "query", scope=BARE)
    @iq_handler("set", NS_PRIVATE, "query", scope=BARE)
    def other(self, iq: Element, ctx: IQContext) -> None:
        # §3: "Forbidden" (preferred) for another user's data.
        raise StanzaError("forbidden", "private data belongs to its owner")

    @staticmethod
    def _children(iq: Element) -> list[Element]:
        query = iq.first_child()
        children = list(query.elements()) if query is not None else []
        if not children:
            raise StanzaError("not-acceptable", "a child element with its own namespace is needed")
        for c in children:
            if c.ns in RESERVED:
                raise StanzaError("not-acceptable", f"the namespace {c.ns!r} is reserved")
        return children

    @iq_handler("get", NS_PRIVATE, "query", scope=SELF)
    def private_get(self, iq: Element, ctx: IQContext) -> Element:
        children = self._children(iq)
        if len(children) != 1:
            raise StanzaError("not-acceptable", "one namespace per query")  # §3
        want = children[0]
        owner = ctx.to.bare
        override = self.overrides.get((want.ns, want.tag))
        el = override[0](owner) if override is not None else self.get(owner, want.ns, want.tag)
        q = Element("query", NS_PRIVATE)
        q.append(el if el is not None else Element(want.tag, want.ns))
        return q

    @iq_handler("set", NS_PRIVATE, "query", scope=SELF)
    async def private_set(self, iq: Element, ctx: IQContext) -> None:
        owner = ctx.to.bare
        for el in self._children(iq):
            override = self.overrides.get((el.ns, el.tag))
            if override is not None:
                await override[1](owner, el)
            else:
                await self.set(owner, el)

