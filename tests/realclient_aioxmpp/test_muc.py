"""Multi-user chat (XEP-0045) with aioxmpp.muc: create and configure a room with the owner form,
join, groupchat both ways, subject, history on rejoin, nick conflict, affiliations, members-only."""

from __future__ import annotations

import asyncio

import aioxmpp
import aioxmpp.disco
import aioxmpp.forms
import aioxmpp.im
import aioxmpp.muc
import aioxmpp.ping
import aioxmpp.tracking
import pytest

from tests.realclient_aioxmpp.conftest import online

pytestmark = pytest.mark.realclient

SERVICE = "conference.localhost"


def groupchat(text: str) -> aioxmpp.Message:
    msg = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT)
    msg.body[None] = text
    return msg


def collect(room: aioxmpp.muc.Room) -> asyncio.Queue:
    q: asyncio.Queue = asyncio.Queue()
    room.on_message.connect(lambda msg, member, source, **_kw: q.put_nowait((msg, member)))
    return q


async def _text(q: asyncio.Queue, text: str, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    while True:
        msg, member = await asyncio.wait_for(q.get(), timeout)
        if msg.body and msg.body.any() == text:
            return msg, member


async def join(client: aioxmpp.Client, room: str, nick: str, **kw) -> aioxmpp.muc.Room:  # type: ignore[no-untyped-def]
    room_obj, joined = client.summon(aioxmpp.MUCClient).join(aioxmpp.JID.fromstr(room), nick, **kw)
    await asyncio.wait_for(joined, 10)
    return room_obj


async def create(client: aioxmpp.Client, room: str, nick: str) -> aioxmpp.muc.Room:
    """Join a new room and accept the default configuration: a new room stays locked until its
    owner does (XEP-0045 §10.1.2, an instant room)."""
    room_obj = await join(client, room, nick)
    data = aioxmpp.forms.Data(aioxmpp.forms.DataType.SUBMIT)
    await client.summon(aioxmpp.MUCClient).set_room_config(room_obj.jid, data)
    return room_obj


async def test_create_configure_chat_and_rejoin_with_history(daemon):
    room_jid = aioxmpp.JID.fromstr(f"aiox@{SERVICE}")
    async with online(daemon, "alice@localhost/muc") as a, online(daemon, "bob@localhost/muc") as b:
        muc = a.summon(aioxmpp.MUCClient)
        room = await join(a, str(room_jid), "Alice")
        assert room.me.nick == "Alice" and room.me.affiliation == "owner"

        form = aioxmpp.muc.ConfigurationForm.from_xso(await muc.get_room_config(room_jid))
        form.roomname.value = "aioxmpp room"
        form.roomdesc.value = "configured by aioxmpp"
        form.persistentroom.value = True
        await muc.set_room_config(room_jid, form.render_reply())
        info = await a.summon(aioxmpp.DiscoClient).query_info(room_jid, require_fresh=True)
        assert "muc_persistent" in info.features and "http://jabber.org/protocol/muc" in info.features
        assert any(i.name == "aioxmpp room" for i in info.identities)
        again = aioxmpp.muc.ConfigurationForm.from_xso(await muc.get_room_config(room_jid))
        assert again.roomdesc.value == "configured by aioxmpp" and again.persistentroom.value

        joined = asyncio.Event()
        room.on_join.connect(lambda member, **_kw: joined.set() if member.nick == "Bob" else None)
        room_b = await join(b, str(room_jid), "Bob")
        await asyncio.wait_for(joined.wait(), 10)
        assert {m.nick for m in room_b.members} == {"Alice", "Bob"}

        # aioxmpp tracks its groupchat message by the reflected copy's id (XEP-0045 §7.4).
        _token, tracker = room.send_message_tracked(groupchat("tracked"))
        delivered = asyncio.Event()
        tracker.on_state_changed.connect(
            lambda state, *_a: delivered.set()
            if state == aioxmpp.tracking.MessageState.DELIVERED_TO_RECIPIENT else None)
        await asyncio.wait_for(delivered.wait(), 10)
        assert tracker.response is not None and tracker.response.body.any() == "tracked"

        qa, qb = collect(room), collect(room_b)
        await room.send_message(groupchat("hi from Alice"))
        _msg, member = await _text(qb, "hi from Alice")
        assert member.nick == "Alice"
        room_b.send_message(groupchat("hi from Bob"))
        _msg, member = await _text(qa, "hi from Bob")
        assert member.nick == "Bob"

        topic = asyncio.Event()
        room_b.on_topic_changed.connect(lambda member, new_topic, **_kw: topic.set())
        await room.set_topic({None: "today: aioxmpp"})
        await asyncio.wait_for(topic.wait(), 10)
        assert room_b.muc_subject.any() == "today: aioxmpp"

        await room_b.leave()
        # The subject ends the join (XEP-0045 §7.2.15), after the occupants and the history.
        room_b, joined_b = b.summon(aioxmpp.MUCClient).join(room_jid, "Bob")
        subject: asyncio.Future = asyncio.get_running_loop().create_future()
        room_b.on_topic_changed.connect(
            lambda member, new_topic, **_kw: subject.done() or subject.set_result(new_topic.any()))
        await asyncio.wait_for(joined_b, 10)
        assert await asyncio.wait_for(subject, 10) == "today: aioxmpp"

    # A fresh occupant gets the discussion history, stamped.
    async with online(daemon, "carol@localhost/muc") as c:
        room_c, joined_c = c.summon(aioxmpp.MUCClient).join(room_jid, "Carol")
        qc = collect(room_c)
        await asyncio.wait_for(joined_c, 10)
        msg, _member = await _text(qc, "hi from Bob")
        assert msg.xep0203_delay, "history carries a delay stamp (XEP-0203)"


async def test_nick_conflict_and_members_only(daemon):
    room_jid = aioxmpp.JID.fromstr(f"closed@{SERVICE}")
    async with online(daemon, "alice@localhost/own") as a, online(daemon, "bob@localhost/own") as b:
        muc = a.summon(aioxmpp.MUCClient)
        room = await join(a, str(room_jid), "Alice")
        form = aioxmpp.muc.ConfigurationForm.from_xso(await muc.get_room_config(room_jid))
        form.membersonly.value = True
        await muc.set_room_config(room_jid, form.render_reply())

        _room_b, joined = b.summon(aioxmpp.MUCClient).join(room_jid, "Bob")
        with pytest.raises(aioxmpp.errors.XMPPError) as err:
            await asyncio.wait_for(joined, 10)
        assert err.value.condition == aioxmpp.ErrorCondition.REGISTRATION_REQUIRED

        await room.muc_set_affiliation(aioxmpp.JID.fromstr("bob@localhost"), "member")
        members = await muc.get_affiliated(room_jid, "member")
        assert [str(j) for j in members] == ["bob@localhost"]

        _room_b, joined = b.summon(aioxmpp.MUCClient).join(room_jid, "Alice")
        with pytest.raises(aioxmpp.errors.XMPPError) as err:
            await asyncio.wait_for(joined, 10)
        assert err.value.condition == aioxmpp.ErrorCondition.CONFLICT

        room_b = await join(b, str(room_jid), "Bob")
        assert room_b.me.affiliation == "member"


def _signal_future(signal, pick=lambda *a, **kw: (a, kw)):  # type: ignore[no-untyped-def]
    fut: asyncio.Future = asyncio.get_running_loop().create_future()

    def fire(*args, **kw):  # type: ignore[no-untyped-def]
        if not fut.done():
            fut.set_result(pick(*args, **kw))
        return True  # disconnect after the first emission
    signal.connect(fire)
    return fut


async def test_moderation_nick_change_invite_kick_ban(daemon):
    room_jid = aioxmpp.JID.fromstr(f"moderated@{SERVICE}")
    async with online(daemon, "alice@localhost/mod") as a, online(daemon, "bob@localhost/mod") as b, \
            online(daemon, "carol@localhost/mod") as c:
        room = await create(a, str(room_jid), "Alice")
        room_b = await join(b, str(room_jid), "Bob")

        renamed = _signal_future(room.on_nick_changed, lambda member, old, new, **kw: (old, new))
        await room_b.set_nick("Robert")
        assert await asyncio.wait_for(renamed, 10) == ("Bob", "Robert")
        assert room_b.me.nick == "Robert"

        # A mediated invitation (XEP-0045 §7.8.2) comes from the room, naming the inviter.
        invited = _signal_future(c.summon(aioxmpp.MUCClient).on_muc_invitation,
                                 lambda stanza, muc, inviter, mode, **kw: (muc, inviter, mode,
                                                                           kw.get("reason")))
        await room.invite(aioxmpp.JID.fromstr("carol@localhost"), "join us",
                          mode=aioxmpp.im.InviteMode.MEDIATED)
        muc, inviter, mode, reason = await asyncio.wait_for(invited, 10)
        assert (muc, mode, reason) == (room_jid, aioxmpp.im.InviteMode.MEDIATED, "join us")
        assert inviter.bare() == aioxmpp.JID.fromstr("alice@localhost")

        room_c = await join(c, str(room_jid), "Carol")
        # Only a moderator may kick (XEP-0045 §8.2): Carol is a participant.
        with pytest.raises(aioxmpp.errors.XMPPError) as err:
            await room_c.muc_set_role("Robert", "none")
        assert err.value.condition == aioxmpp.ErrorCondition.FORBIDDEN

        kicked = _signal_future(room_b.on_exit, lambda **kw: (kw["muc_leave_mode"],
                                                                kw.get("muc_reason")))
        member_b = next(m for m in room.members if m.nick == "Robert")
        await room.kick(member_b, "behave")
        assert await asyncio.wait_for(kicked, 10) == (aioxmpp.muc.LeaveMode.KICKED, "behave")

        banned = _signal_future(room_c.on_exit, lambda **kw: kw["muc_leave_mode"])
        member_c = next(m for m in room.members if m.nick == "Carol")
        await room.ban(member_c, "spam")
        assert await asyncio.wait_for(banned, 10) == aioxmpp.muc.LeaveMode.BANNED
        outcasts = await a.summon(aioxmpp.MUCClient).get_affiliated(room_jid, "outcast")
        assert aioxmpp.JID.fromstr("carol@localhost") in outcasts

        _room, joined = c.summon(aioxmpp.MUCClient).join(room_jid, "Carol again")
        with pytest.raises(aioxmpp.errors.XMPPError) as err:
            await asyncio.wait_for(joined, 10)
        assert err.value.condition == aioxmpp.ErrorCondition.FORBIDDEN


async def test_self_ping(daemon):
    """XEP-0410 as aioxmpp's MUCPinger reads it: a ping to one's own occupant JID is answered
    while joined, and refused (not-acceptable) for someone who is not an occupant."""
    room_jid = aioxmpp.JID.fromstr(f"pingroom@{SERVICE}")
    async with online(daemon, "alice@localhost/ping") as a, online(daemon, "bob@localhost/ping") as b:
        await create(a, str(room_jid), "Alice")
        try:
            await aioxmpp.ping.ping(a, room_jid.replace(resource="Alice"))
        except aioxmpp.errors.XMPPError as e:  # the service answering for the client
            assert e.condition in (aioxmpp.ErrorCondition.SERVICE_UNAVAILABLE,
                                   aioxmpp.ErrorCondition.FEATURE_NOT_IMPLEMENTED), e
        with pytest.raises(aioxmpp.errors.XMPPError) as err:
            await aioxmpp.ping.ping(b, room_jid.replace(resource="Alice"))
        assert err.value.condition == aioxmpp.ErrorCondition.NOT_ACCEPTABLE
