"""MUC archiving (XEP-0313 per room, off by default), moderation (XEP-0425), self-ping
(XEP-0410), persistence across a restart, and the [muc] limits."""

from __future__ import annotations

import dataclasses

import pytest

from mbxmpp.config import MUCConfig
from mbxmpp.server import Server
from mbxmpp.xml.ns import (
    NS_CLIENT,
    NS_DISCO_INFO,
    NS_FASTEN,
    NS_FORWARD,
    NS_MAM,
    NS_MODERATE,
    NS_MODERATE_0,
    NS_MUC_ADMIN,
    NS_PING,
    NS_RETRACT,
    NS_RETRACT_0,
    NS_STANZA_ID,
)
from tests.harness import FakeClient, ServerHarness
from tests.modules.test_muc_support import (
    MODULES,
    ROOM,
    SERVICE,
    A,
    B,
    C,
    D,
    configure,
    create,
    error_condition,
    error_of,
    iq,
    join,
    messages,
    self_presence,
    statuses,
)


def archive(h: ServerHarness):  # type: ignore[no-untyped-def]
    return h.server.module("mam").archive  # type: ignore[union-attr]


async def say(h: ServerHarness, c: FakeClient, body: str, id_: str) -> None:
    h.send(c, f"<message type='groupchat' to='{ROOM}' id='{id_}'><body>{body}</body></message>")


async def mam_query(h: ServerHarness, c: FakeClient, extra: str = "") -> tuple[list, object]:
    h.send(c, f"<iq type='set' id='mq' to='{ROOM}'><query xmlns='{NS_MAM}' queryid='q'>{extra}</query></iq>")
    fin = await c.expect(lambda s: s.tag == "iq" and s.get("id") == "mq")
    got = await c.settle()
    results = [m for m in got if m.tag == "message" and m.find("result", NS_MAM) is not None]
    return results, fin


def forwarded(m):  # type: ignore[no-untyped-def]
    return m.find("result", NS_MAM).find("forwarded", NS_FORWARD).find("message", NS_CLIENT)


@pytest.mark.parametrize("storage", ["memory", "lmdb"])
async def test_archiving_off_by_default_then_on(storage):
    async with ServerHarness(modules=MODULES, storage=storage) as h:
        a = await h.login(A, "r1")
        b = await h.login(B, "r1")
        await create(h, a, "alice")
        await join(h, b, "bob")
        await say(h, b, "not archived", "m0")
        await h.server.storage.flush()
        assert archive(h).query(ROOM) == []
        r = await iq(h, b, ROOM, f"<query xmlns='{NS_DISCO_INFO}'/>")
        assert NS_MAM not in {f.get("var") for f in r.find("query", NS_DISCO_INFO).findall("feature")}  # type: ignore[union-attr]
        _, fin = await mam_query(h, b)
        assert error_condition(fin) == "service-unavailable"  # type: ignore[arg-type]
        # The owner turns archiving on: 170 to everyone, the feature, the messages kept.
        await configure(h, a, enablearchiving="1")
        note = messages(await b.settle())[0]
        assert statuses(note) == {"104", "170"}
        r = await iq(h, b, ROOM, f"<query xmlns='{NS_DISCO_INFO}'/>")
        assert NS_MAM in {f.get("var") for f in r.find("query", NS_DISCO_INFO).findall("feature")}  # type: ignore[union-attr]
        for n in range(3):
            await say(h, b, f"kept {n}", f"k{n}")
        sent = [m for m in messages(await a.settle()) if (m.findtext("body") or "").startswith("kept")]
        sids = [m.find("stanza-id", NS_STANZA_ID).get("id") for m in sent]  # type: ignore[union-attr]
        results, fin = await mam_query(h, b)
        assert fin.get("type") == "result"  # type: ignore[attr-defined]
        assert [forwarded(m).findtext("body") for m in results] == ["kept 0", "kept 1", "kept 2"]
        assert [m.find("result", NS_MAM).get("id") for m in results] == sids
        assert all(m.get("from") == ROOM for m in results)
        assert forwarded(results[0]).get("from") == ROOM + "/bob"
        # A stranger may not read it; switching off stops archiving.
        c = await h.login(C, "r1")
        _, fin = await mam_query(h, c)
        assert error_condition(fin) == "forbidden"  # type: ignore[arg-type]
        await configure(h, a, enablearchiving="0")
        assert statuses(messages(await b.settle())[0]) == {"104", "171"}
        await say(h, b, "after", "k9")
        await h.server.storage.flush()
        assert len(archive(h).query(ROOM)) == 3


