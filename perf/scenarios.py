"""Scenarios: each runs against one ServerUnderTest with the shared Generator and returns a record.

A record is ``{"scenario", "server", "status", "metrics", "withheld", "details", "hists",
"reason"}`` where status is ``ok``, ``invalid`` (the generator was the bottleneck: figures withheld
in ``withheld``, never reported as results), ``partial`` (some withheld), ``skipped``
(not possible on this machine, with the reason), ``not_available`` (the server lacks the feature,
e.g. no Stream Management) or ``failed`` (with the
error).

``sm_sessions``, ``mam_query``, ``mam_archiving`` and ``muc_fanout`` run on instances of their own
(``_own_instance``) with SM / MAM / MUC switched on, so that the other scenarios keep the peers' common
feature set.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import servers as S
from . import mamwire
from .loadgen import MAX_GEN_CPU, Generator, Histogram, gen_cpu_fraction, merge_hists

_now = time.monotonic_ns

# ====================================================================== parameters

FULL: dict[str, dict[str, Any]] = {
    "login_storm": {"concurrency": 50, "users": 2000, "warmup_s": 2.0, "duration_s": 10.0},
    "idle_connections": {"counts": [1000, 10000, 50000], "login_concurrency": 200,
                         "settle_s": 3.0},
    "messaging": {"pairs": 50, "window": 8, "warmup_s": 2.0, "duration_s": 10.0,
                  "fractions": [0.25, 0.5, 0.75], "fixed_rates": [1000], "lat_duration_s": 10.0},
    "presence_broadcast": {"contacts": 100, "window": 4, "warmup_s": 2.0, "duration_s": 10.0,
                           "fractions": [0.5], "lat_duration_s": 8.0},
    "roster_fetch": {"items": 500, "sessions": 10, "warmup_s": 1.0, "duration_s": 8.0},
    # saturation: `rounds` pairs of plain/SM runs (order alternated) of duration_s each. 16 in
    # flight per sender, not messaging's 8: at 8 neither mbxmpp nor the generator is saturated
    # (both 72-95% busy), the closed loop measures round-trip time and the ratio swings 0.68-0.95
    # from run to run; at 16 both kinds run at the server's capacity (see perf/README.md)
    "sm_sessions": {"pairs": 50, "window": 16, "rounds": 3, "warmup_s": 2.0, "duration_s": 6.0,
                    "fixed_rates": [1000], "plain_fixed_rates": [1000], "lat_duration_s": 10.0,
                    "client_r_every": 5},
    "mam_query": {"messages": 10000, "owners": 2, "fill_window": 100, "fill_timeout_s": 600.0,
                  "warmup": 5, "queries": 200, "lat_max_s": 60.0, "concurrency": 4,
                  "warmup_s": 1.0, "duration_s": 10.0},
    # the messaging pairs' saturation, main instance (no archive) vs an archiving instance whose
    # archive holds preload_messages over preload_users accounts (mbxmpp only); `rounds` runs of
    # each, alternated
    "mam_archiving": {"pairs": 50, "window": 8, "rounds": 2, "warmup_s": 2.0, "duration_s": 6.0,
                      "preload_users": 1000, "preload_messages": 1_000_000},
    # one room per size in `rooms` (occupants), `senders` of them sending; saturation with
    # `window` messages in flight per sender (a message is in flight until its last occupant
    # got it), then open loop at `fractions` of it and at `fixed_deliveries` per second (the
    # room's size divides them into messages/s)
    "muc_fanout": {"rooms": [50, 500], "senders": 5, "window": 8, "warmup_s": 2.0,
                   "duration_s": 8.0, "fractions": [0.5], "fixed_deliveries": [5000],
                   "lat_duration_s": 8.0},
}

SMOKE: dict[str, dict[str, Any]] = {
    "login_storm": {"concurrency": 8, "users": 100, "warmup_s": 0.5, "duration_s": 2.0},
    "idle_connections": {"counts": [200], "login_concurrency": 50, "settle_s": 0.5},
    "messaging": {"pairs": 10, "window": 4, "warmup_s": 0.5, "duration_s": 2.0,
                  "fractions": [], "fixed_rates": [200], "lat_duration_s": 1.5},
    "presence_broadcast": {"contacts": 20, "window": 2, "warmup_s": 0.5, "duration_s": 1.5,
                           "fractions": [0.5], "lat_duration_s": 1.5},
    "roster_fetch": {"items": 100, "sessions": 2, "warmup_s": 0.5, "duration_s": 1.5},
    "sm_sessions": {"pairs": 10, "window": 4, "rounds": 1, "warmup_s": 0.3, "duration_s": 0.8,
                    "fixed_rates": [200], "plain_fixed_rates": [], "lat_duration_s": 0.8,
                    "client_r_every": 5},
    "mam_query": {"messages": 500, "owners": 1, "fill_window": 100, "fill_timeout_s": 60.0,
                  "warmup": 2, "queries": 30, "lat_max_s": 1.5, "concurrency": 2,
                  "warmup_s": 0.3, "duration_s": 0.8},
    "mam_archiving": {"pairs": 10, "window": 4, "rounds": 1, "warmup_s": 0.3, "duration_s": 0.8,
                      "preload_users": 20, "preload_messages": 5000},
    "muc_fanout": {"rooms": [10], "senders": 2, "window": 2, "warmup_s": 0.3, "duration_s": 0.8,
                   "fractions": [0.5], "fixed_deliveries": [], "lat_duration_s": 0.8},
}

ALL_SCENARIOS = ["login_storm", "idle_connections", "messaging", "presence_broadcast",
                 "roster_fetch", "sm_sessions", "muc_fanout", "mam_query", "mam_archiving"]
DEFAULT_SCENARIOS = ALL_SCENARIOS


@dataclass
class Ctx:
    gen: Generator
    params: dict[str, dict[str, Any]]
    gen_cpus: int
    tls: str = "starttls"
    src_ips: list[str] = field(default_factory=lambda: [f"127.0.0.{i}" for i in range(2, 34)])
    log: Callable[[str], None] = print

    def opts(self, srv: S.ServerUnderTest, **kw: Any) -> dict:
        d = {"host": "127.0.0.1", "port": srv.c2s_port if self.tls == "starttls" else srv.tls_port,
             "domain": S.DOMAIN, "tls": self.tls, "src_ips": self.src_ips}
        d.update(kw)
        return d


def users_needed(params: dict[str, dict[str, Any]], scenarios: list[str],
                 max_conns: int) -> list[str]:
    """Every account the chosen scenarios use (``u*``, ``r0``, ``p0``, ``p0c*``)."""
    n = 0
    if "login_storm" in scenarios:
        n = max(n, params["login_storm"]["users"])
    if "idle_connections" in scenarios:
        n = max([n] + [c for c in params["idle_connections"]["counts"] if c <= max_conns])
    if "messaging" in scenarios:
        n = max(n, 2 * params["messaging"]["pairs"])
    if "mam_archiving" in scenarios:     # its pairs run on the main instance too
        n = max(n, 2 * params["mam_archiving"]["pairs"])
    if "roster_fetch" in scenarios:
        n = max(n, params["roster_fetch"]["items"])
    users = [f"u{i}" for i in range(n)]
    if "roster_fetch" in scenarios:
        users.append("r0")
    if "presence_broadcast" in scenarios:
        users += ["p0"] + [f"p0c{i}" for i in range(params["presence_broadcast"]["contacts"])]
    return users


def max_connections(srv: S.ServerUnderTest, gen: Generator) -> tuple[int, str]:
    """How many client connections this machine allows, and what limits it."""
    server_lim = srv.nofile_limit()
    gen_lim = S.nofile_hard() * gen.n
    reserve = 300
    if server_lim <= gen_lim:
        return server_lim - reserve, f"server open-file limit {server_lim} (hard nofile limit)"
    return gen_lim - reserve, f"generator open-file limit {gen_lim} over {gen.n} worker(s)"


# ====================================================================== helpers

def _record(scenario: str, srv: S.ServerUnderTest) -> dict[str, Any]:
    return {"scenario": scenario, "server": srv.name, "status": "ok", "metrics": {},
            "withheld": {}, "upper_bounds": {}, "details": {}, "hists": {}, "reason": ""}


def _cpu_jiffies() -> dict[int, tuple[int, int]]:
    """Per CPU (busy, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                out[int(name[3:])] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


class _ServerCPU(threading.Thread):
    """Server CPU seconds between two monotonic instants (sampled from /proc), and how busy the
    server's cores were with other processes (machine noise)."""

    def __init__(self, srv: S.ServerUnderTest, w0: int, w1: int, rec: dict | None = None,
                 label: str = "") -> None:
        super().__init__(daemon=True)
        self.srv, self.w0, self.w1 = srv, w0, w1
        self.rec, self.label = rec, label
        self.c0 = self.c1 = 0.0
        self.us0 = self.us1 = (0.0, 0.0)  # (user, system) CPU seconds
        self.j0: dict[int, tuple[int, int]] = {}
        self.j1: dict[int, tuple[int, int]] = {}
        self.io0: dict[str, int] = {}
        self.io1: dict[str, int] = {}
        self.instructions: int | None = None  # executed in the window (run.py --instructions)
        self.start()

    def run(self) -> None:
        time.sleep(max(0.0, (self.w0 - _now()) / 1e9))
        if self.srv.instructions:
            self.srv.zero_instructions()
        self.us0, self.j0, self.io0 = self.srv.cpu_user_system(), _cpu_jiffies(), self._io()
        self.c0 = sum(self.us0)
        time.sleep(max(0.0, (self.w1 - _now()) / 1e9))
        self.us1, self.j1, self.io1 = self.srv.cpu_user_system(), _cpu_jiffies(), self._io()
        self.c1 = sum(self.us1)
        if self.srv.instructions:
            self.instructions = self.srv.dump_instructions()

    def _io(self) -> dict[str, int]:
        """Read and write system calls of the server so far (/proc/PID/io; {} if unreadable)."""
        try:
            return S.proc_io(self.srv.main_pid())
        except (OSError, AssertionError):
            return {}

    def kernel_share(self) -> float | None:
        """The share of the server's CPU time in the window spent in the kernel."""
        self.join()
        total = self.c1 - self.c0
        return (self.us1[1] - self.us0[1]) / total if total > 0 else None

    def syscalls(self) -> dict[str, int]:
        """Reads and writes the server made during the window (socket I/O, mostly)."""
        self.join()
        return {k: self.io1[k] - self.io0[k] for k in ("syscr", "syscw")
                if k in self.io0 and k in self.io1}

    def fraction(self) -> float:
        self.join()
        if self.rec is not None:
            _note_noise(self.rec, self, self.label)
            self.rec = None
        return (self.c1 - self.c0) / ((self.w1 - self.w0) / 1e9)

    def foreign(self) -> float:
        """Share of the server cores used by anything but the server during the window."""
        self.join()
        cpus = [c for c in _parse_cpus(self.srv.cpus) if c in self.j0 and c in self.j1]
        if not cpus:
            return 0.0
        hz = os.sysconf("SC_CLK_TCK")
        busy = sum(self.j1[c][0] - self.j0[c][0] for c in cpus) / hz
        wall = (self.w1 - self.w0) / 1e9
        return max(0.0, (busy - (self.c1 - self.c0)) / (wall * len(cpus)))


def _parse_cpus(s: str) -> list[int]:
    out: list[int] = []
    for part in (s or "").split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part.strip():
            out.append(int(part))
    return out


NOISE_WARN = 0.10


def _note_noise(rec: dict, cpu: _ServerCPU, label: str) -> None:
    f = cpu.foreign()
    rec["details"][f"{label}_foreign_cpu_on_server_cores"] = round(f, 3)
    if f > NOISE_WARN:
        rec["details"].setdefault("warnings", []).append(
            f"{label}: other processes used {f:.0%} of the server cores during the window "
            "(busy machine: figure is pessimistic)")


def _timeline(warmup_s: float, duration_s: float, lead_s: float = 0.5) -> tuple[int, int, int]:
    t_start = _now() + int(lead_s * 1e9)
    w0 = t_start + int(warmup_s * 1e9)
    return t_start, w0, w0 + int(duration_s * 1e9)


def _split(items: list, n: int) -> list[list]:
    return [items[i::n] for i in range(n)]


def _check_gen(rec: dict, results: list[dict], ctx: Ctx, label: str) -> bool:
    frac = gen_cpu_fraction(results, ctx.gen_cpus)
    rec["details"][f"{label}_generator_cpu"] = round(frac, 3)
    if frac > MAX_GEN_CPU:
        rec["status"] = "invalid"
        why = (f"{label}: generator CPU {frac:.0%} of its {ctx.gen_cpus} core(s) > "
               f"{MAX_GEN_CPU:.0%}: it may have been the bottleneck, figure withheld")
        rec["reason"] = (rec["reason"] + "; " if rec["reason"] else "") + why
        return False
    return True


def _put(rec: dict, valid: bool, metrics: dict[str, Any]) -> None:
    """Valid figures go to ``metrics``; those measured while the generator was the bottleneck go
    to ``withheld`` (never reported as results; a rate there is only a lower bound)."""
    rec["metrics" if valid else "withheld"].update(metrics)


def _login_group(ctx: Ctx, srv: S.ServerUnderTest, group: str, per_worker: list[list[str]],
                 concurrency: int, opts_extra: dict | None = None, **kw: Any) -> list[dict]:
    args = []
    for users in per_worker:
        args.append({"group": group, "users": [(u, f"{group}{i}") for i, u in enumerate(users)],
                     "password": S.PASSWORD, "opts": ctx.opts(srv, **(opts_extra or {})),
                     "concurrency": max(1, concurrency // ctx.gen.n), **kw} if users else None)
    res = ctx.gen.call("login", args, timeout=900)
    failed = sum(r["failed"] for r in res if r)
    if failed:
        errs = [e for r in res if r for e in r["errors"]]
        ctx.gen.call("close", {"group": group})
        raise RuntimeError(f"{failed} logins failed for group {group}: {errs[:3]}")
    return res


def _close_group(ctx: Ctx, group: str) -> None:
    ctx.gen.call("close", {"group": group}, timeout=300)


# ====================================================================== scenarios

def login_storm(ctx: Ctx, srv: S.ServerUnderTest) -> dict:
    p = ctx.params["login_storm"]
    rec = _record("login_storm", srv)
    users = [f"u{i}" for i in range(p["users"])]
    t_start, w0, t_end = _timeline(p["warmup_s"], p["duration_s"])
    cpu = _ServerCPU(srv, w0, t_end, rec, "storm")
    per = max(1, p["concurrency"] // ctx.gen.n)
    res = ctx.gen.call("login_storm", [
        {"users": us, "password": S.PASSWORD, "opts": ctx.opts(srv), "concurrency": per,
         "t_start": t_start, "w0": w0, "t_end": t_end} for us in _split(users, ctx.gen.n)],
        timeout=p["warmup_s"] + p["duration_s"] + 60)
    done = sum(r["done_window"] for r in res)
    failed = sum(r["failed"] for r in res)
    h = merge_hists(res)
    rec["details"].update({"concurrency": per * ctx.gen.n, "completed_in_window": done,
                           "failed": failed, "errors": [e for r in res for e in r["errors"]][:5],
                           "server_cpu": round(cpu.fraction(), 3), "tls": ctx.tls,
                           "mechanism": "SCRAM-SHA-1"})
    rec["hists"]["login_time"] = h.to_dict()
    rate = done / p["duration_s"]
    lat = h.summary_ms()
    _put(rec, _check_gen(rec, res, ctx, "storm"),
         {"logins_per_s": round(rate, 1), "login_p50_ms": lat["p50"], "login_p99_ms": lat["p99"]})
    if failed and done == 0:
        rec["status"] = "failed"
        rec["reason"] = f"all logins failed: {rec['details']['errors'][:2]}"
    return rec


def idle_connections(ctx: Ctx, srv: S.ServerUnderTest) -> dict:
    p = ctx.params["idle_connections"]
    rec = _record("idle_connections", srv)
    limit, why = max_connections(srv, ctx.gen)
    points = []
    skipped = {}
    for count in p["counts"]:
        if count > limit:
            skipped[str(count)] = f"{count} connections exceed what this machine allows: {why}"
            continue
        time.sleep(p["settle_s"])
        before = srv.rss_kb()
        t0 = time.monotonic()
        users = [f"u{i}" for i in range(count)]
        res = _login_group(ctx, srv, "idle", _split(users, ctx.gen.n), p["login_concurrency"])
        login_s = time.monotonic() - t0
        time.sleep(p["settle_s"])
        counts = ctx.gen.call("count", {"group": "idle"})
        open_ = sum(c["open"] for c in counts if c)
        after = srv.rss_kb()
        _close_group(ctx, "idle")
        per_conn = (after - before) / count
        points.append({"connections": count, "open_after_settle": open_, "rss_before_kb": before,
                       "rss_after_kb": after, "kb_per_conn": round(per_conn, 2),
                       "login_s": round(login_s, 2),
                       "logins_per_s": round(count / login_s, 1)})
        rec["metrics"][f"kb_per_conn_{count}"] = round(per_conn, 2)
        if open_ < count:
            rec["details"].setdefault("warnings", []).append(
                f"only {open_} of {count} connections still open after settling: "
                f"{[r for c in counts if c for r in c['reasons']]}")
        del res
    rec["details"]["points"] = points
    if skipped:
        rec["details"]["skipped"] = skipped
    if not points:
        rec["status"] = "skipped"
        rec["reason"] = "; ".join(skipped.values())
    return rec


def _messaging_run(ctx: Ctx, srv: S.ServerUnderTest, mode: str, rate: float, window: int,
                   warmup: float, duration: float, rec: dict,
                   label: str, group: str = "msg") -> tuple[list[dict], float]:
    t_start, w0, t_end = _timeline(warmup, duration)
    cpu = _ServerCPU(srv, w0, t_end, rec, label)
    res = ctx.gen.call("messaging", {"group": group, "mode": mode, "rate": rate / ctx.gen.n,
                                     "window": window, "t_start": t_start, "w0": w0,
                                     "t_end": t_end}, timeout=warmup + duration + 60)
    got = sum(x["recv_window_arrival"] for x in res)
    if got:  # system calls per delivered message: how well the server batches its socket I/O
        rec["details"][f"{label}_syscalls_per_msg"] = {
            k: round(v / got, 3) for k, v in cpu.syscalls().items()}
        if cpu.instructions is not None:
            rec["details"][f"{label}_instructions"] = {"total": cpu.instructions, "msgs": got}
    share = cpu.kernel_share()
    if share is not None:
        rec["details"][f"{label}_kernel_cpu_share"] = round(share, 3)
    return res, cpu.fraction()


def messaging(ctx: Ctx, srv: S.ServerUnderTest) -> dict:
    p = ctx.params["messaging"]
    rec = _record("messaging", srv)
    users = [f"u{i}" for i in range(2 * p["pairs"])]
    # pairs stay inside one worker: users 2i, 2i+1 go to the same worker
    per_worker: list[list[str]] = [[] for _ in range(ctx.gen.n)]
    for i in range(p["pairs"]):
        per_worker[i % ctx.gen.n] += users[2 * i:2 * i + 2]
    _login_group(ctx, srv, "msg", per_worker, 100)
    try:
        time.sleep(0.5)
        res, scpu = _messaging_run(ctx, srv, "closed", 0, p["window"], p["warmup_s"],
                                   p["duration_s"], rec, "saturation")
        got = sum(r["recv_window_arrival"] for r in res)
        sat = got / p["duration_s"]
        h = merge_hists(res)
        rec["details"]["saturation"] = {"msgs_per_s": round(sat, 1), "server_cpu": round(scpu, 3),
                                        "in_flight": p["window"] * 2 * p["pairs"],
                                        "latency_ms": h.summary_ms(),
                                        "disconnected": sum(r["disconnected"] for r in res)}
        _put(rec, _check_gen(rec, res, ctx, "saturation"), {"msgs_per_s": round(sat, 1)})
        curve = [{"offered": None, "achieved": round(sat, 1), "kind": "saturation"}]
        runs = [(f"{int(f * 100)}pct", f * sat) for f in p["fractions"]]
        runs += [(str(r), float(r)) for r in p["fixed_rates"]]
        for label, rate in runs:
            if rate <= 0:
                continue
            res, scpu = _messaging_run(ctx, srv, "open", rate, 0, p["warmup_s"],
                                       p["lat_duration_s"], rec, f"at_{label}")
            sent = sum(r["sent_window"] for r in res)
            recv = sum(r["recv_window_sched"] for r in res)
            h = merge_hists(res)
            lat = h.summary_ms()
            achieved = recv / p["lat_duration_s"]
            rec["hists"][f"latency_at_{label}"] = h.to_dict()
            rec["details"][f"at_{label}"] = {"offered_per_s": round(rate, 1), "sent": sent,
                                             "delivered": recv, "server_cpu": round(scpu, 3),
                                             "latency_ms": lat}
            curve.append({"offered": round(rate, 1), "achieved": round(achieved, 1),
                          "kind": label})
            _put(rec, _check_gen(rec, res, ctx, f"at_{label}"),
                 {f"p99_ms_at_{label}": lat["p99"], f"p50_ms_at_{label}": lat["p50"],
                  f"delivered_frac_at_{label}": round(recv / sent, 4) if sent else None})
        rec["details"]["curve"] = curve
    finally:
        _close_group(ctx, "msg")
    return rec


def presence_broadcast(ctx: Ctx, srv: S.ServerUnderTest) -> dict:
    p = ctx.params["presence_broadcast"]
    rec = _record("presence_broadcast", srv)
    contacts = [f"p0c{i}" for i in range(p["contacts"])]
    prov = ctx.gen.call("provision_subs", [{"center": "p0", "contacts": contacts,
                                            "password": S.PASSWORD, "opts": ctx.opts(srv)}]
                        + [None] * (ctx.gen.n - 1), timeout=300)[0]
    rec["details"]["provisioned_both"] = prov["both"]
    if prov["both"] < len(contacts):
        rec["status"] = "failed"
        rec["reason"] = f"subscription provisioning reached {prov['both']}/{len(contacts)} 'both'"
        return rec
    # the center first: it is client 0 of the group in that worker
    ctx.gen.call("login", [{"group": "pres", "users": [("p0", "center")],
                            "password": S.PASSWORD, "opts": ctx.opts(srv), "concurrency": 1}]
                 + [None] * (ctx.gen.n - 1))
    try:
        ctx.gen.call("login", [{"group": "pres", "users": [(c, "contact") for c in contacts],
                                "password": S.PASSWORD, "opts": ctx.opts(srv),
                                "concurrency": 50}] + [None] * (ctx.gen.n - 1), timeout=300)
        time.sleep(1.0)

        def run(mode: str, rate: float, duration: float, label: str) -> tuple[dict, float]:
            t_start, w0, t_end = _timeline(p["warmup_s"], duration)
            cpu = _ServerCPU(srv, w0, t_end, rec, label)
            r = ctx.gen.call("presence", [{"group": "pres", "mode": mode, "rate": rate,
                                           "window": p["window"], "t_start": t_start, "w0": w0,
                                           "t_end": t_end}] + [None] * (ctx.gen.n - 1),
                             timeout=p["warmup_s"] + duration + 60)[0]
            return r, cpu.fraction()

        r, scpu = run("closed", 0, p["duration_s"], "saturation")
        bps = r["complete_window"] / p["duration_s"]
        rec["details"]["saturation"] = {"broadcasts_per_s": round(bps, 1),
                                        "deliveries_per_s": round(bps * r["contacts"], 1),
                                        "server_cpu": round(scpu, 3), "contacts": r["contacts"]}
        _put(rec, _check_gen(rec, [r], ctx, "saturation"),
             {"broadcasts_per_s": round(bps, 1), "deliveries_per_s": round(bps * r["contacts"], 1)})
        if bps > 0:
            for f in p["fractions"]:
                label = f"{int(f * 100)}pct"
                rr, scpu = run("open", f * bps, p["lat_duration_s"], f"at_{label}")
                h = merge_hists([rr])
                lat = h.summary_ms()
                rec["hists"][f"latency_at_{label}"] = h.to_dict()
                rec["details"][f"at_{label}"] = {
                    "offered_broadcasts_per_s": round(f * bps, 1), "sent": rr["sent_window"],
                    "deliveries": rr["deliveries_window_sched"], "server_cpu": round(scpu, 3),
                    "latency_ms": lat}
                _put(rec, _check_gen(rec, [rr], ctx, f"at_{label}"),
                     {f"p99_ms_at_{label}": lat["p99"]})
    finally:
        _close_group(ctx, "pres")
    return rec


def roster_fetch(ctx: Ctx, srv: S.ServerUnderTest) -> dict:
    p = ctx.params["roster_fetch"]
    rec = _record("roster_fetch", srv)
    items = [f"u{i}@{S.DOMAIN}" for i in range(p["items"])]
    prov = ctx.gen.call("provision_roster", [{"user": "r0", "password": S.PASSWORD,
                                              "opts": ctx.opts(srv), "items": items}]
                        + [None] * (ctx.gen.n - 1), timeout=600)[0]
    rec["details"]["roster_items"] = prov["items"]
    if prov["items"] < p["items"]:
        rec["status"] = "failed"
        rec["reason"] = f"roster provisioning reached {prov['items']}/{p['items']} items"
        return rec
    sessions: list[list[tuple[str, str]]] = [[] for _ in range(ctx.gen.n)]
    for i in range(p["sessions"]):
        sessions[i % ctx.gen.n].append(("r0", f"fetch{i}"))
    ctx.gen.call("login", [{"group": "roster", "users": s, "password": S.PASSWORD,
                            "opts": ctx.opts(srv), "concurrency": 10} if s else None
                           for s in sessions], timeout=120)
    try:
        t_start, w0, t_end = _timeline(p["warmup_s"], p["duration_s"])
        cpu = _ServerCPU(srv, w0, t_end, rec, "fetch")
        res = ctx.gen.call("roster_fetch", [{"group": "roster", "t_start": t_start, "w0": w0,
                                             "t_end": t_end} if s else None for s in sessions],
                           timeout=p["warmup_s"] + p["duration_s"] + 60)
        res = [r for r in res if r]
        n = sum(r["fetches_window"] for r in res)
        h = merge_hists(res)
        lat = h.summary_ms()
        rec["hists"]["fetch_time"] = h.to_dict()
        rec["details"].update({"sessions": p["sessions"], "items_seen": max(r["items"] for r in res),
                               "errors": sum(r["errors"] for r in res),
                               "server_cpu": round(cpu.fraction(), 3), "latency_ms": lat})
        _put(rec, _check_gen(rec, res, ctx, "fetch"),
             {"fetches_per_s": round(n / p["duration_s"], 1), "fetch_p50_ms": lat["p50"],
              "fetch_p99_ms": lat["p99"]})
    finally:
        _close_group(ctx, "roster")
    return rec


# ---------------------------------------------------------------------- own server instances

@contextlib.contextmanager
def _own_instance(ctx: Ctx, srv: S.ServerUnderTest, tag: str, users: list[str],
                  **attrs: Any):
    """A second instance of ``srv``'s server (same CPUs, certificate kind, base config) with
    ``attrs`` set (``sm``, ``archive``, ``archive_items``, ``preload``), its own temp dir and
    ports, and ``users`` provisioned; stopped on exit. The suite's main instance stays up, idle."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=srv.dir.parent))
    inst = S.make(srv.name, workdir, srv.cpus)
    inst.archive = srv.archive
    inst.instructions = srv.instructions
    for k, v in attrs.items():
        setattr(inst, k, v)
    t0 = time.monotonic()
    inst.launch(users)
    ctx.log(f"{tag}: own {srv.name} instance up on 127.0.0.1:{inst.c2s_port} "
            f"({', '.join(f'{k}={v}' for k, v in attrs.items() if not callable(v))}) in "
            f"{time.monotonic() - t0:.1f}s, pid {inst.main_pid()}")
    if srv.profiler is not None and srv.profile_out is not None:
        # run.py --profile: the instance where this scenario's work happens gets a flame graph
        err = inst.start_profiler(srv.profile_out.with_name(f"flame_{tag}.svg"))
        if err:
            ctx.log(f"{tag}: profiling unavailable: {err}")
    try:
        yield inst
    finally:
        alive = inst.running
        inst.stop()
        if not alive:
            raise RuntimeError(f"the {srv.name} instance of {tag} exited:\n" + inst.log_tail(15))


def _pairs_per_worker(ctx: Ctx, users: list[str]) -> list[list[str]]:
    """Pairs (2i, 2i+1) stay inside one worker."""
    per_worker: list[list[str]] = [[] for _ in range(ctx.gen.n)]
    for i in range(len(users) // 2):
        per_worker[i % ctx.gen.n] += users[2 * i:2 * i + 2]
    return per_worker


# ---------------------------------------------------------------------- sm_sessions

def sm_sessions(ctx: Ctx, srv: S.ServerUnderTest) -> dict:
    """1:1 messaging with Stream Management on every session, against the same messaging without
    it, on one instance of the server that offers SM (mbxmpp + ``sm``, Prosody + ``smacks``,
    ejabberd + ``mod_stream_mgmt``). Two groups of pairs are logged in side by side (different
    users): ``smplain`` never enables SM, ``smon`` sends ``<enable resume='true'/>`` after bind,
    answers every server ``<r/>`` with ``<a h/>`` and sends its own ``<r/>`` after every
    ``client_r_every`` messages. Saturation alternates plain/SM runs (``rounds`` of each, order
    swapped every round); the ratio SM/plain is over the sums."""
    p = ctx.params["sm_sessions"]
    rec = _record("sm_sessions", srv)
    ok, why = srv.sm_available()
    if not ok:
        rec["status"] = "not_available"
        rec["reason"] = f"{srv.name} offers no Stream Management here: {why}"
        return rec
    n = 2 * p["pairs"]
    plain_users = [f"u{i}" for i in range(n)]
    sm_users = [f"u{i}" for i in range(n, 2 * n)]
    with _own_instance(ctx, srv, "sm_sessions", plain_users + sm_users, sm=True) as inst:
        rec["details"]["instance"] = {"sm": True, "archive": inst.archive,
                                      "c2s_port": inst.c2s_port}
        _login_group(ctx, inst, "smplain", _pairs_per_worker(ctx, plain_users), 100)
        try:
            try:
                _login_group(ctx, inst, "smon", _pairs_per_worker(ctx, sm_users), 100,
                             opts_extra={"sm": True,
                                         "sm_request_every": p["client_r_every"]})
            except RuntimeError as e:
                if "offers no stream management" in str(e):
                    rec["status"] = "not_available"
                    rec["reason"] = f"{srv.name} does not offer urn:xmpp:sm:3: {e}"[:500]
                    return rec
                raise
            time.sleep(0.2)
            _sm_runs(ctx, inst, p, rec)
        finally:
            t0 = time.monotonic()
            _close_group(ctx, "smplain")
            _close_group(ctx, "smon")
            rec["details"]["close_s"] = round(time.monotonic() - t0, 2)
    return rec


def _alternate_saturation(ctx: Ctx, p: dict, rec: dict,
                          targets: dict[str, tuple[S.ServerUnderTest, str]],
                          on_result: Callable[[str, list[dict]], None] | None = None
                          ) -> dict[str, list]:
    """Closed-loop saturation runs (``window`` in flight per sender, ``warmup_s`` +
    ``duration_s``) alternated between the kinds of ``targets`` (kind -> (server, logged-in
    group)): ``rounds`` runs of each, the order swapped every round, so that a steady background
    load cancels out of the ratio. Per kind: [delivered in the windows, seconds, every run valid
    (generator not the bottleneck), server CPU seconds, instructions and the messages delivered
    while they were counted (run.py --instructions)]; per run in ``saturation_rounds``."""
    kinds = list(targets)
    tot: dict[str, list] = {k: [0, 0.0, True, 0.0, 0, 0] for k in kinds}
    rounds = []
    for r in range(max(1, p["rounds"])):
        order = kinds if r % 2 == 0 else kinds[::-1]
        this = {}
        for kind in order:
            server, group = targets[kind]
            label = f"saturation_{kind}_{r}"
            res, scpu = _messaging_run(ctx, server, "closed", 0, p["window"], p["warmup_s"],
                                       p["duration_s"], rec, label, group)
            got = sum(x["recv_window_arrival"] for x in res)
            valid = _check_gen(rec, res, ctx, label)
            tot[kind][0] += got
            tot[kind][1] += p["duration_s"]
            tot[kind][2] = tot[kind][2] and valid
            tot[kind][3] += scpu * p["duration_s"]
            instr = rec["details"].get(f"{label}_instructions")
            if instr is not None:
                tot[kind][4] += instr["total"]
                tot[kind][5] += instr["msgs"]
            this[kind] = {"msgs_per_s": round(got / p["duration_s"], 1),
                          "server_cpu": round(scpu, 3),
                          "disconnected": sum(x["disconnected"] for x in res)}
            if on_result is not None:
                on_result(kind, res)
        rounds.append(this)
    rec["details"]["saturation_rounds"] = rounds
    return tot


def _vs_plain(rec: dict, tot: dict[str, list], kind: str) -> None:
    """``plain_msgs_per_s``, ``msgs_per_s`` (``kind``), ``msgs_per_s_ratio_vs_plain`` and
    ``server_cpu_per_msg_ratio_vs_plain`` from :func:`_alternate_saturation`'s sums, with the
    generator-bottleneck rules: a figure measured while the generator was the bottleneck is
    withheld (a lower bound); a ratio over a withheld plain figure is an upper bound."""
    plain = tot["plain"][0] / tot["plain"][1]
    other = tot[kind][0] / tot[kind][1]
    _put(rec, tot["plain"][2], {"plain_msgs_per_s": round(plain, 1)})
    _put(rec, tot[kind][2], {"msgs_per_s": round(other, 1)})
    if plain > 0:
        ratio = {"msgs_per_s_ratio_vs_plain": round(other / plain, 3)}
        if tot["plain"][2]:
            # over a valid plain figure: a result, or (the other figure generator-limited) a
            # lower bound
            _put(rec, tot[kind][2], ratio)
        elif tot[kind][2]:
            # the plain figure is a lower bound (generator-limited): the ratio an upper bound
            rec["upper_bounds"].update(ratio)
        else:
            # both generator-limited: the ratio bounds nothing (the generator's own ratio)
            rec.setdefault("unbounded", {}).update(ratio)
    if tot["plain"][0] and tot[kind][0] and tot["plain"][3] > 0:
        # server CPU per delivered message, over plain: what the feature costs the server, much
        # less sensitive than the throughput ratio to other processes taking the server's core
        us_plain = tot["plain"][3] / tot["plain"][0] * 1e6
        us_other = tot[kind][3] / tot[kind][0] * 1e6
        rec["details"]["server_cpu_us_per_msg"] = {"plain": round(us_plain, 2),
                                                   kind: round(us_other, 2)}
        rec["metrics"]["server_cpu_per_msg_ratio_vs_plain"] = round(us_other / us_plain, 3)
    if tot["plain"][5] and tot[kind][5]:
        # run.py --instructions: what the server executed per delivered message (under valgrind)
        i_plain = tot["plain"][4] / tot["plain"][5]
        i_other = tot[kind][4] / tot[kind][5]
        rec["details"]["server_instructions_per_msg"] = {"plain": round(i_plain),
                                                         kind: round(i_other)}
        rec["metrics"]["server_instructions_per_msg_ratio_vs_plain"] = round(i_other / i_plain, 3)


def _sm_runs(ctx: Ctx, inst: S.ServerUnderTest, p: dict, rec: dict) -> None:
    sm_checks = {"sm_server_requests": 0, "sm_unacked_after_sync": 0, "sm_bad_acks": 0}

    def on_result(kind: str, res: list[dict]) -> None:
        if kind == "sm":
            for k in sm_checks:
                sm_checks[k] += sum(x.get(k, 0) for x in res)

    tot = _alternate_saturation(ctx, p, rec, {"plain": (inst, "smplain"), "sm": (inst, "smon")},
                                on_result)
    _vs_plain(rec, tot, "sm")

    def latency(kind: str, rate: float) -> None:
        group = "smon" if kind == "sm" else "smplain"
        pre = "" if kind == "sm" else "plain_"
        label = f"{pre}at_{int(rate)}" if rate == int(rate) else f"{pre}at_{rate}"
        res, scpu = _messaging_run(ctx, inst, "open", rate, 0, p["warmup_s"],
                                   p["lat_duration_s"], rec, label, group)
        sent = sum(x["sent_window"] for x in res)
        recv = sum(x["recv_window_sched"] for x in res)
        h = merge_hists(res)
        lat = h.summary_ms()
        tag = label[len(pre) + 3:]
        rec["hists"][f"latency_{label}"] = h.to_dict()
        rec["details"][label] = {"offered_per_s": round(rate, 1), "sent": sent,
                                 "delivered": recv, "server_cpu": round(scpu, 3),
                                 "latency_ms": lat}
        if kind == "sm":
            for k in sm_checks:
                sm_checks[k] += sum(x.get(k, 0) for x in res)
        _put(rec, _check_gen(rec, res, ctx, label),
             {f"{pre}p50_ms_at_{tag}": lat["p50"], f"{pre}p99_ms_at_{tag}": lat["p99"],
              f"{pre}delivered_frac_at_{tag}": round(recv / sent, 4) if sent else None})

    for rate in p["fixed_rates"]:
        latency("sm", float(rate))
    for rate in p["plain_fixed_rates"]:
        latency("plain", float(rate))
    rec["details"]["sm_checks"] = sm_checks
    # every SM session's last <r/> must be answered with h = what it sent
    rec["metrics"]["ack_errors"] = sm_checks["sm_unacked_after_sync"] + sm_checks["sm_bad_acks"]
    if rec["metrics"]["ack_errors"]:
        rec["details"].setdefault("warnings", []).append(
            f"stream management: {sm_checks['sm_unacked_after_sync']} session(s) whose final ack "
            f"did not match what they sent, {sm_checks['sm_bad_acks']} ack(s) of more than sent")


# ---------------------------------------------------------------------- mam_query

def mam_query(ctx: Ctx, srv: S.ServerUnderTest) -> dict:
    """MAM "last page of 50" on an instance of the server with archiving on (mbxmpp + ``mam``,
    Prosody ``mod_mam`` with its default internal store, ejabberd ``mod_mam`` on mnesia): owners'
    archives filled with ``messages`` each over the wire (``perf/mamwire.py``, shared with
    ``perf/bench_mam_wire.py``); then ``queries`` sequential queries on one session (at most
    ``lat_max_s``) and ``concurrency`` sessions querying back to back for ``duration_s``."""
    p = ctx.params["mam_query"]
    rec = _record("mam_query", srv)
    n = p["messages"]
    if n < mamwire.PAGE:
        raise ValueError(f"mam_query.messages must be at least {mamwire.PAGE}")
    owners = [f"m{i}" for i in range(max(1, p["owners"]))]
    peers = [f"mp{i}" for i in range(len(owners))]
    with _own_instance(ctx, srv, "mam_query", owners + peers, archive=True,
                       archive_items=n) as inst:
        rec["details"]["instance"] = {"archive": True, "c2s_port": inst.c2s_port,
                                      "storage": inst.mam_storage()}
        # fill: owner/peer pairs spread over the workers
        per: list[list[tuple[str, str]]] = _split(list(zip(owners, peers)), ctx.gen.n)
        c0 = inst.cpu_seconds()
        res = ctx.gen.call("mam_fill", [
            {"opts": ctx.opts(inst), "pairs": pr, "password": S.PASSWORD, "n": n,
             "window": p["fill_window"], "timeout": p["fill_timeout_s"]} if pr else None
            for pr in per], timeout=p["fill_timeout_s"] + 120)
        res = [r for r in res if r]
        wall = max(r["wall_s"] for r in res)
        fill_rate = n * len(owners) / wall
        rec["details"]["fill"] = {"messages_per_owner": n, "owners": len(owners),
                                  "wall_s": round(wall, 2), "server_cpu_s":
                                  round(inst.cpu_seconds() - c0, 2),
                                  "per_pair": [f for r in res for f in r["fills"]]}
        rec["metrics"]["fill_msgs_per_s"] = round(fill_rate, 1)

        # sequential latency: one session of the first owner
        ctx.gen.call("login", [{"group": "mamlat", "users": [(owners[0], "lat")],
                                "password": S.PASSWORD,
                                "opts": ctx.opts(inst, roster=False, presence=False),
                                "concurrency": 1}] + [None] * (ctx.gen.n - 1), timeout=120)
        try:
            w = ctx.gen.call("mam_warm", [{"group": "mamlat", "n": n, "warmup": p["warmup"]}]
                             + [None] * (ctx.gen.n - 1), timeout=600)[0]
            if w["failed"]:
                rec["status"] = "failed"
                rec["reason"] = f"wrong MAM answers: {w['errors']}"
                return rec
            c0 = inst.cpu_seconds()
            r = ctx.gen.call("mam_latency", [{"group": "mamlat", "queries": p["queries"],
                                              "max_s": p["lat_max_s"]}]
                             + [None] * (ctx.gen.n - 1), timeout=p["lat_max_s"] + 120)[0]
            scpu = inst.cpu_seconds() - c0
        finally:
            _close_group(ctx, "mamlat")
        h = merge_hists([r])
        lat = h.summary_ms()
        rec["hists"]["query_time"] = h.to_dict()
        done = max(1, r["queries"])
        rec["details"]["sequential"] = {
            "queries": r["queries"], "bounded_by_time": r["bounded_by_time"],
            "wall_s": round(r["wall_s"], 2), "errors": r["errors"],
            "error_samples": r["error_samples"], "latency_ms": lat,
            "server_cpu_ms_per_query": round(scpu * 1000 / done, 3),
            "client_cpu_ms_per_query": round(r["cpu_s"] * 1000 / done, 3)}
        if r["bounded_by_time"]:
            rec["details"].setdefault("warnings", []).append(
                f"sequential queries: {r['queries']} of {p['queries']} in the {p['lat_max_s']}s "
                "bound")
        rec["metrics"].update({"query_p50_ms": lat["p50"], "query_p99_ms": lat["p99"],
                               "query_errors": r["errors"]})

        # concurrent sessions (owners in turn), spread over the workers
        sess: list[list[tuple[str, str]]] = [[] for _ in range(ctx.gen.n)]
        for i in range(p["concurrency"]):
            sess[i % ctx.gen.n].append((owners[i % len(owners)], f"tp{i}"))
        ctx.gen.call("login", [{"group": "mamtp", "users": s_, "password": S.PASSWORD,
                                "opts": ctx.opts(inst, roster=False, presence=False),
                                "concurrency": 10} if s_ else None for s_ in sess], timeout=120)
        try:
            ws = ctx.gen.call("mam_warm", [{"group": "mamtp", "n": n, "warmup": 1} if s_ else None
                                           for s_ in sess], timeout=600)
            errs = [e for x in ws if x for e in x["errors"]]
            if errs:
                rec["status"] = "failed"
                rec["reason"] = f"wrong MAM answers: {errs[:3]}"
                return rec
            t_start, w0, t_end = _timeline(p["warmup_s"], p["duration_s"])
            cpu = _ServerCPU(inst, w0, t_end, rec, "concurrent")
            res = ctx.gen.call("mam_throughput", [
                {"group": "mamtp", "t_start": t_start, "w0": w0, "t_end": t_end} if s_ else None
                for s_ in sess], timeout=p["warmup_s"] + p["duration_s"] + 120)
            res = [x for x in res if x]
            scpu = cpu.fraction()
        finally:
            _close_group(ctx, "mamtp")
        got = sum(x["done_window"] for x in res)
        qps = got / p["duration_s"]
        h = merge_hists(res)
        rec["hists"]["concurrent_query_time"] = h.to_dict()
        rec["details"]["concurrent"] = {
            "sessions": p["concurrency"], "queries_in_window": got,
            "errors": sum(x["errors"] for x in res),
            "error_samples": [e for x in res for e in x["error_samples"]][:3],
            "server_cpu": round(scpu, 3),
            "server_cpu_ms_per_query": round(scpu * p["duration_s"] * 1000 / got, 3) if got
            else None, "latency_ms": h.summary_ms()}
        rec["metrics"]["query_errors"] += sum(x["errors"] for x in res)
        _put(rec, _check_gen(rec, res, ctx, "concurrent"),
             {"queries_per_s": round(qps, 1),
              "concurrent_p99_ms": h.summary_ms()["p99"]})
    return rec


# ---------------------------------------------------------------------- mam_archiving

def mam_archiving(ctx: Ctx, srv: S.ServerUnderTest) -> dict:
    """What archiving costs routing: the ``messaging`` pairs' saturation on an instance of the
    server with archiving on (mbxmpp + ``mam``, Prosody ``mod_mam``, ejabberd ``mod_mam``) and
    ``preload_users`` accounts, against the same pairs on the suite's main instance (no archive:
    the core benchmark). For mbxmpp the instance's LMDB archive is filled before its start with
    ``preload_messages`` spread over the ``preload_users`` accounts, through mbxmpp's storage API
    (``perf/mamfill.py``, like ``perf/bench_mam.py``); the peers get no preload. Saturation
    alternates main-instance (``arplain``) and archiving-instance (``aron``) runs, ``rounds`` of
    each, order swapped every round. For mbxmpp the archive size is read afterwards with the
    ``archive sizes`` CLI: it must have grown by two items (sender's and recipient's copies) per
    message sent (``archive_missing`` = expected - growth)."""
    p = ctx.params["mam_archiving"]
    rec = _record("mam_archiving", srv)
    n = 2 * p["pairs"]
    msg_users = [f"u{i}" for i in range(n)]              # the messaging scenario's pairs
    accounts = [f"u{i}" for i in range(max(n, p["preload_users"]))]
    attrs: dict[str, Any] = {"archive": True}
    preload = srv.name == "mbxmpp" and p["preload_messages"] > 0
    if preload:
        owners = [f"{u}@{S.DOMAIN}" for u in accounts]
        attrs["preload"] = lambda inst: inst.fill_archive(p["preload_messages"], owners)
    else:
        rec["details"]["preload"] = ("none (mbxmpp only)" if srv.name != "mbxmpp"
                                     else "none (preload_messages = 0)")
    if srv.archive:
        rec["details"].setdefault("warnings", []).append(
            "the main instance archives too (--archive): the plain runs are not the core "
            "benchmark")
    sent = {"plain": 0, "archive": 0}
    recv = {"plain": 0, "archive": 0}
    with _own_instance(ctx, srv, "mam_archiving", accounts, **attrs) as inst:
        rec["details"]["instance"] = {"archive": True, "c2s_port": inst.c2s_port,
                                      "storage": inst.mam_storage(), "accounts": len(accounts)}
        if preload:
            rec["details"]["preload"] = inst.preload_result
            pr = inst.preload_result
            ctx.log(f"mam_archiving: archive preloaded with {pr['archive_items']:,} messages over "
                    f"{pr['archives']:,} accounts in {pr['fill_s']} s")
        _login_group(ctx, srv, "arplain", _pairs_per_worker(ctx, msg_users), 100)
        try:
            _login_group(ctx, inst, "aron", _pairs_per_worker(ctx, msg_users), 100)
            try:
                time.sleep(0.5)

                def on_result(kind: str, res: list[dict]) -> None:
                    sent[kind] += sum(x["sent"] for x in res)
                    recv[kind] += sum(x["recv"] for x in res)

                tot = _alternate_saturation(ctx, p, rec, {"plain": (srv, "arplain"),
                                                          "archive": (inst, "aron")}, on_result)
            finally:
                _close_group(ctx, "aron")
        finally:
            _close_group(ctx, "arplain")
    _vs_plain(rec, tot, "archive")
    rec["details"]["messages"] = {"sent": sent, "received": recv}
    if srv.name != "mbxmpp":
        rec["details"]["archive_check"] = "not checked (mbxmpp only)"
        return rec
    # the instance is stopped: read its archive with the operator's CLI
    t0 = time.monotonic()
    items, archives = inst.archive_sizes()  # type: ignore[attr-defined]
    before = inst.preload_result["archive_items"] if preload else 0
    expected = 2 * sent["archive"]   # the sender's copy and the recipient's
    grew = items - before
    rec["details"]["archive_check"] = {"before": before, "after": items, "archives": archives,
                                       "grew_by": grew, "expected": expected,
                                       "cli_s": round(time.monotonic() - t0, 2)}
    rec["metrics"]["archive_missing"] = expected - grew
    if grew != expected:
        rec["details"].setdefault("warnings", []).append(
            f"archive check: the archive grew by {grew:,} items, expected {expected:,} "
            f"(2 per message sent: {sent['archive']:,})")
    return rec


# ---------------------------------------------------------------------- muc_fanout

def muc_fanout(ctx: Ctx, srv: S.ServerUnderTest) -> dict:
    """Group chat fan-out (XEP-0045) on an instance of the server with MUC at
    ``conference.<domain>`` (mbxmpp + ``muc``, Prosody's ``muc`` component, ejabberd
    ``mod_muc``): for each size in ``rooms``, that many perf clients (``c0``..) join one room
    (the first creates it as an instant room) and ``senders`` of them send groupchat messages.
    Saturation: closed loop, ``window`` messages in flight per sender, a message in flight until
    the last occupant got it; deliveries are counted at every occupant (the senders get their
    own messages back, as XEP-0045 §7.4 has it) and divided by the server's CPU seconds over the
    window (``/proc/PID/stat``). Then open loop at ``fractions`` of the saturation's message rate
    and at ``fixed_deliveries`` per second (the same load on every server): latency from a
    message's scheduled send to its arrival at the last occupant. All occupants
    live in the generator's first worker (that is where "last" is known)."""
    p = ctx.params["muc_fanout"]
    rec = _record("muc_fanout", srv)
    sizes = list(p["rooms"])
    users = [f"c{i}" for i in range(max(sizes))]
    with _own_instance(ctx, srv, "muc_fanout", users, muc=True) as inst:
        rec["details"]["instance"] = {"muc": f"conference.{S.DOMAIN}", "c2s_port": inst.c2s_port}
        for size in sizes:
            _muc_room(ctx, inst, p, rec, size, users[:size])
    return rec


def _muc_room(ctx: Ctx, inst: S.ServerUnderTest, p: dict, rec: dict, size: int,
              users: list[str]) -> None:
    room = f"room{size}@conference.{S.DOMAIN}"
    first = [None] * (ctx.gen.n - 1)
    det: dict[str, Any] = {"room": room, "occupants": size, "senders": min(p["senders"], size)}
    rec["details"][f"room_{size}"] = det
    t0 = time.monotonic()
    _login_group(ctx, inst, "muc", [users] + [[] for _ in first], 50)
    try:
        det["login_s"] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        ctx.gen.call("muc_join", [{"group": "muc", "room": room}] + first, timeout=900)
        det["join_s"] = round(time.monotonic() - t0, 2)
        ctx.log(f"muc_fanout: {size} occupants in {room} on {inst.name} (logins "
                f"{det['login_s']} s, joins {det['join_s']} s)")
        time.sleep(0.5)

        def run(mode: str, rate: float, duration: float, label: str) -> tuple[dict, float]:
            t_start, w0, t_end = _timeline(p["warmup_s"], duration)
            cpu = _ServerCPU(inst, w0, t_end, rec, label)
            r = ctx.gen.call("muc", [{"group": "muc", "room": room, "mode": mode, "rate": rate,
                                      "senders": p["senders"], "window": p["window"],
                                      "t_start": t_start, "w0": w0, "t_end": t_end}] + first,
                             timeout=p["warmup_s"] + duration + 120)[0]
            share = cpu.kernel_share()
            if share is not None:
                det[f"{label}_kernel_cpu_share"] = round(share, 3)
            got = r["deliveries_window"]
            if got:  # system calls per delivery: how well the server batches its socket I/O
                det[f"{label}_syscalls_per_delivery"] = {
                    k: round(v / got, 3) for k, v in cpu.syscalls().items()}
            if cpu.instructions is not None and r["deliveries_window"]:
                # run.py --instructions: what the server executed per delivery (under valgrind)
                det[f"{label}_instructions_per_delivery"] = round(
                    cpu.instructions / r["deliveries_window"])
            if r["errors"] or r["unknown"]:
                rec["details"].setdefault("warnings", []).append(
                    f"{label}: {r['errors']} error stanza(s) {r['error_samples']}, "
                    f"{r['unknown']} unexpected message(s)")
            return r, cpu.fraction()

        label = f"saturation_{size}"
        r, scpu = run("closed", 0, p["duration_s"], label)
        cpu_s = scpu * p["duration_s"]
        deliveries = r["deliveries_window"]
        msgs = r["complete_window"] / p["duration_s"]
        det["saturation"] = {"msgs_per_s": round(msgs, 1),
                             "deliveries_per_s": round(deliveries / p["duration_s"], 1),
                             "server_cpu": round(scpu, 3),
                             "in_flight": p["window"] * det["senders"],
                             "latency_last_ms": merge_hists([r]).summary_ms(),
                             "errors": r["errors"], "disconnected": r["disconnected"]}
        valid = _check_gen(rec, [r], ctx, label)
        _put(rec, valid, {f"msgs_per_s_{size}": round(msgs, 1),
                          f"deliveries_per_s_{size}": round(deliveries / p["duration_s"], 1)})
        if cpu_s > 0:
            # what the server spends per delivery does not need a saturated server: kept even
            # when the generator was the bottleneck (a server below its capacity batches less,
            # so the figure is then pessimistic)
            rec["metrics"][f"deliveries_per_cpu_s_{size}"] = round(deliveries / cpu_s, 1)
        levels = [(f"{int(f * 100)}pct_{size}", f * msgs) for f in p["fractions"] if msgs > 0]
        # the same offered deliveries/s on every server (saturations differ: 50% of each
        # server's own is a different load, and the generator's share of the latency grows
        # with it)
        levels += [(f"{d}dps_{size}", d / size) for d in p["fixed_deliveries"]]
        for tag, rate in levels:
            rr, scpu = run("open", rate, p["lat_duration_s"], f"at_{tag}")
            h = merge_hists([rr])
            lat = h.summary_ms()
            rec["hists"][f"latency_last_at_{tag}"] = h.to_dict()
            cpu_s = scpu * p["lat_duration_s"]
            det[f"at_{tag}"] = {
                "offered_msgs_per_s": round(rate, 1), "sent": rr["sent_window"],
                "complete": rr["sent_window"] - rr["incomplete_window"],
                "server_cpu": round(scpu, 3),
                "deliveries_per_cpu_s": round(rr["deliveries_window"] / cpu_s, 1) if cpu_s > 0
                else None,
                "latency_last_ms": lat,
                "latency_every_delivery_ms": Histogram.from_dict(rr["hist_all"]).summary_ms()}
            _put(rec, _check_gen(rec, [rr], ctx, f"at_{tag}"),
                 {f"p99_last_ms_at_{tag}": lat["p99"], f"p50_last_ms_at_{tag}": lat["p50"],
                  f"incomplete_at_{tag}": rr["incomplete_window"]})
    finally:
        _close_group(ctx, "muc")


SCENARIOS: dict[str, Callable[[Ctx, S.ServerUnderTest], dict]] = {
    "login_storm": login_storm,
    "idle_connections": idle_connections,
    "messaging": messaging,
    "presence_broadcast": presence_broadcast,
    "roster_fetch": roster_fetch,
    "sm_sessions": sm_sessions,
    "muc_fanout": muc_fanout,
    "mam_query": mam_query,
    "mam_archiving": mam_archiving,
}


def run_scenario(name: str, ctx: Ctx, srv: S.ServerUnderTest) -> dict:
    t0 = time.monotonic()
    try:
        rec = SCENARIOS[name](ctx, srv)
    except Exception as e:
        rec = _record(name, srv)
        rec["status"] = "failed"
        rec["reason"] = f"{type(e).__name__}: {e}"[:2000]
        rec["details"]["traceback"] = traceback.format_exc()[-4000:]
        for g in ("idle", "msg", "pres", "roster", "smplain", "smon", "mamlat", "mamtp",
                  "arplain", "aron", "muc"):
            try:
                ctx.gen.call("close", {"group": g}, timeout=60)
            except Exception:
                pass
    if rec["status"] == "invalid" and rec["metrics"]:
        rec["status"] = "partial"     # some figures valid, others withheld
    rec["elapsed_s"] = round(time.monotonic() - t0, 2)
    if srv.proc is not None and srv.proc.poll() is not None:
        rec["status"] = "failed"
        rec["reason"] = (rec["reason"] + f"; server exited with {srv.proc.returncode}").strip("; ")
    return rec
