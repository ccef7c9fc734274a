"""MAM "last page of 50" over the wire, mbxmpp vs Prosody: ``python perf/bench_mam_wire.py``.

For each server (mbxmpp; Prosody with its default ``internal`` file store; Prosody with
``storage = "sql"`` on SQLite when lua-dbi-sqlite3 is installed):

1. start it on loopback with the perf suite's launcher (``perf/servers.py``: TLS required, SCRAM-SHA-1,
   self-signed certificate, TCP_NODELAY) plus MAM (the suite's ``archive`` switch, as the
   ``mam_query`` scenario does): mbxmpp with the peers' module set plus ``mam`` (retention 7 days,
   pages of at most 250); Prosody with ``"mam"`` in ``modules_enabled``,
   ``archive_expires_after = "1w"``, its default ``max_archive_query_results`` (50) and
   ``storage_archive_item_limit`` raised above N (its internal store refuses appends past 10,000
   items by default);
2. fill alice's archive over the wire (``perf/mamwire.py``, shared with the ``mam_query``
   scenario): bob (online) sends N chat messages to alice (online, so nothing goes to offline
   storage), in windows of ``--window`` messages each closed by a ping round trip (bounded rate);
   both servers archive both sides;
3. a fresh connection of alice (STARTTLS, SCRAM, bind; no roster, no presence) sends the query
   ``<query xmlns='urn:xmpp:mam:2' queryid='q'><set><max>50</max><before/></set></query>`` K times
   sequentially (after ``--warmup`` untimed ones); latency = send -> arrival of the ``<fin/>`` IQ
   result (all 50 result messages come before it); each answer is fully parsed (so ~3 ms of Python
   client parsing is in the figure; the ``mam_query`` scenario counts results without building
   them) and checked: 50 results, the last 50 messages sent, oldest first.

The server runs under ``taskset`` on ``--server-cpu``, this client pinned to ``--client-cpu``.
Machine load (``os.getloadavg()``) and the CPU other processes took on the server's core are
recorded, with a warning when high.  Prints a markdown table (p50/p90/p99/max, server CPU per
query) and the ratios Prosody/mbxmpp; appends one JSON line to ``perf/results/mam_wire.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perf import mamwire, servers  # noqa: E402
from perf.xmppclient import ClientOptions, XMPPClient  # noqa: E402

OWNER, PEER = "alice", "bob"
PAGE = mamwire.PAGE
RESULTS = Path(__file__).resolve().parent / "results" / "mam_wire.jsonl"


# ============================================================================================ servers

class ProsodyMam(servers.Prosody):
    """The suite's Prosody with mod_mam (its ``archive`` switch) and the internal (file) store."""

    name = "prosody"
    storage_desc = "internal (files)"


class ProsodySql(ProsodyMam):
    """Prosody with every store but accounts in SQL (SQLite through LuaDBI)."""

    name = "prosody-sql"
    storage_desc = "sql (SQLite)"

    @staticmethod
    def available() -> tuple[bool, str]:
        ok, why = servers.Prosody.available()
        if not ok:
            return ok, why
        if not list(Path("/usr/lib").glob("*/lua/*/dbi/sqlite3.so")) and \
                not list(Path("/usr/lib").glob("*/lua/*/dbi_sqlite3.so")) and \
                subprocess.run(["dpkg-query", "-W", "lua-dbi-sqlite3"],
                               capture_output=True).returncode != 0:
            return False, "lua-dbi-sqlite3 is not installed"
        return True, ""

    def storage_config(self) -> str:
        # accounts stay in files (provisioned that way by perf/servers.py); the archive is in SQL
        return ('default_storage = "sql"\nstorage = { accounts = "internal"; }\n'
                'sql = { driver = "SQLite3"; database = "prosody.sqlite"; }')


class MbxmppMam(servers.Mbxmpp):
    """The suite's mbxmpp (peers' module set) plus ``mam``."""

    name = "mbxmpp"
    storage_desc = "LMDB"


KINDS: dict[str, type[servers.ServerUnderTest]] = {
    "mbxmpp": MbxmppMam, "prosody": ProsodyMam, "prosody-sql": ProsodySql}


# ============================================================================================ machine

def cpu_busy_jiffies(cpu: int) -> int:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                # user, nice, system (steal/guest ignored): not idle, iowait, nor irq/softirq,
                # which our own loopback traffic causes
                return v[0] + v[1] + v[2]
    return 0


