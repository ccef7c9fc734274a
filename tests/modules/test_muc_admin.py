"""MUC roles and affiliations (XEP-0045 §8-§10): kick, ban, voice, moderator status, the lists,
every privilege rule of the XEP's tables, voice requests and invitations."""

from __future__ import annotations

import dataclasses

from mbxmpp.xml.ns import NS_CONFERENCE, NS_DATA, NS_MUC_ADMIN, NS_MUC_USER
from tests.harness import ServerHarness
from tests.modules import test_muc_support as support
from tests.modules.test_muc_support import (
    MODULES,
    ROOM,
    A,
    B,
    C,
    D,
    configure,
    create,
    error_condition,
    error_of,
    form_values,
    iq,
    item,
    join,
    messages,
    presences_from,
    room_with,
    self_presence,
    statuses,
)

h = support.h  # the fixture: the in-process server with MUC


def admin_item(**attrs: str) -> str:
    reason = attrs.pop("reason", None)
    a = " ".join(f"{k}='{v}'" for k, v in attrs.items())
    inner = f"<reason>{reason}</reason>" if reason else ""
    return f"<query xmlns='{NS_MUC_ADMIN}'><item {a}>{inner}</item></query>"


async def admin(h, c, **attrs):  # type: ignore[no-untyped-def]
    return await iq(h, c, ROOM, admin_item(**attrs), "set")


async def room_of_four(h):  # type: ignore[no-untyped-def]
    """alice owner, bob admin, carol member, dave nobody; all in the room."""
    a, b, c, d = [await h.login(j, "r1") for j in (A, B, C, D)]
    await create(h, a, "alice")
    await admin(h, a, affiliation="admin", jid=B)
    await admin(h, a, affiliation="member", jid=C)
    for cl, nick in ((b, "bob"), (c, "carol"), (d, "dave")):
        await join(h, cl, nick)
    for cl in (a, b, c, d):
        await cl.settle()
    return a, b, c, d


async def test_kick_with_reason_and_actor(h):
    a, b, c, d = await room_of_four(h)
    r = await admin(h, b, nick="dave", role="none", reason="be nice")
    assert r.get("type") == "result"
    gone = presences_from(await d.settle(), ROOM + "/dave")[0]
    assert gone.get("type") == "unavailable" and statuses(gone) == {"307", "110"}
    it = item(gone)
    assert it.get("role") == "none" and it.find("actor", NS_MUC_USER).get("nick") == "bob"  # type: ignore[union-attr]
    assert it.findtext("reason", NS_MUC_USER) == "be nice"
    seen = presences_from(await c.settle(), ROOM + "/dave")[0]
    assert statuses(seen) == {"307"}
    # The kicked user is out: its messages are refused.
    h.send(d, f"<message type='groupchat' to='{ROOM}' id='x'><body>back?</body></message>")
    assert error_of(await d.settle()) == "not-acceptable"


async def test_kick_privileges(h):
    a, b, c, d = await room_of_four(h)
    # A participant cannot kick (§8.2: forbidden).
    assert error_condition(await admin(h, c, nick="dave", role="none")) == "forbidden"
    # Nobody kicks an admin or owner (not-allowed), not even an owner kicking an admin.
    assert error_condition(await admin(h, b, nick="alice", role="none")) == "not-allowed"
    assert error_condition(await admin(h, a, nick="bob", role="none")) == "not-allowed"
    # A nick that is not there.
    assert error_condition(await admin(h, a, nick="zed", role="none")) == "item-not-found"
    # A member made moderator cannot kick an admin (lower affiliation).
    assert (await admin(h, a, nick="carol", role="moderator")).get("type") == "result"
    assert error_condition(await admin(h, c, nick="bob", role="none")) == "not-allowed"
    assert (await admin(h, c, nick="dave", role="none")).get("type") == "result"


async def test_ban_survives_nick_change_and_lists(h):
    a, b, c, d = await room_of_four(h)
    r = await admin(h, b, affiliation="outcast", jid=D, reason="spam")
    assert r.get("type") == "result"
    gone = presences_from(await d.settle(), ROOM + "/dave")[0]
    assert statuses(gone) == {"301", "110"} and item(gone).get("affiliation") == "outcast"
    assert error_of(await join(h, d, "not-dave")) == "forbidden"
    r = await iq(h, b, ROOM, f"<query xmlns='{NS_MUC_ADMIN}'><item affiliation='outcast'/></query>")
    items = r.find("query", NS_MUC_ADMIN).findall("item")  # type: ignore[union-attr]
    assert [(i.get("jid"), i.get("affiliation"), i.get("role")) for i in items] == [(D, "outcast", None)]
    # Lists are for admins: a member asking for the ban list is forbidden.
    r = await iq(h, c, ROOM, f"<query xmlns='{NS_MUC_ADMIN}'><item affiliation='outcast'/></query>")
    assert error_condition(r) == "forbidden"
    r = await iq(h, a, ROOM, f"<query xmlns='{NS_MUC_ADMIN}'><item affiliation='owner'/></query>")
    assert [i.get("jid") for i in r.find("query", NS_MUC_ADMIN).findall("item")] == [A]  # type: ignore[union-attr]


