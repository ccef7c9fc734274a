"""Results: JSON lines, PNG plots (matplotlib, Agg), summary.md, and the budget check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .loadgen import Histogram

import tomllib

PEERS = ("prosody", "ejabberd")
# metrics where lower is better (for the reading of ratios and the direction of budgets)
LOWER_IS_BETTER = ("_ms", "kb_per_conn")


class JsonlWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.f = open(path, "a", encoding="utf-8")

    def write(self, rec: dict[str, Any]) -> None:
        self.f.write(json.dumps(rec, sort_keys=True) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def metric_table(records: list[dict], field: str = "metrics") -> dict[str, dict[str, Any]]:
    """{"scenario.metric": {server: value}} over the scenario records."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("type") != "scenario":
            continue
        for k, v in r.get(field, {}).items():
            out.setdefault(f"{r['scenario']}.{k}", {})[r["server"]] = v
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


# ====================================================================== summary

def summary_md(records: list[dict], servers: list[str], budget_lines: list[str] | None,
               meta: dict[str, Any]) -> str:
    table = metric_table(records)
    peers = [p for p in PEERS if p in servers]
    base = "mbxmpp" if "mbxmpp" in servers else None
    lines = [f"# Performance run {meta.get('timestamp', '')}", ""]
    lines.append(f"Mode: **{meta.get('mode')}** · server CPUs `{meta.get('server_cpus')}` · "
                 f"generator CPUs `{meta.get('gen_cpus')}` ({meta.get('workers')} worker(s)) · "
                 f"TLS: {meta.get('tls')} · SASL: SCRAM-SHA-1 · messages "
                 f"{'archived (MAM)' if meta.get('archive') else 'routed, not archived'}")
    vers = ", ".join(f"{s} {v}" for s, v in meta.get("versions", {}).items())
    if vers:
        lines.append(f"Versions: {vers}")
    lines.append("")
    head = ["metric"] + servers + ([f"{base}/{p}" for p in peers] if base else [])
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for key in sorted(table):
        vals = table[key]
        row = [key] + [_fmt(vals.get(s)) for s in servers]
        if base:
            for p in peers:
                a, b = vals.get(base), vals.get(p)
                row.append(f"{a / b:.2f}" if isinstance(a, (int, float)) and isinstance(
                    b, (int, float)) and b else "—")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Ratios are mbxmpp/peer: above 1 is better for rates, below 1 is better for "
                 "latencies (`_ms`) and memory (`kb_per_conn`).")
    notes = [r for r in records if r.get("type") == "scenario" and r["status"] != "ok"]
    if notes:
        lines += ["", "## Not measured / withheld", ""]
        for r in notes:
            lb = ", ".join(f"{k} ≥ {_fmt(v)}" for k, v in r.get("withheld", {}).items()
                           if k.endswith("_per_s") and v)
            ub = ", ".join(f"{k} ≤ {_fmt(v)}" for k, v in r.get("upper_bounds", {}).items())
            lines.append(f"- {r['server']} {r['scenario']}: **{r['status']}** — {r['reason']}"
                         + (f" (lower bound only: {lb})" if lb else "")
                         + (f" (upper bound only: {ub})" if ub else ""))
    warn = [(r, w) for r in records if r.get("type") == "scenario"
            for w in r.get("details", {}).get("warnings", [])]
    skipped = [(r, k, v) for r in records if r.get("type") == "scenario"
               for k, v in r.get("details", {}).get("skipped", {}).items()]
    if warn or skipped:
        lines += ["", "## Notes", ""]
        for r, w in warn:
            lines.append(f"- {r['server']} {r['scenario']}: {w}")
        for r, k, v in skipped:
            lines.append(f"- {r['server']} {r['scenario']} {k}: skipped — {v}")
    if budget_lines is not None:
        lines += ["", "## Budgets", ""]
        lines += [f"- {b}" for b in budget_lines] or ["- all budgets met"]
    lines.append("")
    return "\n".join(lines)


# ====================================================================== plots

