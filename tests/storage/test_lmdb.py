"""LMDB-specific behaviour: persistence, map growth, group commit, threads, other processes."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import textwrap
import threading
import time

import lmdb
import pytest

from mbxmpp.storage import keys
from mbxmpp.storage.api import open_storage
from mbxmpp.storage.lmdb_backend import LmdbStorage, apply, writer

aio = pytest.mark.asyncio
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@aio
async def test_reopen_persists_everything(tmp_path):
    st = open_storage("lmdb", str(tmp_path))
    kv, m, ar = st.keyval("acc"), st.map("priv"), st.archive("mam")
    kv.set("a@x", {"pw": "h"})
    m.set_many("a@x", {"k": 1, "j": [2]})
    sid, _ = ar.append("a@x", "msg", with_="b@y/r", when=1000.0)
    await st.close()
    assert os.path.isdir(tmp_path / "db")
    st = open_storage("lmdb", str(tmp_path))
    kv, m, ar = st.keyval("acc"), st.map("priv"), st.archive("mam")
    assert kv.get("a@x") == {"pw": "h"} and m.get_all("a@x") == {"j": [2], "k": 1}
    assert ar.get("a@x", sid) == (sid, 1000.0, "b@y/r", "msg")
    assert [i.id for i in ar.query("a@x", with_="b@y")] == [sid]
    assert ar.count("a@x") == 1 and list(ar.owners_sizes()) == [("a@x", 1)]
    await st.close()
    await st.close()  # idempotent


@aio
async def test_delete_owner_reaches_stores_not_opened(tmp_path):
    st = open_storage("lmdb", str(tmp_path))
    await st.keyval("acc").set("a@x", 1)
    await st.map("priv").set("a@x", "k", 1)
    await st.archive("mam").append("a@x", 1, with_="b@y")[1]
    await st.archive("mam").append("b@x", 2)[1]
    await st.close()
    st = open_storage("lmdb", str(tmp_path))
    await st.delete_owner("a@x")  # nothing opened in this run
    assert st.keyval("acc").get("a@x") is None and st.map("priv").get_all("a@x") == {}
    ar = st.archive("mam")
    assert ar.query("a@x") == [] and ar.query("a@x", with_="b@y") == []
    assert list(ar.owners_sizes()) == [("b@x", 1)]
    assert await ar.expire(time.time() + 5) == (1, False)
    await st.close()


@aio
async def test_map_auto_grow(tmp_path):
    st = LmdbStorage(str(tmp_path), map_size=256 * 1024)
    kv, ar = st.keyval("acc"), st.archive("mam")
    blob = os.urandom(2000)
    futs = [kv.set(f"u{i}@x", blob) for i in range(2000)]        # ~4 MB in a 256 KiB map
    futs += [ar.append("u@x", blob, with_="w@x")[1] for i in range(500)]
    await asyncio.gather(*futs)
    assert st.grows >= 4
    assert kv.get("u1999@x") == blob and kv.count() == 2000 and ar.count("u@x") == 500
    assert len(ar.query("u@x", with_="w@x", limit=600)) == 500
    await st.close()
    st = LmdbStorage(str(tmp_path), map_size=256 * 1024)  # reopens with the grown size
    assert st.keyval("acc").get("u1@x") == blob
    await st.keyval("acc").set("more@x", blob)
    await st.close()


@aio
async def test_group_commit_batches(tmp_path):
    st = LmdbStorage(str(tmp_path))
    kv = st.keyval("acc")
    await kv.set("warm@x", 1)
    c0 = st.commits
    await asyncio.gather(*(kv.set(f"u{i}@x", i) for i in range(500)))
    commits = st.commits - c0
    assert 1 <= commits <= 10, commits
    assert all(kv.get(f"u{i}@x") == i for i in range(500))
    # writers in separate tasks, each awaiting its own commit before the next write
    c0 = st.commits

    async def writer(n):
        for j in range(20):
            await kv.set(f"w{n}@x", j)
    await asyncio.gather(*(writer(n) for n in range(50)))
    assert st.commits - c0 < 1000 / 5, st.commits - c0
    await st.close()


@aio
async def test_read_your_writes_while_commit_in_flight(tmp_path, monkeypatch):
    st = LmdbStorage(str(tmp_path))
    kv, m = st.keyval("acc"), st.map("priv")
    await kv.set("a@x", 0)
    gate = threading.Event()
    real = writer.apply_items

    def slow_apply(env, txn, items):
        gate.wait(10)
        return real(env, txn, items)
    monkeypatch.setattr(writer, "apply_items", slow_apply)
    f1 = kv.set("a@x", 1)
    f2 = m.set_many("a@x", {"k": 1})
    f3 = m.delete_all("a@x")
    f4 = m.set("a@x", "k2", 2)
    await asyncio.sleep(0.05)
    assert not f1.done()
    assert kv.get("a@x") == 1 and m.get_all("a@x") == {"k2": 2} and m.get("a@x", "k") is None
    assert kv.count() == 1 and list(kv.owners()) == ["a@x"]
    gate.set()
    await asyncio.gather(f1, f2, f3, f4)
    assert kv.get("a@x") == 1 and m.get_all("a@x") == {"k2": 2}
    assert kv._pend == {} and m._pend == {}
    await st.close()


@aio
async def test_idle_only_when_every_accepted_write_is_committed(tmp_path, monkeypatch):
    """SM answers an <r/> at once only when ``idle()``: no write may be waiting for a commit."""
    st = LmdbStorage(str(tmp_path))
    kv, ar = st.keyval("acc"), st.archive("mam")
    assert st.idle()  # nothing written yet (no writer thread either)
    await kv.set("a@x", 0)
    assert st.idle()
    gate = threading.Event()
    real = writer.GroupCommitWriter._commit

    def slow_commit(self, items):
        gate.wait(10)
        return real(self, items)
    monkeypatch.setattr(writer.GroupCommitWriter, "_commit", slow_commit)
    _, fut = ar.append("a@x", [b"<message/>"], with_="b@x")
    assert not st.idle()  # buffered in this loop iteration
    await asyncio.sleep(0.05)
    assert not st.idle() and not fut.done()  # handed to the writer, commit held back
    f2 = kv.set("a@x", 1)
    gate.set()
    await asyncio.gather(fut, f2)
    assert st.idle()
    await st.close()


@aio
async def test_failed_job_does_not_fail_the_batch(tmp_path, monkeypatch):
    st = LmdbStorage(str(tmp_path))
    kv = st.keyval("acc")
    await kv.set("warm@x", 1)
    real = apply.put

    def bad_put(env, txn, op):
        if op.key == b"bad@x\0":
            raise OSError("simulated disk trouble")
        return real(env, txn, op)
    monkeypatch.setattr(apply, "put", bad_put)
    futs = [kv.set(f"u{i}@x", i) for i in range(5)] + [kv.set("bad@x", 1)] + \
           [kv.set(f"v{i}@x", i) for i in range(5)]
    res = await asyncio.gather(*futs, return_exceptions=True)
    assert isinstance(res[5], OSError) and res[:5] == [None] * 5 and res[6:] == [None] * 5
    assert kv.get("bad@x") is None  # the overlay of a failed write is dropped
    assert kv.get("u4@x") == 4 and kv.get("v4@x") == 4
    await st.close()


@aio
async def test_concurrent_reads_during_writes(tmp_path):
    st = LmdbStorage(str(tmp_path), map_size=1 << 20)  # small: remaps happen under the readers
    kv, ar = st.keyval("acc"), st.archive("mam")
    await kv.set("c@x", 0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader():
        last = 0
        try:
            while not stop.is_set():
                v = st.keyval("acc").get("c@x")
                assert v >= last
                last = v
                ar.query("u@x", limit=5, reverse=True)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    blob = b"x" * 3000
    for i in range(1, 301):
        kv.set(f"big{i}@x", blob)
        ar.append("u@x", blob)
        await kv.set("c@x", i)
        assert kv.get("c@x") == i
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert st.grows > 0
    await st.close()


def test_loops_come_and_go(tmp_path):
    st = LmdbStorage(str(tmp_path))
    kv = st.keyval("acc")

    async def job(n):
        await asyncio.gather(*(kv.set(f"u{i}@x", n) for i in range(50)))
        return kv.get("u0@x")
    assert asyncio.run(job(1)) == 1
    assert asyncio.run(job(2)) == 2
    kv.set("sync@x", 1).result(timeout=10)
    st.close_sync()


def test_newer_format_refused(tmp_path):
    LmdbStorage(str(tmp_path)).close_sync()
    env = lmdb.open(str(tmp_path / "db"), max_dbs=8)
    with env.begin(write=True, db=env.open_db(b"_meta")) as txn:
        txn.put(b"format", b"99")
    env.close()
    with pytest.raises(RuntimeError, match="newer"):
        LmdbStorage(str(tmp_path))


@pytest.mark.slow
def test_bulk_import_speed(tmp_path):
    """`user import` of 100,000 accounts: one batch per 10,000 lines, a few seconds at most."""
    st = LmdbStorage(str(tmp_path))
    kv = st.keyval("accounts")
    t0 = time.perf_counter()
    for start in range(0, 100_000, 10_000):
        with st.batch() as b:
            for i in range(start, start + 10_000):
                b.set(kv, f"user{i}@example.org", {"scram": {"salt": b"s" * 16, "i": 4096}})
    took = time.perf_counter() - t0
    assert kv.count() == 100_000 and kv.get("user99999@example.org")["scram"]["i"] == 4096
    assert took < 20, took  # ~1 s on an idle 2-CPU VM; generous for loaded CI
    assert sum(1 for _ in kv.owners_in_domain("example.org")) == 100_000
    # the same with plain set() calls and one flush
    t0 = time.perf_counter()
    for i in range(100_000):
        kv.set(f"other{i}@example.org", i)
    st.flush_sync()
    assert time.perf_counter() - t0 < 30
    assert kv.count() == 200_000
    st.close_sync()


GROW_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from mbxmpp.storage.lmdb_backend import LmdbStorage, apply, writer
    st = LmdbStorage(sys.argv[1], map_size=1 << 20)
    kv = st.keyval("acc")
    with st.batch() as b:
        for i in range(3000):
            b.set(kv, f"x{i}@other", b"y" * 2000)
    st.close_sync()
    print(st.grows)
""")