async def test_archive_by_default_operator_setting():
    muc = dataclasses.replace(MUCConfig(), archive_by_default=True)
    async with ServerHarness(modules=MODULES, muc=muc) as h:
        a = await h.login(A, "r1")
        got = await join(h, a, "alice")
        assert {"170", "201"} <= statuses(self_presence(got))
        await configure(h, a)
        await say(h, a, "archived at once", "m1")
        await h.server.storage.flush()
        assert len(archive(h).query(ROOM)) == 1


@pytest.mark.parametrize("storage", ["memory", "lmdb"])
async def test_moderation_retracts_and_leaves_tombstone(storage):
    async with ServerHarness(modules=MODULES, storage=storage) as h:
        a = await h.login(A, "r1")
        b = await h.login(B, "r1")
        await create(h, a, "alice", enablearchiving="1")
        await join(h, b, "bob")
        await say(h, b, "buy my potions", "bad")
        sid = messages(await a.settle())[0].find("stanza-id", NS_STANZA_ID).get("id")  # type: ignore[union-attr]
        await b.settle()
        req = (f"<moderate xmlns='{NS_MODERATE}' id='{sid}'><retract xmlns='{NS_RETRACT}'/>"
               "<reason>spam</reason></moderate>")
        assert error_condition(await iq(h, b, ROOM, req, "set")) == "forbidden"
        r = await iq(h, a, ROOM, req, "set")
        assert r.get("type") == "result"
        note = messages(await b.settle())[0]
        ret = note.find("retract", NS_RETRACT)
        assert note.get("from") == ROOM and ret is not None and ret.get("id") == sid
        assert ret.find("moderated", NS_MODERATE).get("by") == ROOM + "/alice"  # type: ignore[union-attr]
        assert ret.findtext("reason", NS_RETRACT) == "spam"
        # The archive keeps a tombstone in place of the body; the history forgets it.
        results, _ = await mam_query(h, b)
        first = forwarded(results[0])
        assert results[0].find("result", NS_MAM).get("id") == sid
        assert first.find("body") is None and first.find("retracted", NS_RETRACT) is not None
        c = await h.login(C, "r1")
        got = await join(h, c, "carol")
        assert not [m for m in messages(got) if m.findtext("body") == "buy my potions"]
        r = await iq(h, a, ROOM, f"<moderate xmlns='{NS_MODERATE}' id='nope'>"
                     f"<retract xmlns='{NS_RETRACT}'/></moderate>", "set")
        assert error_condition(r) == "item-not-found"
        # Moderated at once, before the message's archive write is committed: still a tombstone.
        await a.settle()
        await say(h, b, "fresh spam", "fresh")
        sid = a.received[-1].find("stanza-id", NS_STANZA_ID).get("id")  # type: ignore[union-attr]
        r = await iq(h, a, ROOM, f"<moderate xmlns='{NS_MODERATE}' id='{sid}'>"
                     f"<retract xmlns='{NS_RETRACT}'/></moderate>", "set")
        assert r.get("type") == "result"
        results, _ = await mam_query(h, b)
        fresh = [m for m in results if m.find("result", NS_MAM).get("id") == sid]
        assert fresh and forwarded(fresh[0]).find("body") is None