async def test_ban_privileges(h):
    a, b, c, d = await room_of_four(h)
    assert error_condition(await admin(h, b, affiliation="outcast", jid=A)) == "not-allowed"
    assert error_condition(await admin(h, b, affiliation="outcast", jid=B)) == "conflict"
    assert error_condition(await admin(h, c, affiliation="outcast", jid=D)) == "forbidden"
    assert error_condition(await admin(h, b, affiliation="admin", jid=C)) == "forbidden"
    # The last owner cannot step down (§10.7 conflict); with a second owner it can.
    assert error_condition(await admin(h, a, affiliation="none", jid=A)) == "conflict"
    assert (await admin(h, a, affiliation="owner", jid=B)).get("type") == "result"
    assert (await admin(h, a, affiliation="admin", jid=A)).get("type") == "result"
    # Malformed items.
    assert error_condition(await iq(h, b, ROOM, f"<query xmlns='{NS_MUC_ADMIN}'><item nick='dave'/></query>",
                                    "set")) == "bad-request"
    assert error_condition(await admin(h, b, affiliation="king", jid=D)) == "bad-request"
    assert error_condition(await admin(h, b, affiliation="member", jid="@@bad")) == "jid-malformed"


async def test_voice_in_moderated_room(h):
    a, b, c, d = await room_of_four(h)
    await configure(h, a, moderatedroom="1")
    for cl in (a, b, c, d):
        await cl.settle()
    # dave (no affiliation) rejoins as a visitor.
    h.send(d, f"<presence type='unavailable' to='{ROOM}/dave'/>")
    await d.settle()
    got = await join(h, d, "dave")
    assert item(self_presence(got)).get("role") == "visitor"
    h.send(d, f"<message type='groupchat' to='{ROOM}' id='v1'><body>hello?</body></message>")
    assert error_of(await d.settle()) == "forbidden"
    # §7.13: the visitor asks for voice; the moderators get the form; one approves.
    for cl in (a, b):
        await cl.settle()
    h.send(d, f"<message to='{ROOM}' id='vr'><x xmlns='{NS_DATA}' type='submit'>"
              "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>"
              "<field var='muc#role'><value>participant</value></field></x></message>")
    req = messages(await a.settle())[0]
    vals = form_values(req.find("x", NS_DATA))  # type: ignore[arg-type]
    assert vals["muc#roomnick"] == ["dave"] and vals["muc#jid"] == [D + "/r1"]
    assert messages(await c.settle()) == []  # not to participants
    h.send(a, f"<message to='{ROOM}' id='ok'><x xmlns='{NS_DATA}' type='submit'>"
              "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>"
              "<field var='muc#role'><value>participant</value></field>"
              "<field var='muc#roomnick'><value>dave</value></field>"
              "<field var='muc#request_allow'><value>true</value></field></x></message>")
    p = presences_from(await d.settle(), ROOM + "/dave")[0]
    assert item(p).get("role") == "participant"
    # Revoking voice: never from an admin (not-allowed); a participant cannot (forbidden).
    assert error_condition(await admin(h, a, nick="bob", role="visitor")) == "not-allowed"
    assert error_condition(await admin(h, c, nick="dave", role="visitor")) == "forbidden"
    assert (await admin(h, b, nick="dave", role="visitor")).get("type") == "result"
    r = await iq(h, b, ROOM, f"<query xmlns='{NS_MUC_ADMIN}'><item role='visitor'/></query>")
    assert [i.get("nick") for i in r.find("query", NS_MUC_ADMIN).findall("item")] == ["dave"]  # type: ignore[union-attr]
    # The room unmoderated again: everyone has voice.
    await d.settle()
    await configure(h, a, moderatedroom="0")
    p = presences_from(await d.settle(), ROOM + "/dave")[0]
    assert item(p).get("role") == "participant"


async def test_members_only_change_removes_non_members(h):
    a, b, c, d = await room_of_four(h)
    await configure(h, a, membersonly="1")
    gone = presences_from(await d.settle(), ROOM + "/dave")
    assert gone and gone[-1].get("type") == "unavailable" and "322" in statuses(gone[-1])
    assert presences_from(await c.settle(), ROOM + "/carol") == []  # the member stays
    # Revoking membership in a members-only room removes the occupant with 321.
    await admin(h, a, affiliation="none", jid=C)
    gone = presences_from(await c.settle(), ROOM + "/carol")
    assert gone and "321" in statuses(gone[-1])


