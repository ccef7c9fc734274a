"""Roster fetch and presence broadcast micro-benchmark: in-process, through the real router and
the roster/presence modules, LMDB storage, no sockets.

    python perf/bench_roster_presence.py [--items 500] [--contacts 100] [-n 2000] [--repeat 3]
                                         [--profile roster|presence]

Cases:
  roster get     a user with ``--items`` roster items (name + one group, as perf/loadgen.py
                 provisions them) fetches its roster without 'ver'; the reply is serialised.
  presence       a user with ``--contacts`` mutual ('both') contacts, each with one available
                 session, sends a new available presence (with a distinct <status> each time);
                 every delivery is serialised.
Incoming stanzas are parsed before the clock starts; the sinks only call ``stanza.to_bytes()``
(what the c2s stream writes). Prints operations per CPU second of the process (and deliveries
for presence); the machine may be shared, so CPU time is the steadier measure.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mbxmpp.jid import JID  # noqa: E402
from mbxmpp.modules.roster import RosterItem  # noqa: E402
from mbxmpp.xml import XMLParser  # noqa: E402
from mbxmpp.xml.element import Element  # noqa: E402
from tests.harness import ServerHarness  # noqa: E402

DOMAIN = "localhost"


class Sink:
    """A c2s stream stand-in that serialises what it is given, as the real one writes it."""

    __slots__ = ("n", "nbytes", "last")

    def __init__(self) -> None:
        self.n = 0
        self.nbytes = 0
        self.last = b""

    def send_stanza(self, stanza: Element) -> None:
        b = stanza.to_bytes()
        self.n += 1
        self.nbytes += len(b)
        self.last = b

    def close(self, error: Any = None) -> None:
        pass


def parse_many(xml: list[str]) -> list[Element]:
    p = XMLParser()
    p.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    out = p.feed("".join(xml).encode())
    assert len(out) == len(xml)
    return out


def bind(h: ServerHarness, bare: str, resource: str) -> tuple[Any, Sink]:
    sink = Sink()
    return h.server.bind(sink, JID.parse(bare), resource), sink  # type: ignore[arg-type]


async def setup_roster(h: ServerHarness, items: int) -> tuple[Any, Sink]:
    owner = f"r0@{DOMAIN}"
    await h.create_user(owner)
    roster = h.server.module("roster")
    fut = None
    for i in range(items):
        j = f"u{i}@{DOMAIN}"
        fut = roster.set_item(owner, j, RosterItem(name=j, groups=["perf"]), push=False)
    if fut is not None:
        await fut
    return bind(h, owner, "fetch")


async def setup_presence(h: ServerHarness, contacts: int) -> tuple[Any, Sink, list[Sink]]:
    center = f"p0@{DOMAIN}"
    await h.create_user(center)
    roster = h.server.module("roster")
    fut = None
    for i in range(contacts):
        c = f"p0c{i}@{DOMAIN}"
        await h.create_user(c)
        roster.set_item(center, c, RosterItem(subscription="both"), push=False)
        fut = roster.set_item(c, center, RosterItem(subscription="both"), push=False)
    await fut
    sinks = []
    for i in range(contacts):
        s, sink = bind(h, f"p0c{i}@{DOMAIN}", "contact")
        st = parse_many(["<presence/>"])[0]
        st.attrs["from"] = s.full
        h.server.route_from_client(st, s)
        sinks.append(sink)
    cs, csink = bind(h, center, "center")
    st = parse_many(["<presence/>"])[0]
    st.attrs["from"] = cs.full
    h.server.route_from_client(st, cs)
    return cs, csink, sinks


def _timed(fn: Any, n: int, profile: bool) -> float:
    """CPU seconds of this process for fn() (the machine may be shared: wall time is noisier)."""
    gc.collect()
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    t0 = time.process_time()
    fn()
    dt = time.process_time() - t0
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return dt


async def run(args: argparse.Namespace) -> None:
    async with ServerHarness(modules=["roster", "presence", "offline", "disco", "ping"],
                             storage="lmdb") as h:
        route = h.server.route_from_client
        if args.case in ("all", "roster"):
            s, sink = await setup_roster(h, args.items)
            for rep in range(args.repeat):
                iqs = parse_many([f"<iq type='get' id='r{i}'><query xmlns='jabber:iq:roster'/></iq>"
                                  for i in range(args.n)])
                for st in iqs:
                    st.attrs["from"] = s.full

                def go() -> None:  # called in this iteration: the loop variable is current
                    for st in iqs:  # noqa: B023
                        route(st, s)

                before = sink.n
                dt = _timed(go, args.n, args.profile == "roster" and rep == args.repeat - 1)
                assert sink.n - before == args.n, (sink.n, before)
                print(f"roster get ({args.items} items): {args.n / dt:10.1f} fetches/s "
                      f"{dt / args.n * 1e6:8.1f} us/fetch  ({len(sink.last)} bytes)")
        if args.case in ("all", "presence"):
            cs, csink, sinks = await setup_presence(h, args.contacts)
            await asyncio.sleep(0.05)
            for rep in range(args.repeat):
                pres = parse_many([f"<presence id='p{rep}-{i}'><status>perf {i}</status></presence>"
                                   for i in range(args.n)])
                for st in pres:
                    st.attrs["from"] = cs.full
                before = sum(x.n for x in sinks)

                def go() -> None:  # called in this iteration: the loop variable is current
                    for st in pres:  # noqa: B023
                        route(st, cs)

                dt = _timed(go, args.n, args.profile == "presence" and rep == args.repeat - 1)
                got = sum(x.n for x in sinks) - before
                assert got == args.n * args.contacts, (got, args.n * args.contacts)
                print(f"presence ({args.contacts} contacts): {args.n / dt:10.1f} broadcasts/s "
                      f"{got / dt:12.1f} deliveries/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--contacts", type=int, default=100)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--case", choices=["all", "roster", "presence"], default="all")
    ap.add_argument("--profile", choices=["roster", "presence"], default=None)
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
