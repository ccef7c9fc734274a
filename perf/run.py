"""Run the performance suite: ``python -m perf.run [options]`` (see perf/README.md).

Starts every chosen server on loopback (pinned to the server CPUs), provisions the same accounts,
runs each scenario on each server in turn (interleaved: scenario 1 on A, B, C, then scenario 2 ...),
writes ``results.jsonl``, PNG plots and ``summary.md`` under ``<out>/<timestamp>/``, and with
``--budgets`` exits non-zero naming each missed budget.

Exit codes: 0 success; 1 a scenario failed on mbxmpp, mbxmpp could not start, or a budget was
missed; 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):          # `python perf/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "perf"

from perf import report, scenarios as SC, servers as S  # noqa: E402
from perf.loadgen import Generator, raise_nofile  # noqa: E402

HERE = Path(__file__).resolve().parent


def _log(msg: str) -> None:
    print(f"[perf {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _cpulist(s: str) -> list[int]:
    out: list[int] = []
    for part in s.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part.strip():
            out.append(int(part))
    return out


def _default_cpus() -> tuple[str, str]:
    n = len(os.sched_getaffinity(0))
    if n >= 2:
        half = max(1, n // 2)
        return "0" if half == 1 else f"0-{half - 1}", (str(half) if n - half == 1
                                                        else f"{half}-{n - 1}")
    return "0", "0"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    srv_cpus, gen_cpus = _default_cpus()
    ap = argparse.ArgumentParser(prog="python -m perf.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="mbxmpp,prosody,ejabberd",
                    help="comma-separated: mbxmpp, prosody, ejabberd (default: all three)")
    ap.add_argument("--scenarios", default=",".join(SC.DEFAULT_SCENARIOS),
                    help=f"comma-separated, from: {', '.join(SC.ALL_SCENARIOS)}")
    ap.add_argument("--smoke", action="store_true",
                    help="CI smoke mode: small counts, loose budgets, mbxmpp (+ Prosody if "
                         "installed) unless --servers is given; well under 90 s")
    ap.add_argument("--profile", action="store_true",
                    help="run mbxmpp under py-spy and write flame.svg into the results folder")
    ap.add_argument("--budgets", nargs="?", const=str(HERE / "budgets.toml"), default=None,
                    metavar="FILE", help="check budgets (default file perf/budgets.toml); "
                    "exit 1 naming each missed one")
    ap.add_argument("--out", default=str(HERE / "results"), help="results root (default "
                    "perf/results)")
    ap.add_argument("--server-cpus", default=srv_cpus, help=f"taskset list for the servers "
                    f"(default {srv_cpus})")
    ap.add_argument("--gen-cpus", default=gen_cpus, help=f"CPUs for the load generator "
                    f"(default {gen_cpus})")
    ap.add_argument("--workers", type=int, default=0,
                    help="generator worker processes (default: one per generator CPU)")
    ap.add_argument("--tls", choices=("starttls", "direct"), default="starttls")
    ap.add_argument("--archive", action="store_true",
                    help="every server archives 1:1 messages (MAM on mbxmpp, mod_mam on Prosody "
                         "and ejabberd); default: routed, not archived")
    ap.add_argument("--set", action="append", default=[], metavar="SCENARIO.KEY=VALUE",
                    help="override a scenario parameter, e.g. --set login_storm.concurrency=100 "
                         "or --set idle_connections.counts=[1000,10000]")
    ap.add_argument("--nice", type=int, default=None,
                    help="scheduling priority of the servers and the generator (root may go "
                         "negative); default -10 for full runs (a shared machine disturbs them "
                         "less), 0 for --smoke")
    ap.add_argument("--keep", action="store_true", help="keep the servers' temp dirs")
    ap.add_argument("--instructions", action="store_true",
                    help="run mbxmpp under valgrind (callgrind) and report the instructions it "
                         "executed per delivered message where a scenario compares two kinds "
                         "(sm_sessions, mam_archiving): a figure free of the machine's noise; "
                         "the rates themselves are then meaningless")
    args = ap.parse_args(argv)
    if args.smoke and "--servers" not in " ".join(argv or sys.argv[1:]):
        args.servers = "mbxmpp,prosody"
    return args


def _apply_overrides(params: dict[str, dict[str, Any]], sets: list[str]) -> None:
    for s in sets:
        key, _, val = s.partition("=")
        scen, _, k = key.partition(".")
        if scen not in params or not k or not val:
            raise SystemExit(f"--set {s}: expected SCENARIO.KEY=VALUE with SCENARIO in "
                             f"{', '.join(params)}")
        try:
            params[scen][k] = json.loads(val)
        except json.JSONDecodeError:
            params[scen][k] = val


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "nofile_hard": S.nofile_hard()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    scen_names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for n in names:
        if n not in S.SERVERS:
            print(f"unknown server {n!r} (known: {', '.join(S.SERVERS)})", file=sys.stderr)
            return 2
    for n in scen_names:
        if n not in SC.SCENARIOS:
            print(f"unknown scenario {n!r} (known: {', '.join(SC.SCENARIOS)})", file=sys.stderr)
            return 2
    params = json.loads(json.dumps(SC.SMOKE if args.smoke else SC.FULL))
    _apply_overrides(params, args.set)
    mode = "smoke" if args.smoke else "full"

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir = Path(args.out) / stamp
    outdir.mkdir(parents=True, exist_ok=True)
    jsonl = report.JsonlWriter(outdir / "results.jsonl")
    workroot = Path(tempfile.mkdtemp(prefix="mbxmpp-perf-"))
    gen_cpus = _cpulist(args.gen_cpus)
    try:
        os.sched_setaffinity(0, gen_cpus)
    except OSError as e:
        _log(f"cannot pin the generator to {gen_cpus}: {e}")
    raise_nofile()
    n_workers = args.workers or len(gen_cpus)
    _log(f"results in {outdir}; servers on CPUs {args.server_cpus}, generator on {gen_cpus} "
         f"({n_workers} worker(s)); work dir {workroot}")
    nice = args.nice if args.nice is not None else (0 if args.smoke else -10)
    if os.geteuid() != 0 and nice < 0:
        nice = 0
    S.NICE = nice
    gen = Generator(n_workers, gen_cpus, nice)
    ctx = SC.Ctx(gen=gen, params=params, gen_cpus=len(gen_cpus), tls=args.tls, log=_log)
    meta: dict[str, Any] = {"type": "meta", "timestamp": stamp, "mode": mode,
                            "servers": names, "scenarios": scen_names, "params": params,
                            "server_cpus": args.server_cpus, "gen_cpus": args.gen_cpus,
                            "workers": n_workers, "tls": args.tls, "nice": nice,
                            "archive": args.archive, "machine": _machine(),
                            "versions": {}, "unavailable": {}}
    started: dict[str, S.ServerUnderTest] = {}
    records: list[dict[str, Any]] = []
    rc = 0
    try:
        for name in names:
            ok, why = S.SERVERS[name].available()
            if not ok:
                meta["unavailable"][name] = why
                _log(f"{name}: skipped: {why}")
                if name == "mbxmpp":
                    rc = 1
                continue
            srv = S.make(name, workroot, args.server_cpus)
            srv.archive = args.archive
            srv.instructions = args.instructions and name == "mbxmpp"
            meta["versions"][name] = srv.version()
            users = SC.users_needed(params, scen_names, S.nofile_hard() - 300)
            t0 = time.monotonic()
            try:
                srv.prepare()
                if srv.accounts_before_start:
                    srv.provision_accounts(users)
                srv.start()
                if not srv.accounts_before_start:
                    srv.provision_accounts(users)
            except Exception as e:
                _log(f"{name}: cannot start: {e}")
                meta["unavailable"][name] = f"cannot start: {e}"[:3000]
                srv.stop()
                if name == "mbxmpp":
                    rc = 1
                continue
            _log(f"{name} {meta['versions'][name]}: up on 127.0.0.1:{srv.c2s_port} with "
                 f"{len(users)} accounts in {time.monotonic() - t0:.1f}s, pid {srv.main_pid()}, "
                 f"RSS {srv.rss_kb()} KB, nofile {srv.nofile_limit()}")
            started[name] = srv
            if args.profile and name == "mbxmpp":
                err = srv.start_profiler(outdir / "flame.svg")
                if err:
                    _log(f"profiling unavailable: {err}")
                    meta["profile_error"] = err
        jsonl.write(meta)
        if "mbxmpp" in names and "mbxmpp" not in started:
            _log("mbxmpp could not be started: " + meta["unavailable"].get("mbxmpp", ""))
        for scen in scen_names:
            for name, srv in started.items():
                _log(f"{scen} on {name} ...")
                rec = SC.run_scenario(scen, ctx, srv)
                rec["type"] = "scenario"
                rec["timestamp"] = time.time()
                records.append(rec)
                jsonl.write(rec)
                shown = ", ".join(f"{k}={v}" for k, v in rec["metrics"].items())
                _log(f"{scen} on {name}: {rec['status']} ({rec['elapsed_s']}s) {shown}"
                     + (f" — {rec['reason']}" if rec["reason"] else ""))
                if rec["status"] == "failed" and name == "mbxmpp":
                    rc = 1
    finally:
        for srv in started.values():
            srv.stop()
        gen.close()
        jsonl.close()
        if args.keep:
            _log(f"kept {workroot}")
        else:
            shutil.rmtree(workroot, ignore_errors=True)
    if args.profile and (outdir / "flame.svg").exists():
        _log(f"flame graph: {outdir / 'flame.svg'}")

    budget_lines: list[str] | None = None
    if args.budgets:
        budgets = report.load_budgets(Path(args.budgets), mode)
        missed, notes = report.check_budgets(records, budgets)
        budget_lines = [f"MISSED {m}" for m in missed] + [f"note: {n}" for n in notes]
        for m in missed:
            print(f"budget missed: {m}", file=sys.stderr)
        for n in notes:
            print(f"budget note: {n}", file=sys.stderr)
        if missed:
            rc = 1
        elif budgets:
            _log(f"all {len(budgets) - len(notes)} checked budgets met")
    made = report.plots(records, outdir)
    shown_servers = [n for n in names if n in started]
    (outdir / "summary.md").write_text(report.summary_md(records, shown_servers, budget_lines,
                                                         meta))
    _log(f"wrote {outdir}/summary.md, results.jsonl, {', '.join(made) or 'no plots'}")
    print((outdir / "summary.md").read_text())
    if "mbxmpp" in names and "mbxmpp" not in started:
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
