"""MAM (XEP-0313): what gets archived, for whom, with which stanza-id (XEP-0359); preferences
(XEP-0441); disco; metadata; retention; the operator report."""

from __future__ import annotations

import asyncio
import datetime
import time

import pytest

from mbxmpp.config import MAMConfig
from mbxmpp.modules.mam import archive_report, format_archive_report, should_store
from mbxmpp.xml.ns import NS_CLIENT, NS_DISCO_INFO, NS_FORWARD, NS_MAM, NS_MAM_EXT, NS_STANZA_ID
from tests.harness import ServerHarness, parse_stanza
from tests.modules.test_carbons import carbon, carbons_on, inner
from tests.modules.test_mam_support import (
    ALL_MODULES,
    A,
    B,
    C,
    chat,
    error_condition,
    fill,
    forwarded,
    iq,
    query,
    stanza_id,
)

MODULES = ["disco", "roster", "presence", "offline", "mam"]


def arch(h: ServerHarness):  # type: ignore[no-untyped-def]
    return h.server.module("mam").archive  # type: ignore[union-attr]


@pytest.fixture(params=["memory", "lmdb"])
def storage(request):  # type: ignore[no-untyped-def]
    return request.param


async def test_both_parties_archived_and_stanza_id_on_delivery(storage):
    async with ServerHarness(modules=MODULES, storage=storage) as h:
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        h.send(a, chat(B, "hello bob"))
        got = await b.expect(lambda s: s.tag == "message")
        await h.server.storage.flush()
        sid = stanza_id(got)
        assert sid is not None and sid.get("by") == B
        a_items = arch(h).query(A)
        b_items = arch(h).query(B)
        assert len(a_items) == 1 and len(b_items) == 1
        assert b_items[0].id == sid.get("id")              # the stanza-id is the archive id
        assert a_items[0].with_ == B and b_items[0].with_ == A + "/r1"
        # The sender's own copy carries no stanza-id of bob's (XEP-0313 §3.5), and alice got
        # nothing back.
        assert [s for s in await a.settle() if s.tag == "message"] == []
        ra = await query(h, a)
        rb = await query(h, b)
        assert ra.bodies == ["hello bob"] and rb.bodies == ["hello bob"]
        assert rb.ids == [sid.get("id")]
        fa = forwarded(ra.messages[0])
        assert fa.get("to") == B and fa.get("from") == A + "/r1" and fa.get("id") == "m1"
        assert ra.messages[0].get("from") == A and ra.messages[0].get("to") == A + "/r1"
        assert ra.complete and ra.count == 1


async def test_query_right_after_delivery_sees_the_message():
    # LMDB queries see only committed appends; the module waits for the owner's pending write.
    async with ServerHarness(modules=MODULES, storage="lmdb") as h:
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        for i in range(3):
            h.send(a, chat(B, f"quick {i}", f"q{i}"))
        got = [s for s in b.received if s.tag == "message"]  # delivered synchronously
        assert len(got) == 3
        rb = await query(h, b)
        assert rb.bodies == ["quick 0", "quick 1", "quick 2"]
        assert rb.ids == [stanza_id(s).get("id") for s in got]
        h.send(a, chat(B, "one more", "q3"))
        r = await iq(h, b, f"<metadata xmlns='{NS_MAM}'/>")
        assert r.find("metadata", NS_MAM).find("end").get("id") == \
            stanza_id(await b.expect(lambda s: s.get("id") == "q3")).get("id")
        ra = await query(h, a)
        assert len(ra.ids) == 4


async def test_offline_message_gets_stanza_id_and_is_archived():
    async with ServerHarness(modules=MODULES) as h:
        await h.create_user(B)
        a = await h.login(A, "r1", presence=True)
        h.send(a, chat(B, "while you were out"))
        await a.settle()
        b = await h.login(B, "r1", presence=False)
        h.send(b, "<presence/>")
        got = await b.expect(lambda s: s.tag == "message" and s.findtext("body") is not None)
        sid = stanza_id(got)
        assert sid is not None and sid.get("by") == B
        assert [it.id for it in arch(h).query(B)] == [sid.get("id")]


