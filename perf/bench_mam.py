"""MAM query benchmark (stand-alone): ``python perf/bench_mam.py [--full]``.

Fills an LMDB archive (the MAM module's store) with N messages across U users through the storage
API, then times the query a client makes when it opens a chat: the last page of 50 (RSM
``<before/>``), through the module's code path:

* ``module``: ``MAM.answer_query`` (form/RSM parsing, storage scan, count, decoding the archived
  stanzas, building the 50 result messages) with each result serialised to bytes;
* ``router``: the whole IQ as a client sends it: Router -> IQ dispatch -> module -> session, every
  stanza serialised as it would go on the wire;
* extra rows: the last page with one contact (the ``with`` index) and a page of 50 after an id in
  the middle of the archive.

Default 100,000 messages / 100 users; ``--full`` = 1,000,000 / 1,000.  Reports p50/p99 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import shutil
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mbxmpp.config import Config, ServerConfig  # noqa: E402
from mbxmpp.jid import JID  # noqa: E402
from mbxmpp.server import Server  # noqa: E402
from mbxmpp.xml import PyXMLParser  # noqa: E402
from mbxmpp.xml.element import Element  # noqa: E402
from perf import mamfill  # noqa: E402

DOMAIN = "example.org"


def parse(xml: str) -> Element:
    p = PyXMLParser()
    p.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    (el,) = p.feed(xml.encode())
    return el  # type: ignore[no-any-return]


class Sink:
    """A bound session's stream: serialises what it is given, as the c2s stream would."""

    def __init__(self) -> None:
        self.bytes = 0
        self.stanzas = 0

    def send_stanza(self, st: Element) -> None:
        self.bytes += len(st.to_bytes())
        self.stanzas += 1

    def close(self, error: Any = None) -> None:
        pass


async def fill(server: Server, n: int, users: int) -> list[str]:
    owners = [f"user{u}@{DOMAIN}" for u in range(users)]
    took = await mamfill.fill_async(server.storage, n, owners)
    print(f"filled {n:,} messages over {users:,} users in {took:.1f} s "
          f"({n / took:,.0f} appends/s, batches of {mamfill.CHUNK:,})")
    return owners


def measure(name: str, samples: int, fn: Callable[[int], int]) -> None:
    lat = []
    items = 0
    for k in range(samples):
        t = time.perf_counter_ns()
        items += fn(k)
        lat.append((time.perf_counter_ns() - t) / 1e6)
    lat.sort()
    p50 = lat[len(lat) // 2]
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"  {name:<38} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   ({items / samples:.0f} results)")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="1,000,000 messages over 1,000 users")
    ap.add_argument("--messages", type=int)
    ap.add_argument("--users", type=int)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--dir", help="data directory (default: a temporary one, removed after)")
    a = ap.parse_args()
    n = a.messages or (1_000_000 if a.full else 100_000)
    users = a.users or (1_000 if a.full else 100)
    tmp = a.dir or tempfile.mkdtemp(prefix="bench-mam-")
    cfg = dataclasses.replace(Config(), server=ServerConfig(domains=(DOMAIN,), data_dir=tmp,
                                                            modules=("mam",)))
    server = Server(cfg, storage_kind="lmdb")
    server.load_modules()  # no start(): no retention sweep during the run
    try:
        owners = await fill(server, n, users)
        await server.storage.flush()
        mam: Any = server.module("mam")
        rnd = random.Random(1)
        pick = [rnd.choice(owners) for _ in range(a.samples)]
        sink = Sink()
        last_page = parse("<query xmlns='urn:xmpp:mam:2' queryid='q'><set xmlns="
                          "'http://jabber.org/protocol/rsm'><max>50</max><before/></set></query>")

        def module_last(k: int) -> int:
            s0 = sink.stanzas
            fin = mam.answer_query(pick[k], last_page, pick[k] + "/phone", sink.send_stanza)
            fin.to_bytes()
            return sink.stanzas - s0

        with_q = parse("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>"
                       "<field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>"
                       "<field var='with'><value>contact3@other.example</value></field></x>"
                       "<set xmlns='http://jabber.org/protocol/rsm'><max>50</max><before/></set>"
                       "</query>")

        def module_with(k: int) -> int:
            s0 = sink.stanzas
            mam.answer_query(pick[k], with_q, pick[k] + "/phone", sink.send_stanza).to_bytes()
            return sink.stanzas - s0

        mids = {}
        for o in set(pick):
            items = mam.archive.query(o)
            mids[o] = items[len(items) // 2].id

        def module_middle(k: int) -> int:
            q = parse("<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>"
                      f"<max>50</max><after>{mids[pick[k]]}</after></set></query>")
            s0 = sink.stanzas
            mam.answer_query(pick[k], q, pick[k] + "/phone", sink.send_stanza).to_bytes()
            return sink.stanzas - s0

        # The whole IQ path: one bound session per sampled user.
        streams: dict[str, Sink] = {}
        sessions = {}
        for o in set(pick):
            streams[o] = Sink()
            sessions[o] = server.sessions.bind(JID.parse(o), streams[o],  # type: ignore[arg-type]
                                               "phone")
        iq_xml = ("<iq type='set' id='mam1' from='{o}/phone'><query xmlns='urn:xmpp:mam:2' "
                  "queryid='q'><set xmlns='http://jabber.org/protocol/rsm'><max>50</max><before/>"
                  "</set></query></iq>")

        iqs = [parse(iq_xml.format(o=o)) for o in pick]  # what the tokenizer hands over

        def router_last(k: int) -> int:
            o = pick[k]
            s0 = streams[o].stanzas
            server.router.route(iqs[k], sessions[o])
            return streams[o].stanzas - s0 - 1  # minus the IQ result

        per_user = n // users
        print(f"MAM query latency, {a.samples} samples over random users "
              f"(~{per_user:,} messages each, {mamfill.CONTACTS} contacts):")
        measure("last page of 50 (module)", a.samples, module_last)
        measure("last page of 50 (router, full IQ)", a.samples, router_last)
        measure("last 50 with one contact (module)", a.samples, module_with)
        measure("50 after an id mid-archive (module)", a.samples, module_middle)
    finally:
        await server.storage.close()
        if not a.dir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
