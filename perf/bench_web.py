"""Messages/s and p99 latency over TCP, WebSocket and BOSH, mbxmpp against Prosody and ejabberd
on the same box: ``python perf/bench_web.py [--servers mbxmpp,prosody,ejabberd] [--pairs 10]
[--window 8] [--seconds 5] [--rate 1000] [--idle 200]``.

Each server is configured and started by perf/servers.py (``web = True``: WebSocket at
/xmpp-websocket and BOSH at /http-bind over HTTPS on one port; Prosody's "websocket" and "bosh"
modules, ejabberd's ejabberd_http listener with ejabberd_http_ws and mod_bosh), pinned to core 0
like the perf suite's runs. The clients are bench_websocket.py's (TCP = direct TLS, wss://) and
bench_bosh.py's (https://, one request held): ``pairs`` pairs of users chat to each other's full
JID. Per server and transport:

- closed loop: ``window`` messages in flight per sender for ``seconds``: delivered messages/s,
  and the server's CPU time per delivered message (/proc; ejabberd's beam process);
- open loop: ``--rate`` messages/s offered in total, spread over the senders (each sends what is
  due every 5 ms), for ``seconds``: p50/p99 of the time from a message's write to its arrival at
  the recipient (the send time travels in the body), and the share delivered;

then ``--idle`` BOSH sessions logged in, bound and held, and as many TCP ones (bench_bosh.py's
idle_memory): the server's RSS growth per session.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perf import servers
from perf.bench_bosh import BoshClient, bosh_sender, idle_memory
from perf.bench_websocket import Client, closed_loop, sender
from tests.rawclient import client_ssl

TRANSPORTS = ("tcp", "ws", "bosh")


async def paced_sender(frm: Any, to: Any, to_jid: str, rate: float, stop: float) -> int:
    """Open loop: ``rate`` messages/s to ``to_jid`` until ``stop``, what is due every 5 ms."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.005 * (hash(to_jid) % 100) / 100)  # the senders' ticks spread out
    t0 = loop.time()
    sent = 0
    while (now := loop.time()) < stop:
        due = int((now - t0) * rate) - sent
        if due > 0:
            await frm.send_messages(to_jid, due)
            sent += due
        await asyncio.sleep(0.005)
    return sent


async def login_all(srv: servers.ServerUnderTest, http: aiohttp.ClientSession, kind: str,
                    users: list[str], resource: str) -> list[tuple[Any, str]]:
    ports = SimpleNamespace(http=srv.http_port, tls=srv.tls_port)
    if kind == "bosh":
        return [await BoshClient.login(http, srv.http_port, u, resource, servers.PASSWORD)
                for u in users]
    return [await Client.login(ports, u, kind == "ws", resource, servers.PASSWORD)  # type: ignore[arg-type]
            for u in users]