async def test_spoofed_stanza_id_is_stripped():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        spoof = (f"<stanza-id xmlns='{NS_STANZA_ID}' id='fake' by='{B}'/>"
                 f"<stanza-id xmlns='{NS_STANZA_ID}' id='other' by='room@conference.localhost'/>")
        h.send(a, chat(B, "x", extra=spoof))
        got = await b.expect(lambda s: s.tag == "message")
        sids = got.findall("stanza-id", NS_STANZA_ID)
        mine = [s for s in sids if s.get("by") == B]
        assert len(mine) == 1 and mine[0].get("id") != "fake"
        assert [s.get("id") for s in sids if s.get("by") != B] == ["other"]  # others' kept
        # Stripped also when the message is not archived (chat state only).
        h.send(a, chat(B, None, "m2", f"<active xmlns='http://jabber.org/protocol/chatstates'/>"
                                  f"<stanza-id xmlns='{NS_STANZA_ID}' id='fake' by='{B}'/>"))
        got = await b.expect(lambda s: s.tag == "message" and s.get("id") == "m2")
        assert stanza_id(got) is None


async def test_message_to_self_archived_once():
    async with ServerHarness(modules=MODULES) as h:
        a1 = await h.login(A, "r1", presence=True)
        await h.login(A, "r2", presence=True)
        h.send(a1, chat(A + "/r2", "note to self"))
        h.send(a1, chat(A, "to my bare"))
        await a1.settle()
        await h.server.storage.flush()
        items = arch(h).query(A)
        assert len(items) == 2
        r = await query(h, a1, f"<x xmlns='jabber:x:data' type='submit'>"
                               f"<field var='FORM_TYPE'><value>{NS_MAM}</value></field>"
                               f"<field var='with'><value>{A}</value></field></x>")
        assert r.bodies == ["note to self", "to my bare"]


@pytest.mark.parametrize("extra,body,type_,stored", [
    ("", "hi", "chat", True),
    ("", "hi", "normal", True),
    ("", "hi", "headline", False),
    ("<store xmlns='urn:xmpp:hints'/>", "hi", "headline", True),
    ("<store xmlns='urn:xmpp:hints'/>", "hi", "error", False),
    ("", "hi", "error", False),
    ("", "hi", "groupchat", False),
    ("<active xmlns='http://jabber.org/protocol/chatstates'/>", None, "chat", False),
    ("<received xmlns='urn:xmpp:receipts' id='x'/>", None, "chat", False),
    ("<no-store xmlns='urn:xmpp:hints'/>", "hi", "chat", False),
    ("<no-permanent-store xmlns='urn:xmpp:hints'/>", "hi", "chat", False),
    ("<store xmlns='urn:xmpp:hints'/><active xmlns='http://jabber.org/protocol/chatstates'/>",
     None, "chat", True),
    ("<encrypted xmlns='eu.siacs.conversations.axolotl'><header/></encrypted>", None, "chat",
     True),
    ("<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>", None, "chat", True),
    ("<x xmlns='http://jabber.org/protocol/muc#user'/>", None, "normal", False),
    ("<x xmlns='http://jabber.org/protocol/muc#user'><invite from='c@localhost'/></x>", None,
     "normal", True),
])
def test_should_store(extra, body, type_, stored):
    assert should_store(parse_stanza(chat(B, body, extra=extra, type_=type_))) is stored


async def test_not_archived_kinds_over_the_router():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        h.send(a, chat(B, None, "m1", "<composing xmlns='http://jabber.org/protocol/chatstates'/>"))
        h.send(a, chat(B, "secret", "m2", "<no-store xmlns='urn:xmpp:hints'/>"))
        h.send(a, chat(B, "news", "m3", type_="headline"))
        got = [s for s in await b.settle() if s.tag == "message"]
        assert [s.get("id") for s in got] == ["m1", "m2", "m3"]
        assert all(stanza_id(s) is None for s in got)
        await h.server.storage.flush()
        assert arch(h).count(A) == 0 and arch(h).count(B) == 0


async def test_message_to_unknown_user_not_archived_for_recipient():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        h.send(a, chat("nobody@localhost", "anyone?"))
        err = await a.expect(lambda s: s.tag == "message" and s.get("type") == "error")
        assert error_condition(err) == "service-unavailable"
        await h.server.storage.flush()
        assert list(arch(h).owners_sizes()) == [(A, 1)]


