"""The moderator, admin and owner protocols of a room (XEP-0045 §8-§10): role and affiliation
lists and changes, configuration, destruction; and the occupant requests that go to moderators
(voice requests §7.13) or to other users (mediated invitations §7.8.2).  Sans-IO like room.py.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ...errors import StanzaError
from ...jid import JID, JIDError
from ...util.ids import new_id
from ...xml.element import Element
from ...xml.ns import (NS_CLIENT, NS_CONFERENCE, NS_DATA, NS_DISCO_INFO, NS_MUC_ADMIN, NS_MUC_OWNER,
                       NS_MUC_REGISTER, NS_MUC_REQUEST, NS_MUC_USER, NS_REGISTER)
from .affiliation import (ADMIN, AFF_RANK, AFFILIATIONS, MEMBER, MODERATOR, NONE, OUTCAST, OWNER,
                          PARTICIPANT, ROLE_NONE, ROLE_RANK, ROLES, VISITOR, check_affiliation_change,
                          check_role_change, default_role, may_read_list, may_read_role_list)
from .config_form import config_form, parse_config
from .room import actor_reason

if TYPE_CHECKING:
    from .occupant import Occupant
    from .room import Room


def actor_of(room: Room, frm: JID) -> tuple[Occupant | None, str, str]:
    """(occupant or None, affiliation, role) of the sender of an admin request."""
    occ = room.by_full.get(frm.full)
    return occ, room.affiliation(frm.bare), (occ.role if occ is not None else ROLE_NONE)


# -- muc#admin get: lists (§8.5, §9.3, §9.5, §9.8, §10.5, §10.8) ---------------------------------
def admin_get(room: Room, query: Element, frm: JID) -> Element:
    items = query.findall("item", NS_MUC_ADMIN)
    if len(items) != 1:
        raise StanzaError("bad-request", "ask for one list: one <item/> with a role or an affiliation")
    item = items[0]
    _occ, aff, role = actor_of(room, frm)
    out = Element("query", NS_MUC_ADMIN)
    wanted_role, wanted_aff = item.get("role"), item.get("affiliation")
    if wanted_role is not None and wanted_aff is None:
        if wanted_role not in ROLES or wanted_role == ROLE_NONE:
            raise StanzaError("bad-request", f"unknown role {wanted_role!r}")
        may_read_role_list(role)
        for o in room.occupants.values():
            if o.role == wanted_role:
                out.add("item", attrs={"affiliation": room.affiliation(o.bare), "role": o.role,
                                       "nick": o.nick, "jid": next(iter(o.sessions), o.bare)})
        return out
    if wanted_aff is not None and wanted_role is None:
        if wanted_aff not in AFFILIATIONS or wanted_aff == NONE:
            raise StanzaError("bad-request", f"unknown affiliation {wanted_aff!r}")
        may_read_list(aff, role, wanted_aff, room.config.getmemberlist, room.config.membersonly)
        for bare in room.with_affiliation(wanted_aff):
            attrs = {"affiliation": wanted_aff, "jid": bare}
            nick = room.nicks.get(bare)
            if nick and wanted_aff != OUTCAST:
                attrs["nick"] = nick
            out.add("item", attrs=attrs)
        return out
    raise StanzaError("bad-request", "an item names either a role or an affiliation")


# -- muc#admin set: changes (§8.2-§8.4, §9.1-§9.7, §10.3-§10.7) ------------------------------------
class _Change:
    __slots__ = ("kind", "target", "occupant", "value", "reason", "nick")

    def __init__(self, kind: str, target: str, occupant: Occupant | None, value: str, reason: str | None,
                 nick: str | None) -> None:
        self.kind = kind           # "role" or "affiliation"
        self.target = target       # nick (role) or bare JID (affiliation)
        self.occupant = occupant
        self.value = value
        self.reason = reason
        self.nick = nick


def admin_set(room: Room, query: Element, frm: JID) -> None:
    """Check every item, then apply them all (§9.2: none applied if one is refused)."""
    items = query.findall("item", NS_MUC_ADMIN)
    if not items:
        raise StanzaError("bad-request", "no <item/> to change")
    actor, aff, role = actor_of(room, frm)
    changes = [_check_item(room, it, frm, actor, aff, role) for it in items]
    owners = set(room.owners())
    for c in changes:
        if c.kind == "affiliation":
            if c.value == OWNER:
                owners.add(c.target)
            else:
                owners.discard(c.target)
    if not owners:
        raise StanzaError("conflict", "a room keeps at least one owner")  # §10.7
    actor_nick = actor.nick if actor is not None else None
    for c in changes:
        if c.kind == "role":
            set_role(room, c.occupant, c.value, actor_nick, c.reason)  # type: ignore[arg-type]
        else:
            set_affiliation(room, c.target, c.value, actor_nick, c.reason, c.nick)
    room.service.save(room)


def _check_item(room: Room, it: Element, frm: JID, actor: Occupant | None, aff: str, role: str) -> _Change:
    new_role, new_aff = it.get("role"), it.get("affiliation")
    reason = it.findtext("reason", NS_MUC_ADMIN)
    if (new_role is None) == (new_aff is None):
        raise StanzaError("bad-request", "an item changes either a role or an affiliation")
    if new_role is not None:
        if new_role not in ROLES:
            raise StanzaError("bad-request", f"unknown role {new_role!r}")
        nick = it.get("nick")
        if not nick:
            raise StanzaError("bad-request", "a role change names the occupant by nick")
        target = room.occupants.get(nick)
        if target is None:
            raise StanzaError("item-not-found", f"nobody is called {nick!r} in this room")
        if actor is None:
            raise StanzaError("forbidden", "only moderators in the room may change roles")
        if target is actor and new_role == ROLE_NONE:
            raise StanzaError("conflict", "you cannot kick yourself")  # §8.2 (MAY)
        check_role_change(role, aff, room.affiliation(target.bare), target.role, new_role)
        return _Change("role", nick, target, new_role, reason, None)
    if new_aff not in AFFILIATIONS:
        raise StanzaError("bad-request", f"unknown affiliation {new_aff!r}")
    jid_s, nick = it.get("jid"), it.get("nick")
    if jid_s:
        try:
            bare = JID.parse(jid_s).bare
        except JIDError as e:
            raise StanzaError("jid-malformed", f"not a JID: {jid_s!r}") from e
    elif nick and nick in room.occupants:
        bare = room.occupants[nick].bare
    else:
        raise StanzaError("bad-request" if not nick else "item-not-found",
                          "an affiliation change names a JID (or the nick of an occupant)")
    old = room.affiliation(bare)
    if bare == frm.bare and new_aff == OUTCAST:
        raise StanzaError("conflict", "you cannot ban yourself")  # §9.1
    check_affiliation_change(aff, old, new_aff)
    if old == OWNER and new_aff != OWNER and aff != OWNER:
        raise StanzaError("forbidden", "only owners may change the owner list")
    reserved = it.get("nick") if jid_s and new_aff in (MEMBER, ADMIN, OWNER) else None
    return _Change("affiliation", bare, None, new_aff, reason, reserved)


def set_role(room: Room, occ: Occupant, new_role: str, actor: str | None, reason: str | None) -> None:
    if new_role == ROLE_NONE:
        room.remove_occupant(occ, codes=("307",), actor=actor, reason=reason)  # §8.2 kick
        return
    if occ.role == new_role:
        return
    occ.role = new_role
    extra = actor_reason(actor, reason)
    room.broadcast_presence(occ, item_extra=extra)


def set_affiliation(room: Room, bare: str, new_aff: str, actor: str | None, reason: str | None,
                    nick: str | None = None) -> None:
    """Record the affiliation and apply it to the user's occupant, if in the room (§9.1, §9.4)."""
    old_aff = room.affiliation(bare)
    room.set_affiliation(bare, new_aff)
    if nick:
        room.nicks[bare] = nick
    present = [o for o in room.occupants.values() if o.bare == bare]
    if not present and new_aff != OUTCAST:
        # §9.4 status 101: the user learns of the change while out of the room.
        m = Element("message", NS_CLIENT, {"from": room.jid, "to": bare, "id": new_id()})
        x = m.add("x", NS_MUC_USER)
        x.add("item", attrs={"affiliation": new_aff, "jid": bare})
        x.add("status", attrs={"code": "101"})
        room.service.send(m)
    for occ in present:
        if new_aff == OUTCAST:
            room.remove_occupant(occ, codes=("301",), actor=actor, reason=reason, affiliation=OUTCAST)
        elif room.config.membersonly and AFF_RANK[new_aff] < AFF_RANK[MEMBER]:
            room.remove_occupant(occ, codes=("321",), actor=actor, reason=reason, affiliation=new_aff)
        else:
            # The role follows the affiliation up, and down from what admin status gave.
            role = default_role(new_aff, room.config.moderatedroom)
            if ROLE_RANK[role] > ROLE_RANK[occ.role] or old_aff in (OWNER, ADMIN):
                occ.role = role
            room.broadcast_presence(occ, item_extra=actor_reason(actor, reason))


