"""Federation benchmark: two mbxmpp servers in network namespaces with real DNS (dnsmasq) and a
test CA; one user on each. Measures the first message's delay (s2s set-up: DNS, TCP, TLS, SASL
EXTERNAL, bidi) and the message rate across the established link.

    sudo python -m perf.bench_s2s [--messages 20000]

Needs root and `ip netns` (the lab of tests/interop/netlab.py). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from tests.interop.netlab import NetLab, lab_unavailable, mbxmpp_env, wait_port
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


async def _login(ip: str, user: str, domain: str) -> RawClient:
    r, w = await asyncio.open_connection(ip, 5222)
    c = RawClient(r, w)
    await c.auth(user, PASSWORD, to=domain)
    await c.bind("bench")
    return c


async def _count_messages(c: RawClient, n: int) -> float:
    """Read until ``n`` messages arrived; the time of the last one."""
    got = 0
    while got < n:
        el = await c.element(timeout=60)
        if el.tag == "message":
            got += 1
    return time.perf_counter()


async def _run(net: NetLab, n: int) -> dict[str, float]:
    a = await _login(net.ips["a"], "sender", "a.example")
    b = await _login(net.ips["b"], "receiver", "b.example")
    msg = "<message to='receiver@b.example/bench' type='chat'><body>{}</body></message>"
    t0 = time.perf_counter()
    await a.send(msg.format("first"))
    t1 = await _count_messages(b, 1)
    setup = t1 - t0
    batch = 200
    t0 = time.perf_counter()
    reader = asyncio.ensure_future(_count_messages(b, n))
    for i in range(0, n, batch):
        await a.send("".join(msg.format(j) for j in range(i, min(n, i + batch))))
    t1 = await reader
    await a.close()
    await b.close()
    return {"first_message_s": round(setup, 4), "messages": n,
            "messages_per_s": round(n / (t1 - t0), 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    args = ap.parse_args()
    why = lab_unavailable()
    if why:
        print(why, file=sys.stderr)
        return 2
    net = NetLab()
    procs = []
    try:
        net.up()
        net.add_namespace("a")
        net.add_namespace("b")
        net.start_dns(srv=[("_xmpp-server._tcp.a.example", "xmpp.a.example", 5269, 0),
                           ("_xmpp-server._tcp.b.example", "xmpp.b.example", 5269, 0)],
                      hosts={"xmpp.a.example": net.ips["a"], "xmpp.b.example": net.ips["b"]})
        env = mbxmpp_env()
        for short, domain, user in (("a", "a.example", "sender"), ("b", "b.example", "receiver")):
            cfg = _config(net, short, domain, net.ca.issue(short, [domain]))
            subprocess.run([sys.executable, "-m", "mbxmpp", "-c", cfg, "user", "add", f"{user}@{domain}",
                            "--password", PASSWORD], check=True, capture_output=True,
                           env=dict(os.environ, **env))
            p = net.spawn(short, [sys.executable, "-m", "mbxmpp", "-c", cfg], f"{short}.log", env)
            procs.append(p)
            wait_port(net, net.ips[short], 5222, p, f"{short}.log")
        result = asyncio.run(_run(net, args.messages))
        print(json.dumps(result))
        return 0
    finally:
        net.down()


if __name__ == "__main__":
    sys.exit(main())
