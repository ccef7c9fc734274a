"""What a MAM query may show (never past the retention, swept or not) and how much others may put
into an account's storage (archive quotas, offline caps); a bounced message is not archived."""

from __future__ import annotations

import datetime
import time

import pytest

from mbxmpp.config import MAMConfig, OfflineConfig
from mbxmpp.modules.mam.quota import ONE_SENDER, OTHERS, OWN, Bound, Ledger, Tally
from mbxmpp.modules.mam.retention import expired, oldest_kept
from mbxmpp.xml.ns import NS_MAM, NS_STANZAS
from tests.harness import ServerHarness
from tests.modules.test_mam_support import (
    A,
    B,
    C,
    error_condition,
    fill,
    form,
    iq,
    query,
    rsm,
    stanza_id,
)

MODULES = ["disco", "roster", "presence", "offline", "mam"]
D = "dave@localhost"


def chat(to: str, id_: str, body: str = "hi") -> str:
    return f"<message to='{to}' type='chat' id='{id_}'><body>{body}</body></message>"


def by_id(id_: str):  # type: ignore[no-untyped-def]
    return lambda s: s.tag == "message" and s.get("id") == id_


def text_of(s) -> str | None:  # type: ignore[no-untyped-def]
    return s.find("error").findtext("text", NS_STANZAS)


@pytest.fixture(params=["memory", "lmdb"])
def storage(request):  # type: ignore[no-untyped-def]
    return request.param


# -- retention ------------------------------------------------------------------------------------

def test_oldest_kept_is_exactly_the_retention():
    assert oldest_kept(10, now=100.0) == 90.0
    assert not expired(90.0, 10, now=100.0)  # shown for exactly the retention
    assert expired(89.999, 10, now=100.0)


async def test_query_never_shows_what_is_past_the_retention(storage):
    # The sweep would run in an hour: only the read side keeps the promise here.
    cfg = MAMConfig(retention=60.0, sweep_interval=3600.0)
    async with ServerHarness(modules=MODULES, storage=storage, mam=cfg) as h:
        a = await h.login(A, "r1")
        await h.server.module("mam").sweeper.stop()  # type: ignore[union-attr]
        now = time.time()
        old = await fill(h, A, 5, start=now - 600)   # 10 minutes old: past the retention
        new = await fill(h, A, 3, start=now - 30)    # inside it
        assert h.server.module("mam").archive.count(A) == 8  # type: ignore[union-attr]
        r = await query(h, a)
        assert r.ids == new and r.complete and r.count == 3
        assert (r.first, r.last, r.first_index) == (new[0], new[-1], "0")
        r = await query(h, a, rsm(max=0))
        assert r.ids == [] and r.count == 3 and not r.complete
        r = await query(h, a, rsm(max=2))
        assert r.ids == new[:2] and r.count == 3 and not r.complete
        r = await query(h, a, rsm(max=2, before=""))  # the last page
        assert r.ids == new[1:] and r.count == 3 and not r.complete
        r = await query(h, a, rsm(max=3, before=""))  # back to the first item still shown
        assert r.ids == new and r.count == 3 and r.complete
        r = await query(h, a, rsm(max=2, before=new[1]))
        assert r.ids == new[:1] and r.complete
        r = await query(h, a, form(start="2000-01-01T00:00:00Z"))  # an older 'start' is no way in
        assert r.ids == new and r.count == 3
        r = await query(h, a, form(ids=new[:1]))
        assert r.ids == new[:1] and r.count == 1
        # An expired id is unknown, as a swept one would be (XEP-0313 §4.1.3, RSM: item-not-found).
        for payload in (rsm(after=old[-1]), form(after_id=old[0]), rsm(before=old[1]),
                        form(ids=old[:1] + new[:1])):
            r = await query(h, a, payload)
            assert r.error == "item-not-found"
        md = (await iq(h, a, f"<metadata xmlns='{NS_MAM}'/>")).find("metadata", NS_MAM)
        assert md.find("start").get("id") == new[0] and md.find("end").get("id") == new[-1]


async def test_everything_expired_is_an_empty_archive():
    async with ServerHarness(modules=MODULES, mam=MAMConfig(retention=60.0,
                                                            sweep_interval=3600.0)) as h:
        a = await h.login(A, "r1")
        await h.server.module("mam").sweeper.stop()  # type: ignore[union-attr]
        await fill(h, A, 4, start=time.time() - 600)
        r = await query(h, a)
        assert r.ids == [] and r.count == 0 and r.complete and r.first is None
        md = (await iq(h, a, f"<metadata xmlns='{NS_MAM}'/>")).find("metadata", NS_MAM)
        assert md.find("start") is None and md.find("end") is None