async def test_disco_account_features():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        r = await iq(h, a, f"<query xmlns='{NS_DISCO_INFO}'/>", to=A)
        feats = {f.get("var") for f in r.find("query", NS_DISCO_INFO).findall("feature")}
        assert {NS_MAM, NS_MAM_EXT, NS_STANZA_ID} <= feats
        r = await iq(h, a, f"<query xmlns='{NS_DISCO_INFO}'/>", to="localhost")
        feats = {f.get("var") for f in r.find("query", NS_DISCO_INFO).findall("feature")}
        assert NS_MAM not in feats  # the domain holds no archive


T0 = float(int(time.time()) - 3600)


async def test_metadata():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        r = await iq(h, a, f"<metadata xmlns='{NS_MAM}'/>")
        md = r.find("metadata", NS_MAM)
        assert r.get("type") == "result" and md is not None and md.children == []
        ids = await fill(h, A, 3, start=T0)
        r = await iq(h, a, f"<metadata xmlns='{NS_MAM}'/>")
        md = r.find("metadata", NS_MAM)
        assert md.find("start").get("id") == ids[0] and md.find("end").get("id") == ids[-1]
        t0 = datetime.datetime.fromtimestamp(T0, datetime.timezone.utc)
        t2 = t0 + datetime.timedelta(seconds=2)
        assert md.find("start").get("timestamp") == t0.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        assert md.find("end").get("timestamp") == t2.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        r = await iq(h, a, f"<metadata xmlns='{NS_MAM}'/>", to=B)
        assert error_condition(r) in ("forbidden", "service-unavailable")


# -- preferences (XEP-0441) ---------------------------------------------------------------------

async def set_prefs(h, c, default: str, always=(), never=()):  # type: ignore[no-untyped-def]
    al = "".join(f"<jid>{j}</jid>" for j in always)
    nv = "".join(f"<jid>{j}</jid>" for j in never)
    return await iq(h, c, f"<prefs xmlns='{NS_MAM}' default='{default}'><always>{al}</always>"
                          f"<never>{nv}</never></prefs>", type="set")


async def test_prefs_get_set_roundtrip():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        r = await iq(h, a, f"<prefs xmlns='{NS_MAM}'/>")
        p = r.find("prefs", NS_MAM)
        assert p.get("default") == "always"
        assert p.find("always") is not None and p.find("never") is not None
        r = await set_prefs(h, a, "roster", [B], [C, "Dave@LocalHost/x"])
        p = r.find("prefs", NS_MAM)
        assert p.get("default") == "roster"
        assert [j.text for j in p.find("always").findall("jid")] == [B]
        assert [j.text for j in p.find("never").findall("jid")] == [C, "dave@localhost/x"]
        r = await iq(h, a, f"<prefs xmlns='{NS_MAM}'/>")
        assert r.find("prefs", NS_MAM).get("default") == "roster"
        r = await iq(h, a, f"<prefs xmlns='{NS_MAM}' default='sometimes'/>", type="set")
        assert error_condition(r) == "bad-request"
        r = await iq(h, a, f"<prefs xmlns='{NS_MAM}' default='never'><always><jid>@@</jid>"
                           f"</always></prefs>", type="set")
        assert error_condition(r) == "jid-malformed"
        r = await iq(h, a, f"<prefs xmlns='{NS_MAM}'/>", to=B)
        assert error_condition(r) in ("forbidden", "service-unavailable")
        await h.create_user(B)
        r = await iq(h, a, f"<prefs xmlns='{NS_MAM}'/>", to=B)
        assert error_condition(r) == "forbidden"


async def _exchange(h, a, b, c):  # type: ignore[no-untyped-def]
    """a writes to b and c, b and c write to a; returns alice's archive bodies."""
    h.send(a, chat(B, "a->b", "1"))
    h.send(a, chat(C, "a->c", "2"))
    h.send(b, chat(A, "b->a", "3"))
    h.send(c, chat(A, "c->a", "4"))
    for x in (a, b, c):
        await x.settle()
    await h.server.storage.flush()
    return [forwarded_body(it.value) for it in arch(h).query(A)]


def forwarded_body(value) -> str:  # type: ignore[no-untyped-def]
    return parse_stanza(value[0].decode()).findtext("body")  # type: ignore[return-value]