# -- muc#owner (§10.1-§10.2, §10.9) ---------------------------------------------------------------------
def _require_owner(room: Room, frm: JID) -> None:
    if room.affiliation(frm.bare) != OWNER:
        raise StanzaError("forbidden", "only owners may configure this room")


def owner_get(room: Room, query: Element, frm: JID) -> Element:
    _require_owner(room, frm)
    svc = room.service
    out = Element("query", NS_MUC_OWNER)
    out.append(config_form(room.config, room.owners(), room.with_affiliation(ADMIN),
                           svc.limits.max_occupants, svc.archiving_available))
    return out


def owner_set(room: Room, query: Element, frm: JID) -> None:
    _require_owner(room, frm)
    destroy = query.find("destroy", NS_MUC_OWNER)
    if destroy is not None:
        destroy_room(room, destroy)
        return
    x = query.find("x", NS_DATA)
    if x is None:
        raise StanzaError("bad-request", "send a configuration form, or <destroy/>")
    if x.get("type") == "cancel":
        if room.locked:  # §10.1.3: cancelling the initial configuration destroys the room
            destroy_room(room, None)
        return
    svc = room.service
    sub = parse_config(x, room.config, svc.limits.max_occupants, svc.limits.max_history,
                       svc.archiving_available)
    old = room.config
    new = sub.config
    if sub.owners is not None:
        for b in room.owners():
            if b not in sub.owners:
                set_affiliation(room, b, NONE, None, None)
        for b in sub.owners:
            if room.affiliation(b) != OWNER:
                set_affiliation(room, b, OWNER, None, None)
    if sub.admins is not None:
        for b in room.with_affiliation(ADMIN):
            if b not in sub.admins:
                set_affiliation(room, b, NONE, None, None)
        for b in sub.admins:
            if room.affiliation(b) not in (ADMIN, OWNER):
                set_affiliation(room, b, ADMIN, None, None)
    room.config = new
    was_locked = room.locked
    room.locked = False
    svc.save(room)
    if was_locked:
        return
    codes = ["104"]  # §10.2.1
    if new.enablearchiving != old.enablearchiving or new.enablelogging != old.enablelogging:
        codes.append("170" if (new.enablearchiving or new.enablelogging) else "171")
    if new.whois != old.whois:
        codes.append("172" if new.nonanonymous else "173")
    room.notice(codes)
    if new.membersonly and not old.membersonly:
        # §9.4 / status 322: non-members leave a room that became members-only.
        for occ in list(room.occupants.values()):
            if AFF_RANK[room.affiliation(occ.bare)] < AFF_RANK[MEMBER]:
                room.remove_occupant(occ, codes=("322",))
    if old.moderatedroom and not new.moderatedroom:
        # Unmoderated: everyone has voice. (The other way round, present participants keep
        # theirs; newcomers without affiliation enter as visitors.)
        for occ in list(room.occupants.values()):
            if occ.role == VISITOR:
                occ.role = PARTICIPANT
                room.broadcast_presence(occ)
    if not new.persistentroom and old.persistentroom and room.is_empty():
        room.emptied()