def test_other_process_grows_the_map(tmp_path):
    """The CLI may write while the server runs: a map grown elsewhere is adopted (MapResizedError)."""
    st = LmdbStorage(str(tmp_path), map_size=1 << 20)
    kv = st.keyval("acc")
    kv.set("mine@x", 1).result(timeout=10)
    out = subprocess.run([sys.executable, "-c", GROW_SCRIPT, str(tmp_path), ROOT],
                         capture_output=True, text=True, timeout=120, check=True)
    assert int(out.stdout) > 0
    assert kv.get("x2999@other") == b"y" * 2000
    assert kv.get("mine@x") == 1
    kv.set("after@x", 2).result(timeout=10)
    assert kv.count() == 3002
    st.close_sync()


@aio
async def test_differential_against_memory(tmp_path):
    """Random operations on both backends; every read must agree."""
    rnd = random.Random(1234)
    mem, db = open_storage("memory"), open_storage("lmdb", str(tmp_path))
    stores = [(s.keyval("kv"), s.map("m"), s.archive("a")) for s in (mem, db)]
    owners = ["a@x", "a@xy", "b@x", "", "ü@x"]
    withs = ["c@d", "c@d/r1", "c@d/r2", "e@f", None]
    ids: dict[str, list[str]] = {o: [] for o in owners}
    t = 1_700_000_000.0
    for step in range(3000):
        o = rnd.choice(owners)
        r = rnd.random()
        if r < 0.15:
            v = rnd.choice([None, step, {"s": step}])
            for kv, _, _ in stores:
                kv.set(o, v)
        elif r < 0.3:
            k, v = rnd.choice(["k1", "k2", "k3"]), rnd.choice([None, step])
            for _, m, _ in stores:
                m.set(o, k, v)
        elif r < 0.32:
            for _, m, _ in stores:
                m.delete_all(o)
        elif r < 0.8:
            t += rnd.choice([0, 0.000001, 0.5, 3])
            new = stores[0][2].new_id(t)
            w = rnd.choice(withs)
            for _, _, a in stores:
                a.append(o, step, with_=w, id=new)
            ids[o].append(new)
        elif r < 0.82:
            victims = rnd.sample(ids[o], min(3, len(ids[o])))
            before = rnd.choice([None, t - rnd.random() * 100])
            res = [await a.delete(o, ids=victims, before=before) for _, _, a in stores]
            assert res[0] == res[1]
        elif r < 0.83:
            budget = rnd.randint(0, 50)
            res = [await a.expire(t - 200, budget=budget) for _, _, a in stores]
            assert res[0] == res[1]
        elif r < 0.84:
            await mem.delete_owner(o)
            await db.delete_owner(o)
        else:
            await db.flush()
            (kv0, m0, a0), (kv1, m1, a1) = stores
            assert kv0.get(o) == kv1.get(o) and m0.get_all(o) == m1.get_all(o)
            assert list(kv0.owners()) == list(kv1.owners()) and kv0.count() == kv1.count()
            known = [i.id for i in a0.query(o)]
            kw = {}
            if rnd.random() < 0.5:
                kw["with_"] = rnd.choice(withs[:-1] + ["c@"])
            if rnd.random() < 0.3:
                kw["start"] = t - rnd.random() * 300
            if rnd.random() < 0.3:
                kw["end"] = t - rnd.random() * 100
            if known and rnd.random() < 0.3:
                kw[rnd.choice(["after_id", "before_id"])] = rnd.choice(known)
            if rnd.random() < 0.2:
                kw["ids"] = rnd.sample(ids[o], min(5, len(ids[o])))
            assert a0.count(o, **kw) == a1.count(o, **kw)
            kw["limit"] = rnd.choice([None, 0, 1, 7])
            kw["reverse"] = rnd.random() < 0.5
            assert a0.query(o, **kw) == a1.query(o, **kw), kw
            assert a0.first_last(o) == a1.first_last(o)
            assert list(a0.owners_sizes()) == list(a1.owners_sizes())
    await mem.close()
    await db.close()


