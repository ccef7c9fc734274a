"""Messages per second over WebSocket (RFC 7395) against TCP, on the same daemon instance:
``python perf/bench_websocket.py [--pairs 20] [--window 8] [--seconds 10] [--rounds 2]``.

The real daemon (tests/daemon.py: ``python -m mbxmpp`` on loopback) with the perf suite's
messaging idea: ``pairs`` pairs of users chat to each other's full JID, closed loop with
``window`` messages in flight per sender. One run over direct TLS (XEP-0368, the c2s port),
one over wss:// (the HTTP side's /xmpp-websocket), alternating, ``rounds`` times each; both
transports are TLS, so the difference is the framing and the HTTP side's WebSocket reader.

The load generator is deliberately thin on both transports (it shares the 2 cores with the
server): it writes pre-built bytes and counts ``<message`` in what it reads. Its WebSocket
frames use the all-zero mask (valid by RFC 6455 §5.3, whose random mask protects proxies, not
servers), so masking costs it nothing. Reported: delivered messages/s per transport (median
of the rounds) and the ratio WebSocket/TCP, the goal being >= 0.8; and the daemon's CPU time per
delivered message (/proc), whose ratio is the capacity ratio and varies less on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.daemon import Daemon
from tests.rawclient import client_ssl

PW = "bench-pw"
MODULES = ["disco", "roster", "presence", "offline", "ping"]
PATTERN = b"<message"
# a message's send time (time.monotonic_ns) as its body, for latency (perf/bench_web.py)
STAMP = re.compile(rb"<body>t(\d+)</body>")


def stamped(to_jid: str, n: int) -> str:
    """``n`` chat messages to ``to_jid`` carrying now as their send time."""
    return (f"<message xmlns='jabber:client' to='{to_jid}' type='chat'>"
            f"<body>t{time.monotonic_ns()}</body></message>") * n


def record_latency(lat: list[int], data: bytes, tail: bytes) -> bytes:
    """Append the latency (ns) of every stamped body in ``tail + data`` to ``lat``; the
    unfinished body to carry to the next read."""
    buf = tail + data
    now = time.monotonic_ns()
    lat.extend(now - int(m.group(1)) for m in STAMP.finditer(buf))
    start, end = buf.rfind(b"<body>"), buf.rfind(b"</body>")
    return buf[start:] if start > end else b""


def ws_frame(text: bytes) -> bytes:
    n = len(text)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = bytes((0x81, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0xFF)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + text  # zero mask: the payload as is


class Client:
    """One logged-in session; ``received`` counts <message elements read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: bool) -> None:
        self.reader, self.writer, self.ws = reader, writer, ws
        self.received = 0
        self.wake = asyncio.Event()
        self.buf = b""
        self.latency: list[int] | None = None  # set to a list: stamped messages' latency (ns)
        self.stamp_tail = b""

    @classmethod
    async def login(cls, daemon: Daemon, user: str, ws: bool, resource: str,
                    pw: str = PW) -> tuple[Client, str]:
        """Log in over direct TLS (``daemon.tls``) or wss:// (``daemon.http``): anything with
        those two ports, perf/bench_web.py's peers too."""
        if ws:
            r, w = await asyncio.open_connection("127.0.0.1", daemon.http, ssl=client_ssl(),
                                                 server_hostname="localhost")
            key = base64.b64encode(os.urandom(16)).decode()
            w.write(f"GET /xmpp-websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n".encode())
            assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        else:
            r, w = await asyncio.open_connection("127.0.0.1", daemon.tls, ssl=client_ssl(),
                                                 server_hostname="localhost")
        c = cls(r, w, ws)
        token = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
        await c.open()
        await c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        await c.until(b"<success")
        await c.open()
        await c.send("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:"
                     f"xmpp-bind'><resource>{resource}</resource></bind></iq>")
        await c.until(b"</jid>")
        return c, f"{user}@localhost/{resource}"

    async def open(self) -> None:
        if self.ws:
            await self.send("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>")
        else:
            await self.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/"
                            "streams' to='localhost' version='1.0'>")
        await self.until(b"features>")  # ejabberd's WebSocket features have no stream: prefix

    async def send_messages(self, to_jid: str, n: int) -> None:
        one = stamped(to_jid, 1).encode()  # one stanza per frame (RFC 7395 §3.3.3)
        self.writer.write((ws_frame(one) if self.ws else one) * n)
        await self.writer.drain()

    async def send(self, text: str) -> None:
        data = text.encode()
        self.writer.write(ws_frame(data) if self.ws else data)
        await self.writer.drain()

    async def until(self, marker: bytes) -> None:
        while marker not in self.buf:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            if not data:
                raise ConnectionError("closed during login")
            self.buf += data
        self.buf = b""

    async def count(self) -> None:
        tail = b""
        keep = len(PATTERN) - 1
        while True:
            data = await self.reader.read(262144)
            if not data:
                return
            buf = tail + data
            n = buf.count(PATTERN)
            tail = buf[-keep:]
            if n:
                self.received += n
                self.wake.set()
            if self.latency is not None:
                self.stamp_tail = record_latency(self.latency, data, self.stamp_tail)


