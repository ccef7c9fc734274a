"""Messages per second over BOSH (XEP-0124/0206) against TCP on the same daemon instance, and
the daemon's idle memory per BOSH session (and per TCP one):
``python perf/bench_bosh.py [--pairs 10] [--window 8] [--seconds 10] [--rounds 2] [--idle 200]``.

The real daemon (tests/daemon.py) with bench_websocket.py's messaging idea: ``pairs`` pairs of
users chat to each other's full JID, closed loop with ``window`` messages in flight per sender.
TCP runs over direct TLS (the c2s port); BOSH over https://…/http-bind, as a browser's client
does it: one empty request always held open for the server to answer (``hold='1'``), and the
messages a sender may send go in one body with the next rid (so at most ``requests`` = 2 open
per session). The load generator is thin (it shares the 2 cores with the server): it posts
pre-built bodies and counts ``<message`` in the responses.

Idle memory: ``--idle`` sessions logged in and bound (the pairs' accounts, several resources
each), each BOSH one with its request held; the daemon's RSS before and after, divided.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import statistics
import sys
from typing import Callable

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perf.bench_websocket import Client as TCPClient
from perf.bench_websocket import closed_loop, record_latency, stamped
from perf.bench_websocket import run as run_stream
from tests.daemon import Daemon
from tests.rawclient import client_ssl

PW = "bench-pw"
PATTERN = b"<message"
NS = "xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'"
_SID = re.compile(rb"""sid=['"]([^'"]+)""")


class BoshClient:
    """One BOSH session; ``received`` counts <message elements in the responses."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.rid = 1_000_000 + int.from_bytes(os.urandom(3), "big")
        self.sid = ""
        self.received = 0
        self.wake = asyncio.Event()
        self.running = True
        self.latency: list[int] | None = None  # set to a list: stamped messages' latency (ns)

    async def post(self, attrs: str = "", payload: str = "") -> bytes:
        rid, self.rid = self.rid, self.rid + 1
        sid = f" sid='{self.sid}'" if self.sid else ""
        body = f"<body {NS} rid='{rid}'{sid} {attrs}>{payload}</body>"
        async with self.http.post(self.url, data=body) as r:
            data = await r.read()
        n = data.count(PATTERN)
        if n:
            self.received += n
            self.wake.set()
            if self.latency is not None:
                record_latency(self.latency, data, b"")
        return data

    @classmethod
    async def login(cls, http: aiohttp.ClientSession, port: int, user: str,
                    resource: str = "bench", pw: str = PW) -> tuple[BoshClient, str]:
        c = cls(http, f"https://127.0.0.1:{port}/http-bind")
        first = await c.post("to='localhost' ver='1.11' wait='60' hold='1' xmpp:version='1.0'")
        c.sid = _SID.search(first).group(1).decode()  # type: ignore[union-attr]
        token = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
        assert b"<success" in await c.post(
            payload=f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        assert b"features" in await c.post("xmpp:restart='true'")
        assert b"</jid>" in await c.post(payload=(
            "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:"
            f"xmpp-bind'><resource>{resource}</resource></bind></iq>"))
        return c, f"{user}@localhost/{resource}"

    async def send_messages(self, to_jid: str, n: int) -> None:
        await self.post(payload=stamped(to_jid, n))

    async def poll(self) -> None:
        """One empty request always open: the server's way to reach us."""
        while self.running:
            await self.post()


async def bosh_sender(frm: BoshClient, to: BoshClient, to_jid: str, window: int, stop: float) -> int:
    one = f"<message xmlns='jabber:client' to='{to_jid}' type='chat'><body>hello over the wire</body></message>"
    sent = 0
    loop = asyncio.get_running_loop()
    while loop.time() < stop:
        room = window - (sent - to.received)
        if room > 0:
            sent += room
            await frm.post(payload=one * room)
        else:
            to.wake.clear()
            try:
                await asyncio.wait_for(to.wake.wait(), 5)
            except TimeoutError:
                raise RuntimeError("messages stopped arriving") from None
    return sent


