"""Group chat (XEP-0045) over the wire with slixmpp's xep_0045 plugin against the spawned daemon:
create and configure, join, messages, history, kick, ban surviving a restart, archiving off by
default and on after configuration, self-ping after a restart, two devices under one nick."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError, PresenceError

from tests.daemon import Daemon
from tests.rawclient import RawClient
from tests.realclient.conftest import PASSWORD, USERS, connect, disconnect

pytestmark = pytest.mark.realclient

PLUGINS = ("xep_0030", "xep_0004", "xep_0045", "xep_0059", "xep_0297", "xep_0313", "xep_0199")
SERVICE = "conference.localhost"
NS_SID = "{urn:xmpp:sid:0}stanza-id"
NS_OID = "{urn:xmpp:occupant-id:0}occupant-id"


async def muc_messages(c, room: str, n: int, timeout: float = 10.0) -> list:  # type: ignore[no-untyped-def]
    out = []
    while len(out) < n:
        m = await asyncio.wait_for(c.messages.get(), timeout)
        if m["type"] == "groupchat" and m["from"].bare == room and m["body"]:
            out.append(m)
    return out


async def create_room(c, room: str, nick: str, **settings: object) -> None:  # type: ignore[no-untyped-def]
    """Join (the room is created locked, status 201), then submit the owner's form."""
    muc = c.plugin["xep_0045"]
    pres, _subject, _occupants, _history = await muc.join_muc_wait(JID(room), nick, maxstanzas=0, timeout=10)
    codes = set(pres["muc"]["status_codes"])
    assert 201 in codes and 110 in codes
    form = await muc.get_room_config(room, timeout=10)
    form.set_values({f"muc#roomconfig_{var}": value for var, value in settings.items()})
    await muc.set_room_config(room, form, timeout=10)


async def test_join_talk_history_and_kick(daemon):
    room = f"talk@{SERVICE}"
    a = await connect(daemon, "alice@localhost/muc", plugins=PLUGINS)
    b = await connect(daemon, "bob@localhost/muc", plugins=PLUGINS)
    try:
        await create_room(a, room, "Alice", roomname="Talk", persistentroom=True)
        for i in range(3):
            a.send_message(mto=room, mbody=f"before {i}", mtype="groupchat")
        live = await muc_messages(a, room, 3)
        assert all(m.xml.find(NS_SID).get("by") == room for m in live)
        # History on join: the last two, delayed from the room, subject last.
        pres, subject, occupants, history = await b.plugin["xep_0045"].join_muc_wait(
            JID(room), "bob", maxstanzas=2, timeout=10)
        assert pres["muc"]["role"] == "participant" and pres["muc"]["affiliation"] == "none"
        assert [m["body"] for m in history] == ["before 1", "before 2"]
        assert all(m["delay"]["from"] == JID(room) for m in history)
        assert [p["from"].resource for p in occupants] == ["Alice", "bob"]  # others first, self last
        assert subject.xml.find("{jabber:client}subject") is not None and not subject["subject"]
        b.send_message(mto=room, mbody="hi all", mtype="groupchat", mfrom=None)
        got = await muc_messages(a, room, 1)
        assert got[0]["from"].resource == "bob" and got[0].xml.find(NS_OID) is not None
        # Kick with a reason: bob gets 307, unavailable.
        seen: asyncio.Queue = asyncio.Queue()
        b.add_event_handler(f"muc::{room}::presence", seen.put_nowait)
        await a.plugin["xep_0045"].set_role(room, "bob", "none", reason="enough", timeout=10)
        p = await asyncio.wait_for(_unavailable(seen, room + "/bob"), 10)
        assert {307, 110} <= set(p["muc"]["status_codes"]) and p["muc"]["item"]["reason"] == "enough"
        # A groupchat message from a non-occupant: not-acceptable.
        errors: asyncio.Queue = asyncio.Queue()
        b.add_event_handler(f"muc::{room}::message_error", errors.put_nowait)
        b.send_message(mto=room, mbody="still here?", mtype="groupchat")
        err = await asyncio.wait_for(errors.get(), 10)
        assert err["error"]["condition"] == "not-acceptable"
    finally:
        await disconnect(a, b)