def pct(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_ms:
        return float("nan")
    k = max(0, min(len(sorted_ms) - 1, int(round(q / 100.0 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


# ============================================================================================ client

async def login(port: int, user: str, resource: str, presence: bool) -> XMPPClient:
    opts = ClientOptions("127.0.0.1", port, servers.DOMAIN, tls="starttls", roster=False,
                         presence=presence, timeout=30.0)
    c = XMPPClient(user, servers.PASSWORD, resource, opts)
    await c.login()
    return c


async def fill(port: int, n: int, window: int) -> dict[str, Any]:
    """bob -> alice, n chat messages, windows closed by a ping round trip; alice online."""
    opts = ClientOptions("127.0.0.1", port, servers.DOMAIN, tls="starttls", timeout=30.0)
    return await mamwire.fill(opts, OWNER, PEER, servers.PASSWORD, n, window)


async def run_queries(port: int, n: int, k: int, warmup: int,
                      srv: servers.ServerUnderTest, server_cpu: int) -> dict[str, Any]:
    c = await login(port, OWNER, "bench", presence=False)
    q = mamwire.Querier(c, "q")
    expected = list(range(n - PAGE, n))
    bad: list[str] = []

    async def one() -> tuple[int, int]:
        dt, fin, nums, _ids = await q.last_page(full=True)
        assert nums is not None
        err = mamwire.check_page(fin, nums, expected)
        if err and len(bad) < 5:
            bad.append(err)
        return dt, len(nums)

    for _ in range(warmup):
        await one()
    lat_ms: list[float] = []
    counts: list[int] = []
    srv_cpu0 = srv.cpu_seconds()
    busy0 = cpu_busy_jiffies(server_cpu)
    cli_cpu0 = time.process_time()
    wall0 = time.monotonic()
    for _ in range(k):
        dt, cnt = await one()
        lat_ms.append(dt / 1e6)
        counts.append(cnt)
    wall = time.monotonic() - wall0
    srv_cpu = srv.cpu_seconds() - srv_cpu0
    busy = (cpu_busy_jiffies(server_cpu) - busy0) / os.sysconf("SC_CLK_TCK")
    cli_cpu = time.process_time() - cli_cpu0
    c.close()
    await c.wait_closed()
    s = sorted(lat_ms)
    return {
        "p50_ms": round(pct(s, 50), 3), "p90_ms": round(pct(s, 90), 3),
        "p99_ms": round(pct(s, 99), 3), "max_ms": round(s[-1], 3),
        "mean_ms": round(sum(s) / len(s), 3), "min_ms": round(s[0], 3),
        "queries": k, "warmup": warmup,
        "results_per_query": sorted(set(counts)), "all_ok": not bad, "errors": bad[:5],
        "server_cpu_ms_per_query": round(srv_cpu * 1000 / k, 3),
        "client_cpu_ms_per_query": round(cli_cpu * 1000 / k, 3),
        "wall_s": round(wall, 2),
        # CPU time that other processes used on the server's core during the timed queries
        "other_cpu_on_server_core_pct": round(max(0.0, busy - srv_cpu) / wall * 100, 1),
    }


def sql_fill(srv: servers.ServerUnderTest, have: int, n: int) -> None:
    """Messages have..n-1 in Prosody's SQL archive, copied from message have-1 (both owners)."""
    import sqlite3
    import uuid
    db = sqlite3.connect(str(srv.data / "prosody.sqlite"), timeout=30)   # type: ignore[attr-defined]
    try:
        j = have - 1
        cols = '"host", "user", "store", "key", "when", "with", "type", "value"'
        tmpl = db.execute(f'SELECT {cols} FROM prosodyarchive WHERE "value" LIKE ? '
                          'ORDER BY sort_id', (f"%Message number {j}:%",)).fetchall()
        users = sorted({r[1] for r in tmpl})
        if users != sorted([OWNER, PEER]):
            raise RuntimeError(f"sql fill: template rows for {users}, want {OWNER} and {PEER}")
        now = int(time.time())
        rows = []
        for i in range(have, n):
            for host, user, store, _key, _when, with_, type_, value in tmpl:
                v = (value.replace(f"{j:08d}", f"{i:08d}")
                     .replace(f"Message number {j}:", f"Message number {i}:"))
                rows.append((host, user, store, str(uuid.uuid4()), now, with_, type_, v))
        with db:
            db.executemany(f"INSERT INTO prosodyarchive ({cols}) VALUES (?,?,?,?,?,?,?,?)", rows)
    finally:
        db.close()


# ============================================================================================ driver

def bench_one(kind: str, a: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cls = KINDS[kind]
    ok, why = cls.available()
    if not ok:
        return {"server": kind, "status": "skipped", "reason": why}
    srv = cls(workdir, str(a.server_cpu))
    srv.archive = True
    srv.archive_items = a.messages
    load_before = os.getloadavg()
    out: dict[str, Any] = {"server": kind, "storage": getattr(srv, "storage_desc", ""),
                           "version": srv.version()}
    try:
        srv.prepare()
        srv.provision_accounts([OWNER, PEER])
        srv.start()
        if isinstance(srv, ProsodySql) and a.sql_fill == "direct" and a.messages > a.wire_part:
            # one SQLite transaction per archived message (x2: both sides) makes a wire fill of
            # 10,000 take minutes: the first messages go over the wire, the rest are copied from
            # the last of them straight into Prosody's table (same columns, ids, ordering)
            out.update(asyncio.run(fill(srv.c2s_port, a.wire_part, a.window)))
            t = time.perf_counter()
            sql_fill(srv, a.wire_part, a.messages)
            out["fill_s"] = round(out["fill_s"] + time.perf_counter() - t, 2)
            out["fill_method"] = (f"wire {a.wire_part:,} + direct SQLite insert "
                                  f"{a.messages - a.wire_part:,}")
        else:
            out.update(asyncio.run(fill(srv.c2s_port, a.messages, a.window)))
            out["fill_method"] = f"wire {a.messages:,}"
        out.update(asyncio.run(run_queries(srv.c2s_port, a.messages, a.queries, a.warmup, srv,
                                           a.server_cpu)))
        out["server_rss_kb"] = srv.rss_kb()
        out["status"] = "ok" if out["all_ok"] else "wrong-results"
    except Exception as e:  # noqa: BLE001 - reported per server
        out["status"] = "error"
        out["reason"] = f"{type(e).__name__}: {e}"
        try:
            out["log_tail"] = srv.log_tail(15)[-3000:]
        except Exception:  # noqa: BLE001
            pass
    finally:
        srv.stop()
    out["loadavg_before"] = [round(x, 2) for x in load_before]
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10_000, help="archive size N (default 10000)")
    ap.add_argument("--queries", type=int, default=200, help="timed queries K (default 200)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed queries first (default 5)")
    ap.add_argument("--window", type=int, default=100,
                    help="fill: messages per ping round trip (default 100)")
    ap.add_argument("--servers", default="mbxmpp,prosody,prosody-sql",
                    help="comma list of " + ",".join(KINDS))
    ap.add_argument("--sql-fill", choices=("direct", "wire"), default="direct",
                    help="prosody-sql: fill the rest of the archive by SQLite inserts (default) "
                         "or all over the wire (minutes: a transaction per archived message)")
    ap.add_argument("--wire-part", type=int, default=200,
                    help="prosody-sql direct fill: messages sent over the wire first (default 200)")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the servers' temp dirs")
    ap.add_argument("--no-save", action="store_true", help=f"don't append to {RESULTS}")
    a = ap.parse_args()
    if a.messages < PAGE:
        ap.error(f"--messages must be at least {PAGE}")
    kinds = [s.strip() for s in a.servers.split(",") if s.strip()]
    for s in kinds:
        if s not in KINDS:
            ap.error(f"unknown server {s!r}")
    ncpu = os.cpu_count() or 1
    try:
        os.sched_setaffinity(0, {a.client_cpu})      # same as taskset -c CLIENT_CPU
    except OSError as e:
        print(f"warning: cannot pin the client to CPU {a.client_cpu}: {e}", file=sys.stderr)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass

    workdir = Path(tempfile.mkdtemp(prefix="bench-mam-wire-"))
    load0 = os.getloadavg()
    rows = []
    try:
        for kind in kinds:
            print(f"... {kind}: fill {a.messages:,}, {a.queries} queries", file=sys.stderr)
            r = bench_one(kind, a, workdir)
            if r["status"] not in ("ok", "skipped"):
                print(f"    {kind}: {r['status']}: {r.get('reason') or r.get('errors')}",
                      file=sys.stderr)
            rows.append(r)
    finally:
        if a.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load1 = os.getloadavg()

    # ---- report
    print(f"\n### MAM last page of {PAGE}, over the wire (archive of {a.messages:,}, "
          f"{a.queries} sequential queries after {a.warmup} warm-up)\n")
    print("| server | storage | p50 ms | p90 ms | p99 ms | max ms | server CPU ms/query | "
          "results | fill |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|")
    notes: list[str] = []
    for r in rows:
        if r["status"] == "skipped":
            print(f"| {r['server']} | — | skipped: {r['reason']} | | | | | | |")
            continue
        if "p50_ms" not in r:
            print(f"| {r['server']} | {r.get('storage', '')} | {r['status']}: "
                  f"{r.get('reason', '')} | | | | | | |")
            continue
        res = "50 ✓" if r["all_ok"] else f"✗ {r['errors'][:1]}"
        notes.append(f"{r['server']}: fill {r['fill_method']} in {r['fill_s']} s")
        print(f"| {r['server']} {r['version']} | {r['storage']} | {r['p50_ms']:.2f} | "
              f"{r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} | "
              f"{r['server_cpu_ms_per_query']:.2f} | {res} | {r['fill_s']:.1f} s |")
    base = next((r for r in rows if r["server"] == "mbxmpp" and "p50_ms" in r), None)
    ratios: dict[str, dict[str, float]] = {}
    if base is not None:
        for r in rows:
            if r["server"] != "mbxmpp" and "p50_ms" in r:
                ratios[r["server"]] = {m: round(r[m] / base[m], 2) for m in
                                       ("p50_ms", "p90_ms", "p99_ms", "server_cpu_ms_per_query")
                                       if base[m] > 0}
        if ratios:
            print("\nRatio peer/mbxmpp (how many times faster mbxmpp is):\n")
            print("| peer | p50 | p90 | p99 | server CPU/query |")
            print("|---|---:|---:|---:|---:|")
            for p, v in ratios.items():
                print(f"| {p} | {v.get('p50_ms', 0):.1f}× | {v.get('p90_ms', 0):.1f}× | "
                      f"{v.get('p99_ms', 0):.1f}× | {v.get('server_cpu_ms_per_query', 0):.1f}× |")
    print(f"\nServer on CPU {a.server_cpu}, client on CPU {a.client_cpu} ({ncpu} CPUs). "
          f"Load average before {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, "
          f"after {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}.")
    warns = []
    if max(load0[0], load1[0]) > 0.5 * ncpu:
        warns.append(f"machine load is high (1-min load up to {max(load0[0], load1[0]):.2f} "
                     f"on {ncpu} CPUs): other processes compete for both cores, figures are "
                     "pessimistic and noisy")
    for r in rows:
        o = r.get("other_cpu_on_server_core_pct")
        if o is not None and o > 10:
            warns.append(f"{r['server']}: other processes took {o:.0f} % of the server's core "
                         "during the timed queries")
        if r.get("loadavg_before"):
            print(f"- {r['server']}: load {r['loadavg_before'][0]} -> {r['loadavg_after'][0]}"
                  + (f", other CPU on server core {o} %" if o is not None else "")
                  + (f", client CPU {r['client_cpu_ms_per_query']} ms/query"
                     if "client_cpu_ms_per_query" in r else ""))
    for nt in notes:
        print(f"- {nt}")
    for w in warns:
        print(f"\n**warning**: {w}")

    if not a.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "bench": "mam_wire",
                "host": platform.node(), "python": platform.python_version(), "cpus": ncpu,
                "messages": a.messages, "queries": a.queries, "warmup": a.warmup, "page": PAGE,
                "server_cpu": a.server_cpu, "client_cpu": a.client_cpu,
                "loadavg_before": [round(x, 2) for x in load0],
                "loadavg_after": [round(x, 2) for x in load1], "warnings": warns,
                "servers": [{k: v for k, v in r.items() if k != "log_tail"} for r in rows],
                "ratio_peer_over_mbxmpp": ratios}
        with open(RESULTS, "a") as f:
            f.write(json.dumps(line) + "\n")
    failed = [r for r in rows if r["status"] not in ("ok", "skipped")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