def test_key_codecs():
    p = keys.owner_prefix("a@b")
    assert p == b"a@b\0" and keys.owner_of(p + b"rest") == "a@b"
    assert keys.prefix_end(p) == b"a@b\x01" > p + b"\xff" * 20
    assert keys.owner_prefix("a@b") < keys.owner_prefix("a@b.c") < keys.owner_prefix("a@bc")
    i = keys.ids.new(1.5)
    assert keys.id_ts_us(i) == 1_500_000 and keys.id_str_to_bytes(i.hex()) == i
    assert keys.id_str_to_bytes("zz" * 16) is None and keys.id_str_to_bytes(None) is None
    assert keys.with_hash("a@b/c") == keys.with_hash("a@b") != keys.with_hash("a@c")
    assert keys.with_matches("a@b", "a@b/c") and not keys.with_matches("a@b/d", "a@b/c")
    assert not keys.with_matches("a@b", None)
    with pytest.raises(ValueError):
        keys.ts_us(-1)


def test_under_uvloop(tmp_path):
    uvloop = pytest.importorskip("uvloop")
    st = LmdbStorage(str(tmp_path))
    kv, ar = st.keyval("acc"), st.archive("mam")

    async def main():
        await asyncio.gather(*(kv.set(f"u{i}@x", i) for i in range(200)))
        ids = [ar.append("u@x", i)[0] for i in range(100)]
        await st.flush()
        assert [i.id for i in ar.query("u@x")] == ids
        assert await ar.expire(time.time() + 5, 10) == (10, True)
        await st.delete_owner("u@x")
        return kv.get("u199@x")
    assert uvloop.run(main()) == 199
    st.close_sync()