@pytest.mark.parametrize("default,always,never,expected", [
    ("always", [], [], ["a->b", "a->c", "b->a", "c->a"]),
    ("never", [], [], []),
    ("never", [B], [], ["a->b", "b->a"]),
    ("always", [], [C], ["a->b", "b->a"]),
    ("always", [], [C + "/r1"], ["a->b", "a->c", "b->a"]),  # full JID: only that resource
    ("never", [B], [B], []),                                  # in both lists: never wins
    ("roster", [], [], ["a->b", "b->a"]),                     # bob is in alice's roster
    ("roster", [C], [B], ["a->c", "c->a"]),
])
async def test_prefs_applied(default, always, never, expected):
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        c = await h.login(C, "r1", presence=True)
        r = await iq(h, a, f"<query xmlns='jabber:iq:roster'><item jid='{B}'/></query>",
                     type="set")
        assert r.get("type") == "result"
        await a.settle()
        r = await set_prefs(h, a, default, always, never)
        assert r.get("type") == "result", r
        assert await _exchange(h, a, b, c) == expected
        # Bob's archive follows bob's (default) preferences.
        assert [forwarded_body(it.value) for it in arch(h).query(B)] == ["a->b", "b->a"]


# -- retention ------------------------------------------------------------------------------------

async def test_retention_sweep_expires_old_messages():
    cfg = MAMConfig(retention=1.0, sweep_interval=0.2)
    async with ServerHarness(modules=MODULES, storage="lmdb", mam=cfg) as h:
        a = await h.login(A, "r1", presence=True)
        await h.login(B, "r1", presence=True)
        h.send(a, chat(B, "old"))
        await a.settle()
        await h.server.storage.flush()
        assert arch(h).count(A) == 1 and arch(h).count(B) == 1
        await asyncio.sleep(1.0)
        h.send(a, chat(B, "new", "m2"))
        await a.settle()
        await h.server.storage.flush()
        assert arch(h).count(A) == 2
        sweeper = h.server.module("mam").sweeper  # type: ignore[union-attr]
        n0 = sweeper.sweeps
        for _ in range(50):
            await asyncio.sleep(0.05)
            if sweeper.sweeps > n0 + 1:
                break
        assert sweeper.sweeps > n0
        r = await query(h, a)
        assert r.bodies == ["new"]
        assert arch(h).count(B) == 1


async def test_retention_batches_yield(monkeypatch):
    async with ServerHarness(modules=MODULES, storage="lmdb") as h:
        sweeper = h.server.module("mam").sweeper  # type: ignore[union-attr]
        await sweeper.stop()  # no background pass in the middle of this one
        await fill(h, A, 2500, start=1_000_000_000.0, step=0.001)
        sweeper.budget = 1000
        calls = []
        orig = sweeper.archive.expire

        def spy(before, budget):  # type: ignore[no-untyped-def]
            calls.append(budget)
            return orig(before, budget)
        monkeypatch.setattr(sweeper.archive, "expire", spy)
        assert await sweeper.sweep() == 2500
        assert calls == [1000, 1000, 1000]
        assert arch(h).count(A) == 0


async def test_account_deletion_removes_archive_and_prefs():
    async with ServerHarness(modules=MODULES, storage="lmdb") as h:
        a = await h.login(A, "r1")
        await fill(h, A, 5)
        await set_prefs(h, a, "never")
        assert await h.server.accounts.delete(A)
        assert arch(h).count(A) == 0
        assert h.server.module("mam").prefs.get(A).default == "always"  # type: ignore[union-attr]


# -- operator report -------------------------------------------------------------------------------

async def test_archive_report():
    async with ServerHarness(modules=MODULES, storage="lmdb") as h:
        await fill(h, A, 3)
        await fill(h, B, 5)
        await fill(h, "room@conference.localhost", 4)
        await fill(h, "x@elsewhere", 1)
        rows = archive_report(h.server)
        assert rows == [(B, 5), ("room@conference.localhost", 4), (A, 3), ("x@elsewhere", 1)]
        assert archive_report(h.server.storage, domain="localhost") == [(B, 5), (A, 3)]
        assert archive_report(h.server, top=1) == [(B, 5)]
        text = format_archive_report(rows)
        assert "bob@localhost" in text and "13" in text.splitlines()[-1]


# -- reuse by other modules (carbons, MUC) ---------------------------------------------------------

async def test_sent_id_visible_to_later_pre_message_hooks():
    from mbxmpp.core import events as ev
    async with ServerHarness(modules=MODULES) as h:
        mam = h.server.module("mam")
        seen = []
        h.server.hooks.add(ev.PRE_MESSAGE, lambda e: seen.append(mam.sent_id(e.stanza)), -100)
        a = await h.login(A, "r1", presence=True)
        await h.login(B, "r1", presence=True)
        h.send(a, chat(B, "one"))
        h.send(a, chat(B, None, "m2", "<gone xmlns='http://jabber.org/protocol/chatstates'/>"))
        await a.settle()
        await h.server.storage.flush()
        assert seen[0] == arch(h).query(A)[0].id
        assert seen[1] is None  # not archived