def destroy_room(room: Room, destroy: Element | None) -> None:
    """§10.9: every occupant out with the destroy notice (reason, alternate venue), then gone."""
    notice = Element("destroy", NS_MUC_USER)
    if destroy is not None:
        alt = destroy.get("jid")
        if alt:
            try:
                notice.set("jid", JID.parse(alt).full)
            except JIDError as e:
                raise StanzaError("jid-malformed", f"alternate venue is not a JID: {alt!r}") from e
        reason = destroy.findtext("reason", NS_MUC_OWNER)
        if reason:
            notice.add("reason", text=reason)
        password = destroy.findtext("password", NS_MUC_OWNER)
        if password:
            notice.add("password", text=password)
    room.destroyed = True
    for occ in list(room.occupants.values()):
        room.remove_occupant(occ, destroy=notice)
    room.service.forget(room)


# -- occupants' requests -----------------------------------------------------------------------------
def invite_or_decline(room: Room, st: Element, frm: JID, x: Element) -> None:
    """§7.8.2 mediated invitations, §7.8.3 declines, relayed by the room."""
    occ = room.by_full.get(frm.full)
    aff = room.affiliation(frm.bare)
    for inv in x.findall("invite", NS_MUC_USER):
        if occ is None:
            raise StanzaError("not-acceptable", "only occupants may invite")
        if room.config.membersonly and not room.config.allowinvites and AFF_RANK[aff] < AFF_RANK[ADMIN]:
            raise StanzaError("forbidden", "only admins may invite to this members-only room")
        if not room.config.membersonly and not room.config.allowinvites and occ.role == VISITOR:
            raise StanzaError("forbidden", "visitors may not invite")
        to = _jid(inv.get("to"))
        if room.config.membersonly and room.affiliation(to.bare) == NONE:
            room.set_affiliation(to.bare, MEMBER)  # §7.8.2: the invitee becomes a member
            room.service.save(room)
        m = Element("message", NS_CLIENT, {"from": room.jid, "to": to.full, "id": st.get("id") or new_id()})
        ux = m.add("x", NS_MUC_USER)
        i = ux.add("invite", attrs={"from": frm.bare})
        reason = inv.findtext("reason", NS_MUC_USER)
        if reason:
            i.add("reason", text=reason)
        if room.config.passwordprotectedroom:
            ux.add("password", text=room.config.roomsecret)
        m.add("x", NS_CONFERENCE, {"jid": room.jid})
        m.add("body", text=f"{frm.bare} invites you to the room {room.jid}" + (f": {reason}" if reason else ""))
        room.service.send(m)
    for dec in x.findall("decline", NS_MUC_USER):
        to = _jid(dec.get("to"))
        m = Element("message", NS_CLIENT, {"from": room.jid, "to": to.full, "id": st.get("id") or new_id()})
        d = m.add("x", NS_MUC_USER).add("decline", attrs={"from": frm.bare})
        reason = dec.findtext("reason", NS_MUC_USER)
        if reason:
            d.add("reason", text=reason)
        room.service.send(m)