# -- the write path: hand-off per loop iteration, shared append futures, summed counts ----------

@aio
async def test_one_iteration_is_one_hand_one_commit_one_append_future(tmp_path):
    st = LmdbStorage(str(tmp_path))
    kv, ar = st.keyval("acc"), st.archive("mam")
    await kv.set("warm@x", 1)
    c0 = st.commits
    res = [ar.append(f"u{i % 3}@x", i, with_="p@y/r") for i in range(300)]
    kf = kv.set("a@x", 1)
    res += [ar.append("u0@x", "after", id=ar.new_id())]
    futs = {id(f) for _, f in res}
    f = res[0][1]
    assert len(futs) == 1 and isinstance(f, asyncio.Future) and not f.done()
    assert kf is not f and not kf.done()
    assert await f is None and await kf is None
    assert st.commits - c0 == 1
    assert [ar.count(f"u{i}@x") for i in range(3)] == [101, 100, 100]
    assert list(ar.owners_sizes()) == [("u0@x", 101), ("u1@x", 100), ("u2@x", 100)]
    assert [i.value for i in ar.query("u1@x", with_="p@y")] == list(range(1, 300, 3))
    _, f2 = ar.append("u0@x", 1)  # the next iteration: another future
    assert f2 is not f
    await f2
    await st.close()