async def test_room_archive_through_the_module_api():
    async with ServerHarness(modules=MODULES) as h:
        mam = h.server.module("mam")
        room = "room@conference.localhost"
        for i in range(3):
            st = parse_stanza(f"<message from='{room}/nick{i}' to='{room}' type='groupchat' "
                              f"id='g{i}'><body>room {i}</body></message>")
            mam.archive_stanza(room, st, f"{room}/nick{i}")
        await h.server.storage.flush()
        sent = []

        def hide_to(el, item):  # type: ignore[no-untyped-def]
            el.set("to", None)  # XEP-0313 §7.1.2: no 'to' on MUC results
            return el
        q = parse_stanza(f"<query xmlns='{NS_MAM}' queryid='r'><set xmlns="
                         f"'http://jabber.org/protocol/rsm'><max>2</max><before/></set></query>")
        fin = mam.answer_query(room, q, A + "/r1", sent.append, hide_to)
        assert fin.get("complete") is None
        assert [forwarded(m).findtext("body") for m in sent] == ["room 1", "room 2"]
        assert all(m.get("from") == room and forwarded(m).get("to") is None for m in sent)


# -- XEP-0313 / XEP-0359 ------------------------------------------------------------------------

async def test_xep0359_rule2_outgoing_own_stanza_id_stripped():
    """A client cannot plant a stanza-id of its own archive (by = its bare JID) in what it sends:
    neither its archive copy nor the recipient's message carries it."""
    async with ServerHarness(modules=ALL_MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        forged = f"<stanza-id xmlns='{NS_STANZA_ID}' by='{A}' id='forged'/>"
        other = f"<stanza-id xmlns='{NS_STANZA_ID}' by='muc.example' id='kept'/>"
        h.send(a, chat(B, extra=forged + other))
        got = await b.expect(lambda s: s.get("id") == "m1")
        bys = {(s.get("by"), s.get("id")) for s in got.findall("stanza-id", NS_STANZA_ID)}
        assert (A, "forged") not in bys and ("muc.example", "kept") in bys
        assert stanza_id(got).get("by") in (B, "muc.example")
        r = await query(h, a)
        ours = [s.get("id") for s in r.messages[0].find("result", NS_MAM)
                .find("forwarded", NS_FORWARD).find("message", NS_CLIENT)
                .findall("stanza-id", NS_STANZA_ID) if s.get("by") == A]
        assert ours == []


async def test_xep0359_rule2_stripped_from_error_messages_too():
    async with ServerHarness(modules=ALL_MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        h.server.route(parse_stanza(
            f"<message from='x@remote.example/r' to='{A}/r1' type='error' id='e1'>"
            f"<stanza-id xmlns='{NS_STANZA_ID}' by='{A}' id='forged'/>"
            "<error type='cancel'><service-unavailable "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"))
        got = await a.expect(lambda s: s.get("id") == "e1")
        assert got.find("stanza-id", NS_STANZA_ID) is None


def test_rfc6121_unknown_message_type_archived_as_normal():
    st = parse_stanza(f"<message to='{B}' type='bogus'><body>x</body></message>")
    assert should_store(st) is True


async def test_xep0313_sent_carbon_carries_senders_stanza_id():
    """XEP-0313 §3.5: the sender's archive id inside the forwarded message of the sent carbon,
    and never on the message the contact gets."""
    async with ServerHarness(modules=ALL_MODULES) as h:
        a1 = await h.login(A, "r1", presence=True)
        a2 = await h.login(A, "r2", presence=True)
        b = await h.login(B, "r1", presence=True)
        await carbons_on(h, a1, a2)
        h.send(a1, chat(B))
        c = await a2.expect(carbon("sent"))
        sid = inner(c).find("stanza-id", NS_STANZA_ID)
        assert sid is not None and sid.get("by") == A
        got = await b.expect(lambda s: s.get("id") == "m1")
        assert [s.get("by") for s in got.findall("stanza-id", NS_STANZA_ID)] == [B]
        r = await query(h, a2)
        assert r.ids == [sid.get("id")]