async def test_affiliation_change_while_present_updates_role(h):
    a, b, c, d = await room_of_four(h)
    await admin(h, a, affiliation="admin", jid=D)
    p = presences_from(await c.settle(), ROOM + "/dave")[0]
    assert item(p).get("affiliation") == "admin" and item(p).get("role") == "moderator"
    await admin(h, a, affiliation="member", jid=D)
    p = presences_from(await c.settle(), ROOM + "/dave")[0]
    assert item(p).get("affiliation") == "member" and item(p).get("role") == "participant"


async def test_mediated_invitation_and_decline(h):
    a = await h.login(A, "r1", presence=True)
    b = await h.login(B, "r1", presence=True)
    await create(h, a, "alice", membersonly="1", passwordprotectedroom="1", roomsecret="pw")
    h.send(a, f"<message to='{ROOM}' id='inv'><x xmlns='{NS_MUC_USER}'><invite to='{B}'>"
              "<reason>join us</reason></invite></x></message>")
    m = messages(await b.settle())[0]
    assert m.get("from") == ROOM
    inv = m.find("x", NS_MUC_USER).find("invite", NS_MUC_USER)  # type: ignore[union-attr]
    assert inv.get("from") == A and inv.findtext("reason", NS_MUC_USER) == "join us"  # type: ignore[union-attr]
    assert m.find("x", NS_MUC_USER).findtext("password", NS_MUC_USER) == "pw"  # type: ignore[union-attr]
    assert m.find("x", NS_CONFERENCE).get("jid") == ROOM  # type: ignore[union-attr]
    # Members-only: the invitee became a member and gets in.
    assert "110" in statuses(self_presence(await join(h, b, "bob", password="pw")))
    # A member without invite rights cannot invite to a members-only room.
    h.send(b, f"<message to='{ROOM}' id='inv2'><x xmlns='{NS_MUC_USER}'><invite to='{C}'/></x></message>")
    assert error_of(await b.settle()) == "forbidden"
    # A decline goes back to the inviter.
    c = await h.login(C, "r1", presence=True)
    h.send(c, f"<message to='{ROOM}' id='dec'><x xmlns='{NS_MUC_USER}'><decline to='{A}'>"
              "<reason>busy</reason></decline></x></message>")
    m = [s for s in messages(await a.settle()) if s.find("x", NS_MUC_USER) is not None][0]
    dec = m.find("x", NS_MUC_USER).find("decline", NS_MUC_USER)  # type: ignore[union-attr]
    assert dec.get("from") == C and dec.findtext("reason", NS_MUC_USER) == "busy"  # type: ignore[union-attr]


async def test_direct_invitation_passes_through(h):
    """XEP-0249 invitations go from user to user; the server delivers them untouched."""
    a = await h.login(A, "r1")
    b = await h.login(B, "r1", presence=True)
    await create(h, a, "alice")
    h.send(a, f"<message to='{B}' id='di'><x xmlns='{NS_CONFERENCE}' jid='{ROOM}' reason='hey'/></message>")
    m = messages(await b.settle())[0]
    assert m.find("x", NS_CONFERENCE).get("jid") == ROOM  # type: ignore[union-attr]


async def test_owner_form_lists_replace_owners_and_admins(h):
    a, b, c, d = await room_of_four(h)
    await configure(h, a, roomowners=[A, C], roomadmins=[D])
    room = h.server.module("muc").services["conference.localhost"].rooms["room"]  # type: ignore[union-attr]
    assert room.owners() == [A, C] and room.with_affiliation("admin") == [D]


async def test_service_admins_have_owner_privileges():
    """XEP-0045 §5.2: a service administrator may do what a room owner may, in every room."""
    async with ServerHarness(modules=MODULES) as hh:
        hh.server.config = dataclasses.replace(hh.server.config, server=dataclasses.replace(
            hh.server.config.server, admins=(C,)))
        hh.server.remove_component_host("conference.localhost")
        hh.server.add_component_host(hh.server.module("muc"), "localhost")  # type: ignore[arg-type]
        a, b = await room_with(hh, "bob")
        c = await hh.login(C, "r2")
        got = await join(hh, c, "carol")
        assert item(self_presence(got)).get("affiliation") == "owner"
        assert (await admin(hh, c, nick="bob", role="none")).get("type") == "result"
        assert (await iq(hh, c, ROOM, "<query xmlns='http://jabber.org/protocol/muc#owner'/>")).get("type") == "result"
