"""vCard-temp (XEP-0054) and vCard-based avatars (XEP-0153).

Storage: keyval ``vcard``, owner = the account's bare JID -> ``[vCard bytes, photo hash]`` where
the hash is the hex SHA-1 of the decoded PHOTO/BINVAL ("" for a vCard without a photo).

XEP-0153 §4.3 (servers): the available presence a client sends gets
``<x xmlns='vcard-temp:x:update'><photo>hash</photo></x>`` when the client did not include one
itself and the account has a stored vCard.

XEP-0398 (with the pep module): one avatar for both kinds of clients. A PHOTO a client sets in its
vCard is published as the User Avatar (XEP-0084: data, then metadata, item id the SHA-1; a photo
removed: empty metadata); an avatar published by PEP becomes the vCard's PHOTO (empty metadata:
the PHOTO goes). Neither direction fails the other's request: a photo that cannot be converted is
logged and left alone.
"""

from __future__ import annotations

import asyncio
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
from .pep import PEP

if TYPE_CHECKING:
    from ..core.router import RouteEvent
    from ..core.api import ModuleServer

NS_AVATAR_DATA = "urn:xmpp:avatar:data"
NS_AVATAR_METADATA = "urn:xmpp:avatar:metadata"
NS_PEP_VCARD_CONVERSION = "urn:xmpp:pep-vcard-conversion:0"

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
    xeps = {"0054": "1.3.0", "0153": "1.1", "0398": "1.0.0"}
    account_features = [NS_VCARD]
    uses = (PEP,)  # XEP-0398: the avatar is kept in step with PEP's when PEP is loaded

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.store = server.storage.keyval("vcard")
        self._hashes: LRU[str, str | None] = LRU(20000)
        self._converting: set[str] = set()   # owners whose avatar we are publishing (no echo)
        self._tasks: set[asyncio.Task] = set()
        self.pep: PEP | None = None

    async def start(self) -> None:
        self.pep = self.optional(PEP)
        if self.pep is not None:
            self.pep.listeners.append(self._on_pep)
            # Shadows the class list for this server only: the conversion needs pep.
            vars(self)["account_features"] = [NS_VCARD, NS_PEP_VCARD_CONVERSION]

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()

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
        owner = ctx.to.bare
        before = self.hash_of(owner)
        vcard = iq.first_child()
        assert vcard is not None
        await self.set(owner, vcard)
        if self.pep is not None and self.hash_of(owner) != (before or ""):
            await self._vcard_to_pep(owner, vcard)

    # -- XEP-0398 --------------------------------------------------------------------------------
    async def _vcard_to_pep(self, owner: str, vcard: Element) -> None:
        pep = self.pep
        assert pep is not None
        photo = vcard.find("PHOTO", NS_VCARD)
        b64 = "".join((photo.findtext("BINVAL", NS_VCARD) or "").split()) if photo is not None else ""
        metadata = Element("metadata", NS_AVATAR_METADATA)
        sha1: str | None = None
        self._converting.add(owner)
        try:
            if photo is not None and b64:
                raw = base64.b64decode(b64)
                sha1 = hashlib.sha1(raw).hexdigest()
                mime = (photo.findtext("TYPE", NS_VCARD) or "").strip() or "image/png"
                metadata.add("info", attrs={"id": sha1, "bytes": str(len(raw)), "type": mime})
                await pep.publish(owner, NS_AVATAR_DATA, sha1, Element("data", NS_AVATAR_DATA, None, [b64]),
                                  pre=self._open_if_new(owner, NS_AVATAR_DATA))
            elif pep.node(owner, NS_AVATAR_METADATA) is None:
                return  # no photo before either
            await pep.publish(owner, NS_AVATAR_METADATA, sha1, metadata,
                              pre=self._open_if_new(owner, NS_AVATAR_METADATA))
        except StanzaError as e:
            self.log.info("vCard photo of %s not published as its avatar: %s", owner, e.text or e.condition)
        finally:
            self._converting.discard(owner)

    def _open_if_new(self, owner: str, node: str) -> dict[str, Any] | None:
        """Avatars are public (XEP-0084 §4.3); an existing node keeps its owner's configuration."""
        return {"access_model": "open"} if self.pep is not None and self.pep.node(owner, node) is None else None

    def _on_pep(self, owner: str, name: str, kind: str, items: list) -> None:
        if name != NS_AVATAR_METADATA or kind != "publish" or owner in self._converting or not items:
            return
        t = asyncio.ensure_future(self._pep_to_vcard(owner, items[-1].payload))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _pep_to_vcard(self, owner: str, metadata: Element) -> None:
        pep = self.pep
        assert pep is not None
        # An avatar hosted elsewhere (<info url=.../>) has no data here to copy.
        info = next((i for i in metadata.elements() if i.tag == "info" and i.ns == NS_AVATAR_METADATA
                     and not i.get("url")), None)
        photo: Element | None = None
        if info is not None:
            node = pep.node(owner, NS_AVATAR_DATA)
            item = node.items.get(info.get("id") or "") if node is not None else None
            if item is None:
                return  # XEP-0084 §4.2: the data comes first; without it there is nothing to copy
            b64 = "".join((item.payload.text or "").split())
            photo = Element("PHOTO", NS_VCARD)
            photo.add("TYPE", text=info.get("type") or "image/png")
            photo.add("BINVAL", text=b64)
        vcard = self.get(owner) or Element("vCard", NS_VCARD)
        old = vcard.find("PHOTO", NS_VCARD)
        if old is None and photo is None:
            return
        vcard.children = [c for c in vcard.children if c is not old] + ([photo] if photo is not None else [])
        vcard.clear_cache()
        try:
            if photo_hash(vcard) != self.hash_of(owner):
                await self.set(owner, vcard)
        except StanzaError as e:
            self.log.info("avatar of %s not copied into its vCard: %s", owner, e.text or e.condition)

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