@aio
async def test_cancelling_an_awaiter_does_not_cancel_the_shared_future(tmp_path, monkeypatch):
    st = LmdbStorage(str(tmp_path))
    ar = st.archive("mam")
    await ar.append("warm@x", 0)[1]
    gate = threading.Event()
    real = writer.apply_items

    def slow(env, txn, items):
        gate.wait(10)
        return real(env, txn, items)
    monkeypatch.setattr(writer, "apply_items", slow)
    _, f = ar.append("u@x", 1)
    _, g = ar.append("v@x", 2)
    assert f is g
    async def wait(fut):
        return await fut
    t1 = asyncio.ensure_future(wait(f))               # a task awaiting it ...
    t2 = asyncio.ensure_future(asyncio.wait_for(g, 10))
    await asyncio.sleep(0.02)
    t1.cancel()                                       # ... is cancelled
    assert not f.cancelled() and not f.cancel()
    gate.set()
    assert await t2 is None
    with pytest.raises(asyncio.CancelledError):
        await t1
    assert f.result() is None and ar.count("u@x") == ar.count("v@x") == 1
    await st.close()


@aio
async def test_counts_and_indexes_with_other_archive_ops_in_the_same_transaction(tmp_path):
    """Appends, deletes, expiry and account deletion in one iteration (one transaction): the
    per-owner counts (summed per transaction) and the indexes stay exact."""
    rnd = random.Random(99)
    mem, db = open_storage("memory"), open_storage("lmdb", str(tmp_path))
    ars = [s.archive("a") for s in (mem, db)]
    # the count goes through zero inside the transaction: appended 2, deleted 2, appended 1
    a = ars[1]
    a.append("z@x", 1)
    a.append("z@x", 2)
    deleted = a.delete("z@x")
    a.append("z@x", 3)
    assert await deleted == 2
    await db.flush()
    assert a.count("z@x") == 1 and list(a.owners_sizes()) == [("z@x", 1)]
    await db.delete_owner("z@x")
    owners = ["a@x", "b@x", "c@x"]
    t = 1_700_000_000.0
    for _round in range(40):
        pending: list[tuple[object, object]] = []
        for _ in range(rnd.randint(1, 40)):
            o = rnd.choice(owners)
            r = rnd.random()
            if r < 0.75:
                t += rnd.choice([0.000001, 1, 10])
                new = ars[0].new_id(t)
                w, v = rnd.choice(["p@y/r", "q@y", None]), rnd.random()
                for a in ars:
                    a.append(o, v, with_=w, id=new)
            elif r < 0.85:
                before = rnd.choice([None, t - 30])
                pending.append(tuple(a.delete(o, before=before) for a in ars))
            elif r < 0.95:
                budget = rnd.randint(0, 5)
                pending.append(tuple(a.expire(t - 50, budget=budget) for a in ars))
            else:
                await mem.delete_owner(o)
                db.delete_owner_sync(o) if rnd.random() < 0.3 else await db.delete_owner(o)
        for fm, fd in pending:
            assert await fm == await fd  # type: ignore[misc]
        await db.flush()
        for o in owners:
            assert ars[0].count(o) == ars[1].count(o) == len(ars[1].query(o))
            assert ars[0].count(o, with_="p@y") == ars[1].count(o, with_="p@y")
        assert list(ars[0].owners_sizes()) == list(ars[1].owners_sizes())
    await mem.close()
    await db.close()