def plots(records: list[dict], outdir: Path) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["matplotlib is not installed: no plots (pip install matplotlib)"]
    made: list[str] = []
    recs = [r for r in records if r.get("type") == "scenario"]

    # latency CDF per server, one panel per measured scenario/level
    panels: list[tuple[str, str]] = []
    for r in recs:
        for label in r.get("hists", {}):
            if label.startswith("latency_at_") and (r["scenario"], label) not in panels:
                panels.append((r["scenario"], label))
    if panels:
        fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels)), squeeze=False)
        for ax, (scen, label) in zip(axes[:, 0], panels):
            for r in recs:
                if r["scenario"] == scen and label in r["hists"]:
                    h = Histogram.from_dict(r["hists"][label])
                    pts = h.cdf_ms()
                    if pts:
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=r["server"])
            ax.set_xscale("log")
            ax.set_xlabel("latency (ms), receive time − scheduled send time")
            ax.set_ylabel("fraction")
            ax.set_title(f"{scen}: {label.replace('_', ' ')}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(outdir / "latency_cdf.png", dpi=100)
        plt.close(fig)
        made.append("latency_cdf.png")

    # throughput vs offered load (messaging)
    curves = [(r["server"], r["details"]["curve"]) for r in recs
              if r["scenario"] == "messaging" and r.get("details", {}).get("curve")]
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, curve in curves:
            pts = sorted((c["offered"], c["achieved"]) for c in curve if c["offered"])
            line = ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
            sat = [c["achieved"] for c in curve if c["kind"] == "saturation"]
            if sat:
                ax.axhline(sat[0], linestyle="--", color=line[0].get_color(), alpha=0.6,
                           label=f"{name} saturation")
        lim = max([c["offered"] or 0 for _, cv in curves for c in cv]
                  + [c["achieved"] for _, cv in curves for c in cv])
        ax.plot([0, lim], [0, lim], ":", color="grey", label="delivered = offered")
        ax.set_xlabel("offered messages/s")
        ax.set_ylabel("delivered messages/s")
        ax.set_title("1:1 messaging: throughput vs offered load")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(outdir / "throughput_vs_offered.png", dpi=100)
        plt.close(fig)
        made.append("throughput_vs_offered.png")

    # memory vs connections
    mem = [(r["server"], r["details"]["points"]) for r in recs
           if r["scenario"] == "idle_connections" and r.get("details", {}).get("points")]
    if mem:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
        for name, pts in mem:
            xs = [0] + [p["connections"] for p in pts]
            ys = [pts[0]["rss_before_kb"] / 1024] + [p["rss_after_kb"] / 1024 for p in pts]
            a1.plot(xs, ys, "o-", label=name)
            a2.plot([p["connections"] for p in pts], [p["kb_per_conn"] for p in pts], "o-",
                    label=name)
        a1.set_xlabel("authenticated idle connections")
        a1.set_ylabel("server RSS (MiB)")
        a1.set_title("memory vs connections")
        a2.set_xlabel("authenticated idle connections")
        a2.set_ylabel("KB per connection")
        a2.set_xscale("log")
        a2.set_title("RSS growth per connection")
        for a in (a1, a2):
            a.grid(True, alpha=0.3)
            a.legend()
        fig.tight_layout()
        fig.savefig(outdir / "memory_vs_connections.png", dpi=100)
        plt.close(fig)
        made.append("memory_vs_connections.png")
    return made


# ====================================================================== budgets

def load_budgets(path: Path, mode: str) -> list[dict[str, Any]]:
    data = tomllib.loads(path.read_text())
    out = data.get(mode, [])
    if not isinstance(out, list):
        raise ValueError(f"{path}: [[{mode}]] must be an array of tables")
    return out


def check_budgets(records: list[dict], budgets: list[dict[str, Any]],
                  target: str = "mbxmpp") -> tuple[list[str], list[str]]:
    """(missed, notes): every missed budget named with the figure; notes for unchecked ones."""
    table = metric_table(records)
    withheld = metric_table(records, "withheld")
    uppers = metric_table(records, "upper_bounds")
    unbounded = metric_table(records, "unbounded")
    status = {(r["server"], r["scenario"]): r for r in records if r.get("type") == "scenario"}
    missed: list[str] = []
    notes: list[str] = []
    for b in budgets:
        key = b["metric"]
        scen = key.split(".", 1)[0]
        name = b.get("name") or key
        vals = table.get(key, {})
        v = vals.get(target)
        lower = None    # a rate measured while the generator was the bottleneck: a lower bound
        upper = uppers.get(key, {}).get(target)   # e.g. a ratio over such a rate: an upper bound
        if v is None and isinstance(upper, (int, float)) and "vs" not in b:
            if "min" in b and upper < b["min"]:
                missed.append(f"{name}: at most {upper} < min {b['min']} (an upper bound: the "
                              "generator was the bottleneck in the figure it divides by)")
            elif "max" in b and upper <= b["max"]:
                notes.append(f"{name}: met as an upper bound ({upper} <= {b['max']})")
            else:
                notes.append(f"{name}: not checked (only an upper bound, {upper}, was measured)")
            continue
        if v is None:
            lower = withheld.get(key, {}).get(target)
            if isinstance(lower, (int, float)):
                pv = vals.get(b["vs"]) if "vs" in b else None
                if "min" in b and lower >= b["min"]:
                    notes.append(f"{name}: met as a lower bound ({lower} >= {b['min']}; the "
                                 "generator was the bottleneck)")
                elif "min_ratio" in b and isinstance(pv, (int, float)) and pv and \
                        lower / pv >= b["min_ratio"]:
                    notes.append(f"{name}: met as a lower bound ({target}/{b['vs']} >= "
                                 f"{lower / pv:.2f}; the generator was the bottleneck)")
                elif "min" in b or "min_ratio" in b:
                    notes.append(f"{name}: not checked (the generator was the bottleneck; "
                                 f"{target} reached at least {lower})")
                else:
                    notes.append(f"{name}: not checked (measured while the generator was the "
                                 "bottleneck)")
                continue
            rec = status.get((target, scen))
            if key in unbounded and target in unbounded[key]:
                notes.append(f"{name}: not checked (both figures were measured while the "
                             f"generator was the bottleneck: {unbounded[key][target]})")
            elif rec is None:
                notes.append(f"{name}: not checked ({scen} was not run)")
            else:
                missed.append(f"{name}: not measured for {target} ({rec['status']}: "
                              f"{rec['reason'] or 'metric absent'})")
            continue
        if "vs" in b:
            peer = b["vs"]
            pv = vals.get(peer)
            if not isinstance(pv, (int, float)) or pv == 0:
                notes.append(f"{name} vs {peer}: not checked ({peer} not measured)")
                continue
            ratio = v / pv
            if "min_ratio" in b and ratio < b["min_ratio"]:
                missed.append(f"{name}: {target}/{peer} = {ratio:.2f} < {b['min_ratio']} "
                              f"({target} {v}, {peer} {pv})")
            if "max_ratio" in b and ratio > b["max_ratio"]:
                missed.append(f"{name}: {target}/{peer} = {ratio:.2f} > {b['max_ratio']} "
                              f"({target} {v}, {peer} {pv})")
            continue
        if "min" in b and v < b["min"]:
            missed.append(f"{name}: {v} < min {b['min']}")
        if "max" in b and v > b["max"]:
            missed.append(f"{name}: {v} > max {b['max']}")
    return missed, notes