# -- archive quotas -------------------------------------------------------------------------------

def test_bound_and_tally():
    b = Bound(bytes=100, messages=2)
    assert b.admits([0, 0], 100) and not b.admits([0, 0], 101)
    assert b.admits([50, 1], 50) and not b.admits([10, 2], 1)
    assert Bound().admits([10**12, 10**9], 10**9)  # 0: unbounded
    t = Tally()
    t.add(A, 10)
    t.add(B, 30)
    t.add(B, 5)
    assert t.total == [45, 3] and t.sender(B) == [35, 2] and t.others(A) == [35, 2]
    t.add(B, -35, -2)
    assert B not in t.senders and t.total == [10, 1]


def test_tally_charge_counts_only_what_it_admits():
    own, one, others = Bound(messages=2), Bound(bytes=100), Bound(messages=3)
    t = Tally()
    assert t.charge(A, A, 10, own, one, others) == 0
    assert t.charge(A, A, 10, own, one, others) == 0
    assert t.charge(A, A, 10, own, one, others) == OWN  # a third of her own
    assert t.charge(A, B, 101, own, one, others) == ONE_SENDER  # over one sender's bytes
    assert t.charge(A, B, 60, own, one, others) == 0
    assert t.charge(A, B, 60, own, one, others) == ONE_SENDER
    assert t.charge(A, C, 60, own, one, others) == 0
    assert t.charge(A, D, 1, own, one, others) == 0
    assert t.charge(A, "e@localhost", 1, own, one, others) == OTHERS  # a fourth from others
    assert t.total == [20 + 60 + 60 + 1, 5] and t.others(A) == [121, 3] and B in t.senders
    assert "e@localhost" not in t.senders


def test_ledger_window_starts_from_zero_and_rebuilds_a_missing_tally():
    now = [1000.0]
    seeded: list[tuple[str, float | None]] = []

    def seed(owner: str, since: float | None) -> Tally:
        seeded.append((owner, since))
        t = Tally()
        t.add("x@y", 7)
        return t
    ledger = Ledger(seed, window=100.0, clock=lambda: now[0], size=1)
    assert ledger.get(A).total == [7, 1] and seeded == [(A, 1000.0)]
    ledger.get(A).add("x@y", 3)
    assert ledger.get(A).total == [10, 2]
    now[0] = 1100.0  # the next window: nothing to rebuild
    assert ledger.get(A).total == [0, 0] and len(seeded) == 1
    ledger.get(B)  # evicts A (size 1)
    assert ledger.get(A).total == [7, 1] and seeded[-1] == (A, 1100.0)


def test_ledger_bounds_the_sender_pairs_over_all_owners():
    # issue 11, item 5: each (owner, sender) pair of the day is an entry; the owner count bound
    # alone let them grow with every new pair (~400 B per session in perf/soak_churn.py)
    seeded: list[str] = []

    def seed(owner: str, since: float | None) -> Tally:
        seeded.append(owner)
        return Tally()
    ledger = Ledger(seed, max_senders=50)
    own, one, others = Bound(), Bound(), Bound()
    for o in range(20):
        owner = f"o{o}@localhost"
        for k in range(10):
            assert ledger.get(owner).charge(owner, f"s{k}@localhost", 1, own, one, others) == 0
        assert ledger.pairs[0] == sum(len(t.senders) for t in ledger._tallies.values()) <= 50
    assert len(ledger._tallies) == 5  # the oldest owners went (rebuilt from storage when next written)
    ledger.get("o0@localhost")
    assert seeded.count("o0@localhost") == 2
    # a deleted sender, a reset and a new window keep the count exact
    t = ledger.get("o19@localhost")
    t.add("s3@localhost", -1, -1)
    ledger.reset("o18@localhost")
    assert ledger.pairs[0] == sum(len(t.senders) for t in ledger._tallies.values())


def test_tally_shares_one_copy_of_each_sender():
    a, b = Tally(), Tally()
    jid, local = "sender@localhost", "sender"
    a.add(local + "@localhost", 1)  # two distinct str objects, as two sessions' JIDs
    b.charge("o@localhost", local + "@" + "localhost", 1, Bound(), Bound(), Bound())
    ka, kb = next(iter(a.senders)), next(iter(b.senders))
    assert ka == kb == jid and ka is kb


