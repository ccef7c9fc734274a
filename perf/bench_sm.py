"""Stream Management's cost on the server, in process: ``python perf/bench_sm.py [--pairs 50]``.

Real ``C2SStream`` objects of a real ``Server`` (modules as in the perf suite's messaging, plus
``sm``; LMDB storage), fed bytes as the c2s connection would feed them, without sockets or TLS:
the part of the server that Stream Management touches (parsing the nonzas, counting, queueing,
answering).  ``pairs`` pairs of users, each logged in once; every round each user sends
``window`` chat messages to its partner in one chunk (the way a pipelining client's writes
arrive); with SM on, a user appends ``<r/>`` after every ``r_every`` stanzas it sent and answers
each ``<r/>`` the server appended to its output with ``<a h/>`` in its next chunk (as
``perf/xmppclient.py`` does).  The collector is tuned as the daemon tunes it
(``--default-gc``: CPython's defaults).  Reported: CPU microseconds per delivered message of
this process (the loop thread, plus the storage writer if anything was written) with and
without SM, and the ratio.  Runs alternate (plain, sm, plain, sm ...); medians and minima are printed.

The over-the-wire figure is ``python -m perf.run --scenarios sm_sessions``; this one leaves out
TLS, the sockets and the load generator (whose noise on a 2-core machine is as large as the
difference to measure) and shows what the server's own code adds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import gc
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mbxmpp.config import Config, ServerConfig  # noqa: E402
from mbxmpp.server import Server  # noqa: E402
from mbxmpp.stream.c2s import ST_READY, C2SStream  # noqa: E402
from mbxmpp.util.tuning import tune_for_serving  # noqa: E402

DOMAIN = "example.org"
MODULES = ("roster", "presence", "offline", "disco", "ping")
HEADER = (f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          f"xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>").encode()
BODY = "Hello there, this is a fairly ordinary chat message of typical length."
SM_R = b"<r xmlns='urn:xmpp:sm:3'/>"


class Client:
    """One end of a c2s stream: what the server writes is counted, not parsed (the ``<r/>``
    requests excepted, which are answered in the next chunk)."""

    def __init__(self, server: Server, user: str) -> None:
        self.user = user
        self.out: list[bytes] = []
        self.stream = C2SStream(server, self.out.append, secure=True)
        self.received = 0
        self.sent = 0
        self.pending_r = 0

    async def login(self, sm: bool) -> None:
        s = self.stream
        s.receive_data(HEADER)
        tok = base64.b64encode(f"\0{self.user}\0pw".encode()).decode()
        s.receive_data(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                       f"{tok}</auth>".encode())
        for _ in range(100):  # PLAIN checks the password in an executor
            await asyncio.sleep(0.01)
            if any(b"<success" in o for o in self.out):
                break
        s.receive_data(HEADER)
        s.receive_data(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                       b"<resource>r</resource></bind></iq>")
        assert s.stage == ST_READY, b"".join(self.out)[-300:]
        s.receive_data(b"<presence/>")
        if sm:
            s.receive_data(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            assert s.sm is not None
        self.out.clear()

    def drain(self) -> None:
        """Count what the server wrote: messages delivered and <r/> requests to answer."""
        for o in self.out:
            self.received += o.count(b"<message ")
            if SM_R in o:
                self.pending_r += 1
        self.out.clear()


def chunk(frm: Client, to: str, window: int, r_every: int, sm: bool, seq: list[int]) -> bytes:
    parts = []
    if sm and frm.pending_r:
        h = frm.received  # every stanza the client got is a message here
        parts.append(f"<a xmlns='urn:xmpp:sm:3' h='{h}'/>".encode())
        frm.pending_r = 0
    for _ in range(window):
        seq[0] += 1
        parts.append(f"<message to='{to}' type='chat' id='m{seq[0]}'><body>{BODY}</body>"
                     f"</message>".encode())
        frm.sent += 1
        if sm and r_every and frm.sent % r_every == 0:
            parts.append(SM_R)
    return b"".join(parts)


async def run_once(sm: bool, pairs: int, window: int, rounds: int, r_every: int,
                   tune_gc: bool = True) -> dict[str, float]:
    tmp = tempfile.mkdtemp(prefix="bench-sm-")
    modules = MODULES + (("sm",) if sm else ())
    cfg = dataclasses.replace(Config(), server=ServerConfig(domains=(DOMAIN,), data_dir=tmp,
                                                            modules=modules))
    server = Server(cfg, storage_kind="lmdb")
    server.load_modules()
    users = [f"u{i}@{DOMAIN}" for i in range(2 * pairs)]
    for u in users:
        await server.accounts.create(u, "pw")
    clients = [Client(server, u.split("@")[0]) for u in users]
    for c in clients:
        await c.login(sm)
    await server.storage.flush()
    seq = [0]
    before = gc.get_threshold()
    if tune_gc:
        tune_for_serving()  # as the daemon does once it is up
    else:
        gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        for i in range(0, len(clients), 2):
            a, b = clients[i], clients[i + 1]
            a.stream.receive_data(chunk(a, users[i + 1] + "/r", window, r_every, sm, seq))
            b.stream.receive_data(chunk(b, users[i] + "/r", window, r_every, sm, seq))
        for c in clients:
            c.drain()
        await asyncio.sleep(0)  # writes coalesce per loop iteration on the wire too
    await server.storage.flush()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    gc.unfreeze()
    gc.set_threshold(*before)
    got = sum(c.received for c in clients)
    want = rounds * window * len(clients)
    assert got == want, f"delivered {got} of {want}"
    if sm:
        for c in clients:
            assert len(c.stream.sm.queue) <= window + c.stream.sm.request_every, len(c.stream.sm.queue)
    await server.storage.close()
    return {"us_cpu": cpu / got * 1e6, "us_wall": wall / got * 1e6}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--r-every", type=int, default=5, help="client <r/> every N stanzas (0: never)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--default-gc", action="store_true",
                    help="CPython's collector thresholds instead of the daemon's (util/tuning.py)")
    ap.add_argument("--only", choices=("plain", "sm"),
                    help="one kind only, e.g. to count instructions under valgrind: the "
                         "difference between two --rounds is the cost of the extra messages")
    a = ap.parse_args()
    res: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    kinds = (False, True) if a.only is None else (a.only == "sm",)
    for r in range(a.repeat):
        for sm in kinds if r % 2 == 0 else kinds[::-1]:
            x = await run_once(sm, a.pairs, a.window, a.rounds, a.r_every, not a.default_gc)
            res[sm].append(x)
            print(f"  run {r + 1} {'sm   ' if sm else 'plain'}: {x['us_cpu']:6.2f} us CPU/msg "
                  f"({1e6 / x['us_cpu']:9,.0f} msgs/CPU-s)", flush=True)
    if a.only is not None:
        return
    med = {k: statistics.median(x["us_cpu"] for x in v) for k, v in res.items()}
    low = {k: min(x["us_cpu"] for x in v) for k, v in res.items()}
    n = a.rounds * a.window * 2 * a.pairs
    print(f"python {sys.version.split()[0]}, {n:,} messages per run, medians of {a.repeat}:")
    print(f"  plain: {med[False]:6.2f} us CPU/msg   sm: {med[True]:6.2f} us CPU/msg   "
          f"sm/plain CPU {med[True] / med[False]:.3f}  (throughput ratio {med[False] / med[True]:.3f})")
    print(f"  minima: plain {low[False]:6.2f}, sm {low[True]:6.2f} us CPU/msg: throughput ratio "
          f"{low[False] / low[True]:.3f} (the minimum is the least disturbed run)")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None:
        uvloop.run(main())
    else:
        asyncio.run(main())
