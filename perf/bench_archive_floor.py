"""What LMDB alone charges for archiving one 1:1 message: the floor under mbxmpp's archive writer.

    python perf/bench_archive_floor.py [--preload 1000000] [--messages 200000] [--batch 800]
                                       [--layout full|items] [--no-sync]

No mbxmpp code runs: a scratch LMDB environment gets the archive's write pattern straight from
py-lmdb, with every record built before the clock starts. Per message two records (the sender's and
the recipient's copy), each an item keyed owner + time-ordered id (``--layout items``) plus, in the
``full`` layout that mbxmpp uses, a time-index entry (retention sweep) and a with-index entry
(``with`` queries). Records are written with one ``putmulti`` per database in group commits of
``--batch`` records, fsync'd unless ``--no-sync``. The archive is first filled with ``--preload``
messages over 1,000 owners; the timed messages go between 50 fixed pairs of them, like the
``messaging`` scenario's pairs. Reported: CPU time of this process per message (user and system).

Set against the server CPU per routed message of the core benchmark (``messaging``), this bounds
from above what any archive on this layout can keep of the routing rate on one core.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import tempfile
import time

import lmdb

VALUE = os.urandom(280)  # a msgpack'd chat message is about this size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preload", type=int, default=1_000_000)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=800, help="records per commit")
    ap.add_argument("--layout", choices=("full", "items"), default="full")
    ap.add_argument("--no-sync", action="store_true", help="no fsync per commit")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        env = lmdb.open(d, map_size=16 << 30, max_dbs=4, sync=not a.no_sync, readahead=False)
        dbs = [env.open_db(b"items")]
        if a.layout == "full":
            dbs += [env.open_db(b"time"), env.open_db(b"with")]
        owners = [os.urandom(8) + b"\0" for _ in range(1000)]
        seq = [0]

        def records(n: int, pairs: list[tuple[bytes, bytes]]) -> list[list[tuple[bytes, bytes]]]:
            """Per database, the (key, value) pairs of n messages."""
            per_db: list[list[tuple[bytes, bytes]]] = [[] for _ in dbs]
            for _ in range(n):
                seq[0] += 1
                id16 = struct.pack(">QQ", time.time_ns(), seq[0])
                x, y = random.choice(pairs)
                for owner, other in ((x, y), (y, x)):
                    per_db[0].append((owner + id16, VALUE))
                    if len(dbs) > 1:
                        per_db[1].append((id16 + owner[:-1], b""))
                        per_db[2].append((owner + other[:8] + id16, b""))
            return per_db

        def commit(per_db: list[list[tuple[bytes, bytes]]]) -> None:
            with env.begin(write=True) as txn:
                for db, kv in zip(dbs, per_db):
                    txn.cursor(db=db).putmulti(kv, overwrite=False)

        every_pair = [(owners[i], owners[j]) for i in range(0, 1000, 2) for j in (i + 1,)]
        t = time.monotonic()
        for _ in range(a.preload // 5000):
            commit(records(5000, every_pair))
        print(f"preloaded {a.preload:,} messages in {time.monotonic() - t:.1f} s")
        pairs = every_pair[:50]
        per_commit = max(1, a.batch // 2)
        batches = [records(per_commit, pairs) for _ in range(a.messages // per_commit)]
        n = len(batches) * per_commit
        t0, w0 = os.times(), time.monotonic()
        for b in batches:
            commit(b)
        t1, w1 = os.times(), time.monotonic()
        user = (t1.user - t0.user) / n * 1e6
        sys_ = (t1.system - t0.system) / n * 1e6
        print(f"layout {a.layout}, {'no fsync' if a.no_sync else 'fsync'} per commit, "
              f"{len(batches)} commits of {2 * per_commit} records: "
              f"{user + sys_:.2f} us CPU per message (user {user:.2f}, system {sys_:.2f}); "
              f"wall {(w1 - w0) / n * 1e6:.2f} us")


if __name__ == "__main__":
    main()