async def test_per_sender_quota_refuses_with_resource_constraint_and_stores_nothing(storage):
    cfg = MAMConfig(max_messages_per_sender=3)
    async with ServerHarness(modules=MODULES, storage=storage, mam=cfg) as h:
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        for i in range(4):
            h.send(a, chat(B, f"m{i}"))
        err = await a.expect(by_id("m3"))
        assert err.get("type") == "error" and error_condition(err) == "resource-constraint"
        assert err.find("error").get("type") == "wait"
        midnight = datetime.datetime.fromtimestamp((time.time() // 86400 + 1) * 86400,
                                                   datetime.timezone.utc)
        assert text_of(err) == ("the recipient's archive takes no more messages from you until "
                                + midnight.strftime("%Y-%m-%dT%H:%M:%SZ"))  # the next UTC day
        assert err.get("from") == B and stanza_id(err) is None
        got = [s.get("id") for s in await b.settle() if s.tag == "message"]
        assert got == ["m0", "m1", "m2"]  # the refused one was not delivered either
        await h.server.storage.flush()
        mam = h.server.module("mam")
        assert mam.archive.count(B) == 3 and mam.archive.count(A) == 3  # type: ignore[union-attr]
        # Others still get through, and B's own messages are B's own quota.
        c = await h.login(C, "r1", presence=True)
        h.send(c, chat(B, "c0"))
        h.send(b, chat(A, "b0"))
        assert [s for s in await c.settle() if s.tag == "message"] == []
        assert [s for s in await b.settle() if s.get("type") == "error"] == []
        await h.server.storage.flush()
        assert mam.archive.count(B) == 5  # type: ignore[union-attr]


async def test_quota_survives_a_restart_of_the_tally():
    # The tally is rebuilt from the archive (after a restart or an eviction from the cache).
    async with ServerHarness(modules=MODULES, storage="lmdb",
                             mam=MAMConfig(max_messages_per_sender=2)) as h:
        a = await h.login(A, "r1", presence=True)
        await h.login(B, "r1", presence=True)
        h.send(a, chat(B, "m0"))
        h.send(a, chat(B, "m1"))
        await a.settle()
        await h.server.storage.flush()
        mam = h.server.module("mam")
        mam.ledger = Ledger(mam._seed, mam.ledger.window)  # type: ignore[union-attr]
        assert mam.ledger.get(B).sender(A)[1] == 2 and mam.ledger.get(A).sender(A)[1] == 2
        h.send(a, chat(B, "m2"))
        err = await a.expect(by_id("m2"))
        assert error_condition(err) == "resource-constraint"


async def test_quota_from_all_others_and_in_bytes():
    cfg = MAMConfig(max_messages_from_others=3, max_bytes_per_sender=1500)
    async with ServerHarness(modules=MODULES, mam=cfg) as h:
        a = await h.login(A, "r1", presence=True)
        c = await h.login(C, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        h.send(a, chat(B, "big", "x" * 2000))  # alone over one sender's bytes
        err = await a.expect(by_id("big"))
        assert error_condition(err) == "resource-constraint"
        h.send(a, chat(B, "a0"))
        h.send(a, chat(B, "a1"))
        h.send(c, chat(B, "c0"))
        h.send(c, chat(B, "c1"))  # the fourth from others
        err = await c.expect(by_id("c1"))
        assert error_condition(err) == "resource-constraint"
        assert text_of(err).startswith("the recipient's archive takes no more messages until ")
        got = [s.get("id") for s in await b.settle() if s.tag == "message"]
        assert got == ["a0", "a1", "c0"]
        h.send(b, chat(B, "note-to-self"))  # one's own messages: not 'from others'
        assert [s for s in await b.settle() if s.get("type") == "error"] == []


async def test_one_senders_total_into_all_others_is_bounded_and_rebuilt():
    # 1000 bytes a day into all other accounts together: two ~400-byte messages, to two people.
    cfg = MAMConfig(max_bytes_to_others=1000)
    async with ServerHarness(modules=MODULES, storage="lmdb", mam=cfg) as h:
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        c = await h.login(C, "r1", presence=True)
        await h.create_user(D)  # offline: her messages to D wait in offline storage
        h.send(a, chat(B, "to-b", "x" * 300))
        h.send(a, chat(C, "to-c", "x" * 300))
        h.send(a, chat(D, "to-d", "x" * 300))  # a third recipient: over her total
        err = await a.expect(by_id("to-d"))
        assert error_condition(err) == "resource-constraint"
        assert err.find("error").get("type") == "wait"
        assert text_of(err).startswith("the archives of others take no more messages from you until ")
        assert [s.get("id") for s in await b.settle() if s.tag == "message"] == ["to-b"]
        assert [s.get("id") for s in await c.settle() if s.tag == "message"] == ["to-c"]
        h.send(b, chat(C, "b-still", "x" * 300))  # others' budgets are their own
        assert [s for s in await b.settle() if s.get("type") == "error"] == []
        h.send(a, chat(A, "self", "x" * 300))  # her own archive is not 'others'
        assert [s for s in await a.settle() if s.get("type") == "error"] == []
        await h.server.storage.flush()
        mam = h.server.module("mam")
        # Rebuilt from her archive's copies of what she sent (after a restart or an eviction).
        used = mam.sent.get(A).total[:]  # type: ignore[union-attr]
        mam.sent = Ledger(mam._seed_sent, mam.sent.window)  # type: ignore[union-attr]
        rebuilt = mam.sent.get(A).total  # type: ignore[union-attr]
        assert rebuilt[1] == used[1] == 2 and abs(rebuilt[0] - used[0]) < 200  # her copies lack the stanza-id
        h.send(a, chat(B, "again", "x" * 300))
        assert error_condition(await a.expect(by_id("again"))) == "resource-constraint"


async def test_own_quota_counts_what_the_user_sent():
    async with ServerHarness(modules=MODULES, mam=MAMConfig(max_messages_own=2)) as h:
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        for i in range(3):
            h.send(a, chat(B, f"m{i}"))
        err = await a.expect(by_id("m2"))
        assert error_condition(err) == "resource-constraint"
        assert text_of(err).startswith("your message archive's quota is used up until ")
        assert [s.get("id") for s in await b.settle() if s.tag == "message"] == ["m0", "m1"]
        assert h.server.module("mam").archive.count(A) == 2  # type: ignore[union-attr]


async def test_archiving_off_is_not_counted():
    # A recipient who archives nothing from A (XEP-0441 'never') has nothing of A's to bound.
    async with ServerHarness(modules=MODULES, mam=MAMConfig(max_messages_per_sender=1)) as h:
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        await iq(h, b, f"<prefs xmlns='{NS_MAM}' default='never'/>", type="set")
        await iq(h, a, f"<prefs xmlns='{NS_MAM}' default='never'/>", type="set")
        for i in range(3):
            h.send(a, chat(B, f"m{i}"))
        assert [s for s in await a.settle() if s.get("type") == "error"] == []
        assert len([s for s in await b.settle() if s.tag == "message"]) == 3


# -- bounced messages and offline caps ------------------------------------------------------------

async def test_bounced_message_is_not_in_the_recipients_archive(storage):
    async with ServerHarness(modules=MODULES, storage=storage,
                             offline=OfflineConfig(max_messages=2)) as h:
        await h.create_user(B)
        a = await h.login(A, "r1", presence=True)
        for i in range(5):
            h.send(a, chat(B, f"m{i}"))
        errs = [s for s in await a.settle() if s.get("type") == "error"]
        assert [s.get("id") for s in errs] == ["m2", "m3", "m4"]
        assert all(error_condition(s) == "service-unavailable" for s in errs)
        assert all(text_of(s) == "the recipient's offline storage is full" for s in errs)
        assert all(stanza_id(s) is None for s in errs)  # no id of an item that does not exist
        await h.server.storage.flush()
        mam = h.server.module("mam")
        assert mam.archive.count(B) == 2  # type: ignore[union-attr]
        assert mam.ledger.get(B).total[1] == 2  # type: ignore[union-attr]
        assert mam.archive.count(A) == 5  # type: ignore[union-attr]  # the sender did send them


async def test_without_offline_storage_nothing_is_archived_for_an_absent_recipient():
    async with ServerHarness(modules=["disco", "roster", "presence", "mam"]) as h:
        await h.create_user(B)
        a = await h.login(A, "r1", presence=True)
        h.send(a, chat(B, "m0"))
        err = await a.expect(by_id("m0"))
        assert error_condition(err) == "service-unavailable"
        await h.server.storage.flush()
        assert h.server.module("mam").archive.count(B) == 0  # type: ignore[union-attr]


async def test_offline_byte_cap_and_per_sender_share(storage):
    cfg = OfflineConfig(max_messages=100, max_bytes=3000, max_messages_per_sender=2)
    async with ServerHarness(modules=MODULES, storage=storage, offline=cfg) as h:
        await h.create_user(B)
        a = await h.login(A, "r1", presence=True)
        c = await h.login(C, "r1", presence=True)
        d = await h.login(D, "r1", presence=True)
        h.send(a, chat(B, "a0"))
        h.send(a, chat(B, "a1"))
        h.send(a, chat(B, "a2"))  # over A's share
        err = await a.expect(by_id("a2"))
        assert error_condition(err) == "service-unavailable"
        assert text_of(err) == "the recipient's offline storage holds too many messages from you"
        h.send(c, chat(B, "c0", "y" * 2500))  # over the bytes of the whole storage
        err = await c.expect(by_id("c0"))
        assert text_of(err) == "the recipient's offline storage is full"
        h.send(d, chat(B, "d0"))  # a small one still fits
        assert [s for s in await d.settle() if s.get("type") == "error"] == []
        offline = h.server.module("offline")
        assert offline.count(B) == 3  # type: ignore[union-attr]
        await h.server.storage.flush()
        assert h.server.module("mam").archive.count(B) == 3  # type: ignore[union-attr]
        # Delivered: the storage is free again.
        b = await h.login(B, "r1")
        h.send(b, "<presence/>")
        assert [s.get("id") for s in await b.settle() if s.tag == "message"] == ["a0", "a1", "d0"]
        assert offline.count(B) == 0  # type: ignore[union-attr]
        h.disconnect(b)
        await b.settle()


async def test_answer_query_for_another_archive_applies_its_retention():
    # How a room archive reuses the query code: its own owner and, here, its own retention.
    from tests.harness import parse_stanza
    room = "room@conference.localhost"
    async with ServerHarness(modules=MODULES) as h:
        mam = h.server.module("mam")
        await mam.sweeper.stop()  # type: ignore[union-attr]
        now = time.time()
        await fill(h, room, 2, start=now - 600)
        recent = await fill(h, room, 2, start=now - 30)
        sent: list = []
        q = parse_stanza(f"<query xmlns='{NS_MAM}' queryid='r'/>")
        fin = mam.answer_query(room, q, A + "/r1", sent.append, retention=60.0)  # type: ignore[union-attr]
        assert [m.find("result", NS_MAM).get("id") for m in sent] == recent
        assert fin.get("complete") == "true"
        sent.clear()
        mam.answer_query(room, q, A + "/r1", sent.append)  # type: ignore[union-attr]  # 7 days
        assert len(sent) == 4


async def test_a_delivered_message_bounced_later_keeps_its_archived_copy():
    # Stream Management hands a delivered but unacknowledged message back to offline storage
    # when the session ends (another routing event); if that bounces, the copy stays archived:
    # only the routing that archived a message withdraws it.
    from mbxmpp.core import events as ev
    from mbxmpp.core.router import RouteEvent
    from mbxmpp.jid import JID
    async with ServerHarness(modules=MODULES, offline=OfflineConfig(max_messages=0)) as h:
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        routed: list = []
        h.server.hooks.add(ev.MESSAGE_BARE, lambda e: routed.append(e.stanza), -100)
        h.send(a, chat(B, "m0"))
        assert [s.get("id") for s in await b.settle() if s.tag == "message"] == ["m0"]
        again = RouteEvent(routed[0], None, JID.parse(A + "/r1"), JID.parse(B), h.server.router)
        assert h.server.hooks.fire(ev.MESSAGE_OFFLINE, again) is True  # refused: storage full
        err = await a.expect(by_id("m0"))
        assert error_condition(err) == "service-unavailable"
        await h.server.storage.flush()
        assert h.server.module("mam").archive.count(B) == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("storage_kind", ["memory", "lmdb"])
async def test_retention_boundary_to_the_microsecond(storage_kind):
    # An item exactly as old as the retention is still shown; a microsecond older is not; the
    # count (stored counter minus the unswept expired items) agrees with the items.
    from mbxmpp.modules.mam.query import parse_query, run_query
    from tests.harness import parse_stanza
    async with ServerHarness(modules=MODULES, storage=storage_kind) as h:
        await h.server.module("mam").sweeper.stop()  # type: ignore[union-attr]
        arch = h.server.module("mam").archive  # type: ignore[union-attr]
        t0 = float(int(time.time()) - 100)
        ids = await fill(h, A, 5, start=t0, step=0.000001)  # one per microsecond
        q = parse_query(parse_stanza(f"<query xmlns='{NS_MAM}'/>"))
        for k in range(6):
            page = run_query(arch, A, q, not_before=t0 + k / 1e6)
            assert [it.id for it in page.items] == ids[k:] and page.count == 5 - k
            assert page.complete