async def sender(frm: Client, to: Client, to_jid: str, window: int, stop: float) -> int:
    body = (f"<message xmlns='jabber:client' to='{to_jid}' type='chat'>"
            "<body>hello over the wire</body></message>").encode()
    one = ws_frame(body) if frm.ws else body
    sent = 0
    loop = asyncio.get_running_loop()
    while loop.time() < stop:
        room = window - (sent - to.received)
        if room > 0:
            frm.writer.write(one * room)
            sent += room
            await frm.writer.drain()
        else:
            to.wake.clear()
            try:
                await asyncio.wait_for(to.wake.wait(), 30)
            except TimeoutError:
                raise RuntimeError("messages stopped arriving") from None
    return sent


async def closed_loop(clients: list, send: Any, window: int, seconds: float) -> float:
    """Pairs of ``clients`` (client, full JID) chat for ``seconds`` with ``send`` (a sender
    like the one above); the delivered messages per second."""
    base = sum(c.received for c, _ in clients)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    stop = t0 + seconds
    tasks = []
    for i in range(len(clients) // 2):
        (a, a_jid), (b, b_jid) = clients[2 * i], clients[2 * i + 1]
        tasks.append(send(a, b, b_jid, window, stop))
        tasks.append(send(b, a, a_jid, window, stop))
    await asyncio.gather(*tasks)
    return (sum(c.received for c, _ in clients) - base) / (loop.time() - t0)


async def run(daemon: Daemon, ws: bool, pairs: int, window: int, seconds: float,
              run_id: int) -> tuple[float, float]:
    """Messages/s and the daemon's CPU microseconds per delivered message."""
    # a resource of its own per run: the previous run's sessions may still be ending
    clients = [await Client.login(daemon, f"u{i}", ws, f"run{run_id}") for i in range(2 * pairs)]
    readers = [asyncio.ensure_future(c.count()) for c, _ in clients]
    await asyncio.sleep(0.2)
    assert daemon.proc is not None
    cpu0 = server_cpu(daemon.proc.pid)
    rate = await closed_loop(clients, sender, window, seconds)
    cpu_us = (server_cpu(daemon.proc.pid) - cpu0) * 1e6 / max(1.0, rate * seconds)
    for c, _ in clients:
        c.writer.close()
    for t in readers:
        t.cancel()
    await asyncio.sleep(0.5)
    return rate, cpu_us


def server_cpu(pid: int) -> float:
    """CPU seconds the daemon used so far (user + system)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    # the perf suite's messaging set (perf/servers.py): routed, not archived (an archive's
    # per-sender quota would bounce a long run's messages)
    daemon = Daemon(server_extra=f"modules = {MODULES!r}".replace("'", '"'))
    for i in range(2 * args.pairs):
        daemon.add_user(f"u{i}@localhost", PW)
    daemon.start()
    try:
        rates: dict[str, list[float]] = {"tcp": [], "ws": []}
        cpus: dict[str, list[float]] = {"tcp": [], "ws": []}
        for r in range(args.rounds):
            for kind in (("tcp", "ws") if r % 2 == 0 else ("ws", "tcp")):
                rate, cpu_us = await run(daemon, kind == "ws", args.pairs, args.window, args.seconds,
                                         len(rates["tcp"]) + len(rates["ws"]))
                rates[kind].append(rate)
                cpus[kind].append(cpu_us)
                print(f"round {r + 1} {kind:3}: {rate:9.0f} msgs/s, server {cpu_us:5.1f} us CPU/msg",
                      flush=True)
        tcp, ws = statistics.median(rates["tcp"]), statistics.median(rates["ws"])
        tcp_cpu, ws_cpu = statistics.median(cpus["tcp"]), statistics.median(cpus["ws"])
        print(f"median: tcp {tcp:.0f} msgs/s, websocket {ws:.0f} msgs/s, ratio ws/tcp {ws / tcp:.2f}"
              f" (goal >= 0.8)")
        print(f"server CPU per message: tcp {tcp_cpu:.1f} us, websocket {ws_cpu:.1f} us: capacity "
              f"ratio ws/tcp {tcp_cpu / ws_cpu:.2f} (less sensitive to a busy machine)")
    finally:
        daemon.finish()


if __name__ == "__main__":
    asyncio.run(main())
