"""Storage benchmarks (stand-alone): ``python perf/bench_storage.py [--scale 1000000]``.

1. group commit: archive appends/s with 1, 10, 100 concurrent writers, each awaiting its commit
   (fsync per commit, as in production) and the mean batch size; then archiving as MAM does it
   (appends not awaited, 1,000 per loop iteration, two owners): appends/s and CPU µs per append
   (this process: loop thread + writer thread), and keyval sets the same way;
2. inline keyval get latency, and the raw LMDB cost of a short read transaction vs a reused one
   (the reason reads use short transactions);
3. bulk import: 100,000 keyval records through ``storage.batch()``;
4. archive queries on an archive of ``--scale`` messages over ``--users`` users: the last 50 items
   (RSM <before/>), the last 50 with one contact, a page of 50 after an id in the middle, and the
   total count; p50/p99 over random users.

Default scale 100,000 (under a minute); ``--scale 1000000`` is the reference figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mbxmpp.storage.lmdb_backend import LmdbStorage  # noqa: E402

STANZA = (b"<message xmlns='jabber:client' from='alice@example.org/phone' to='bob@example.org' "
          b"type='chat' id='a1b2c3d4e5'><body>" + b"Hello there, this is a fairly ordinary chat "
          b"message of typical length." + b"</body><active xmlns='http://jabber.org/protocol/"
          b"chatstates'/><origin-id xmlns='urn:xmpp:sid:0' id='a1b2c3d4e5'/></message>")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def us(x: float) -> str:
    return f"{x * 1e6:8.1f} µs"


async def bench_group_commit(st: LmdbStorage, duration: float) -> None:
    ar = st.archive("bench_gc")
    print("group commit (archive append, await each, fsync per commit):")
    for writers in (1, 10, 100):
        done = 0
        stop = time.perf_counter() + duration
        c0 = st.commits

        async def writer(n: int) -> None:
            nonlocal done
            while time.perf_counter() < stop:  # noqa: B023 (awaited in this iteration)
                await ar.append(f"w{n}@example.org", STANZA, with_="peer@example.net/r")[1]
                done += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(writer(n) for n in range(writers)))
        took = time.perf_counter() - t0
        commits = st.commits - c0
        print(f"  {writers:3d} writers: {done / took:9.0f} appends/s, {commits / took:7.0f} commits/s,"
              f" {done / max(commits, 1):6.1f} appends/commit")


async def bench_fire_and_forget(st: LmdbStorage, n: int = 100_000, per_iter: int = 1000) -> None:
    """The archive write path as MAM uses it: append, keep the future, do not await it."""
    ar, kv = st.archive("bench_ff"), st.keyval("bench_ff")
    await st.flush()
    for label, op in (("archive append", lambda i: ar.append("alice@example.org" if i & 1 else
                                                             "bob@example.org", [STANZA],
                                                             with_="peer@example.net/r")[1]),
                      ("keyval set", lambda i: kv.set(f"u{i % 5000}@example.org", {"n": i}))):
        best = None
        for _ in range(3):
            c0, t0, p0 = st.commits, time.perf_counter(), time.process_time()
            for start in range(0, n, per_iter):
                for i in range(start, start + per_iter):
                    op(i)
                await asyncio.sleep(0)
            await st.flush()
            wall, cpu = time.perf_counter() - t0, time.process_time() - p0
            if best is None or cpu < best[1]:
                best = (wall, cpu, st.commits - c0)
        wall, cpu, commits = best  # type: ignore[misc]
        print(f"  {label}, not awaited ({per_iter}/iteration): {n / wall:9,.0f} /s wall, "
              f"{cpu / n * 1e6:5.2f} µs CPU each, {commits} commits (best of 3)")


async def bench_get(st: LmdbStorage, n: int = 200_000) -> None:
    kv = st.keyval("bench_kv")
    async with st.batch() as b:
        for i in range(10_000):
            b.set(kv, f"user{i}@example.org", {"scram": {"salt": os.urandom(16), "i": 4096},
                                               "plan": "free"})
    names = [f"user{random.randrange(10_000)}@example.org" for _ in range(n)]
    t0 = time.perf_counter()
    for name in names:
        kv.get(name)
    mean = (time.perf_counter() - t0) / n
    lat = []
    for name in names[:20_000]:
        t = time.perf_counter_ns()
        kv.get(name)
        lat.append((time.perf_counter_ns() - t) / 1e9)
    print(f"keyval get (inline, short read txn, decode): mean {us(mean)}, p50 {us(pct(lat, .5))},"
          f" p99 {us(pct(lat, .99))}")
    env, db, key = st._env.env, kv._db, b"user5000@example.org\0"
    t0 = time.perf_counter()
    for _ in range(n):
        with st._env.rlock:
            txn = env.begin(db=db)
            txn.get(key)
            txn.abort()
    short = (time.perf_counter() - t0) / n
    txn = env.begin(db=db)
    t0 = time.perf_counter()
    for _ in range(n):
        txn.get(key)
    reused = (time.perf_counter() - t0) / n
    txn.abort()
    print(f"  raw lmdb: short txn + lock {us(short)} vs reused txn {us(reused)} per get")


def bench_import(st: LmdbStorage) -> None:
    kv = st.keyval("bench_import")
    t0 = time.perf_counter()
    for start in range(0, 100_000, 10_000):
        with st.batch() as b:
            for i in range(start, start + 10_000):
                b.set(kv, f"user{i}@example.org", {"scram": {"salt": b"s" * 16, "i": 4096}})
    took = time.perf_counter() - t0
    print(f"bulk import: 100,000 keyval records in {took:.2f} s (batches of 10,000, sync mode)")


async def bench_archive(st: LmdbStorage, scale: int, users: int, samples: int) -> None:
    ar = st.archive("bench_mam")
    peers = [f"peer{i}@example.net" for i in range(20)]
    t0 = time.perf_counter()
    now = time.time() - scale * 0.01
    step = 10_000
    for start in range(0, scale, step):
        async with st.batch() as b:
            for i in range(start, min(scale, start + step)):
                b.append(ar, f"user{i % users}@example.org", STANZA, when=now + i * 0.01,
                         with_=peers[(i // users) % len(peers)] + "/res")
    fill = time.perf_counter() - t0
    print(f"archive: {scale:,} messages over {users:,} users filled in {fill:.1f} s "
          f"({scale / fill:,.0f} appends/s in batches), map {st._env.env.info()['map_size'] >> 20} MiB, "
          f"used {os.path.getsize(os.path.join(st.path, 'data.mdb')) >> 20} MiB")
    owners = [f"user{random.randrange(users)}@example.org" for _ in range(samples)]
    mids = {}
    for o in set(owners):
        items = ar.query(o, limit=ar.count(o) // 2 + 1)
        mids[o] = items[-1].id

    def measure(name: str, fn: object) -> None:
        lat = []
        for o in owners:
            t = time.perf_counter_ns()
            res = fn(o)  # type: ignore[operator]
            lat.append((time.perf_counter_ns() - t) / 1e9)
            assert res
        print(f"  {name:38s} p50 {us(pct(lat, .5))}  p99 {us(pct(lat, .99))}")
    print(f"  per user ~{scale // users} messages; {samples} random users:")
    measure("last 50 (reverse, limit 50)", lambda o: ar.query(o, limit=50, reverse=True))
    measure("last 50 with one contact (bare)", lambda o: ar.query(o, with_=peers[3], limit=50,
                                                                 reverse=True))
    measure("50 after an id in the middle", lambda o: ar.query(o, after_id=mids[o], limit=50))
    measure("count (no filter)", lambda o: ar.count(o) + 1)
    measure("count with contact", lambda o: ar.count(o, with_=peers[3]) + 1)
    t0 = time.perf_counter()
    deleted, more = await ar.expire(now + scale * 0.01 * 0.1, budget=1000)
    print(f"  expire budget 1000: {deleted} deleted in {(time.perf_counter() - t0) * 1e3:.1f} ms"
          f" (writer thread, incl. commit), more={more}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scale", type=int, default=100_000, help="archive messages (default 100000)")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per group-commit run")
    ap.add_argument("--dir", help="data directory (default: a temporary one, removed after)")
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args()
    d = args.dir or tempfile.mkdtemp(prefix="mbxmpp-bench-")
    try:
        st = LmdbStorage(d)
        print(f"python {sys.version.split()[0]}, data in {d}")
        await bench_group_commit(st, args.duration)
        await bench_fire_and_forget(st)
        await bench_get(st)
        await asyncio.get_running_loop().run_in_executor(None, bench_import, st)
        await bench_archive(st, args.scale, args.users, args.samples)
        await st.close()
    finally:
        if not args.dir:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None and "--no-uvloop" not in sys.argv:
        uvloop.run(main())
    else:
        asyncio.run(main())