async def run_bosh(daemon: Daemon, pairs: int, window: int, seconds: float) -> float:
    conn = aiohttp.TCPConnector(ssl=client_ssl(), limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        clients = [await BoshClient.login(http, daemon.http, f"u{i}") for i in range(2 * pairs)]
        pollers = [asyncio.ensure_future(c.poll()) for c, _ in clients]
        await asyncio.sleep(0.3)
        rate = await closed_loop(clients, bosh_sender, window, seconds)
        for c, _ in clients:
            c.running = False
            await c.post("type='terminate'")
        await asyncio.gather(*pollers, return_exceptions=True)
    return rate


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def idle_memory(daemon: Daemon, users: int, n: int, rss: Callable[[], int] | None = None,
                      pw: str = PW) -> tuple[float, float]:
    """KiB of server RSS per idle bound session: (BOSH, TCP). ``daemon``: anything with the
    ``http`` and ``tls`` ports (perf/bench_web.py's peers too, with their ``rss`` in KiB)."""
    if rss is None:
        assert daemon.proc is not None
        pid = daemon.proc.pid
        rss = lambda: rss_kib(pid)  # noqa: E731
    out = []
    conn = aiohttp.TCPConnector(ssl=client_ssl(), limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        await asyncio.sleep(1.0)
        before = rss()
        clients = [await BoshClient.login(http, daemon.http, f"u{i % users}", f"idle{i}", pw)
                   for i in range(n)]
        pollers = [asyncio.ensure_future(c.poll()) for c, _ in clients]
        await asyncio.sleep(2.0)
        out.append((rss() - before) / n)
        for c, _ in clients:
            c.running = False
            await c.post("type='terminate'")
        await asyncio.gather(*pollers, return_exceptions=True)
    await asyncio.sleep(1.0)
    before = rss()
    tcp = [await TCPClient.login(daemon, f"u{i % users}", False, f"idle{i}", pw) for i in range(n)]
    await asyncio.sleep(2.0)
    out.append((rss() - before) / n)
    for stream, _ in tcp:
        stream.writer.close()
    return out[0], out[1]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--idle", type=int, default=200)
    args = ap.parse_args()
    daemon = Daemon(c2s_extra="max_unauthenticated_per_ip = 1000",
                    extra="[limits]\nbosh_sessions_per_address_burst = 100000\n")
    for i in range(2 * args.pairs):
        daemon.add_user(f"u{i}@localhost", PW)
    daemon.start()
    try:
        rates: dict[str, list[float]] = {"tcp": [], "bosh": []}
        for r in range(args.rounds):
            for kind in (("tcp", "bosh") if r % 2 == 0 else ("bosh", "tcp")):
                if kind == "bosh":
                    rate = await run_bosh(daemon, args.pairs, args.window, args.seconds)
                else:  # bench_websocket's TCP run (direct TLS)
                    rate, _cpu = await run_stream(daemon, False, args.pairs, args.window, args.seconds, r)
                rates[kind].append(rate)
                print(f"round {r + 1} {kind:4}: {rate:9.0f} msgs/s", flush=True)
        tcp, bosh = statistics.median(rates["tcp"]), statistics.median(rates["bosh"])
        print(f"median: tcp {tcp:.0f} msgs/s, bosh {bosh:.0f} msgs/s, ratio bosh/tcp {bosh / tcp:.2f}")
        if args.idle:
            per_bosh, per_tcp = await idle_memory(daemon, 2 * args.pairs, args.idle)
            print(f"idle memory per session ({args.idle} sessions): bosh {per_bosh:.1f} KiB, "
                  f"tcp {per_tcp:.1f} KiB")
    finally:
        daemon.finish()


if __name__ == "__main__":
    asyncio.run(main())
