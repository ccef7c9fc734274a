"""vCard-temp (XEP-0054) and vCard-based avatars (XEP-0153).

Storage: keyval ``vcard``, owner = the account's bare JID -> ``[vCard bytes, photo hash]`` where
the hash is the hex SHA-1 of the decoded PHOTO/BINVAL ("" for a vCard without a photo).

XEP-0153 §4.3 (servers): the available presence a client sends gets
``<x xmlns='vcard-temp:x:update'><photo>hash</photo></x>`` when the client did not include one
itself and the account has a stored vCard.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from ..core.iq import IQContext
from ..core.modules import BARE, SELF, Module, hook, iq_handler
from ..errors import StanzaError
from ..util.lru import LRU
from ..xml.element import Element
from ..xml.ns import NS_VCARD, NS_VCARD_UPDATE
from ..xml.fragment import parse_fragment

if TYPE_CHECKING:
    from ..core.router import RouteEvent
    from ..core.api import ModuleServer

MAX_VCARD = 128 * 1024
_MISS: Any = object()  # not cached


def photo_hash(vcard: Element) -> str:
    """The XEP-0153 hash of the vCard's photo ("" when it has none); bad-request if corrupt."""
    photo = vcard.find("PHOTO", NS_VCARD)
    binval = photo.findtext("BINVAL", NS_VCARD) if photo is not None else None
    if not binval:
        return ""
    try:
        raw = base64.b64decode("".join(binval.split()), validate=True)
    except (binascii.Error, ValueError):
        raise StanzaError("bad-request", "PHOTO/BINVAL is not base64") from None
    return hashlib.sha1(raw).hexdigest()


class VCard(Module):
    name = "vcard"
    description = "vCard-temp profiles and the avatar hash in presence"
    xeps = {"0054": "1.3.0", "0153": "1.1"}
    account_features = [NS_VCARD]

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.store = server.storage.keyval("vcard")
        self._hashes: LRU[str, str | None] = LRU(20000)

    # -- API ---------------------------------------------------------------------------------
    def get(self, owner: str) -> Element | None:
        rec = self.store.get(owner)
        return None if rec is None else parse_fragment(rec[0])

    def hash_of(self, owner: str) -> str | None:
        """The photo hash of ``owner`` ("" without photo), or None without a stored vCard."""
        h = self._hashes.get(owner, _MISS)
        if h is _MISS:
            rec = self.store.get(owner)
            h = None if rec is None else rec[1]
            self._hashes.put(owner, h)
        return h

    async def set(self, owner: str, vcard: Element) -> None:
        data = vcard.to_bytes()
        if len(data) > MAX_VCARD:
            raise StanzaError("not-acceptable", f"the vCard is over {MAX_VCARD} bytes")
        h = photo_hash(vcard)
        await self.store.set(owner, [data, h])
        self._hashes.put(owner, h)

    # -- vcard-temp ----------------------------------------------------------------------------
    @iq_handler("get", NS_VCARD, "vCard", scope=SELF)
    def own(self, iq: Element, ctx: IQContext) -> Element:
        return self.get(ctx.to.bare) or Element("vCard", NS_VCARD)

    @iq_handler("get", NS_VCARD, "vCard", scope=BARE)
    def other(self, iq: Element, ctx: IQContext) -> Element:
        vcard = self.get(ctx.to.bare)
        if vcard is None:
            # XEP-0054 1.3 §3.3: the same error as for a non-existent user (no directory
            # harvesting), which RFC 6121 §8.5.1 makes <service-unavailable/>.
            raise StanzaError("service-unavailable")
        return vcard

    @iq_handler("set", NS_VCARD, "vCard", scope=SELF)
    async def update(self, iq: Element, ctx: IQContext) -> None:
        await self.set(ctx.to.bare, iq.first_child())  # type: ignore[arg-type]

    @iq_handler("set", NS_VCARD, "vCard", scope=BARE)
    def update_other(self, iq: Element, ctx: IQContext) -> None:
        raise StanzaError("forbidden", "only the account owner may change its vCard")

    # -- XEP-0153 --------------------------------------------------------------------------------
    @hook(ev.PRE_PRESENCE, priority=80)
    def add_photo_hash(self, e: RouteEvent) -> Any:
        st = e.stanza
        s = e.origin
        if s is None or "type" in st.attrs or st.find("x", NS_VCARD_UPDATE) is not None:
            return None
        h = self.hash_of(s.bare)
        if h is None:
            return None
        x = Element("x", NS_VCARD_UPDATE)
        x.add("photo", text=h or None)
        st.append(x)
        return None

    @hook(ev.ACCOUNT_DELETED)
    def _forget(self, arg: Any) -> None:
        bare = getattr(arg, "bare", arg)
        if isinstance(bare, str):
            self._hashes.pop(bare)
