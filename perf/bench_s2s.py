"""Federation benchmark: two servers in network namespaces with real DNS (dnsmasq) and a test CA;
one user on each. Measures the first message's delay (s2s set-up: DNS, TCP, TLS, authentication)
and, across the established link, the message rate (at most ``--window`` messages in flight),
per-message latency p50/p99 and messages per second of server CPU (both servers together).
Pairs: mbxmpp-mbxmpp, prosody-prosody, ejabberd-ejabberd, mbxmpp-prosody and mbxmpp-ejabberd
(issue 15); each ejabberd is its own Erlang node in its own namespace (tests/interop/netlab.Ejabberd).

    sudo python -m perf.bench_s2s [--messages 20000] [--pairs mbxmpp-mbxmpp,prosody-prosody]

Needs root and `ip netns` (the lab of tests/interop/netlab.py). Prints one JSON object per pair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from perf.servers import cpu_seconds, proc_children
from tests.interop.netlab import (
    Ejabberd,
    NetLab,
    ejabberd_unavailable,
    lab_unavailable,
    mbxmpp_env,
    prosody_config,
    wait_port,
)
from tests.rawclient import RawClient

PASSWORD = "bench"


def _config(net: NetLab, short: str, domain: str, cert: tuple[str, str]) -> str:
    d = os.path.join(net.tmp, short)
    os.makedirs(d)
    ip = net.ips[short]
    path = os.path.join(d, "mbxmpp.toml")
    with open(path, "w") as f:
        f.write(f"""