async def measure(srv: servers.ServerUnderTest, kind: str, args: argparse.Namespace,
                  run_id: int) -> dict[str, float]:
    users = [f"u{i}" for i in range(2 * args.pairs)]
    conn = aiohttp.TCPConnector(ssl=client_ssl(), limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        clients = await login_all(srv, http, kind, users, f"run{run_id}")
        if kind == "bosh":
            readers = [asyncio.ensure_future(c.poll()) for c, _ in clients]
        else:
            readers = [asyncio.ensure_future(c.count()) for c, _ in clients]
        await asyncio.sleep(0.3)
        cpu0 = srv.cpu_seconds()
        rate = await closed_loop(clients, bosh_sender if kind == "bosh" else sender, args.window,
                                 args.seconds)
        cpu_us = (srv.cpu_seconds() - cpu0) * 1e6 / max(1.0, rate * args.seconds)
        await asyncio.sleep(1.0)  # the closed loop's last messages drain
        for c, _ in clients:
            c.latency = []
        per_sender = args.rate / len(clients)
        stop = asyncio.get_running_loop().time() + args.seconds
        sent = sum(await asyncio.gather(*(
            paced_sender(clients[i][0], clients[i ^ 1][0], clients[i ^ 1][1], per_sender, stop)
            for i in range(len(clients)))))
        await asyncio.sleep(2.0)
        lat = sorted(x for c, _ in clients for x in c.latency)
        for c, _ in clients:
            if kind == "bosh":
                c.running = False
                await c.post("type='terminate'")
            else:
                c.writer.close()
        for t in readers:
            if kind != "bosh":
                t.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    await asyncio.sleep(0.5)
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [float("nan")] * 99
    return {"msgs_s": rate, "cpu_us": cpu_us, "p50_ms": q[49] / 1e6, "p99_ms": q[98] / 1e6,
            "delivered": len(lat) / max(1, sent)}


async def bench(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    for attempt in range(3):
        srv = servers.make(name, workdir / f"{attempt}", args.cpus)
        srv.web = True
        try:
            srv.launch([f"u{i}" for i in range(2 * args.pairs)])
            break
        except RuntimeError as e:
            # a port free when chosen may be taken at the start on this shared machine (Erlang's
            # distribution port in another's TIME-WAIT): new ports
            if attempt == 2:
                raise
            print(f"{name}: start failed, again with new ports: {str(e)[-200:]}", flush=True)
    out: dict[str, Any] = {"version": srv.version()}
    try:
        for run_id, kind in enumerate(k for k in args.transports.split(",") if k):
            try:
                r = await measure(srv, kind, args, run_id)
            except Exception as e:  # noqa: BLE001 - a transport a peer cannot serve: say why
                print(f"{name:8} {kind:4}: failed: {e!r}", flush=True)
                out[kind] = {"error": repr(e)}
                continue
            out[kind] = r
            print(f"{name:8} {kind:4}: {r['msgs_s']:7.0f} msgs/s  {r['cpu_us']:6.1f} us CPU/msg  "
                  f"@{args.rate:.0f}/s p50 {r['p50_ms']:6.1f} ms p99 {r['p99_ms']:7.1f} ms "
                  f"(delivered {r['delivered']:.0%})", flush=True)
        if args.idle:
            try:
                ports = SimpleNamespace(http=srv.http_port, tls=srv.tls_port)
                out["idle_bosh_kib"], out["idle_tcp_kib"] = await idle_memory(
                    ports, 2 * args.pairs, args.idle, srv.rss_kb, servers.PASSWORD)  # type: ignore[arg-type]
                print(f"{name:8} idle session ({args.idle}): BOSH {out['idle_bosh_kib']:.1f} KiB, "
                      f"TCP {out['idle_tcp_kib']:.1f} KiB", flush=True)
            except Exception as e:  # noqa: BLE001
                print(f"{name:8} idle BOSH: failed: {e!r}", flush=True)
    finally:
        srv.stop()
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = ["| server | transport | msgs/s (closed loop) | vs its TCP | server CPU us/msg | "
            "p50 ms | p99 ms @ offered rate | idle KiB/session |",
            "|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        tcp = res.get("tcp", {}).get("msgs_s")
        for kind in TRANSPORTS:
            r = res.get(kind, {})
            if "error" in r or not r:
                why = f"failed: {r['error']}" if "error" in r else "not run"
                rows.append(f"| {name} | {kind} | {why} | | | | | |")
                continue
            ratio = f"{r['msgs_s'] / tcp:.2f}" if tcp else ""
            idle = f"{res.get(f'idle_{kind}_kib', 0):.1f}" if f"idle_{kind}_kib" in res else ""
            rows.append(f"| {name} | {kind} | {r['msgs_s']:.0f} | {ratio} | {r['cpu_us']:.1f} | "
                        f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {idle} |")
    return "\n".join(rows)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default="mbxmpp,prosody,ejabberd")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=1000.0, help="offered msgs/s for the latency")
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--transports", default=",".join(TRANSPORTS))
    ap.add_argument("--workdir", help="keep the servers' configs and logs here")
    ap.add_argument("--cpus", default="0", help="taskset CPU list for the server ('' = none)")
    args = ap.parse_args()
    print(f"load: {open('/proc/loadavg').read().strip()} ({os.cpu_count()} cores)", flush=True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        tmp = args.workdir or tmp
        for name in args.servers.split(","):
            ok, why = servers.SERVERS[name].available()
            if not ok:
                print(f"{name}: skipped: {why}")
                continue
            t = time.monotonic()
            try:
                results[name] = await bench(name, args, Path(tmp))
            except Exception as e:  # noqa: BLE001
                print(f"{name}: failed to start: {e}", flush=True)
                results[name] = {}
            print(f"{name}: {time.monotonic() - t:.0f} s", flush=True)
    print(f"load: {open('/proc/loadavg').read().strip()}")
    print(table(results))


if __name__ == "__main__":
    asyncio.run(main())