def test_record_head_is_the_packed_record():
    """An append's record is packed as a cached head + pack(value): the bytes of pack(version,
    [with_, value]) (the on-disk format is unchanged)."""
    from mbxmpp.storage.lmdb_backend import LmdbArchive
    from mbxmpp.storage.lmdb_backend.ops import NO_LAST_ID
    from mbxmpp.storage.records import pack
    for version, with_, value in [(1, None, [b"x"]), (3, "a@b/c", {"k": [1, 2]}),
                                  (200, "é" * 40, "s" * 300), (70000, "x", None)]:
        st = LmdbStorage.__new__(LmdbStorage)
        st._last_id = NO_LAST_ID
        ar = LmdbArchive.__new__(LmdbArchive)
        ar._s, ar.version, ar._a = st, version, None
        ar._reset_caches()
        rec = ar._prep("o@x", value, 5.0, with_, None)
        assert rec.raw == pack(version, [with_, value])
        assert rec.wkey == (None if with_ is None else b"o@x\0" + keys.with_hash(with_) + rec.id16)


def test_writes_from_two_loops_in_two_threads(tmp_path):
    st = LmdbStorage(str(tmp_path))
    kv, ar = st.keyval("acc"), st.archive("mam")
    errors: list[BaseException] = []

    def run(t: int) -> None:
        async def main() -> None:
            for i in range(50):
                futs = [ar.append(f"t{t}@x", j, with_="p@y")[1] for j in range(20)]
                futs.append(kv.set(f"t{t}@x", i))
                await asyncio.gather(*futs)
                assert kv.get(f"t{t}@x") == i
        try:
            asyncio.run(main())
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(t,)) for t in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert [ar.count(f"t{t}@x") for t in range(3)] == [1000] * 3
    ids = [i.id for i in ar.query("t0@x")]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    st.close_sync()


@aio
async def test_sync_write_in_the_loop_thread_hands_off_the_buffer_first(tmp_path):
    st = LmdbStorage(str(tmp_path))
    kv, ar = st.keyval("acc"), st.archive("mam")
    await kv.set("warm@x", 0)
    f = kv.set("a@x", 1)
    sid, g = ar.append("a@x", "m")
    st.flush_sync()  # blocks this loop; the buffered writes go first
    assert kv._pend == {} and ar.get("a@x", sid) is not None
    assert await f is None and await g is None
    await st.close()


# Appends that reuse an id replace the item (the contract): in one batch or across commits, with
# the same or another 'with'; LMDB must end where the memory reference ends (count, items, the
# with-index, owners_sizes).  The writer's putmulti path is for fresh ids only.
async def _reuse_ab(ar, nid):
    ar.append("u@x", "v1", with_="a@x", id=nid)
    await ar.append("u@x", "v2", with_="b@x", id=nid)[1]


async def _reuse_aba(ar, nid):
    ar.append("u@x", "v1", with_="a@x", id=nid)
    ar.append("u@x", "v2", with_="b@x", id=nid)
    await ar.append("u@x", "v3", with_="a@x", id=nid)[1]


async def _reuse_committed_then_ba(ar, nid):
    await ar.append("u@x", "v0", with_="a@x", id=nid)[1]
    ar.append("u@x", "v1", with_="b@x", id=nid)
    await ar.append("u@x", "v2", with_="a@x", id=nid)[1]