async def _unavailable(q: asyncio.Queue, frm: str):  # type: ignore[no-untyped-def]
    while True:
        p = await q.get()
        if p["type"] == "unavailable" and p["from"] == JID(frm):
            return p


async def test_archiving_off_by_default_then_on(daemon):
    room = f"archived@{SERVICE}"
    a = await connect(daemon, "alice@localhost/arch", plugins=PLUGINS)
    try:
        await create_room(a, room, "alice")
        info = await a.plugin["xep_0030"].get_info(jid=room, timeout=10)
        assert "urn:xmpp:mam:2" not in info["disco_info"]["features"]
        assert "muc_temporary" in info["disco_info"]["features"]
        with pytest.raises(IqError) as e:
            await a.plugin["xep_0313"].retrieve(jid=JID(room), timeout=10)
        assert e.value.condition == "service-unavailable"
        form = await a.plugin["xep_0045"].get_room_config(room, timeout=10)
        form.set_values({"muc#roomconfig_enablearchiving": True})
        await a.plugin["xep_0045"].set_room_config(room, form, timeout=10)
        info = await a.plugin["xep_0030"].get_info(jid=room, timeout=10)
        assert "urn:xmpp:mam:2" in info["disco_info"]["features"]
        for i in range(4):
            a.send_message(mto=room, mbody=f"kept {i}", mtype="groupchat")
        live = await muc_messages(a, room, 4)
        live_ids = [m.xml.find(NS_SID).get("id") for m in live]
        res = await a.plugin["xep_0313"].retrieve(jid=JID(room), rsm={"max": 10}, timeout=10)
        msgs = res["mam"]["results"]
        assert [m["mam_result"]["forwarded"]["stanza"]["body"] for m in msgs] == [f"kept {i}" for i in range(4)]
        assert [m["mam_result"]["id"] for m in msgs] == live_ids
    finally:
        await disconnect(a)


async def test_moderation_replaces_the_archived_body(daemon):
    room = f"moderated@{SERVICE}"
    plugins = PLUGINS + ("xep_0424", "xep_0425")
    a = await connect(daemon, "alice@localhost/mod", plugins=plugins)
    b = await connect(daemon, "bob@localhost/mod", plugins=plugins)
    try:
        await create_room(a, room, "alice", enablearchiving=True)
        await b.plugin["xep_0045"].join_muc_wait(JID(room), "bob", maxstanzas=0, timeout=10)
        moderated: asyncio.Queue = asyncio.Queue()
        b.add_event_handler("moderated_message", moderated.put_nowait)
        b.send_message(mto=room, mbody="buy potions", mtype="groupchat")
        sid = (await muc_messages(a, room, 1))[0].xml.find(NS_SID).get("id")
        with pytest.raises(IqError) as e:
            await b.plugin["xep_0425"].moderate(JID(room), sid, "mine", timeout=10)
        assert e.value.condition == "forbidden"
        await a.plugin["xep_0425"].moderate(JID(room), sid, "spam", timeout=10)
        m = await asyncio.wait_for(moderated.get(), 10)
        assert m["retract"]["id"] == sid and m["retract"]["moderated"]["by"] == JID(room + "/alice")
        res = await a.plugin["xep_0313"].retrieve(jid=JID(room), rsm={"max": 10}, timeout=10)
        first = res["mam"]["results"][0]
        assert first["mam_result"]["id"] == sid
        fwd = first["mam_result"]["forwarded"]["stanza"]
        assert not fwd["body"] and fwd.xml.find("{urn:xmpp:message-retract:1}retracted") is not None
    finally:
        await disconnect(a, b)


async def test_two_devices_one_nick(daemon):
    room = f"devices@{SERVICE}"
    a = await connect(daemon, "alice@localhost/owner", plugins=PLUGINS)
    phone = await connect(daemon, "carol@localhost/phone", plugins=PLUGINS)
    laptop = await connect(daemon, "carol@localhost/laptop", plugins=PLUGINS)
    try:
        await create_room(a, room, "alice")
        await phone.plugin["xep_0045"].join_muc_wait(JID(room), "carol", maxstanzas=0, timeout=10)
        await laptop.plugin["xep_0045"].join_muc_wait(JID(room), "carol", maxstanzas=0, timeout=10)
        a.send_message(mto=room, mbody="to both", mtype="groupchat")
        assert (await muc_messages(phone, room, 1))[0]["body"] == "to both"
        assert (await muc_messages(laptop, room, 1))[0]["body"] == "to both"
    finally:
        await disconnect(a, phone, laptop)