[server]
domains = ["{domain}"]
data_dir = "{d}/data"
log_level = "warning"
modules = ["disco", "ping", "roster", "presence"]
[tls]
cert = "{cert[0]}"
key = "{cert[1]}"
[c2s]
listen = ["{ip}:5222"]
direct_tls = []
[s2s]
listen = ["{ip}:5269"]
ca_file = "{net.ca.path}"
[http]
listen = ["{ip}:5443"]
[proxy65]
enabled = false
[muc]
enabled = false
[upload]
enabled = false
""")
    return path


async def _login(ip: str, user: str, domain: str, password: str = PASSWORD) -> RawClient:
    r, w = await asyncio.open_connection(ip, 5222)
    c = RawClient(r, w)
    await c.auth(user, password, to=domain)
    await c.bind("bench")
    return c


async def _count_messages(c: RawClient, n: int, lat: list[float] | None = None) -> float:
    """Read until ``n`` messages arrived; the time of the last one. ``lat``: each message's delay
    (its body is the send time)."""
    got = 0
    while got < n:
        el = await c.element(timeout=60)
        if el.tag == "message":
            got += 1
            if lat is not None:
                lat.append(time.perf_counter() - float(el.findtext("body") or 0))
    return time.perf_counter()


def _cpu(pids: list[int]) -> list[float]:
    """CPU seconds of each server with all its processes (ejabberdctl runs beam.smp)."""
    return [sum(cpu_seconds(p) for p in [pid, *proc_children(pid)]) for pid in pids]


async def _run(net: NetLab, n: int, window: int, pids: list[int]) -> dict[str, object]:
    """sender@a.example sends to receiver@b.example."""
    a = await _login(net.ips["a"], "sender", "a.example")
    user, domain = "receiver", "b.example"
    b = await _login(net.ips["b"], user, domain)
    msg = f"<message to='{user}@{domain}/bench' type='chat'><body>{{}}</body></message>"
    t0 = time.perf_counter()
    await a.send(msg.format(t0))
    t1 = await _count_messages(b, 1)
    setup = t1 - t0
    batch = 100
    lat: list[float] = []
    cpu0 = _cpu(pids)
    t0 = time.perf_counter()
    reader = asyncio.ensure_future(_count_messages(b, n, lat))
    for i in range(0, n, batch):
        while i - len(lat) > window and not reader.done():
            await asyncio.sleep(0.001)
        now = time.perf_counter()
        await a.send("".join(msg.format(now) for _ in range(i, min(n, i + batch))))
    t1 = await reader
    cpu = [after - before for after, before in zip(_cpu(pids), cpu0)]
    await a.close()
    await b.close()
    lat.sort()
    return {"first_message_s": round(setup, 4), "messages": n, "window": window,
            "messages_per_s": round(n / (t1 - t0), 1),
            "p50_ms": round(lat[len(lat) // 2] * 1000, 1), "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 1),
            "server_cpu_s": [round(c, 2) for c in cpu],   # sender's server, receiver's server
            "messages_per_server_cpu_s": round(n / sum(cpu), 1)}


def _start(net: NetLab, kind: str, short: str, domain: str, user: str,
           stops: list[Ejabberd]) -> int:
    """Start a ``kind`` server for ``domain`` in namespace ``short`` with ``user``; its pid
    (ejabberd: appended to ``stops``, to be stopped through ejabberdctl)."""
    cert = net.ca.issue(short, [domain])
    if kind == "mbxmpp":
        env = mbxmpp_env()
        cfg = _config(net, short, domain, cert)
        subprocess.run([sys.executable, "-m", "mbxmpp", "-c", cfg, "user", "add", f"{user}@{domain}",
                        "--password", PASSWORD], check=True, capture_output=True,
                       env=dict(os.environ, **env))
        p = net.spawn(short, [sys.executable, "-m", "mbxmpp", "-c", cfg], f"{short}.log", env)
    elif kind == "ejabberd":
        ej = Ejabberd(net, short, {domain: cert}, loglevel="warning")
        stops.append(ej)
        p = ej.start()
        ej.register(user, domain, PASSWORD)
        return p.pid
    else:
        cfg = prosody_config(os.path.join(net.tmp, short), net.ips[short], net.ca.path, {domain: cert})
        with open(cfg) as f:   # the lab's Prosody logs at debug: a bench measures it at warn
            text = f.read().replace("log = { debug =", "log = { warn =")
        with open(cfg, "w") as f:
            f.write(text)
        subprocess.run(["prosodyctl", "--config", cfg, "register", user, domain, PASSWORD],
                       check=True, capture_output=True, timeout=60)
        p = net.spawn(short, ["prosody", "--config", cfg, "-F"], f"{short}.log")
    wait_port(net, net.ips[short], 5222, p, f"{short}.log")
    return p.pid


def bench_pair(pair: str, n: int, window: int) -> dict[str, object]:
    kinds = pair.split("-")
    net = NetLab()
    ejabberds: list[Ejabberd] = []
    try:
        net.up()
        for short in ("a", "b"):
            net.add_namespace(short)
        net.start_dns(srv=[(f"_xmpp-server._tcp.{s}.example", f"xmpp.{s}.example", 5269, 0) for s in "ab"],
                      hosts={f"xmpp.{s}.example": net.ips[s] for s in "ab"})
        pids = [_start(net, kinds[0], "a", "a.example", "sender", ejabberds),
                _start(net, kinds[1], "b", "b.example", "receiver", ejabberds)]
        return {"pair": pair, **asyncio.run(_run(net, n, window, pids))}
    finally:
        for ej in ejabberds:
            ej.stop()
        net.down()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--window", type=int, default=1000, help="messages in flight at most")
    ap.add_argument("--pairs", default="mbxmpp-mbxmpp,prosody-prosody,ejabberd-ejabberd,"
                                       "mbxmpp-prosody,mbxmpp-ejabberd")
    args = ap.parse_args()
    why = lab_unavailable() or ("ejabberd" in args.pairs and ejabberd_unavailable())
    if why:
        print(why, file=sys.stderr)
        return 2
    print(json.dumps({"loadavg": open("/proc/loadavg").read().split()[:3]}))
    per_cpu: dict[str, float] = {}
    for pair in args.pairs.split(","):
        result = bench_pair(pair, args.messages, args.window)
        per_cpu[pair] = result["messages_per_server_cpu_s"]  # type: ignore[assignment]
        print(json.dumps(result), flush=True)
    ours = per_cpu.get("mbxmpp-mbxmpp")
    if ours and len(per_cpu) > 1:   # issue 15's goal: mbxmpp<->mbxmpp >= 2x ejabberd<->ejabberd per server CPU second
        print(json.dumps({f"mbxmpp-mbxmpp / {pair} per server CPU s": round(ours / v, 2)
                          for pair, v in per_cpu.items() if pair != "mbxmpp-mbxmpp" and v}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