async def _reuse_identical_later(ar, nid):
    await ar.append("u@x", "same", with_="a@x", id=nid)[1]
    await ar.append("u@x", "same", with_="a@x", id=nid)[1]  # an import run twice


async def _reuse_identical_same_batch(ar, nid):
    ar.append("u@x", "same", with_="a@x", id=nid)
    await ar.append("u@x", "same", with_="a@x", id=nid)[1]


async def _reuse_to_no_with(ar, nid):
    ar.append("u@x", "v1", with_="a@x", id=nid)
    await ar.append("u@x", "v2", with_=None, id=nid)[1]


async def _fresh_and_reused_in_one_batch(ar, nid):
    ar.append("u@x", "f1", with_="c@x")
    ar.append("u@x", "v1", with_="a@x", id=nid)
    ar.append("u@x", "f2", with_="c@x")
    await ar.append("u@x", "v2", with_="b@x", id=nid)[1]


@aio
@pytest.mark.parametrize("scenario", [_reuse_ab, _reuse_aba, _reuse_committed_then_ba,
                                      _reuse_identical_later, _reuse_identical_same_batch,
                                      _reuse_to_no_with, _fresh_and_reused_in_one_batch])
async def test_reused_ids_replace_like_the_reference(tmp_path, scenario):
    from mbxmpp.storage.api import open_storage

    async def snapshot(st):
        ar = st.archive("mam")
        await scenario(ar, ar.new_id())
        await st.flush()
        out = {"count": ar.count("u@x"),
               "items": [(i.with_, i.value) for i in ar.query("u@x")],
               "by_with": {w: [i.value for i in ar.query("u@x", with_=w)]
                           for w in ("a@x", "b@x", "c@x")},
               "sizes": sorted(ar.owners_sizes())}
        await st.close()
        return out

    lm = LmdbStorage(str(tmp_path), sync=False)
    got = await snapshot(lm)
    assert got == await snapshot(open_storage("memory"))
    assert got["count"] == len(got["items"])


@aio
async def test_key_caches_drop_the_oldest_entry_not_everything(tmp_path, monkeypatch):
    # issue 11, item 5: caches emptied when full were refilled from empty every few thousand
    # sessions (a fresh resource per login), which fragments the heap; each now drops its oldest
    monkeypatch.setattr(keys, "_CACHE_MAX", 4)
    monkeypatch.setattr(keys, "_prefixes", {})
    monkeypatch.setattr(keys, "_with_hashes", {})
    s = open_storage("lmdb", str(tmp_path))
    try:
        ar = s.archive("t")
        withs = [f"c@x/r{i}" for i in range(6)]
        for i, w in enumerate(withs):
            keys.owner_prefix(f"o{i}@x")
            ar.append("o@x", {"n": i}, with_=w)
        await s.flush()
        assert len(keys._prefixes) == 4 and "o5@x" in keys._prefixes and "o0@x" not in keys._prefixes
        assert list(ar._wcache) == withs[2:]
        assert list(keys._with_hashes) == withs[2:]
        assert [it.value["n"] for it in ar.query("o@x", with_="c@x")] == list(range(6))
    finally:
        await s.close()


@aio
async def test_pending_writes_is_the_writer_queue_depth(tmp_path):
    # (the metrics' mbxmpp_storage_pending_writes) Writes of one loop iteration wait for the
    # hand-off to the writer at the iteration's end: all of them are pending until committed.
    st = open_storage("lmdb", str(tmp_path))
    kv, ar = st.keyval("acc"), st.archive("mam")
    assert st.pending_writes() == 0
    futs = [kv.set(f"u{i}@x", {"n": i}) for i in range(5)]
    futs.append(ar.append("u0@x", "msg", with_="b@y/r")[1])
    assert st.pending_writes() == 6
    await asyncio.gather(*futs)
    await st.flush()
    assert st.pending_writes() == 0
    await st.close()
