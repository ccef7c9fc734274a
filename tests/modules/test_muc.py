"""MUC (XEP-0045) rooms and occupants through the in-process server: creation, joining with
every refusal, presence broadcast and status codes, messages, subject, private messages,
history, multi-session nicknames, disco, destruction."""

from __future__ import annotations

import time

import pytest

from mbxmpp.modules.mam.query import stamp
from mbxmpp.xml.ns import (
    NS_DATA,
    NS_DELAY,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_MAM,
    NS_MUC,
    NS_MUC_OWNER,
    NS_MUC_USER,
    NS_OCCUPANT_ID,
    NS_STANZA_ID,
)
from tests.harness import ServerHarness
from tests.modules import test_muc_support as support
from tests.modules.test_muc_support import (
    MODULES,
    ROOM,
    SERVICE,
    A,
    B,
    C,
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


async def test_reserved_room_is_locked_until_configured(h):
    a = await h.login(A, "r1")
    b = await h.login(B, "r1")
    got = await join(h, a, "Alice")
    own = self_presence(got)
    assert statuses(own) == {"110", "201"}
    assert item(own).get("affiliation") == "owner" and item(own).get("role") == "moderator"
    # §10.1.1: nobody else gets in while the room is locked.
    got = await join(h, b, "bob")
    assert error_of(got) == "item-not-found"
    # §10.1.3: the owner asks for the form; every standard field is there.
    r = await iq(h, a, ROOM, f"<query xmlns='{NS_MUC_OWNER}'/>")
    x = r.find("query", NS_MUC_OWNER).find("x", NS_DATA)  # type: ignore[union-attr]
    vals = form_values(x)  # type: ignore[arg-type]
    for f in ("roomname", "roomdesc", "lang", "enablelogging", "changesubject", "allowinvites",
              "allowpm", "maxusers", "presencebroadcast", "getmemberlist", "publicroom",
              "persistentroom", "moderatedroom", "membersonly", "passwordprotectedroom",
              "roomsecret", "whois", "roomadmins", "roomowners", "enablearchiving"):
        assert f"muc#roomconfig_{f}" in vals, f
    assert vals["FORM_TYPE"] == ["http://jabber.org/protocol/muc#roomconfig"]
    assert vals["muc#roomconfig_enablearchiving"] == ["0"]   # [muc] archive_by_default = false
    r = await configure(h, a, roomname="Café ☕", persistentroom="1")
    assert r.get("type") == "result"
    got = await join(h, b, "bob")
    assert statuses(self_presence(got)) == {"110"}
    assert h.server.module("muc").store.get(ROOM)["config"]["name"] == "Café ☕"  # type: ignore[union-attr]


async def test_instant_room_and_groupchat_1_0_join(h):
    a = await h.login(A, "r1")
    b = await h.login(B, "r1")
    await create(h, a, "alice")  # empty submit: instant room
    # A plain presence (no MUC <x/>) still joins (§7.2.1 groupchat 1.0 compatibility).
    h.send(b, f"<presence to='{ROOM}/bob'/>")
    got = await b.settle()
    assert "110" in statuses(self_presence(got))


async def test_cancel_initial_configuration_destroys_room(h):
    a = await h.login(A, "r1")
    await join(h, a, "alice")
    r = await iq(h, a, ROOM, f"<query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='cancel'/></query>",
                 "set")
    assert r.get("type") == "result"
    got = await a.settle()
    assert presences_from(got, ROOM + "/alice")[0].get("type") == "unavailable"
    assert ROOM.split("@")[0] not in h.server.module("muc").services[SERVICE].rooms  # type: ignore[union-attr]


async def test_join_broadcast_semi_anonymous_and_non_anonymous(h):
    a, b = await room_with(h, "bob")
    c = await h.login(C, "r1")
    got = await join(h, c, "carol")
    # The newcomer gets the others' presence first, then its own (§7.2.3).
    order = [s.get("from") for s in got if s.tag == "presence"]
    assert order[-1] == ROOM + "/carol" and set(order[:-1]) == {ROOM + "/alice", ROOM + "/bob"}
    # Semi-anonymous: a participant sees no real JIDs, the moderator does.
    assert item(presences_from(got, ROOM + "/bob")[0]).get("jid") is None
    seen_by_mod = presences_from(await a.settle(), ROOM + "/carol")[0]
    assert item(seen_by_mod).get("jid") == C + "/r1"
    assert presences_from(got, ROOM + "/bob")[0].find("occupant-id", NS_OCCUPANT_ID) is not None
    # Non-anonymous: status 100 to the joiner, 172 to everyone on the change, JIDs for all.
    await configure(h, a, whois="anyone")
    note = messages(await b.settle())[0]
    assert statuses(note) == {"104", "172"} and note.get("from") == ROOM
    await b.settle()
    h.send(b, f"<presence to='{ROOM}/bob' type='unavailable'/>")
    await b.settle()
    got = await join(h, b, "bob")
    assert "100" in statuses(self_presence(got))
    assert item(presences_from(got, ROOM + "/carol")[0]).get("jid") == C + "/r1"


@pytest.mark.parametrize("nick", ["ALICE", "alice ", "ａｌｉｃｅ", "аlice", " alice"])
async def test_nick_impersonation_is_a_conflict(h, nick):
    a = await h.login(A, "r1")
    b = await h.login(B, "r1")
    await create(h, a, "alice")
    got = await join(h, b, nick)
    err = [s for s in got if s.get("type") == "error"]
    assert err and error_condition(err[0]) in ("conflict", "jid-malformed"), got
    assert not [s for s in got if s.tag == "presence" and s.get("type") != "error"]


async def test_nick_change_303_and_conflict(h):
    a, b = await room_with(h, "bob")
    h.send(b, f"<presence to='{ROOM}/Alice'/>")
    got = await b.settle()
    assert error_of(got) == "conflict"
    h.send(b, f"<presence to='{ROOM}/robert'/>")
    got = await b.settle()
    gone = presences_from(got, ROOM + "/bob")[0]
    assert gone.get("type") == "unavailable" and statuses(gone) == {"303", "110"}
    assert item(gone).get("nick") == "robert"
    assert "110" in statuses(presences_from(got, ROOM + "/robert")[0])
    seen = await a.settle()
    assert item(presences_from(seen, ROOM + "/bob")[0]).get("nick") == "robert"
    assert presences_from(seen, ROOM + "/robert")


async def test_password_protected_room(h):
    a = await h.login(A, "r1")
    b = await h.login(B, "r1")
    await create(h, a, "alice", passwordprotectedroom="1", roomsecret="s3cret")
    assert error_of(await join(h, b, "bob")) == "not-authorized"
    assert error_of(await join(h, b, "bob", password="wrong")) == "not-authorized"
    got = await join(h, b, "bob", password="s3cret")
    assert "110" in statuses(self_presence(got))
    # Without a password the setting is refused (§10.1.3 policy).
    r = await configure(h, a, passwordprotectedroom="1", roomsecret="")
    assert error_condition(r) == "not-acceptable"


async def test_members_only_banned_and_full_rooms(h):
    a = await h.login(A, "r1")
    b = await h.login(B, "r1")
    c = await h.login(C, "r1")
    await create(h, a, "alice", membersonly="1")
    assert error_of(await join(h, b, "bob")) == "registration-required"
    r = await iq(h, a, ROOM, "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                 f"<item affiliation='member' jid='{B}'/></query>", "set")
    assert r.get("type") == "result"
    assert "110" in statuses(self_presence(await join(h, b, "bob")))
    # Banned: forbidden, under any nickname.
    await configure(h, a, membersonly="0", maxusers="2")
    await iq(h, a, ROOM, "<query xmlns='http://jabber.org/protocol/muc#admin'>"
             f"<item affiliation='outcast' jid='{C}'/></query>", "set")
    assert error_of(await join(h, c, "carol")) == "forbidden"
    assert error_of(await join(h, c, "someone-else")) == "forbidden"
    # Full (maxusers 2: alice and bob): service-unavailable.
    await iq(h, a, ROOM, "<query xmlns='http://jabber.org/protocol/muc#admin'>"
             f"<item affiliation='none' jid='{C}'/></query>", "set")
    assert error_of(await join(h, c, "carol")) == "service-unavailable"


async def test_groupchat_messages_and_refusals(h):
    a, b = await room_with(h, "bob")
    c = await h.login(C, "r1")
    h.send(b, f"<message type='groupchat' to='{ROOM}' id='m1'><body>hello</body>"
              f"<stanza-id xmlns='{NS_STANZA_ID}' by='{ROOM}' id='forged'/>"
              f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='forged'/></message>")
    for client in (a, b):
        m = messages(await client.settle())[0]
        assert m.get("from") == ROOM + "/bob" and m.get("id") == "m1" and m.findtext("body") == "hello"
        sids = m.findall("stanza-id", NS_STANZA_ID)
        assert len(sids) == 1 and sids[0].get("id") != "forged" and sids[0].get("by") == ROOM
        oids = m.findall("occupant-id", NS_OCCUPANT_ID)
        assert len(oids) == 1 and oids[0].get("id") != "forged"
    # §7.4: a non-occupant is refused with not-acceptable and nothing is reflected.
    h.send(c, f"<message type='groupchat' to='{ROOM}' id='m2'><body>spam</body></message>")
    assert error_of(await c.settle()) == "not-acceptable"
    assert messages(await a.settle()) == []
    # A visitor in a moderated room: forbidden.
    await configure(h, a, moderatedroom="1")
    await a.settle()
    await b.settle()
    h.send(c, f"<presence to='{ROOM}/carol'/>")
    assert item(self_presence(await c.settle())).get("role") == "visitor"
    h.send(c, f"<message type='groupchat' to='{ROOM}' id='m3'><body>may I?</body></message>")
    assert error_of(await c.settle()) == "forbidden"
    assert messages(await a.settle()) == []


async def test_subject_permissions(h):
    a, b = await room_with(h, "bob")
    h.send(b, f"<message type='groupchat' to='{ROOM}' id='s1'><subject>mine</subject></message>")
    assert error_of(await b.settle()) == "forbidden"
    h.send(a, f"<message type='groupchat' to='{ROOM}' id='s2'><subject>Weekly sync</subject></message>")
    m = messages(await b.settle())[0]
    assert m.findtext("subject") == "Weekly sync" and m.get("from") == ROOM + "/alice"
    await configure(h, a, changesubject="1")
    await b.settle()
    h.send(b, f"<message type='groupchat' to='{ROOM}' id='s3'><subject>bob's topic</subject></message>")
    assert messages(await a.settle())[-1].findtext("subject") == "bob's topic"
    # Joiners get the subject last, from who set it.
    c = await h.login(C, "r1")
    got = await join(h, c, "carol")
    last = got[-1]
    assert last.tag == "message" and last.findtext("subject") == "bob's topic"
    assert last.get("from") == ROOM + "/bob" and last.find("body") is None
    assert last.find("occupant-id", NS_OCCUPANT_ID) is not None


async def test_private_messages(h):
    a, b = await room_with(h, "bob")
    c = await h.login(C, "r1")
    h.send(a, f"<message type='chat' to='{ROOM}/bob' id='p1'><body>psst</body></message>")
    m = messages(await b.settle())[0]
    assert m.get("from") == ROOM + "/alice" and m.get("type") == "chat" and m.findtext("body") == "psst"
    assert m.find("x", NS_MUC_USER) is not None  # XEP-0045 §7.5 / XEP-0280 §6 marker
    assert m.find("occupant-id", NS_OCCUPANT_ID) is not None  # XEP-0421: on every message
    h.send(a, f"<message type='chat' to='{ROOM}/nobody' id='p2'><body>?</body></message>")
    assert error_of(await a.settle()) == "item-not-found"
    h.send(c, f"<message type='chat' to='{ROOM}/bob' id='p3'><body>hi</body></message>")
    assert error_of(await c.settle()) == "not-acceptable"
    h.send(a, f"<message type='groupchat' to='{ROOM}/bob' id='p4'><body>hi</body></message>")
    assert error_of(await a.settle()) == "bad-request"
    await configure(h, a, allowpm="moderators")
    await b.settle()
    h.send(b, f"<message type='chat' to='{ROOM}/alice' id='p5'><body>hi</body></message>")
    assert error_of(await b.settle()) == "forbidden"


async def test_history_on_join(h):
    a = await h.login(A, "r1")
    await create(h, a, "alice")
    for n in range(5):
        h.send(a, f"<message type='groupchat' to='{ROOM}' id='h{n}'><body>message {n}</body></message>")
    await a.settle()
    b = await h.login(B, "r1")
    got = await join(h, b, "bob", history="<history maxstanzas='2'/>")
    hist = [m for m in messages(got) if m.find("body") is not None]
    assert [m.findtext("body") for m in hist] == ["message 3", "message 4"]
    d = hist[0].find("delay", NS_DELAY)
    assert d is not None and d.get("from") == ROOM
    assert hist[0].find("stanza-id", NS_STANZA_ID) is not None
    # Subject last, after the history (§7.2.15).
    assert messages(got)[-1].find("subject") is not None
    h.send(b, f"<presence type='unavailable' to='{ROOM}/bob'/>")
    await b.settle()
    got = await join(h, b, "bob", history="<history maxchars='0'/>")
    assert [m for m in messages(got) if m.find("body") is not None] == []
    h.send(b, f"<presence type='unavailable' to='{ROOM}/bob'/>")
    await b.settle()
    got = await join(h, b, "bob", history=f"<history since='{stamp(time.time() + 60)}'/>")
    assert [m for m in messages(got) if m.find("body") is not None] == []
    h.send(b, f"<presence type='unavailable' to='{ROOM}/bob'/>")
    await b.settle()
    got = await join(h, b, "bob", history="<history seconds='3600' maxchars='100000'/>")
    assert len([m for m in messages(got) if m.find("body") is not None]) == 5


async def test_two_devices_under_one_nick(h):
    a = await h.login(A, "r1")
    await create(h, a, "alice")
    b1 = await h.login(B, "phone")
    b2 = await h.login(B, "laptop")
    await join(h, b1, "bob")
    await a.settle()
    got = await join(h, b2, "bob")
    assert "110" in statuses(self_presence(got))
    assert presences_from(got, ROOM + "/alice")  # the new device learns who is there
    assert presences_from(await b1.settle(), ROOM + "/alice") == []  # the first one knew
    assert presences_from(await a.settle(), ROOM + "/bob") == []  # one occupant, nothing new
    h.send(a, f"<message type='groupchat' to='{ROOM}' id='m1'><body>both?</body></message>")
    assert messages(await b1.settle())[0].findtext("body") == "both?"
    assert messages(await b2.settle())[0].findtext("body") == "both?"
    h.send(a, f"<message type='chat' to='{ROOM}/bob' id='p1'><body>pm</body></message>")
    assert messages(await b1.settle()) and messages(await b2.settle())
    # One device leaves: only it hears so; the occupant stays for everyone else.
    h.send(b1, f"<presence type='unavailable' to='{ROOM}/bob'/>")
    assert presences_from(await b1.settle(), ROOM + "/bob")[0].get("type") == "unavailable"
    assert presences_from(await a.settle(), ROOM + "/bob") == []
    h.send(b2, f"<presence type='unavailable' to='{ROOM}/bob'/>")
    await b2.settle()
    assert presences_from(await a.settle(), ROOM + "/bob")[0].get("type") == "unavailable"


async def test_disconnect_leaves_the_room(h):
    a = await h.login(A, "r1", presence=True)
    b = await h.login(B, "r1", presence=True)
    await create(h, a, "alice")
    await join(h, b, "bob")
    await a.settle()
    h.disconnect(b)
    gone = presences_from(await a.settle(), ROOM + "/bob")
    assert gone and gone[0].get("type") == "unavailable"


async def test_disco_of_rooms_and_service(h):
    a = await h.login(A, "r1")
    b = await h.login(B, "r1")
    await create(h, a, "alice", roomname="Public room", roomdesc="about things")
    await create(h, a, "alice", f"hidden@{SERVICE}", publicroom="0")
    await join(h, b, "bob")
    r = await iq(h, b, ROOM, f"<query xmlns='{NS_DISCO_INFO}'/>")
    q = r.find("query", NS_DISCO_INFO)
    feats = {f.get("var") for f in q.findall("feature")}  # type: ignore[union-attr]
    assert {NS_MUC, "muc_public", "muc_temporary", "muc_open", "muc_unmoderated", "muc_semianonymous",
            "muc_unsecured", "http://jabber.org/protocol/muc#stable_id", NS_OCCUPANT_ID,
            "urn:xmpp:message-moderate:1"} <= feats
    assert NS_MAM not in feats  # not archived by default
    assert q.find("identity").get("name") == "Public room"  # type: ignore[union-attr]
    info = form_values(q.find("x", NS_DATA))  # type: ignore[arg-type]
    assert info["muc#roominfo_occupants"] == ["2"] and info["muc#roominfo_description"] == ["about things"]
    assert "muc#roominfo_contactjid" not in info  # semi-anonymous: no real JIDs
    await configure(h, a, whois="anyone")
    r = await iq(h, b, ROOM, f"<query xmlns='{NS_DISCO_INFO}'/>")
    info = form_values(r.find("query", NS_DISCO_INFO).find("x", NS_DATA))  # type: ignore[union-attr, arg-type]
    assert info["muc#roominfo_contactjid"] == [A]
    r = await iq(h, b, SERVICE, f"<query xmlns='{NS_DISCO_ITEMS}'/>")
    jids = [i.get("jid") for i in r.find("query", NS_DISCO_ITEMS).findall("item")]  # type: ignore[union-attr]
    assert jids == [ROOM]
    r = await iq(h, b, f"nothere@{SERVICE}", f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert error_condition(r) == "item-not-found"
    # disco#info to an occupant JID from a non-occupant: bad-request (§6.7).
    c = await h.login(C, "r1")
    r = await iq(h, c, ROOM + "/bob", f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert error_condition(r) == "bad-request"
    # The service itself.
    r = await iq(h, b, SERVICE, f"<query xmlns='{NS_DISCO_INFO}'/>")
    q = r.find("query", NS_DISCO_INFO)
    assert NS_MUC in {f.get("var") for f in q.findall("feature")}  # type: ignore[union-attr]
    assert q.find("identity").get("category") == "conference"  # type: ignore[union-attr]


async def test_room_jids_are_nodeprepped_unicode_ok(h):
    a = await h.login(A, "r1")
    b = await h.login(B, "r1")
    await create(h, a, "alice", "Café@conference.localhost")
    got = await join(h, b, "bob", "CAFÉ@conference.localhost")
    assert self_presence(got).get("from") == "café@conference.localhost/bob"


async def test_destroy_with_reason_and_alternate_venue(h):
    a = await h.login(A, "r1")
    b = await h.login(B, "r1")
    await create(h, a, "alice", persistentroom="1")
    await join(h, b, "bob")
    r = await iq(h, b, ROOM, f"<query xmlns='{NS_MUC_OWNER}'><destroy/></query>", "set")
    assert error_condition(r) == "forbidden"
    r = await iq(h, a, ROOM, f"<query xmlns='{NS_MUC_OWNER}'><destroy jid='new@{SERVICE}'>"
                             "<reason>moved</reason></destroy></query>", "set")
    assert r.get("type") == "result"
    gone = presences_from(await b.settle(), ROOM + "/bob")[0]
    assert gone.get("type") == "unavailable"
    d = gone.find("x", NS_MUC_USER).find("destroy", NS_MUC_USER)  # type: ignore[union-attr]
    assert d.get("jid") == f"new@{SERVICE}" and d.findtext("reason") == "moved"  # type: ignore[union-attr]
    assert h.server.module("muc").store.get(ROOM) is None  # type: ignore[union-attr]
    r = await iq(h, b, ROOM, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert error_condition(r) == "item-not-found"


async def test_temporary_room_vanishes_when_empty(h):
    a = await h.login(A, "r1")
    await create(h, a, "alice")
    h.send(a, f"<presence type='unavailable' to='{ROOM}/alice'/>")
    await a.settle()
    r = await iq(h, a, ROOM, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert error_condition(r) == "item-not-found"


async def test_invalid_configuration_forms(h):
    a, b = await room_with(h, "bob")
    assert error_condition(await configure(h, b, roomname="mine")) == "forbidden"
    assert error_condition(await configure(h, a, persistentroom="maybe")) == "bad-request"
    assert error_condition(await configure(h, a, allowpm="everybody")) == "bad-request"
    assert error_condition(await configure(h, a, maxusers="lots")) == "bad-request"
    assert error_condition(await configure(h, a, whois=["anyone", "moderators"])) == "bad-request"
    # roomowners is the whole owner list: emptying it is refused (a room keeps an owner).
    assert error_condition(await configure(h, a, roomowners=[])) == "not-acceptable"
    h.send(a, f"<iq type='set' id='cfg' to='{ROOM}'><query xmlns='{NS_MUC_OWNER}'>"
              "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x>"
              "</query></iq>")
    assert error_condition(await a.expect(lambda s: s.get("id") == "cfg")) == "bad-request"
    h.send(a, f"<iq type='set' id='cfg' to='{ROOM}'><query xmlns='{NS_MUC_OWNER}'>"
              "<x xmlns='jabber:x:data' type='form'/></query></iq>")
    assert error_condition(await a.expect(lambda s: s.get("id") == "cfg")) == "bad-request"
    # A partial form changes only what it names.
    await configure(h, a, roomname="Partial")
    room = h.server.module("muc").services[SERVICE].rooms["room"]  # type: ignore[union-attr]
    assert room.config.name == "Partial" and room.config.publicroom is True


async def test_bouncing_session_is_removed_with_333(h):
    a, b = await room_with(h, "bob")
    h.send(b, f"<message type='error' to='{ROOM}' id='e'><error type='cancel'>"
              "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
    gone = presences_from(await a.settle(), ROOM + "/bob")
    assert gone and gone[0].get("type") == "unavailable" and statuses(gone[0]) == {"333"}
    await join(h, b, "bob")
    await a.settle()
    h.send(b, f"<presence type='error' to='{ROOM}/bob'><error type='cancel'>"
              "<remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>")
    gone = presences_from(await a.settle(), ROOM + "/bob")
    assert gone and statuses(gone[0]) == {"333"}


async def test_service_going_away_tells_occupants_332(h):
    a = await h.login(A, "r1")
    await create(h, a, "alice")
    h.server.remove_component_host(SERVICE)
    gone = presences_from(await a.settle(), ROOM + "/alice")
    assert gone and gone[0].get("type") == "unavailable" and statuses(gone[0]) == {"332", "110"}


async def test_affiliation_granted_while_away_101(h):
    a = await h.login(A, "r1")
    b = await h.login(B, "r1", presence=True)
    await create(h, a, "alice")
    await iq(h, a, ROOM, "<query xmlns='http://jabber.org/protocol/muc#admin'>"
             f"<item affiliation='member' jid='{B}'/></query>", "set")
    m = messages(await b.settle())[0]
    assert m.get("from") == ROOM and statuses(m) == {"101"}
    assert item(m).get("affiliation") == "member"


async def test_private_message_not_carbon_copied_to_devices_not_in_the_room():
    """XEP-0280 §6: a MUC private message (with the muc#user marker) goes to the joined
    session only, not as a carbon to the user's other devices."""
    async with ServerHarness(modules=MODULES + ["carbons"]) as h:
        a = await h.login(A, "r1", presence=True)
        b1 = await h.login(B, "in-room", presence=True)
        b2 = await h.login(B, "elsewhere", presence=True)
        for c in (b1, b2):
            h.send(c, "<iq type='set' id='cb'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
            await c.settle()
        await create(h, a, "alice")
        await join(h, b1, "bob")
        h.send(a, f"<message type='chat' to='{ROOM}/bob' id='p1'><body>just you</body></message>")
        assert messages(await b1.settle())[0].findtext("body") == "just you"
        assert messages(await b2.settle()) == []


async def test_presence_broadcast_roles(h):
    """muc#roomconfig_presencebroadcast: visitors' presence is not broadcast when left out."""
    a = await h.login(A, "r1")
    b = await h.login(B, "r1")
    await create(h, a, "alice", moderatedroom="1", presencebroadcast=["moderator", "participant"])
    got = await join(h, b, "bob")
    assert item(self_presence(got)).get("role") == "visitor"
    assert presences_from(await a.settle(), ROOM + "/bob") == []
    h.send(b, f"<presence to='{ROOM}/bob'><show>away</show></presence>")
    assert presences_from(await a.settle(), ROOM + "/bob") == []


async def test_join_again_from_a_joined_session_resends_the_state(h):
    a, b = await room_with(h, "bob")
    h.send(a, f"<message type='groupchat' to='{ROOM}' id='m1'><body>earlier</body></message>")
    await b.settle()
    got = await join(h, b, "bob")
    assert presences_from(got, ROOM + "/alice") and "110" in statuses(self_presence(got))
    assert [m.findtext("body") for m in messages(got) if m.find("body") is not None] == ["earlier"]
    assert presences_from(await a.settle(), ROOM + "/bob") == []  # nothing new for the others