def _jid(s: str | None) -> JID:
    if not s:
        raise StanzaError("bad-request", "an invitation names whom it is for ('to')")
    try:
        return JID.parse(s)
    except JIDError as e:
        raise StanzaError("jid-malformed", f"not a JID: {s!r}") from e


def _form_values(form: Element) -> dict[str, str]:
    out = {}
    for f in form.findall("field", NS_DATA):
        var = f.get("var")
        if var:
            out[var] = f.findtext("value", NS_DATA) or ""
    return out


def voice_form(room: Room, st: Element, frm: JID, form: Element) -> None:
    """§7.13 a visitor asks for voice; §8.6 a moderator answers with the same form."""
    values = _form_values(form)
    if values.get("FORM_TYPE") != NS_MUC_REQUEST:
        raise StanzaError("bad-request", "unknown form sent to the room")
    occ = room.by_full.get(frm.full)
    if occ is None:
        raise StanzaError("not-acceptable", "you are not in this room")
    if form.get("type") == "submit" and "muc#request_allow" in values:
        if occ.role != MODERATOR:
            raise StanzaError("forbidden", "only moderators approve voice requests")
        if values["muc#request_allow"].strip().lower() in ("1", "true"):
            target = room.occupants.get(values.get("muc#roomnick", ""))
            if target is None:
                raise StanzaError("item-not-found", "that occupant has left")
            check_role_change(occ.role, room.affiliation(occ.bare), room.affiliation(target.bare),
                              target.role, PARTICIPANT)
            set_role(room, target, PARTICIPANT, occ.nick, None)
        return
    if values.get("muc#role", PARTICIPANT) != PARTICIPANT:
        raise StanzaError("bad-request", "only voice (participant) can be requested")
    if occ.role != VISITOR:
        return  # has voice already
    if not room.config.allowvoicerequests:
        raise StanzaError("forbidden", "voice requests are not allowed in this room")
    now = time.monotonic()
    if now - occ.voice_requested < 60:
        raise StanzaError("resource-constraint", "you asked for voice less than a minute ago")
    occ.voice_requested = now
    for mod in room.moderators():
        for full in mod.sessions:
            m = Element("message", NS_CLIENT, {"from": room.jid, "to": full, "id": new_id()})
            x = m.add("x", NS_DATA, {"type": "form"})
            x.add("title", text="Voice request")
            x.add("instructions", text=f"{occ.nick} asks for voice; allow it?")
            for var, typ, val in (("FORM_TYPE", "hidden", NS_MUC_REQUEST),
                                  ("muc#role", "list-single", PARTICIPANT),
                                  ("muc#jid", "jid-single", next(iter(occ.sessions))
                                   if room._sees_jids(mod) else ""),
                                  ("muc#roomnick", "text-single", occ.nick),
                                  ("muc#request_allow", "boolean", "false")):
                f = x.add("field", attrs={"var": var, "type": typ})
                if val:
                    f.add("value", text=val)
            room.service.send(m)


