"""Multi-User Chat (XEP-0045) at conference.<domain> for every virtual host, with stable
stanza-ids (XEP-0359), occupant-ids (XEP-0421), self-ping (XEP-0410), moderation (XEP-0425) and
per-room archiving through the MAM module's archive (XEP-0313), off unless the owner turns it on.

The rooms themselves are sans-IO (room.py, admin.py); service.py holds the rooms of one domain;
this module is the ComponentModule that routes stanzas to them and answers the IQs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable

from ...core.hosts import ComponentHost, ComponentModule, DiscoItem
from ...core.iq import IQContext
from ...core.modules import COMPONENT, COMPONENT_JID, iq_handler
from ...errors import StanzaError
from ...jid import JID
from ...storage.api import KeyValStore
from ...util.ids import new_id
from ...xml.build import error_reply
from ...xml.element import Element
from ...xml.ns import (NS_CLIENT, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_FASTEN, NS_MAM, NS_MODERATE, NS_MODERATE_0,
                       NS_MUC, NS_MUC_ADMIN, NS_MUC_OWNER, NS_MUC_REGISTER, NS_MUC_REQUEST, NS_MUC_SELF_PING_OPT,
                       NS_MUC_STABLE_ID, NS_MUC_UNIQUE, NS_MUC_USER, NS_OCCUPANT_ID, NS_PING, NS_REGISTER,
                       NS_RETRACT, NS_RETRACT_0, NS_STANZAS, NS_STANZA_ID, NS_VCARD, NS_VERSION)
from ..mam import MAM
from ..mam.query import StanzaDecoder, query_form, stamp, stored_bytes
from ..vcard import MAX_VCARD, photo_hash
from . import admin
from .affiliation import AFF_RANK, MEMBER, MODERATOR, OUTCAST, OWNER
from .config_form import room_features, roominfo_form
from .room import Room
from .service import ROOMS_STORE, Service, room_vcard
from .options import MUCConfig

if TYPE_CHECKING:
    from ...core.api import ModuleServer

log = logging.getLogger(__name__)



class MUC(ComponentModule[MUCConfig]):
    name = "muc"
    description = "Multi-User Chat: group chat rooms at conference.<domain>"
    xeps = {"0045": "1.35.1", "0249": "1.2", "0359": "0.7.0", "0410": "1.1.0", "0421": "0.1.0",
            "0425": "0.3.0"}  # and 0425 0.2's <apply-to/> form, for the clients that speak only it
    component_section = "muc"
    component_name = "Chatrooms"
    component_identities = [("conference", "text", "Chatrooms")]
    component_features = [NS_MUC, NS_MUC_UNIQUE, NS_MUC_STABLE_ID, NS_PING, NS_OCCUPANT_ID,
                          NS_MODERATE, NS_MODERATE_0, NS_MUC_SELF_PING_OPT, NS_VCARD]
    uses = (MAM,)  # room archives (XEP-0313 in MUC) are kept by the MAM module

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.store: KeyValStore = server.storage.keyval(ROOMS_STORE, 1)
        self.services: dict[str, Service] = {}
        self.mam: MAM | None = None

    async def start(self) -> None:
        self.mam = self.optional(MAM)

    def host_added(self, host: ComponentHost) -> None:
        self.services[host.domain] = Service(self, host)

    def host_removed(self, host: ComponentHost) -> None:
        svc = self.services.pop(host.domain, None)
        if svc is not None:
            svc.stop()

    def svc(self, ctx_or_host: IQContext | ComponentHost) -> Service:
        host = ctx_or_host.host if isinstance(ctx_or_host, IQContext) else ctx_or_host
        return self.services[host.domain]  # type: ignore[union-attr]

    # -- messages and presence --------------------------------------------------------------------
    def component_presence(self, host: ComponentHost, stanza: Element, frm: JID, to: JID) -> None:
        try:
            self.services[host.domain].presence(stanza, frm, to)
        except StanzaError as e:
            if stanza.get("type") == "error":
                return
            # §7.2.6 ff.: the error presence carries the join's <x/> (clients match on it),
            # without the password.
            reply = error_reply(stanza, e)
            x = stanza.find("x", NS_MUC)
            if x is not None:
                reply.children.insert(0, Element("x", NS_MUC))
            reply.attrs.setdefault("from", host.domain)
            self.server.route(reply)

    def component_message(self, host: ComponentHost, stanza: Element, frm: JID, to: JID) -> None:
        self.services[host.domain].message(stanza, frm, to)

    # -- the service domain -----------------------------------------------------------------------
    def component_items(self, host: ComponentHost, ctx: IQContext, node: str | None) -> list[DiscoItem]:
        """§6.3: public rooms only (hidden and locked ones are not listed)."""
        if node is not None:
            raise StanzaError("item-not-found")
        svc = self.services[host.domain]
        return [(r.jid, r.config.name or r.node, None) for r in sorted(svc.rooms.values(), key=lambda r: r.node)
                if r.config.publicroom and not r.locked and not r.destroyed]

    @iq_handler("get", NS_PING, "ping", scope=COMPONENT)
    def service_ping(self, iq: Element, ctx: IQContext) -> None:
        return None

    @iq_handler("get", NS_MUC_UNIQUE, "unique", scope=COMPONENT)
    def unique(self, iq: Element, ctx: IQContext) -> Element:
        """§10.1.4: a room name nobody uses."""
        svc = self.svc(ctx)
        while True:
            name = new_id(9).lower().replace("-", "").replace("_", "") or "room"
            if name not in svc.rooms:
                el = Element("unique", NS_MUC_UNIQUE)
                el.text = name
                return el

    # -- rooms and occupants: disco ---------------------------------------------------------------
    def visible_room(self, ctx: IQContext) -> Room:
        room = self.svc(ctx).room(ctx.to.local)
        if room.locked and room.affiliation(ctx.frm.bare) != OWNER:
            raise StanzaError("item-not-found", "no such room")
        return room

    @iq_handler("get", NS_DISCO_INFO, "query", scope=COMPONENT_JID)
    def room_info(self, iq: Element, ctx: IQContext) -> Element | Awaitable[Element]:
        room = self.visible_room(ctx)
        if ctx.to.resource is not None:
            return self.forward(room, iq, ctx)
        node = iq.first_child().get("node")  # type: ignore[union-attr]
        if node == "x-roomuser-item":
            return admin.reserved_nick_info(room, ctx.frm)
        if node is not None:
            raise StanzaError("item-not-found")
        cfg = room.config
        q = Element("query", NS_DISCO_INFO)
        q.add("identity", attrs={"category": "conference", "type": "text", "name": cfg.name or room.node})
        feats = [NS_MUC, NS_MUC_STABLE_ID, NS_MUC_REQUEST, NS_MUC_REGISTER, NS_REGISTER, NS_STANZA_ID,
                 NS_OCCUPANT_ID, NS_MODERATE, NS_MODERATE_0, NS_MUC_SELF_PING_OPT, NS_DISCO_INFO, NS_DISCO_ITEMS,
                 NS_VCARD, *room_features(cfg)]
        if cfg.enablearchiving and self.mam is not None:
            feats.append(NS_MAM)
        for f in sorted(set(feats)):
            q.add("feature", attrs={"var": f})
        q.append(roominfo_form(cfg, len(room.occupants), room.subject, cfg.changesubject, room.avatar_hash,
                               room.owners() if cfg.nonanonymous else None))
        return q

    @iq_handler("get", NS_DISCO_ITEMS, "query", scope=COMPONENT_JID)
    def room_items(self, iq: Element, ctx: IQContext) -> Element | Awaitable[Element]:
        """§6.5: the occupants' JIDs are shown to occupants only (none to strangers)."""
        room = self.visible_room(ctx)
        if ctx.to.resource is not None:
            return self.forward(room, iq, ctx)
        q = Element("query", NS_DISCO_ITEMS)
        if ctx.frm.full in room.by_full:
            for occ in room.occupants.values():
                q.add("item", attrs={"jid": room.occupant_jid(occ), "name": occ.nick})
        return q

    # -- IQs to occupants -------------------------------------------------------------------------
    @iq_handler("get", NS_PING, "ping", scope=COMPONENT_JID)
    def ping(self, iq: Element, ctx: IQContext) -> Element | None | Awaitable[Element]:
        """XEP-0410: a ping to one's own occupant JID is answered by the room; not-acceptable if
        the sender is not in the room under that nickname (e.g. after a restart)."""
        svc = self.svc(ctx)
        room = svc.rooms.get(ctx.to.local)  # type: ignore[arg-type]
        occ = room.by_full.get(ctx.frm.full) if room is not None else None
        if ctx.to.resource is None:
            if room is None:
                raise StanzaError("item-not-found", "no such room")
            return None
        if occ is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        if occ.nick == ctx.to.resource:
            return None
        return self.forward(room, iq, ctx)  # type: ignore[arg-type]

    @iq_handler("get", NS_VCARD, "vCard", scope=COMPONENT_JID)
    @iq_handler("get", NS_VERSION, "query", scope=COMPONENT_JID)
    def to_occupant(self, iq: Element, ctx: IQContext) -> Element | Awaitable[Element]:
        room = self.visible_room(ctx)
        if ctx.to.resource is None:
            if iq.first_child().ns == NS_VCARD:  # type: ignore[union-attr]
                return room_vcard(room)
            raise StanzaError("service-unavailable")
        return self.forward(room, iq, ctx)

    @iq_handler("set", NS_VCARD, "vCard", scope=COMPONENT_JID)
    def set_vcard(self, iq: Element, ctx: IQContext) -> Awaitable[None] | None:
        """XEP-0486: owners publish the room's vCard-temp (its avatar); an empty one removes it."""
        room = self.room_only(ctx)
        if room.affiliation(ctx.frm.bare) != OWNER:
            raise StanzaError("forbidden", "only owners may set the room's avatar")
        vcard = iq.first_child()
        raw = vcard.to_bytes() if vcard is not None and vcard.children else b""
        if len(raw) > MAX_VCARD:
            raise StanzaError("not-acceptable", f"a room vCard is at most {MAX_VCARD // 1024} KiB")
        room.vcard = raw
        room.avatar_hash = photo_hash(vcard) if raw else ""  # type: ignore[arg-type]
        svc = self.svc(ctx)
        svc.save(room)
        room.notice(["104"])
        return svc.committed(room)

    def forward(self, room: Room, iq: Element, ctx: IQContext) -> Awaitable[Element]:
        """§7.7: an IQ from an occupant to another occupant goes to one of its sessions, from the
        sender's occupant JID; the answer comes back the same way."""
        sender = room.by_full.get(ctx.frm.full)
        if sender is None:
            raise StanzaError("bad-request", "only occupants may address occupants")  # §6.7
        target = room.occupants.get(ctx.to.resource or "")
        if target is None:
            raise StanzaError("item-not-found", "nobody of that nickname is in the room")
        out = Element("iq", NS_CLIENT, {"type": iq.get("type") or "get", "id": new_id(),
                                        "from": room.occupant_jid(sender),
                                        "to": next(iter(target.sessions))},
                      [c for c in iq.children if c.__class__ is not str])
        return self._relay(ctx.host, out)  # type: ignore[arg-type]

    @staticmethod
    async def _relay(host: ComponentHost, out: Element) -> Element:
        try:
            resp = await host.request(out, timeout=20)
        except asyncio.TimeoutError as e:
            raise StanzaError("remote-server-timeout", "the occupant did not answer") from e
        if resp.get("type") == "error":
            err = resp.find("error")
            cond = None
            if err is not None:
                for c in err.elements():
                    if c.ns == NS_STANZAS and c.tag != "text":
                        cond = c.tag
                        break
            try:
                raise StanzaError(cond or "undefined-condition", err.findtext("text", NS_STANZAS) if err else None)
            except ValueError:
                raise StanzaError("undefined-condition") from None
        return resp.first_child()  # type: ignore[return-value]

    # -- admin and owner ------------------------------------------------------------------------
    def room_only(self, ctx: IQContext) -> Room:
        if ctx.to.resource is not None:
            raise StanzaError("bad-request", "send this to the room's bare JID")
        return self.visible_room(ctx)

    @iq_handler("get", NS_MUC_ADMIN, "query", scope=COMPONENT_JID)
    def admin_get(self, iq: Element, ctx: IQContext) -> Element:
        return admin.admin_get(self.room_only(ctx), iq.first_child(), ctx.frm)  # type: ignore[arg-type]

    @iq_handler("set", NS_MUC_ADMIN, "query", scope=COMPONENT_JID)
    def admin_set(self, iq: Element, ctx: IQContext) -> Awaitable[None] | None:
        room = self.room_only(ctx)
        admin.admin_set(room, iq.first_child(), ctx.frm)  # type: ignore[arg-type]
        return self.svc(ctx).committed(room)

    @iq_handler("get", NS_MUC_OWNER, "query", scope=COMPONENT_JID)
    def owner_get(self, iq: Element, ctx: IQContext) -> Element:
        return admin.owner_get(self.room_only(ctx), iq.first_child(), ctx.frm)  # type: ignore[arg-type]

    @iq_handler("set", NS_MUC_OWNER, "query", scope=COMPONENT_JID)
    def owner_set(self, iq: Element, ctx: IQContext) -> Awaitable[None] | None:
        room = self.room_only(ctx)
        admin.owner_set(room, iq.first_child(), ctx.frm)  # type: ignore[arg-type]
        return self.svc(ctx).committed(room)

    @iq_handler("get", NS_REGISTER, "query", scope=COMPONENT_JID)
    def register_get(self, iq: Element, ctx: IQContext) -> Element:
        return admin.register_get(self.room_only(ctx), ctx.frm)

    @iq_handler("set", NS_REGISTER, "query", scope=COMPONENT_JID)
    def register_set(self, iq: Element, ctx: IQContext) -> Awaitable[None] | None:
        room = self.room_only(ctx)
        admin.register_set(room, iq.first_child(), ctx.frm)  # type: ignore[arg-type]
        return self.svc(ctx).committed(room)

    # -- archive ----------------------------------------------------------------------------------
    def archived_room(self, ctx: IQContext) -> tuple[Room, MAM]:
        """XEP-0313 §5 for rooms: archived rooms only, for occupants and members."""
        room = self.room_only(ctx)
        mam = self.mam
        if mam is None or not room.config.enablearchiving:
            raise StanzaError("service-unavailable", "this room is not archived")
        aff = room.affiliation(ctx.frm.bare)
        if aff == OUTCAST or (ctx.frm.full not in room.by_full and AFF_RANK[aff] < AFF_RANK[MEMBER]):
            raise StanzaError("forbidden", "only occupants and members may read this room's archive")
        return room, mam

    @iq_handler("set", NS_MAM, "query", scope=COMPONENT_JID)
    def mam_query(self, iq: Element, ctx: IQContext) -> Element | Awaitable[Element]:
        room, mam = self.archived_room(ctx)
        q = iq.first_child()
        route = self.server.route
        pending = mam.settled(room.jid)
        if pending is not None:
            return mam._after(pending, mam.answer_query, room.jid, q, ctx.frm.full, route)
        return mam.answer_query(room.jid, q, ctx.frm.full, route)  # type: ignore[arg-type]

    @iq_handler("get", NS_MAM, "query", scope=COMPONENT_JID)
    def mam_form(self, iq: Element, ctx: IQContext) -> Element:
        self.archived_room(ctx)
        return query_form()

    @iq_handler("get", NS_MAM, "metadata", scope=COMPONENT_JID)
    def mam_metadata(self, iq: Element, ctx: IQContext) -> Element | Awaitable[Element]:
        room, mam = self.archived_room(ctx)
        pending = mam.settled(room.jid)
        if pending is not None:
            return mam._after(pending, mam._metadata, room.jid)
        return mam._metadata(room.jid)

    @iq_handler("set", NS_MODERATE, "moderate", scope=COMPONENT_JID)
    def moderate(self, iq: Element, ctx: IQContext) -> Awaitable[None] | None:
        """XEP-0425: a moderator retracts a message; everyone is told, the archive keeps a
        tombstone, the history forgets it."""
        req = iq.first_child()
        assert req is not None
        return self._moderate_request(req.get("id"), req.find("retract", NS_RETRACT) is not None,
                                      req.findtext("reason", NS_MODERATE), ctx)

    @iq_handler("set", NS_FASTEN, "apply-to", scope=COMPONENT_JID)
    def moderate_0(self, iq: Element, ctx: IQContext) -> Awaitable[None] | None:
        """The same in XEP-0425 0.2's form: <apply-to id=...><moderate><retract/></moderate>."""
        apply_to = iq.first_child()
        assert apply_to is not None
        req = apply_to.find("moderate", NS_MODERATE_0)
        if req is None:
            raise StanzaError("feature-not-implemented", "only moderation is applied to messages here")
        return self._moderate_request(apply_to.get("id"), req.find("retract", NS_RETRACT_0) is not None,
                                      req.findtext("reason", NS_MODERATE_0), ctx)

    def _moderate_request(self, sid: str | None, retract: bool, reason: str | None,
                          ctx: IQContext) -> Awaitable[None] | None:
        room = self.room_only(ctx)
        if not sid or not retract:
            raise StanzaError("bad-request", "moderate a message by its stanza-id, with <retract/>")
        pending = self.mam.settled(room.jid) if self.mam is not None else None
        if pending is not None:
            return self._moderate_later(pending, room, sid, reason, ctx)
        self._moderate(room, sid, reason, ctx)
        return None

    async def _moderate_later(self, pending: asyncio.Future[None], room: Room, sid: str,
                              reason: str | None, ctx: IQContext) -> None:
        """The message may be that fresh: its archive write is committed first."""
        await asyncio.wait((pending,))  # not `await pending`: never cancel the storage's future
        self._moderate(room, sid, reason, ctx)

    def _moderate(self, room: Room, sid: str, reason: str | None, ctx: IQContext) -> None:
        occ = room.by_full.get(ctx.frm.full)
        if occ is None or occ.role != MODERATOR:
            raise StanzaError("forbidden", "only moderators may moderate messages")
        mam = self.mam
        item = mam.archive.get(room.jid, sid) if mam is not None else None
        entry = room.history.forget(sid)
        if item is None and entry is None:
            raise StanzaError("item-not-found", "no message with that id in this room")
        by = room.occupant_jid(occ)
        notice = Element("message", NS_CLIENT, {"type": "groupchat", "id": new_id()})
        # XEP-0425 0.2 (what Prosody's mod_muc_moderation also sends), then 0.3.
        m0 = notice.add("apply-to", NS_FASTEN, {"id": sid}).add("moderated", NS_MODERATE_0, {"by": by})
        m0.add("occupant-id", NS_OCCUPANT_ID, {"id": occ.occupant_id})
        m0.add("retract", NS_RETRACT_0)
        if reason:
            m0.add("reason", NS_MODERATE_0, text=reason)
        r = notice.add("retract", NS_RETRACT, {"id": sid})
        m = r.add("moderated", NS_MODERATE, {"by": by})
        m.add("occupant-id", NS_OCCUPANT_ID, {"id": occ.occupant_id})
        if reason:
            r.add("reason", NS_RETRACT, text=reason)
        room.broadcast_message(notice, None)
        if item is not None and mam is not None:
            self.tombstone(room, mam, item, by, occ.occupant_id, reason)

    def tombstone(self, room: Room, mam: MAM, item: Any, by: str, moderator_id: str, reason: str | None) -> None:
        """XEP-0425 §5: the archived message keeps its envelope, occupant-id and stanza-id; its
        content becomes <retracted/>."""
        raw = stored_bytes(item.value)
        orig = StanzaDecoder().decode(raw) if raw is not None else None
        if orig is None:
            return
        kept = [c for c in orig.elements() if c.ns in (NS_OCCUPANT_ID, NS_STANZA_ID)]
        t = Element("retracted", NS_RETRACT, {"stamp": stamp(time.time())})
        m = t.add("moderated", NS_MODERATE, {"by": by})
        m.add("occupant-id", NS_OCCUPANT_ID, {"id": moderator_id})
        if reason:
            t.add("reason", NS_RETRACT, text=reason)
        orig.children = kept + [t]
        orig.clear_cache()
        mam.archive_stanza(room.jid, orig, item.with_, item.id)

    async def stop(self) -> None:
        for svc in self.services.values():
            svc.stop()


__all__ = ["MUC", "Room", "Service", "ROOMS_STORE", "NS_MUC_USER"]