async def test_moderation_in_the_0_2_form():
    """XEP-0425 0.2 (<apply-to/> fastening): accepted, and every moderation notice carries it
    beside 0.3's <retract/>, as Prosody's mod_muc_moderation sends it."""
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        b = await h.login(B, "r1")
        await create(h, a, "alice")
        await join(h, b, "bob")
        await say(h, b, "buy my potions", "bad")
        sid = messages(await a.settle())[0].find("stanza-id", NS_STANZA_ID).get("id")  # type: ignore[union-attr]
        await b.settle()

        def apply_to(id_: str | None, inner: str) -> str:
            at = f" id='{id_}'" if id_ is not None else ""
            return f"<apply-to xmlns='{NS_FASTEN}'{at}>{inner}</apply-to>"
        good = f"<moderate xmlns='{NS_MODERATE_0}'><retract xmlns='{NS_RETRACT_0}'/><reason>spam</reason></moderate>"
        assert error_condition(await iq(h, b, ROOM, apply_to(sid, good), "set")) == "forbidden"
        assert error_condition(await iq(h, a, ROOM, apply_to(sid, "<external xmlns='urn:x'/>"),
                                        "set")) == "feature-not-implemented"
        assert error_condition(await iq(h, a, ROOM, apply_to(None, good), "set")) == "bad-request"
        assert error_condition(await iq(h, a, ROOM, apply_to(sid, f"<moderate xmlns='{NS_MODERATE_0}'/>"),
                                        "set")) == "bad-request"
        assert error_condition(await iq(h, a, f"{ROOM}/alice", apply_to(sid, good), "set")) == "bad-request"
        assert error_condition(await iq(h, a, ROOM, apply_to("nope", good), "set")) == "item-not-found"
        assert (await iq(h, a, ROOM, apply_to(sid, good), "set")).get("type") == "result"
        note = messages(await b.settle())[0]
        legacy = note.find("apply-to", NS_FASTEN)
        assert legacy is not None and legacy.get("id") == sid
        moderated = legacy.find("moderated", NS_MODERATE_0)
        assert moderated is not None and moderated.get("by") == ROOM + "/alice"
        assert moderated.find("retract", NS_RETRACT_0) is not None
        assert moderated.findtext("reason", NS_MODERATE_0) == "spam"
        current = note.find("retract", NS_RETRACT)
        assert current is not None and current.get("id") == sid
        assert current.findtext("reason", NS_RETRACT) == "spam"
        info = await iq(h, a, ROOM, f"<query xmlns='{NS_DISCO_INFO}'/>", "get")
        feats = {f.get("var") for f in info.first_child().children if f.__class__ is not str}  # type: ignore[union-attr]
        assert {NS_MODERATE, NS_MODERATE_0} <= feats


async def test_corrections_and_retractions_pass_through():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        b = await h.login(B, "r1")
        await create(h, a, "alice")
        await join(h, b, "bob")
        h.send(b, f"<message type='groupchat' to='{ROOM}' id='c2'><body>fixed</body>"
                  "<replace xmlns='urn:xmpp:message-correct:0' id='c1'/></message>")
        h.send(b, f"<message type='groupchat' to='{ROOM}' id='r1'><retract xmlns='{NS_RETRACT}' id='x'/>"
                  "<body>retracted</body></message>")
        got = messages(await a.settle())
        assert got[0].find("replace", "urn:xmpp:message-correct:0").get("id") == "c1"  # type: ignore[union-attr]
        assert got[1].find("retract", NS_RETRACT).get("id") == "x"  # type: ignore[union-attr]


async def test_self_ping():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        b = await h.login(B, "r1")
        await create(h, a, "alice")
        r = await iq(h, a, ROOM + "/alice", f"<ping xmlns='{NS_PING}'/>")
        assert r.get("type") == "result" and r.get("from") == ROOM + "/alice"
        r = await iq(h, b, ROOM + "/alice", f"<ping xmlns='{NS_PING}'/>")
        assert error_condition(r) == "not-acceptable"
        r = await iq(h, b, f"gone@{SERVICE}/bob", f"<ping xmlns='{NS_PING}'/>")
        assert error_condition(r) == "not-acceptable"


