"""A room (XEP-0045), sans-IO: presence and messages in, stanzas out through ``service.send``.

Refusals are raised as StanzaError; the component host turns them into the error reply from the
address the stanza was sent to (the room or the occupant JID), as §7.2 wants.  The owner and
admin protocols (§9, §10) are in ``admin.py``; both act on this state.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Protocol

from ...errors import StanzaError
from ...jid import JID
from ...util.ids import new_id
from ...xml.element import Element
from ...xml.ns import (NS_CLIENT, NS_DATA, NS_HINTS, NS_MUC, NS_MUC_USER, NS_OCCUPANT_ID, NS_OMEMO,
                       NS_OMEMO_LEGACY, NS_REACTIONS, NS_RETRACT, NS_STANZAS, NS_STANZA_ID)
from .affiliation import (ADMIN, AFF_RANK, MEMBER, MODERATOR, NONE, OUTCAST, OWNER, PARTICIPANT,
                          ROLE_NONE, VISITOR, default_role)
from .config_form import RoomConfig
from .history import History, HistoryRequest, delayed
from .occupant import Occupant, nick_key

if TYPE_CHECKING:
    from .options import MUCConfig

# Payloads that make a groupchat message worth archiving (XEP-0313 §7.1.1 for rooms).
_ARCHIVED = frozenset(((NS_CLIENT, "body"), (NS_RETRACT, "retract"), (NS_REACTIONS, "reactions"),
                       (NS_OMEMO_LEGACY, "encrypted"), (NS_OMEMO, "encrypted")))


class RoomService(Protocol):
    """What a room needs from the service hosting it (the MUC module, or a test's fake)."""

    domain: str
    limits: MUCConfig
    admins: frozenset[str]    # service administrators: owners of every room (§5.2)

    @property
    def archiving_available(self) -> bool: ...

    def send(self, stanza: Element) -> None: ...
    def save(self, room: Room) -> None: ...
    def forget(self, room: Room) -> None: ...
    def archive_id(self, room: Room) -> str | None:
        """A fresh archive id, or None when the service has no archive."""
    def archive(self, room: Room, stanza: Element, id: str) -> None: ...
    def occupant_id(self, room: Room, bare: str) -> str: ...
    def can_join_more(self, bare: str) -> bool: ...
    def occupancy(self, bare: str, delta: int) -> None:
        """A user entered (+1) or left (-1) a room."""


def _x(*codes: str) -> Element:
    x = Element("x", NS_MUC_USER)
    for c in codes:
        x.add("status", attrs={"code": c})
    return x


def actor_reason(actor: str | None, reason: str | None) -> list[Element]:
    """The <actor/> and <reason/> of an item in a kick, ban or role change (§8.2, §9.1)."""
    out = []
    if actor is not None:
        out.append(Element("actor", NS_MUC_USER, {"nick": actor}))
    if reason:
        r = Element("reason", NS_MUC_USER)
        r.text = reason
        out.append(r)
    return out


def _prepared(children: list[Element | str]) -> list[Element | str]:
    """Serialise each child once, so that a copy per recipient reuses the bytes."""
    for c in children:
        if isinstance(c, Element):
            c.to_bytes()
    return children


class Room:
    def __init__(self, service: RoomService, node: str, config: RoomConfig,
                 affiliations: dict[str, str] | None = None) -> None:
        self.service = service
        self.node = node
        self.jid = f"{node}@{service.domain}"
        self.config = config
        self.affiliations: dict[str, str] = dict(affiliations or {})  # bare JID -> affiliation
        self.nicks: dict[str, str] = {}          # bare JID -> reserved nickname (§7.10)
        self.occupants: dict[str, Occupant] = {}  # nick -> occupant
        self.by_key: dict[str, Occupant] = {}     # nick_key -> occupant
        self.by_full: dict[str, Occupant] = {}    # session full JID -> occupant
        self.subject = ""
        self.subject_from = ""                    # occupant JID (or room JID) that set it
        self.subject_when = 0.0
        self.subject_oid = ""                     # the setter's occupant-id (XEP-0421)
        self.locked = False                       # §10.1.2: created, awaiting configuration
        self.destroyed = False
        self.created = time.time()
        self.history = History(min(service.limits.max_history, 1000))
        self.vcard: bytes = b""                   # XEP-0486: the room's vCard-temp, serialised
        self.avatar_hash = ""

    def __repr__(self) -> str:
        return f"<Room {self.jid} {len(self.occupants)} occupant(s)>"

    # -- state ------------------------------------------------------------------------------------
    def affiliation(self, bare: str) -> str:
        aff = self.affiliations.get(bare)
        if aff is None:
            return OWNER if bare in self.service.admins else NONE
        return aff

    def set_affiliation(self, bare: str, aff: str) -> None:
        if aff == NONE:
            self.affiliations.pop(bare, None)
        else:
            self.affiliations[bare] = aff
        if aff == OUTCAST:
            self.nicks.pop(bare, None)  # §9.1: an outcast loses the reserved nickname

    def owners(self) -> list[str]:
        return sorted(b for b, a in self.affiliations.items() if a == OWNER)

    def with_affiliation(self, aff: str) -> list[str]:
        return sorted(b for b, a in self.affiliations.items() if a == aff)

    def occupant_jid(self, occ: Occupant) -> str:
        return f"{self.jid}/{occ.nick}"

    def sessions(self) -> Iterator[tuple[Occupant, str]]:
        for occ in self.occupants.values():
            for full in occ.sessions:
                yield occ, full

    def _others_first(self, occ: Occupant) -> list[Occupant]:
        """The occupants, ``occ`` last: its own copy of a change it made (self-presence, 110)
        tells its client that everyone else has been sent theirs, as on join (§7.2.3)."""
        return sorted(self.occupants.values(), key=lambda r: r is occ)

    def moderators(self) -> list[Occupant]:
        return [o for o in self.occupants.values() if o.role == MODERATOR]

    def is_empty(self) -> bool:
        return not self.occupants

    def record(self) -> dict[str, Any]:
        """What a persistent room stores (config, affiliations, reserved nicks, subject)."""
        return {"config": self.config.to_record(), "affiliations": dict(self.affiliations),
                "nicks": dict(self.nicks), "subject": [self.subject, self.subject_from, self.subject_when],
                "created": self.created, "vcard": self.vcard, "avatar_hash": self.avatar_hash,
                "subject_oid": self.subject_oid}

    @classmethod
    def from_record(cls, service: RoomService, node: str, rec: dict[str, Any]) -> Room:
        room = cls(service, node, RoomConfig.from_record(rec.get("config", {})), rec.get("affiliations"))
        room.nicks = dict(rec.get("nicks") or {})
        subj = rec.get("subject") or ["", "", 0.0]
        room.subject, room.subject_from, room.subject_when = subj[0], subj[1], subj[2]
        room.created = rec.get("created", room.created)
        room.subject_oid = rec.get("subject_oid") or ""
        room.vcard = rec.get("vcard") or b""
        room.avatar_hash = rec.get("avatar_hash") or ""
        return room

    # -- presence items ---------------------------------------------------------------------------
    def _sees_jids(self, viewer: Occupant) -> bool:
        return self.config.nonanonymous or viewer.role == MODERATOR

    def _presence_children(self, occ: Occupant) -> list[Element | str]:
        p = occ.presence
        kept = [] if p is None else [c for c in p.children if c.__class__ is str or (
            c.ns not in (NS_MUC, NS_MUC_USER, NS_OCCUPANT_ID) and not (c.ns == NS_CLIENT and c.tag == "priority"))]
        kept.append(Element("occupant-id", NS_OCCUPANT_ID, {"id": occ.occupant_id}))
        return kept

    def broadcast_presence(self, occ: Occupant, *, self_codes: Iterable[str] = (),
                           codes: Iterable[str] = (), unavailable: bool = False,
                           item_extra: list[Element] | None = None, only: Occupant | None = None,
                           only_sessions: Iterable[str] | None = None, role: str | None = None,
                           affiliation: str | None = None) -> None:
        """Send ``occ``'s presence to every occupant (or to ``only``, or to ``only_sessions``
        of it), §7.2.3: the real JID only to those who may see it, status 110 to the
        occupant's own sessions."""
        frm = self.occupant_jid(occ)
        if unavailable:
            p = occ.presence
            base_children = [] if p is None else [c for c in p.children
                                                  if c.__class__ is not str and c.tag == "status" and c.ns == NS_CLIENT]
            base_children.append(Element("occupant-id", NS_OCCUPANT_ID, {"id": occ.occupant_id}))
        else:
            base_children = self._presence_children(occ)
        codes = list(codes)
        item_attrs = {"affiliation": affiliation or self.affiliation(occ.bare), "role": role or occ.role}
        real = next(iter(occ.sessions), occ.bare) if occ.sessions else occ.bare
        variants: dict[tuple[bool, bool], list[Element | str]] = {}

        def children(with_jid: bool, is_self: bool) -> list[Element | str]:
            key = (with_jid, is_self)
            got = variants.get(key)
            if got is None:
                x = _x()
                it = x.add("item", attrs=dict(item_attrs))
                if with_jid:
                    it.set("jid", real)
                for extra in item_extra or ():
                    it.append(extra)
                for c in (list(self_codes) + ["110"] if is_self else []) + codes:
                    x.add("status", attrs={"code": c})
                got = variants[key] = _prepared(base_children + [x])
            return got

        attrs: dict[str, str] = {"from": frm}
        if unavailable:
            attrs["type"] = "unavailable"
        broadcast = occ.role in self.config.presencebroadcast or occ.role == ROLE_NONE or unavailable
        send = self.service.send
        if only is not None:
            pairs: list[tuple[Occupant, Iterable[str]]] = [
                (only, only.sessions if only_sessions is None else only_sessions)]
        else:
            pairs = [(r, r.sessions) for r in self._others_first(occ)]
        for r, targets in pairs:
            is_self = r is occ
            if not is_self and not broadcast:
                continue
            ch = children(is_self or self._sees_jids(r), is_self)
            for full in targets:
                a = dict(attrs)
                a["to"] = full
                send(Element("presence", NS_CLIENT, a, list(ch)))

    # -- joining ----------------------------------------------------------------------------------
    def presence(self, st: Element, frm: JID, nick: str | None) -> None:
        """Presence from ``frm`` to the room (``nick`` None: to the bare room JID)."""
        t = st.get("type")
        occ = self.by_full.get(frm.full)
        if t == "error":
            if occ is not None:  # the occupant's client or server gave up on it: §7.14 with 333
                self.remove_session(occ, frm.full, codes=("333",))
            return
        if t == "unavailable":
            if occ is not None:
                self.remove_session(occ, frm.full, status=st)
            return
        if t is not None:
            return  # probes and subscriptions: a room has no roster
        if nick is None:
            raise StanzaError("jid-malformed", "join a room at room@service/nickname")
        if occ is None:
            self.join(st, frm, nick)
        elif occ.nick == nick:
            x = st.find("x", NS_MUC)
            if x is not None:
                # A join from a session that is in already (a client that lost its state, e.g. a
                # new stream under the same resource): it gets the room's state again.
                occ.sessions[frm.full] = occ.presence = st
                self.send_state(occ, frm.full, HistoryRequest(x.find("history", NS_MUC)))
            else:
                self.update_presence(occ, frm.full, st)
        else:
            self.change_nick(occ, frm.full, nick, st)

    def check_nick(self, nick: str, bare: str, me: Occupant | None = None) -> str:
        """The nickname's key; conflict if another user holds or reserved it (§7.2.9)."""
        limit = self.service.limits.max_nick_length
        if len(nick) > limit:
            raise StanzaError("not-acceptable", f"nicknames are at most {limit} characters")
        key = nick_key(nick)
        other = self.by_key.get(key)
        if other is not None and other is not me and (other.bare != bare or other.nick != nick):
            raise StanzaError("conflict", "that nickname is in use in this room")
        for owner, reserved in self.nicks.items():
            if owner != bare and nick_key(reserved) == key:
                raise StanzaError("conflict", "that nickname is reserved by another member")
        return key

    def join(self, st: Element, frm: JID, nick: str, created: bool = False) -> None:
        bare = frm.bare
        aff = self.affiliation(bare)
        cfg = self.config
        if self.locked and aff != OWNER:
            raise StanzaError("item-not-found", "this room is being created")  # §10.1.1
        if aff == OUTCAST:
            raise StanzaError("forbidden", "you are banned from this room")
        key = self.check_nick(nick, bare)
        same = self.by_key.get(key)
        if cfg.membersonly and AFF_RANK[aff] < AFF_RANK[MEMBER]:
            raise StanzaError("registration-required", "this room is members-only")
        x = st.find("x", NS_MUC)
        if cfg.passwordprotectedroom and AFF_RANK[aff] < AFF_RANK[ADMIN]:
            given = x.findtext("password", NS_MUC) if x is not None else None
            if given != cfg.roomsecret:
                raise StanzaError("not-authorized", "a password is required to enter this room")
        limits = self.service.limits
        if same is None:
            cap = min(cfg.maxusers or limits.max_occupants, limits.max_occupants)
            if len(self.occupants) >= cap and AFF_RANK[aff] < AFF_RANK[ADMIN]:
                raise StanzaError("service-unavailable", f"this room is full ({cap} occupants)")
            if not self.service.can_join_more(bare):
                raise StanzaError("not-allowed",
                                  f"you are in too many rooms (at most {limits.max_rooms_joined_per_user})")
        history = HistoryRequest(x.find("history", NS_MUC) if x is not None else None)
        if same is not None:
            occ = same  # another session of the same user under the same nickname
        else:
            occ = Occupant(nick, key, bare, default_role(aff, cfg.moderatedroom),
                           self.service.occupant_id(self, bare))
            self.occupants[nick] = occ
            self.by_key[key] = occ
            self.service.occupancy(bare, 1)
        occ.sessions[frm.full] = st
        occ.presence = st
        self.by_full[frm.full] = occ
        self.send_state(occ, frm.full, history, created=created, announce=same is None)

    def send_state(self, occ: Occupant, full: str, history: HistoryRequest, *, created: bool = False,
                   announce: bool = False) -> None:
        """§7.2.3: the others' presence first, then the newcomer's own (to everyone when it is a
        new occupant), the history, the subject last."""
        cfg = self.config
        for other in list(self.occupants.values()):
            if other is not occ and other.role in cfg.presencebroadcast:
                self.broadcast_presence(other, only=occ, only_sessions=(full,))
        self_codes = []
        if cfg.nonanonymous:
            self_codes.append("100")
        if cfg.enablearchiving or cfg.enablelogging:
            self_codes.append("170")
        if created:
            self_codes.append("201")
        if announce:
            self.broadcast_presence(occ, self_codes=self_codes)
        else:
            self.broadcast_presence(occ, self_codes=self_codes, only=occ, only_sessions=(full,))
        self.send_history(full, history)
        self.send_subject(full)

    def send_history(self, to: str, req: HistoryRequest) -> None:
        for e in self.history.select(req, self.config.maxhistoryfetch):
            self.service.send(delayed(e, self.jid, to))

    def send_subject(self, to: str) -> None:
        """§7.2.15: the subject last, even an empty one, as a message without a body."""
        frm = self.subject_from or self.jid
        m = Element("message", NS_CLIENT, {"type": "groupchat", "from": frm, "to": to, "id": new_id()})
        m.add("subject", text=self.subject or None)
        if self.subject_oid:
            m.add("occupant-id", NS_OCCUPANT_ID, {"id": self.subject_oid})
        self.service.send(m)

    def update_presence(self, occ: Occupant, full: str, st: Element) -> None:
        occ.sessions[full] = st
        # Presence floods cost every occupant a stanza: over the rate, the change is kept but
        # not broadcast (the next allowed one carries the latest state).
        occ.presence = st
        limits = self.service.limits
        if occ.allow(limits.message_rate, limits.message_burst):
            self.broadcast_presence(occ)

    def change_nick(self, occ: Occupant, full: str, nick: str, st: Element) -> None:
        """§7.6: unavailable with 303 under the old nickname, available under the new one."""
        key = self.check_nick(nick, occ.bare, occ)
        if len(occ.sessions) > 1 and self.by_key.get(key) is not occ:
            # One session of several renames itself: it leaves the shared occupant first.
            self.remove_session(occ, full, codes=("303",), new_nick=nick)
            self.join(st, JID.parse(full), nick)
            return
        old_nick = occ.nick
        self._nick_unavailable(occ, nick)
        del self.occupants[old_nick]
        del self.by_key[occ.key]
        occ.nick, occ.key = nick, key
        self.occupants[nick] = occ
        self.by_key[key] = occ
        occ.sessions[full] = st
        occ.presence = st
        self.broadcast_presence(occ)

    def _nick_unavailable(self, occ: Occupant, new_nick: str, only_session: str | None = None) -> None:
        """The unavailable presence of a nickname change: the item names the new nickname."""
        frm = self.occupant_jid(occ)
        for r in self._others_first(occ):
            is_self = r is occ
            targets = list(r.sessions)
            if is_self and only_session is not None:
                targets = [only_session]
            elif only_session is not None:
                continue
            for full in targets:
                x = _x()
                it = x.add("item", attrs={"affiliation": self.affiliation(occ.bare), "role": occ.role,
                                          "nick": new_nick})
                if is_self or self._sees_jids(r):
                    it.set("jid", next(iter(occ.sessions)))
                x.add("status", attrs={"code": "303"})
                if is_self:
                    x.add("status", attrs={"code": "110"})
                p = Element("presence", NS_CLIENT, {"from": frm, "to": full, "type": "unavailable"})
                p.append(x)
                self.service.send(p)

    # -- leaving ----------------------------------------------------------------------------------
    def remove_session(self, occ: Occupant, full: str, *, status: Element | None = None,
                       codes: Iterable[str] = (), new_nick: str | None = None) -> None:
        """One session leaves (§7.14); the occupant leaves with its last session."""
        if full not in occ.sessions:
            return
        del self.by_full[full]
        if len(occ.sessions) > 1:
            del occ.sessions[full]
            if new_nick is not None:
                self._nick_unavailable(occ, new_nick, only_session=full)
            else:
                self.broadcast_presence(occ, unavailable=True, only=occ, only_sessions=(full,),
                                        codes=codes)
            occ.presence = next(reversed(occ.sessions.values()))
            return
        self.remove_occupant(occ, codes=codes, status=status)

    def remove_occupant(self, occ: Occupant, *, codes: Iterable[str] = (), status: Element | None = None,
                        actor: str | None = None, reason: str | None = None,
                        affiliation: str | None = None, destroy: Element | None = None) -> None:
        """The occupant (every session) is out: unavailable to everyone, itself included."""
        extra = actor_reason(actor, reason)
        occ.presence = status
        if destroy is not None:
            # §10.9: the destroy notice, to the occupant itself only.
            for full in occ.sessions:
                x = _x()
                x.add("item", attrs={"affiliation": NONE, "role": ROLE_NONE})
                x.append(destroy)
                p = Element("presence", NS_CLIENT, {"from": self.occupant_jid(occ), "to": full,
                                                    "type": "unavailable"})
                p.append(x)
                self.service.send(p)
        else:
            self.broadcast_presence(occ, unavailable=True, codes=codes, item_extra=extra,
                                    role=ROLE_NONE, affiliation=affiliation)
        for full in occ.sessions:
            self.by_full.pop(full, None)
        if self.occupants.pop(occ.nick, None) is not None:
            self.service.occupancy(occ.bare, -1)
        self.by_key.pop(occ.key, None)
        occ.role = ROLE_NONE
        if not self.occupants and not self.destroyed:
            self.emptied()

    def emptied(self) -> None:
        """§10.1.2 / temporary rooms: the last occupant is gone."""
        if self.locked or not self.config.persistentroom:
            self.destroyed = True
            self.service.forget(self)

    # -- messages ---------------------------------------------------------------------------------
    def message(self, st: Element, frm: JID, nick: str | None) -> None:
        t = st.get("type") or "normal"
        if t == "error":
            occ = self.by_full.get(frm.full)
            if occ is not None and _gone(st):
                # An occupant's session that bounces what the room sends is gone (§7.14, 333).
                self.remove_session(occ, frm.full, codes=("333",))
            return
        if nick is not None:
            self.private_message(st, frm, nick, t)
            return
        if t == "groupchat":
            self.groupchat(st, frm)
            return
        x = st.find("x", NS_MUC_USER)
        if x is not None and (x.find("invite") is not None or x.find("decline") is not None):
            from .admin import invite_or_decline
            invite_or_decline(self, st, frm, x)
            return
        form = st.find("x", NS_DATA)
        if form is not None:
            from .admin import voice_form
            voice_form(self, st, frm, form)
            return
        if st.find("body") is None:
            return  # chat states or receipts to the room itself: nothing to do
        raise StanzaError("bad-request", "messages to everyone in a room are of type groupchat")

    def sender(self, frm: JID) -> Occupant:
        occ = self.by_full.get(frm.full)
        if occ is None:
            raise StanzaError("not-acceptable", "you are not in this room")  # §7.4
        limits = self.service.limits
        if not occ.allow(limits.message_rate, limits.message_burst):
            raise StanzaError("policy-violation", "you are sending too fast; wait a moment", type="wait")
        return occ

    def groupchat(self, st: Element, frm: JID) -> None:
        occ = self.sender(frm)
        subject = st.find("subject")
        if subject is not None and st.find("body") is None:
            self.change_subject(occ, st, subject.text)
            return
        if occ.role == VISITOR or occ.role == ROLE_NONE:
            raise StanzaError("forbidden", "you have no voice in this moderated room")  # §7.4
        self.broadcast_message(st, occ)

    def change_subject(self, occ: Occupant, st: Element, text: str) -> None:
        """§8.1: moderators, or every participant if muc#roomconfig_changesubject."""
        if not (occ.role == MODERATOR or (self.config.changesubject and occ.role == PARTICIPANT)):
            raise StanzaError("forbidden", "you may not change the subject of this room")
        self.subject = text
        self.subject_from = self.occupant_jid(occ)
        self.subject_when = time.time()
        self.subject_oid = occ.occupant_id
        if self.config.persistentroom:
            self.service.save(self)
        self.broadcast_message(st, occ, keep=False)

    def stamped(self, st: Element, occ: Occupant | None, sid: str) -> Element:
        """The room's copy of a message: from the occupant JID (or the room), the client's id
        kept (muc#stable_id), the room's stanza-id and the occupant-id (XEP-0359 §4, XEP-0421:
        any of the client's own claims removed)."""
        children = [c for c in st.children if c.__class__ is str or not (
            (c.ns == NS_STANZA_ID and c.tag == "stanza-id" and c.get("by") == self.jid)
            or c.ns == NS_OCCUPANT_ID)]
        attrs = {"type": "groupchat", "from": self.jid if occ is None else self.occupant_jid(occ),
                 "id": st.get("id") or new_id()}
        lang = st.get("xml:lang")
        if lang:
            attrs["xml:lang"] = lang
        if occ is not None:
            children.append(Element("occupant-id", NS_OCCUPANT_ID, {"id": occ.occupant_id}))
        children.append(Element("stanza-id", NS_STANZA_ID, {"id": sid, "by": self.jid}))
        return Element("message", NS_CLIENT, attrs, children)

    def broadcast_message(self, st: Element, occ: Occupant | None, keep: bool = True) -> str:
        """Reflect a message to every session (§7.4), archiving and remembering it first."""
        archived = keep and _archivable(st)
        sid = self.service.archive_id(self) if archived and self.config.enablearchiving else None
        out = self.stamped(st, occ, sid or new_id(16))
        if sid is not None:
            self.service.archive(self, out, sid)
        if archived and st.find("body") is not None:
            self.history.add(out, out.children[-1].get("id"))
        self.fan_out(out)
        return out.children[-1].get("id") or ""

    def fan_out(self, msg: Element) -> None:
        """One copy per session, sharing the children (serialised once)."""
        children = _prepared(msg.children)
        attrs = msg.attrs
        send = self.service.send
        for _occ, full in self.sessions():
            a = dict(attrs)
            a["to"] = full
            send(Element("message", NS_CLIENT, a, list(children)))

    def private_message(self, st: Element, frm: JID, nick: str, t: str) -> None:
        """§7.5: between occupants only, as the room's allowpm says, marked with muc#user."""
        occ = self.sender(frm)
        if t == "groupchat":
            raise StanzaError("bad-request", "private messages are not of type groupchat")
        target = self.occupants.get(nick)
        if target is None:
            raise StanzaError("item-not-found", f"nobody is called {nick!r} in this room")
        policy = self.config.allowpm
        if policy == "none" or (policy == "moderators" and occ.role != MODERATOR) or (
                policy == "participants" and occ.role == VISITOR):
            raise StanzaError("forbidden", "private messages are not allowed here")
        children = [c for c in st.children if c.__class__ is str or c.ns not in (NS_MUC_USER, NS_OCCUPANT_ID)]
        children.append(Element("x", NS_MUC_USER))
        children.append(Element("occupant-id", NS_OCCUPANT_ID, {"id": occ.occupant_id}))  # XEP-0421 §4
        attrs = {k: v for k, v in st.attrs.items() if k not in ("from", "to")}
        attrs["from"] = self.occupant_jid(occ)
        _prepared(children)
        for full in target.sessions:
            a = dict(attrs)
            a["to"] = full
            self.service.send(Element("message", NS_CLIENT, a, list(children)))

    def notice(self, codes: Iterable[str]) -> None:
        """A status message from the room to everyone (§10.2.1: 104, 170-174)."""
        m = Element("message", NS_CLIENT, {"type": "groupchat", "from": self.jid, "id": new_id()})
        m.append(_x(*codes))
        self.fan_out(m)


# Error conditions saying that the occupant's session no longer exists.
_GONE = frozenset(("gone", "item-not-found", "recipient-unavailable", "redirect", "remote-server-not-found",
                   "remote-server-timeout", "service-unavailable"))


def _gone(st: Element) -> bool:
    err = st.find("error")
    if err is None:
        return False
    return any(c.ns == NS_STANZAS and c.tag in _GONE for c in err.elements())


def _archivable(st: Element) -> bool:
    keep = False
    for c in st.children:
        if c.__class__ is str:
            continue
        if c.ns == NS_HINTS and c.tag in ("no-store", "no-permanent-store"):
            return False
        if (c.ns, c.tag) in _ARCHIVED:
            keep = True
    return keep


__all__ = ["Room", "RoomService", "actor_reason"]