# -- registration: reserved nicknames (§7.10, §7.12) -------------------------------------------------
def _may_register(room: Room, frm: JID) -> str:
    aff = room.affiliation(frm.bare)
    if aff == OUTCAST or (room.config.membersonly and AFF_RANK[aff] < AFF_RANK[MEMBER]):
        raise StanzaError("not-allowed", "you may not register with this room")
    return aff


def register_get(room: Room, frm: JID) -> Element:
    """§7.10: the registration form, or <registered/> with the reserved nickname."""
    _may_register(room, frm)
    q = Element("query", NS_REGISTER)
    nick = room.nicks.get(frm.bare)
    if nick is not None:
        q.add("registered")
        q.add("username", text=nick)
        return q
    q.add("instructions", text="Choose the nickname to reserve in this room.")
    x = q.add("x", NS_DATA, {"type": "form"})
    x.add("title", text=f"Register with {room.jid}")
    x.add("field", attrs={"var": "FORM_TYPE", "type": "hidden"}).add("value", text=NS_MUC_REGISTER)
    f = x.add("field", attrs={"var": "muc#register_roomnick", "type": "text-single", "label": "Nickname"})
    f.add("required")
    return q


def register_set(room: Room, query: Element, frm: JID) -> None:
    """§7.10: reserve a nickname (and become a member); <remove/> gives both up."""
    aff = _may_register(room, frm)
    if query.find("remove", NS_REGISTER) is not None:
        room.nicks.pop(frm.bare, None)
        if aff == MEMBER:
            set_affiliation(room, frm.bare, NONE, None, None)
        room.service.save(room)
        return
    x = query.find("x", NS_DATA)
    if x is None or x.get("type") != "submit":
        raise StanzaError("bad-request", "submit the registration form")
    values = _form_values(x)
    if values.get("FORM_TYPE", NS_MUC_REGISTER) != NS_MUC_REGISTER:
        raise StanzaError("bad-request", f"FORM_TYPE must be {NS_MUC_REGISTER}")
    nick = values.get("muc#register_roomnick", "")
    if not nick:
        raise StanzaError("bad-request", "muc#register_roomnick is required")
    try:
        JID.parse(f"{room.jid}/{nick}")
    except JIDError as e:
        raise StanzaError("jid-malformed", "not a valid nickname") from e
    room.check_nick(nick, frm.bare, next((o for o in room.occupants.values() if o.bare == frm.bare), None))
    room.nicks[frm.bare] = nick
    if aff == NONE:
        set_affiliation(room, frm.bare, MEMBER, None, None)
    room.service.save(room)


def reserved_nick_info(room: Room, frm: JID) -> Element:
    """§7.12: disco#info node x-roomuser-item names the sender's reserved nickname."""
    q = Element("query", NS_DISCO_INFO, {"node": "x-roomuser-item"})
    nick = room.nicks.get(frm.bare)
    if nick:
        q.add("identity", attrs={"category": "conference", "type": "text", "name": nick})
    return q