async def test_persistent_room_survives_restart_occupants_do_not():
    async with ServerHarness(modules=MODULES, storage="lmdb") as h:
        a = await h.login(A, "r1")
        await h.login(B, "r1")
        await create(h, a, "alice", persistentroom="1", roomname="Kept", membersonly="0")
        r = await iq(h, a, ROOM, f"<query xmlns='{NS_MUC_ADMIN}'><item affiliation='outcast' jid='{C}'/></query>",
                     "set")
        assert r.get("type") == "result" and h.server.storage.idle()  # the result means committed
        await iq(h, a, ROOM, f"<query xmlns='{NS_MUC_ADMIN}'>"
                 f"<item affiliation='member' jid='{B}' nick='bobby'/></query>", "set")
        h.send(a, f"<message type='groupchat' to='{ROOM}' id='s'><subject>kept topic</subject></message>")
        await a.settle()
        await h.server.stop_modules()
        await h.server.storage.close()
        h.server = Server(h.config, storage_kind="lmdb")
        await h.server.start_modules()
        room = h.server.module("muc").services[SERVICE].rooms["room"]  # type: ignore[union-attr]
        assert room.config.name == "Kept" and room.owners() == [A] and room.affiliation(C) == "outcast"
        assert room.nicks == {B: "bobby"} and room.occupants == {}
        a = await h.login(A, "r2")
        c = await h.login(C, "r1")
        # After the restart nobody is in: self-ping says so (XEP-0410).
        r = await iq(h, a, ROOM + "/alice", f"<ping xmlns='{NS_PING}'/>")
        assert error_condition(r) == "not-acceptable"
        assert error_of(await join(h, c, "carol")) == "forbidden"
        # The reserved nick is bob's: someone else gets a conflict (§7.2.9).
        d = await h.login(D, "r1")
        assert error_of(await join(h, d, "Bobby")) == "conflict"
        got = await join(h, a, "alice")
        assert messages(got)[-1].findtext("subject") == "kept topic"


async def test_limits():
    muc = dataclasses.replace(MUCConfig(), max_rooms_per_user=3, max_rooms_joined_per_user=4,
                              message_rate=1, message_burst=3, max_nick_length=20,
                              max_message_size=2048)
    async with ServerHarness(modules=MODULES, muc=muc) as h:
        a = await h.login(A, "r1")
        b = await h.login(B, "r1")
        for n in range(3):
            await create(h, a, "alice", f"r{n}@{SERVICE}")
        got = await join(h, a, "alice", f"r3@{SERVICE}")
        assert error_of(got) == "not-allowed"
        # Joining rooms in a loop stops at the limit.
        results = []
        for n in range(3):
            got = await join(h, b, "bob", f"r{n}@{SERVICE}")
            results.append(error_of(got) if any(s.get("type") == "error" for s in got) else "ok")
        await create(h, b, "bob", f"b0@{SERVICE}")
        got = await join(h, b, "bob", f"b1@{SERVICE}")
        assert results == ["ok", "ok", "ok"] and error_of(got) == "not-allowed"
        # Nicknames: over the service's length, or not a JID resource at all.
        assert error_of(await join(h, a, "x" * 21, f"r0@{SERVICE}")) == "not-acceptable"
        h.send(a, f"<presence to='r0@{SERVICE}/{'n' * 10_000}'/>")
        assert error_of(await a.settle()) == "jid-malformed"
        # Message rate: a burst of 3, then policy-violation.
        await a.settle()
        for n in range(5):
            h.send(a, f"<message type='groupchat' to='r0@{SERVICE}' id='f{n}'><body>{n}</body></message>")
        got = await a.settle()
        assert len([m for m in messages(got) if m.get("type") == "groupchat"]) == 3
        assert error_of(got) == "policy-violation"
        # Message size.
        h.send(b, f"<message type='groupchat' to='b0@{SERVICE}' id='big'><body>{'z' * 3000}</body></message>")
        assert error_of(await b.settle()) == "policy-violation"
        h.send(b, f"<presence to='b0@{SERVICE}/bob'><status>{'z' * 3000}</status></presence>")
        assert error_of(await b.settle()) == "policy-violation"


