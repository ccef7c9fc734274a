"""Logins/s with the external authentication backends (issue 17): mbxmpp over the wire (TCP,
STARTTLS, SASL PLAIN, bind; concurrent clients) with the internal store, with Dovecot and with
LDAP, and a direct client of each backend on the same box: Dovecot's auth-client socket spoken
directly (pipelined AUTH PLAIN requests), and ldap3 doing what a login needs (find the entry,
bind as it) and a bare bind. "mbxmpp / direct" shows whether the backend's own speed is the limit
(goal: within 20%).

    python -m perf.bench_auth [--seconds 8] [--concurrency 16] [--users 20] [--only internal,...]

Uses the real Dovecot and slapd of tests/authservers.py. Prints one JSON object. The clients run
on the same (2-core) machine as the servers: every figure includes their CPU too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable, Callable

import ldap3

from perf.servers import cpu_seconds
from tests.authservers import Dovecot, Slapd
from tests.daemon import Daemon
from tests.rawclient import RawClient, client_ssl

DOMAIN = "mb.example"
# Login limits off: the bench logs in the same few accounts from one address hundreds of times/s.
LIMITS = """[limits]
logins_per_address = "0/s"
logins_per_account = "0/s"
failed_logins_per_address = "0/s"
failed_logins_per_account = "0/s"
[accounts]
chat_plans = ["paid"]
"""


def _users(n: int) -> dict[str, tuple[str, str]]:
    return {f"bench{i}@{DOMAIN}": (f"pw{i}", "paid") for i in range(n)}


async def _rate(concurrency: int, seconds: float, one: Callable[[int], Awaitable[None]],
                server_pid: int | None = None) -> dict[str, float]:
    """``concurrency`` workers each calling ``one(i)`` back to back for ``seconds`` (after a short
    warm-up); completed calls per second, latency percentiles and the server's CPU per call."""
    lat: list[float] = []
    stop_at = 0.0
    measuring = False

    async def worker(w: int) -> None:
        i = w
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await one(i)
            if measuring:
                lat.append(time.perf_counter() - t0)
            i += concurrency

    stop_at = time.perf_counter() + 1.0   # warm-up
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    measuring = True
    cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
    loop0 = _loop_cpu(server_pid) if server_pid else 0.0
    client0 = time.process_time()
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - t0
    lat.sort()
    res = {"per_s": round(len(lat) / elapsed, 1), "n": len(lat),
           "p50_ms": round(lat[len(lat) // 2] * 1000, 2),
           "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2),
           # the bench's own CPU share of the wall time: near 1.0, the client is the limit
           "client_cpu_busy": round((time.process_time() - client0) / elapsed, 2)}
    if server_pid:  # load-independent: the server's own CPU per call
        res["server_cpu_ms_per_call"] = round(1000 * (cpu_seconds(server_pid) - cpu0) / len(lat), 3)
        # the event loop's thread alone: what bounds the logins/s of one process
        res["server_loop_cpu_ms_per_call"] = round(1000 * (_loop_cpu(server_pid) - loop0) / len(lat), 3)
    return res


# One client TLS context for the whole run: ssl.create_default_context() loads the system's CA
# bundle, ~27 ms of CPU here, which was most of what a login cost this bench before.
_TLS = client_ssl()


class _Client(RawClient):
    async def starttls(self) -> None:
        await self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        proceed = await self.element()
        assert proceed.tag == "proceed", proceed
        await self.writer.start_tls(_TLS)


def _loop_cpu(pid: int) -> float:
    """CPU seconds of ``pid``'s main thread (the event loop), user and kernel."""
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _xmpp_login(d: Daemon, users: list[tuple[str, str]]) -> Callable[[int], Awaitable[None]]:
    async def one(i: int) -> None:
        jid, pw = users[i % len(users)]
        c = await _Client.connect(d.c2s)
        await c.login(jid.split("@")[0], pw, to=DOMAIN, resource=None)  # authcid: the localpart
        await c.send("</stream:stream>")
        await c.close()
    return one


def _daemon(auth: str) -> Daemon:
    d = Daemon(domains=(DOMAIN,), extra=LIMITS + auth, c2s_extra="max_unauthenticated_per_ip = 1000",
               server_extra="")
    with open(d.config_path) as f:   # warnings only: the log is not the thing measured
        text = f.read().replace('log_level = "info"', 'log_level = "warning"')
    with open(d.config_path, "w") as f:
        f.write(text)
    return d


def _start_daemon(auth: str, accounts: list[tuple[str, str]]) -> Daemon:
    """A started daemon; tried again on other ports when one was taken meanwhile (shared box)."""
    for attempt in range(3):
        d = _daemon(auth)
        for jid, pw in accounts:
            d.add_user(jid, pw)
        try:
            d.start()
            return d
        except RuntimeError:
            d.cleanup()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class _DovecotDirect:
    """Dovecot's auth protocol (v1.2) on the auth-client socket, requests pipelined by id."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pending: dict[str, asyncio.Future[str]] = {}
        self.next_id = 0

    async def start(self) -> None:
        self.reader, self.writer = await asyncio.open_unix_connection(self.path)
        self.writer.write(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n".encode())
        while not (await self.reader.readline()).startswith(b"DONE"):
            pass
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while line := await self.reader.readline():
            parts = line.decode().split("\t")
            fut = self.pending.pop(parts[1], None) if len(parts) > 1 else None
            if fut is not None:
                fut.set_result(parts[0])

    async def auth(self, jid: str, pw: str) -> None:
        self.next_id += 1
        rid = str(self.next_id)
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        resp = base64.b64encode(b"\0" + jid.encode() + b"\0" + pw.encode()).decode()
        self.writer.write(f"AUTH\t{rid}\tPLAIN\tservice=xmpp\tsecured\tno-penalty\tresp={resp}\n".encode())
        assert await fut == "OK"

    def close(self) -> None:
        self.task.cancel()
        self.writer.close()


def _ldap_conn(slapd: Slapd, user: str | None = None, pw: str | None = None) -> ldap3.Connection:
    return ldap3.Connection(ldap3.Server(slapd.uri, get_info=ldap3.NONE), user=user, password=pw,
                            client_strategy=ldap3.SAFE_SYNC)


def _ldap_login(slapd: Slapd, jid: str, pw: str) -> None:
    """What a login needs: an anonymous search for the entry, then a bind as it."""
    c = _ldap_conn(slapd)
    assert c.bind()[0]
    _ok, _r, entries, _ = c.search(f"ou=people,{slapd.SUFFIX}", f"(mail={jid})", attributes=["employeeType"])
    dn = entries[0]["dn"]
    c.unbind()
    _ldap_bind(slapd, dn, pw)


def _ldap_bind(slapd: Slapd, dn: str, pw: str) -> None:
    c = _ldap_conn(slapd, dn, pw)
    assert c.bind()[0]
    c.unbind()


async def _bench(args: argparse.Namespace) -> dict[str, object]:
    users = _users(args.users)
    pairs = [(jid, pw) for jid, (pw, _plan) in users.items()]
    out: dict[str, object] = {"uptime": open("/proc/loadavg").read().split()[:3],
                              "concurrency": args.concurrency, "seconds": args.seconds, "users": args.users}
    dovecot, slapd = Dovecot(), Slapd()
    daemons: list[Daemon] = []
    try:
        dovecot.write_users(users)
        slapd.ldapadd("\n".join(
            f"dn: uid={jid.split('@')[0]},ou=people,{slapd.SUFFIX}\nobjectClass: inetOrgPerson\n"
            f"uid: {jid.split('@')[0]}\ncn: x\nsn: x\nmail: {jid}\nemployeeType: paid\nuserPassword: {pw}\n"
            for jid, pw in pairs))
        time.sleep(1.1)   # Dovecot re-reads its users file by mtime

        # Direct clients first.
        parts = set(args.only.split(",")) if args.only else set(PARTS)
        if "direct" in parts:
            await _direct(args, out, dovecot, slapd, pairs)
        backends = {
            "internal": "",
            "dovecot": f'[auth]\nbackend = "dovecot"\n[auth.dovecot]\nclient_socket = "{dovecot.client_socket}"\n'
                       f'userdb_socket = "{dovecot.userdb_socket}"\n',
            "ldap": f'[auth]\nbackend = "ldap"\n[auth.ldap]\nuri = "{slapd.uri}"\n'
                    f'base_dn = "ou=people,{slapd.SUFFIX}"\nplan_attribute = "employeeType"\n',
        }
        for name, auth in backends.items():
            if name not in parts:
                continue
            d = _start_daemon(auth, pairs if name == "internal" else [])
            daemons.append(d)
            assert d.proc is not None
            out[f"mbxmpp_{name}"] = await _rate(args.concurrency, args.seconds, _xmpp_login(d, pairs),
                                                d.proc.pid)
            d.finish()
            daemons.remove(d)
    finally:
        for d in daemons:
            d.cleanup()
        dovecot.stop()
        slapd.stop()

    for name, (a, b) in RATIOS.items():
        if a in out and b in out:
            out[name] = round(out[a]["per_s"] / out[b]["per_s"], 3)  # type: ignore[index]
    return out


async def _direct(args: argparse.Namespace, out: dict[str, object], dovecot: Dovecot, slapd: Slapd,
                  pairs: list[tuple[str, str]]) -> None:
    """The backends' own speed: a direct client of each (no XMPP, no TLS)."""
    direct = _DovecotDirect(dovecot.client_socket)
    await direct.start()
    out["dovecot_direct"] = await _rate(args.concurrency, args.seconds,
                                        lambda i: direct.auth(*pairs[i % len(pairs)]))
    direct.close()
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(args.concurrency)
    dns = {jid: f"uid={jid.split('@')[0]},ou=people,{slapd.SUFFIX}" for jid, _ in pairs}
    out["ldap_direct_search_bind"] = await _rate(
        args.concurrency, args.seconds,
        lambda i: loop.run_in_executor(pool, _ldap_login, slapd, *pairs[i % len(pairs)]), slapd.proc.pid)
    out["ldap_direct_bind"] = await _rate(
        args.concurrency, args.seconds,
        lambda i: loop.run_in_executor(pool, _ldap_bind, slapd, dns[pairs[i % len(pairs)][0]],
                                       pairs[i % len(pairs)][1]), slapd.proc.pid)
    pool.shutdown()


PARTS = ("direct", "internal", "dovecot", "ldap")
RATIOS = {
    "ratio_mbxmpp_dovecot_vs_direct": ("mbxmpp_dovecot", "dovecot_direct"),
    "ratio_mbxmpp_ldap_vs_direct_search_bind": ("mbxmpp_ldap", "ldap_direct_search_bind"),
    "ratio_mbxmpp_dovecot_vs_internal": ("mbxmpp_dovecot", "mbxmpp_internal"),
    "ratio_mbxmpp_ldap_vs_internal": ("mbxmpp_ldap", "mbxmpp_internal"),
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--only", default="", help=f"comma-separated parts, from: {', '.join(PARTS)} "
                    "(default all)")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(_bench(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
