"""The rooms of one component domain (conference.<domain>): creation, routing into rooms,
persistence in the ``muc_rooms`` store, and what every Room asks of its service
(room.RoomService: sending, archiving, occupant-ids, limits)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
from typing import TYPE_CHECKING, Awaitable

from ...core.hosts import ComponentHost
from ...errors import StanzaError
from ...jid import JID
from ...xml.element import Element
from ...xml.ns import NS_MUC, NS_VCARD
from ..mam.query import StanzaDecoder, stored_bytes
from .affiliation import OWNER
from .config_form import RoomConfig
from .room import Room

if TYPE_CHECKING:
    from .options import MUCConfig
    from . import MUC

ROOMS_STORE = "muc_rooms"


def room_vcard(room: Room) -> Element:
    if room.vcard:
        iq = StanzaDecoder().decode(b"<iq>" + room.vcard + b"</iq>")
        if iq is not None and iq.first_child() is not None:
            return iq.first_child()  # type: ignore[return-value]
    return Element("vCard", NS_VCARD)


class Service:
    """The rooms of one component domain; what each Room calls (room.RoomService)."""

    def __init__(self, module: MUC, host: ComponentHost) -> None:
        self.module = module
        self.host = host
        self.domain = host.domain
        self.limits: MUCConfig = module.options
        self.admins = frozenset(module.server.config.server.admins)
        self.rooms: dict[str, Room] = {}
        self.joined: dict[str, int] = {}  # bare JID -> rooms it is in (the joined-rooms limit)
        self._writes: dict[str, asyncio.Future[None]] = {}  # room JID -> its last store write
        self.send = module.server.route
        rec = module.store.get(self.domain) or {}
        secret = rec.get("secret")
        if not secret:
            secret = secrets.token_hex(32)
            module.store.set(self.domain, {"secret": secret})
        self._secret = bytes.fromhex(secret)
        for owner in list(module.store.owners_in_domain(self.domain)):
            data = module.store.get(owner)
            if data:
                node = owner.rpartition("@")[0]
                self.rooms[node] = room = Room.from_record(self, node, data)
                self.seed_history(room)

    def seed_history(self, room: Room) -> None:
        """After a restart an archived room's history on join comes from its archive."""
        mam = self.module.mam
        if mam is None or not room.config.enablearchiving or room.history.maxlen <= 0:
            return
        dec = StanzaDecoder()
        for it in reversed(mam.archive.query(room.jid, limit=room.history.maxlen, reverse=True)):
            raw = stored_bytes(it.value)
            st = dec.decode(raw) if raw is not None else None
            if st is not None and st.find("body") is not None:
                room.history.add(st, it.id, it.when)

    @property
    def archiving_available(self) -> bool:
        return self.module.mam is not None

    def save(self, room: Room) -> None:
        if room.destroyed:
            return
        if room.config.persistentroom and not room.locked:
            self._writes[room.jid] = self.module.store.set(room.jid, room.record())
        elif self.module.store.get(room.jid) is not None:
            self._writes[room.jid] = self.module.store.set(room.jid, None)

    def committed(self, room: Room) -> Awaitable[None] | None:
        """The room's last write if it is not durable yet: an IQ result that says a change is
        made goes out once it is committed (DESIGN.md: durability)."""
        fut = self._writes.pop(room.jid, None)
        if fut is None or fut.done():
            return None
        return self._wait(fut)

    @staticmethod
    async def _wait(fut: asyncio.Future[None]) -> None:
        await asyncio.wait((fut,))  # never cancel the storage's future

    def forget(self, room: Room) -> None:
        if self.rooms.get(room.node) is room:
            del self.rooms[room.node]
        if self.module.store.get(room.jid) is not None:
            self._writes[room.jid] = self.module.store.set(room.jid, None)

    def archive_id(self, room: Room) -> str | None:
        mam = self.module.mam
        return None if mam is None else mam.archive.new_id()

    def archive(self, room: Room, stanza: Element, id: str) -> None:
        mam = self.module.mam
        if mam is not None:
            mam.archive_stanza(room.jid, stanza, stanza.get("from"), id)

    def occupant_id(self, room: Room, bare: str) -> str:
        """XEP-0421: stable per room and real bare JID, unlinkable across rooms."""
        return hmac.new(self._secret, f"{room.jid}\0{bare}".encode(), hashlib.sha256).hexdigest()[:40]

    def can_join_more(self, bare: str) -> bool:
        return self.joined.get(bare, 0) < self.limits.max_rooms_joined_per_user

    def occupancy(self, bare: str, delta: int) -> None:
        n = self.joined.get(bare, 0) + delta
        if n > 0:
            self.joined[bare] = n
        else:
            self.joined.pop(bare, None)

    def rooms_owned(self, bare: str) -> int:
        return sum(1 for r in self.rooms.values() if r.affiliations.get(bare) == OWNER)

    # -- routing into rooms ---------------------------------------------------------------------
    def room(self, node: str | None) -> Room:
        room = self.rooms.get(node) if node is not None else None
        if room is None:
            raise StanzaError("item-not-found", "no such room")
        return room

    def presence(self, st: Element, frm: JID, to: JID) -> None:
        if to.local is None:
            return  # presence to the service itself: nothing to do (RFC 6121 §4.3)
        if st.get("type") is None:
            self.check_size(st, "presence")  # it is copied to every occupant
        room = self.rooms.get(to.local)
        if room is not None and not room.destroyed:
            room.presence(st, frm, to.resource)
            return
        if st.get("type") is not None:
            return
        if to.resource is None:
            raise StanzaError("jid-malformed", "join a room at room@service/nickname")
        self.create(st, frm, to)

    def create(self, st: Element, frm: JID, to: JID) -> None:
        """§10.1: the first to enter creates the room and owns it."""
        if not self.module.server.is_local(frm.domain):
            raise StanzaError("not-allowed", "only users of this server may create rooms")
        limit = self.limits.max_rooms_per_user
        if self.rooms_owned(frm.bare) >= limit:
            raise StanzaError("not-allowed", f"you own too many rooms already (at most {limit})")
        # [limits] muc_rooms_per_account: the rate of new rooms (the count above is what is kept).
        wait = self.module.server.limits.take("muc_rooms_per_account", frm.bare)
        if wait:
            raise StanzaError("policy-violation", "too many new rooms; try again in "
                              f"{max(1, math.ceil(wait))} s", type="wait")
        cfg = RoomConfig(enablearchiving=self.limits.archive_by_default and self.archiving_available,
                         maxhistoryfetch=min(50, self.limits.max_history))
        room = Room(self, to.local, cfg, {frm.bare: OWNER})  # type: ignore[arg-type]
        # §10.1.1: with the MUC extension the room stays locked until configured; a
        # groupchat 1.0 client (no <x/>) gets an instant room.
        room.locked = st.find("x", NS_MUC) is not None
        self.rooms[room.node] = room
        try:
            room.join(st, frm, to.resource, created=True)  # type: ignore[arg-type]
        except StanzaError:
            del self.rooms[room.node]
            raise
        if not room.locked:
            self.save(room)

    def message(self, st: Element, frm: JID, to: JID) -> None:
        if to.local is None:
            if st.get("type") not in ("error", "groupchat", "headline"):
                raise StanzaError("service-unavailable", "this service takes no messages")
            return
        self.check_size(st, "message")
        room = self.rooms.get(to.local)
        if room is None or room.destroyed or (room.locked and room.affiliation(frm.bare) != OWNER):
            if st.get("type") != "error":
                raise StanzaError("item-not-found", "no such room")
            return
        room.message(st, frm, to.resource)

    def check_size(self, st: Element, what: str) -> None:
        limit = self.limits.max_message_size
        if len(st.to_bytes()) > limit:
            raise StanzaError("policy-violation", f"a {what} to a room is at most {limit} bytes")

    def stop(self) -> None:
        """Shutdown: whoever is still in a room hears it is going away (status 332)."""
        for room in list(self.rooms.values()):
            for occ in list(room.occupants.values()):
                room.remove_occupant(occ, codes=("332",))