async def test_joining_a_thousand_rooms_in_a_loop_hits_the_limits():
    """Default limits: a user creates at most 100 rooms, and is in at most 200 at once."""
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        for n in range(1000):
            h.send(a, f"<presence to='loop{n}@{SERVICE}/alice'/>")  # groupchat 1.0: instant rooms
        got = await a.settle()
        joined = [s for s in got if s.tag == "presence" and "201" in statuses(s)]
        refused = [s for s in got if s.get("type") == "error"]
        assert len(joined) == 100 and len(refused) == 900
        assert {error_condition(s) for s in refused} == {"not-allowed"}
        assert len(h.server.module("muc").services[SERVICE].rooms) == 100  # type: ignore[union-attr]
        # Joining existing rooms stops at 200 rooms at once.
        b = await h.login(B, "r1")
        for n in range(100):
            h.send(b, f"<presence to='mine{n}@{SERVICE}/bob'/>")
        for n in range(100):
            h.send(b, f"<presence to='loop{n}@{SERVICE}/bob'/>")
        got = await b.settle()
        assert len([s for s in got if s.tag == "presence" and "110" in statuses(s)]) == 200
        c = await h.login(C, "r1")
        await create(h, c, "carol", f"extra@{SERVICE}")
        got = await join(h, b, "bob", f"extra@{SERVICE}")
        assert error_of(got) == "not-allowed"
        # Leaving one room makes room for another.
        h.send(b, f"<presence type='unavailable' to='loop5@{SERVICE}/bob'/>")
        await b.settle()
        assert h.server.module("muc").services[SERVICE].joined[B] == 199  # type: ignore[union-attr]
        assert "110" in statuses(self_presence(await join(h, b, "bob", f"extra@{SERVICE}")))


async def test_presence_flood_is_not_amplified():
    muc = dataclasses.replace(MUCConfig(), message_rate=1, message_burst=5)
    async with ServerHarness(modules=MODULES, muc=muc) as h:
        a = await h.login(A, "r1")
        b = await h.login(B, "r1")
        await create(h, a, "alice")
        await join(h, b, "bob")
        await a.settle()
        for n in range(200):
            h.send(b, f"<presence to='{ROOM}/bob'><status>{n}</status></presence>")
        got = [s for s in await a.settle() if s.tag == "presence"]
        assert len(got) == 5  # the burst, then nothing until the rate allows again
        room = h.server.module("muc").services[SERVICE].rooms["room"]  # type: ignore[union-attr]
        assert room.occupants["bob"].presence.findtext("status") == "199"  # the latest is kept


async def test_archived_room_history_survives_restart():
    async with ServerHarness(modules=MODULES, storage="lmdb") as h:
        a = await h.login(A, "r1")
        await create(h, a, "alice", persistentroom="1", enablearchiving="1")
        for n in range(3):
            await say(h, a, f"before restart {n}", f"m{n}")
        await a.settle()
        await h.server.stop_modules()
        await h.server.storage.close()
        h.server = Server(h.config, storage_kind="lmdb")
        await h.server.start_modules()
        b = await h.login(B, "r1")
        got = await join(h, b, "bob", history="<history maxstanzas='2'/>")
        hist = [m for m in messages(got) if m.find("body") is not None]
        assert [m.findtext("body") for m in hist] == ["before restart 1", "before restart 2"]
        assert all(m.find("stanza-id", NS_STANZA_ID) is not None for m in hist)