async def test_ban_and_persistence_survive_restart():
    d = Daemon()
    for u in USERS:
        d.add_user(u, PASSWORD)
    d.start()
    room = f"kept@{SERVICE}"
    try:
        a = await connect(d, "alice@localhost/r", plugins=PLUGINS)
        c = await connect(d, "carol@localhost/r", plugins=PLUGINS)
        await create_room(a, room, "alice", persistentroom=True, roomname="Kept room")
        await c.plugin["xep_0045"].join_muc_wait(JID(room), "carol", maxstanzas=0, timeout=10)
        await a.plugin["xep_0045"].set_affiliation(room, "outcast", jid=JID("carol@localhost"),
                                                   reason="rude", timeout=10)
        await disconnect(a, c)
        assert d.stop() == 0
        d.start()
        a = await connect(d, "alice@localhost/r2", plugins=PLUGINS)
        c = await connect(d, "carol@localhost/r2", plugins=PLUGINS)
        # Nobody is in the room after the restart: self-ping says not-acceptable (XEP-0410).
        with pytest.raises(IqError) as e:
            await a.plugin["xep_0199"].send_ping(JID(room + "/alice"), timeout=10)
        assert e.value.condition == "not-acceptable"
        # The ban held, under any nickname.
        with pytest.raises(PresenceError) as pe:
            await c.plugin["xep_0045"].join_muc_wait(JID(room), "someone-else", maxstanzas=0, timeout=10)
        assert pe.value.condition == "forbidden"
        info = await a.plugin["xep_0030"].get_info(jid=room, timeout=10)
        assert "muc_persistent" in info["disco_info"]["features"]
        assert [i[3] for i in info["disco_info"]["identities"]] == ["Kept room"]
        items = await a.plugin["xep_0030"].get_items(jid=SERVICE, timeout=10)
        assert room in [str(i[0]) for i in items["disco_items"]["items"]]
        pres, *_ = await a.plugin["xep_0045"].join_muc_wait(JID(room), "alice", maxstanzas=0, timeout=10)
        assert pres["muc"]["affiliation"] == "owner"
        await a.plugin["xep_0199"].send_ping(JID(room + "/alice"), timeout=10)
        await disconnect(a, c)
    finally:
        d.finish()


async def test_raw_bad_inputs(daemon):
    """Exact errors over the wire: a 10,000-character nick, a PM from outside the room, a
    groupchat message to a room that does not exist, and a 'from' forged to be the room."""
    room = f"raw@{SERVICE}"
    a = await connect(daemon, "alice@localhost/rawowner", plugins=PLUGINS)
    raw = await RawClient.connect(daemon.c2s)
    try:
        await create_room(a, room, "alice")
        await raw.login("carol", PASSWORD, resource="raw")
        await raw.send(f"<presence to='{room}/{'n' * 10_000}'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
        err = await raw.element()
        assert err.tag == "presence" and err.get("type") == "error"
        assert _condition(err) == "jid-malformed"
        await raw.send(f"<message to='{room}/alice' type='chat' id='pm'><body>hi</body></message>")
        err = await raw.element()
        assert err.get("id") == "pm" and _condition(err) == "not-acceptable"
        await raw.send(f"<message to='nowhere@{SERVICE}' type='groupchat' id='gc'><body>hi</body></message>")
        err = await raw.element()
        assert err.get("id") == "gc" and _condition(err) == "item-not-found"
        await raw.send(f"<message from='{room}/alice' to='{room}' type='groupchat' id='f'>"
                       "<body>forged</body></message>")
        assert await raw.stream_error() == "invalid-from"
    finally:
        await raw.close()
        await disconnect(a)


def _condition(st):  # type: ignore[no-untyped-def]
    err = st.find("error")
    return next(c.tag for c in err.elements() if c.ns == "urn:ietf:params:xml:ns:xmpp-stanzas" and c.tag != "text")
