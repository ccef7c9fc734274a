"""In-process routing of 1:1 chat messages, with and without Message Archive Management.

    python perf/bench_archive_routing.py [--messages 20000] [--repeat 3] [--no-uvloop]

A ``tests/harness.py`` ServerHarness (modules disco, roster, presence, offline, and mam for the
"mam" case) over LMDB storage (default: fully durable, fsync per commit), two users with one
available session each whose stream is a sink (it only serialises what it is sent).  N pre-parsed
``<message type='chat'>`` stanzas from a@localhost to b@localhost are routed with
``server.route_from_client`` (yielding to the loop every 500 messages, so that commits resolve),
then ``storage.flush()`` waits until every archive write is durable.  Reported: delivered messages
per second of wall time and per CPU second of this process (``time.process_time()``: the loop thread
plus the storage writer), the number of commits, the time the garbage collector took during the
timed part (full collections walk the 20,000 pre-parsed stanzas: objects kept alive until a commit,
such as per-append done-callbacks, make them more frequent), and the mam/no-mam ratio.  Runs
alternate (no-mam, mam, no-mam, mam, ...) so that machine noise hits both alike; medians are printed.
The collector is tuned as the daemon tunes it (``--default-gc``: CPython's defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mbxmpp.jid import JID  # noqa: E402
from mbxmpp.util.tuning import tune_for_serving  # noqa: E402
from tests.harness import ServerHarness, parse_stanza  # noqa: E402

BASE_MODULES = ["disco", "roster", "presence", "offline"]
BODY = "Hello there, this is a fairly ordinary chat message of typical length."
YIELD_EVERY = 500


class GcTimer:
    """CPU seconds spent in garbage collections (and how many were full ones) while enabled."""

    def __init__(self) -> None:
        self.on = False
        self.secs = 0.0
        self.full = 0
        self._t0 = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._t0 = time.process_time()
        else:
            self.secs += time.process_time() - self._t0
            self.full += info["generation"] == 2


GC = GcTimer()


class Sink:
    """Stands in for a C2SStream: serialises what it is sent, as the socket writer would."""

    def __init__(self) -> None:
        self.n = 0
        self.session: Any = None
        self.sm = None
        self.closed = False
        self.peer = "bench"  # the server notes it per session (sessions list)

    def send_stanza(self, st: Any) -> None:
        st.to_bytes()
        self.n += 1

    def close(self, error: Any = None) -> None:
        self.closed = True


async def run_once(mam: bool, n: int, tune_gc: bool = True) -> dict[str, float]:
    modules = BASE_MODULES + (["mam"] if mam else [])
    # The shipped quotas: N (20,000 by default) messages of ~100 bytes from one sender are far
    # under them (2,000,000 messages / 256 MiB a day per pair).
    async with ServerHarness(modules=modules, storage="lmdb") as h:
        server = h.server
        for u in ("a@localhost", "b@localhost"):
            await h.create_user(u)
        sa, sb = Sink(), Sink()
        A = server.bind(sa, JID.parse("a@localhost"), "ra")  # type: ignore[arg-type]
        B = server.bind(sb, JID.parse("b@localhost"), "rb")  # type: ignore[arg-type]
        sa.session, sb.session = A, B
        A.available = B.available = True
        msgs = []
        for i in range(n):
            m = parse_stanza(f"<message to='b@localhost' type='chat' id='m{i}'>"
                             f"<body>{BODY} {i}</body></message>")
            m.attrs["from"] = A.full
            m.clear_cache()
            msgs.append(m)
        await server.storage.flush()
        commits0 = getattr(server.storage, "commits", 0)
        before = gc.get_threshold()
        if tune_gc:
            tune_for_serving()  # as the daemon does once it is up
        else:
            gc.collect()
        route = server.route_from_client
        await asyncio.sleep(0)
        GC.secs, GC.full, GC.on = 0.0, 0, True
        t0, c0 = time.perf_counter(), time.process_time()
        for i, m in enumerate(msgs):
            route(m, A)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        await server.storage.flush()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        GC.on = False
        gc.unfreeze()
        gc.set_threshold(*before)
        commits = getattr(server.storage, "commits", 0) - commits0
        assert sb.n == n, f"delivered {sb.n} of {n}"
        if mam:
            ar = server.storage.archive("mam", 1)
            got = ar.count("a@localhost"), ar.count("b@localhost")
            assert got == (n, n), got
    return {"wall": n / wall, "cpu": n / cpu, "commits": commits, "gc": GC.secs, "gc2": GC.full}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--default-gc", action="store_true",
                    help="CPython's collector thresholds instead of the daemon's (util/tuning.py)")
    args = ap.parse_args()
    res: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for r in range(args.repeat):
        for mam in (False, True):
            x = await run_once(mam, args.messages, not args.default_gc)
            res[mam].append(x)
            print(f"  run {r + 1} {'mam   ' if mam else 'no mam'}: {x['wall']:9,.0f} msgs/s wall "
                  f"{x['cpu']:9,.0f} msgs/CPU-s  {x['commits']:6.0f} commits  gc {x['gc']:5.2f} s "
                  f"({x['gc2']:.0f} full)", flush=True)
    med = {k: {f: statistics.median(x[f] for x in v) for f in ("wall", "cpu", "commits", "gc", "gc2")}
           for k, v in res.items()}
    print(f"python {sys.version.split()[0]}, {args.messages:,} messages, medians of {args.repeat}:")
    for mam in (False, True):
        m = med[mam]
        print(f"  {'mam   ' if mam else 'no mam'}: {m['wall']:9,.0f} msgs/s wall "
              f"{m['cpu']:9,.0f} msgs/CPU-s  {m['commits']:6.0f} commits  gc {m['gc']:5.2f} s "
              f"({m['gc2']:.0f} full)")
    print(f"  mam/no-mam: wall {med[True]['wall'] / med[False]['wall']:.2f}, "
          f"CPU {med[True]['cpu'] / med[False]['cpu']:.2f}")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None and "--no-uvloop" not in sys.argv:
        uvloop.run(main())
    else:
        asyncio.run(main())
