"""Load generator: worker processes (uvloop, many clients each), rate scheduling, histograms.

The coordinator (``Generator``) forks worker processes pinned to the generator CPUs and sends them
commands over pipes; each worker runs one event loop holding many ``XMPPClient`` connections.

Latency is measured open-loop where it matters: send times are scheduled in advance at the offered
rate (``t_k = t0 + k / rate``), the scheduled time travels in the stanza id, and latency is
``receive time - scheduled send time``, so a stalled generator or server shows up as latency instead
of silently lowering the offered load (no coordinated omission). Clocks are CLOCK_MONOTONIC, shared
by all processes on the machine. The ticker wakes every millisecond (libuv timer resolution), so
latencies include up to ~1 ms of scheduling slack on every server alike.

Every worker reports its own CPU time over the measured window; the coordinator refuses a figure
when the generator used more than ``MAX_GEN_CPU`` of its cores (it may have been the bottleneck).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import random
import resource
import threading
import time
import traceback
from typing import Any

from . import mamwire
from .xmppclient import SCRAM_CACHE_STATS, ClientOptions, XMPPClient, XMPPError

NS_MUC = "http://jabber.org/protocol/muc"

MAX_GEN_CPU = 0.90
BODY = "perf message 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOP"
_now = time.monotonic_ns


# ====================================================================== histogram

class Histogram:
    """Log-linear histogram of microsecond values (~1.6 % resolution), mergeable across processes."""

    SUB_BITS = 7
    HALF = 1 << (SUB_BITS - 1)

    def __init__(self) -> None:
        self.counts: list[int] = [0] * 1024
        self.n = 0
        self.total = 0
        self.max = 0
        self.min = 0

    def record(self, us: int) -> None:
        if us < 0:
            us = 0
        b = us.bit_length()
        if b <= self.SUB_BITS:
            idx = us
        else:
            shift = b - self.SUB_BITS
            idx = shift * self.HALF + (us >> shift)
        c = self.counts
        if idx >= len(c):
            c.extend([0] * (idx + 1 - len(c)))
        c[idx] += 1
        if self.n == 0 or us < self.min:
            self.min = us
        self.n += 1
        self.total += us
        if us > self.max:
            self.max = us

    @classmethod
    def value_of(cls, idx: int) -> float:
        """Middle of the bucket."""
        if idx < 2 * cls.HALF:
            return float(idx)
        shift = idx // cls.HALF - 1
        m = idx - shift * cls.HALF
        return ((m << shift) + ((m + 1) << shift)) / 2.0

    def merge(self, other: Histogram | dict) -> None:
        if isinstance(other, dict):
            other = Histogram.from_dict(other)
        if other.n == 0:
            return
        if len(other.counts) > len(self.counts):
            self.counts.extend([0] * (len(other.counts) - len(self.counts)))
        for i, v in enumerate(other.counts):
            if v:
                self.counts[i] += v
        self.min = other.min if self.n == 0 else min(self.min, other.min)
        self.n += other.n
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> float | None:
        if self.n == 0:
            return None
        if p >= 100:
            return float(self.max)
        rank = max(1, math.ceil(self.n * p / 100.0))
        acc = 0
        for i, v in enumerate(self.counts):
            acc += v
            if acc >= rank:
                return min(self.value_of(i), float(self.max))
        return float(self.max)

    def summary_ms(self) -> dict[str, float | None]:
        def ms(v: float | None) -> float | None:
            return None if v is None else round(v / 1000.0, 3)
        return {"n": self.n, "mean": ms(self.total / self.n) if self.n else None,
                "p50": ms(self.percentile(50)), "p90": ms(self.percentile(90)),
                "p99": ms(self.percentile(99)), "p99.9": ms(self.percentile(99.9)),
                "max": ms(float(self.max)) if self.n else None}

    def cdf_ms(self) -> list[tuple[float, float]]:
        """(latency ms, cumulative fraction) points."""
        out, acc = [], 0
        for i, v in enumerate(self.counts):
            if v:
                acc += v
                out.append((self.value_of(i) / 1000.0, acc / self.n))
        return out

    def to_dict(self) -> dict:
        last = max((i for i, v in enumerate(self.counts) if v), default=-1)
        return {"counts": self.counts[:last + 1], "n": self.n, "total": self.total,
                "max": self.max, "min": self.min}

    @classmethod
    def from_dict(cls, d: dict) -> Histogram:
        h = cls()
        h.counts = list(d["counts"]) + [0] * max(0, 1024 - len(d["counts"]))
        h.n, h.total, h.max, h.min = d["n"], d["total"], d["max"], d.get("min", 0)
        return h


def sched_in(mid: str, w0: int, t_end: int) -> bool:
    """Whether a MUC message id (``m<scheduled ns>_<seq>``) was scheduled in [w0, t_end)."""
    return w0 <= int(mid[1:mid.index("_")]) < t_end


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def _sleep_until(t_ns: int) -> None:
    d = t_ns - _now()
    if d > 0:
        await asyncio.sleep(d / 1e9)


class _Window:
    """CPU time of this process over [w0, w1] (measured by a task sleeping to both ends)."""

    def __init__(self, w0: int, w1: int) -> None:
        self.w0, self.w1 = w0, w1
        self.cpu0 = self.cpu1 = 0.0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        await _sleep_until(self.w0)
        self.cpu0 = _cpu()
        await _sleep_until(self.w1)
        self.cpu1 = _cpu()

    async def result(self) -> dict[str, float]:
        await self.task
        return {"cpu_s": self.cpu1 - self.cpu0, "wall_s": (self.w1 - self.w0) / 1e9}


class _Credits:
    """Closed-loop sending: each client has ``credit`` messages it may send; ``give(c)`` returns
    one (its message arrived) and the sends are batched per loop iteration: ``emit(c, n, now)``
    sends ``n`` for client ``c``. Nothing is sent from ``t_end`` on."""

    def __init__(self, t_end: int, emit: Any) -> None:
        self.t_end = t_end
        self.emit = emit
        self.dirty: set[XMPPClient] = set()
        self.scheduled = False
        self.loop = asyncio.get_running_loop()

    def start(self, clients: list[XMPPClient], window: int) -> None:
        for c in clients:
            c.credit = window
            self.dirty.add(c)
        self.flush()

    def give(self, c: XMPPClient) -> None:
        c.credit += 1
        self.dirty.add(c)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        now = _now()
        if now < self.t_end:
            for c in self.dirty:
                n = c.credit
                c.credit = 0
                self.emit(c, n, now)
        self.dirty.clear()


# ====================================================================== worker

def _opts(d: dict) -> ClientOptions:
    return ClientOptions(**d)


class Worker:
    def __init__(self, conn: Any, idx: int) -> None:
        self.conn = conn
        self.idx = idx
        self.groups: dict[str, list[XMPPClient]] = {}
        self.mam: dict[XMPPClient, tuple[mamwire.Querier, list[str]]] = {}
        # MUC occupants' stanzas that take no fast path (cmd_muc_join)
        self.muc_other: dict[str, Any] = {"presence": 0, "errors": 0, "error_samples": []}

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def reader() -> None:
            # a blocking reader thread: the loop's add_reader would make the pipe non-blocking,
            # and Connection.recv cannot read a large message from a non-blocking pipe
            while True:
                try:
                    msg = self.conn.recv()
                except (EOFError, OSError):
                    msg = ("quit", {})
                loop.call_soon_threadsafe(q.put_nowait, msg)
                if msg[0] == "quit":
                    return

        threading.Thread(target=reader, daemon=True, name="perf-cmd-reader").start()
        while True:
            cmd, args = await q.get()
            if cmd == "quit":
                for name in list(self.groups):
                    await self.cmd_close(name)
                self.conn.send(("ok", None))
                return
            try:
                res = await getattr(self, "cmd_" + cmd)(**args)
                self.conn.send(("ok", res))
            except Exception:
                self.conn.send(("err", traceback.format_exc()))

    # -- login / close ---------------------------------------------------------------------
    async def cmd_login(self, group: str, users: list[tuple[str, str]], password: str, opts: dict,
                        concurrency: int = 100, auto_subscribe: bool = False,
                        build_roster_items: bool = False) -> dict:
        o = _opts(opts)
        sem = asyncio.Semaphore(concurrency)
        clients = self.groups.setdefault(group, [])
        hist = Histogram()
        errors: list[str] = []
        cpu0, t0 = _cpu(), _now()

        async def one(u: str, r: str) -> XMPPClient | None:
            async with sem:
                c = XMPPClient(u, password, r, o)
                c.auto_subscribe = auto_subscribe
                c.build_roster_items = build_roster_items
                s = _now()
                try:
                    await c.login()
                except (XMPPError, OSError, asyncio.TimeoutError) as e:
                    errors.append(f"{u}: {type(e).__name__}: {e}")
                    c.close(False)
                    return None
                hist.record((_now() - s) // 1000)
                return c

        res = await asyncio.gather(*(one(u, r) for u, r in users))
        # keep the order of `users`; failed logins leave holes the scenarios can see
        ok = [c for c in res if c is not None]
        clients.extend(ok)
        return {"ok": len(ok), "failed": len(errors), "errors": errors[:5],
                "hist": hist.to_dict(), "wall_s": (_now() - t0) / 1e9, "cpu_s": _cpu() - cpu0,
                "tls": ok[0].tls_version if ok else "", "complete": len(ok) == len(users)}

    async def cmd_close(self, group: str) -> dict:
        clients = self.groups.pop(group, [])
        for c in clients:
            self.mam.pop(c, None)
        for c in clients:
            c.close()
        await asyncio.gather(*(c.wait_closed(5.0) for c in clients))
        return {"closed": len(clients)}

    async def cmd_count(self, group: str) -> dict:
        cl = self.groups.get(group, [])
        return {"open": sum(1 for c in cl if not c.closed), "total": len(cl),
                "reasons": list({c.close_reason for c in cl if c.closed})[:5]}

    # -- login storm ----------------------------------------------------------------------
    async def cmd_login_storm(self, users: list[str], password: str, opts: dict, concurrency: int,
                              t_start: int, w0: int, t_end: int) -> dict:
        o = _opts(opts)
        hist = Histogram()
        st = {"done": 0, "done_window": 0, "failed": 0}
        errors: list[str] = []
        win = _Window(w0, t_end)
        await _sleep_until(t_start)

        async def loop_(mine: list[str]) -> None:
            k = random.randrange(len(mine))
            while _now() < t_end:
                u = mine[k % len(mine)]
                k += 1
                c = XMPPClient(u, password, f"s{k}", o)
                s = _now()
                try:
                    await c.login()
                except (XMPPError, OSError, asyncio.TimeoutError) as e:
                    st["failed"] += 1
                    if len(errors) < 5:
                        errors.append(f"{u}: {type(e).__name__}: {e}")
                    c.close(False)
                    await asyncio.sleep(0.05)
                    continue
                e = _now()
                st["done"] += 1
                if w0 <= e < t_end:
                    st["done_window"] += 1
                    hist.record((e - s) // 1000)
                c.close()

        n = max(1, min(concurrency, len(users)))
        tasks = [asyncio.ensure_future(loop_(users[i::n])) for i in range(n)]
        await _sleep_until(t_end)
        _done, pending = await asyncio.wait(tasks, timeout=10)
        for t in pending:
            t.cancel()
        w = await win.result()
        return {**st, "errors": errors, "hist": hist.to_dict(), **w}

    # -- messaging ------------------------------------------------------------------------
    async def cmd_messaging(self, group: str, mode: str, rate: float, window: int, t_start: int,
                            w0: int, t_end: int, drain_s: float = 3.0) -> dict:
        """Clients 2i and 2i+1 of the group chat with each other (both directions).

        With Stream Management enabled on the clients, each counts what it sends (``sm_sent``)
        and appends its own ``<r/>`` when due; after the drain every client requests a last ack
        and checks that the server acknowledged exactly what it sent."""
        clients = [c for c in self.groups[group] if not c.closed]
        clients = clients[:len(clients) // 2 * 2]
        if not clients:
            raise RuntimeError("no connected client pairs")
        sm = all(c.sm_on for c in clients)
        sm_r0 = sum(c.sm_r_in for c in clients)
        hist = Histogram()
        st = {"sent": 0, "sent_window": 0, "recv": 0, "recv_window_sched": 0,
              "recv_window_arrival": 0}
        closed_loop = mode == "closed"
        body = BODY
        partner: dict[XMPPClient, XMPPClient] = {}
        for i in range(0, len(clients), 2):
            a, b = clients[i], clients[i + 1]
            partner[a], partner[b] = b, a

        def emit(c: XMPPClient, n: int, now: int) -> None:
            to = partner[c].bare
            st["sent"] += n
            if now >= w0:
                st["sent_window"] += n
            data = ("".join(f"<message to='{to}' type='chat' id='m{now}'><body>{body}"
                            "</body></message>" for _ in range(n))).encode()
            c.write(data + c.sm_sent(n) if sm else data)

        credits = _Credits(t_end, emit)

        def make_handler(c: XMPPClient) -> Any:
            p = partner[c]

            def on_timed(kind: str, mid: str, now: int, frm: str) -> None:
                if kind != "message":
                    return
                try:
                    sched = int(mid[1:])
                except ValueError:
                    return
                st["recv"] += 1
                if w0 <= sched < t_end:
                    st["recv_window_sched"] += 1
                    hist.record((now - sched) // 1000)
                if w0 <= now < t_end:
                    st["recv_window_arrival"] += 1
                if closed_loop and now < t_end:
                    credits.give(p)
            return on_timed

        for c in clients:
            c.credit = 0
            c.on_timed = make_handler(c)
        win = _Window(w0, t_end)
        await _sleep_until(t_start)
        if closed_loop:
            credits.start(clients, window)
        else:
            interval = 1e9 / rate
            n = 0
            nc = len(clients)
            tmpl = [f"<message to='{partner[c].bare}' type='chat' id='m" for c in clients]
            tail = f"'><body>{body}</body></message>"
            while True:
                now = _now()
                if now >= t_end:
                    break
                due = int((now - t_start) / interval) + 1
                if due > n:
                    touched = set()
                    while n < due:
                        sched = t_start + int(n * interval)
                        i = n % nc
                        c = clients[i]
                        c.wbuf.append((tmpl[i] + str(sched) + tail).encode())
                        if sm:
                            r = c.sm_sent(1)
                            if r:
                                c.wbuf.append(r)
                        touched.add(c)
                        if sched >= w0:
                            st["sent_window"] += 1
                        n += 1
                    for c in touched:
                        c.flush()
                    st["sent"] = n
                await asyncio.sleep(0.001)
        await _sleep_until(t_end)
        deadline = _now() + int(drain_s * 1e9)
        while st["recv_window_sched"] < st["sent_window"] and _now() < deadline:
            await asyncio.sleep(0.05)
        for c in clients:
            c.on_timed = None
        w = await win.result()
        if sm:
            synced = await asyncio.gather(*(c.sm_sync(5.0) for c in clients if not c.closed))
            st.update({"sm_server_requests": sum(c.sm_r_in for c in clients) - sm_r0,
                       "sm_unacked_after_sync": sum(1 for ok in synced if not ok),
                       "sm_bad_acks": sum(c.sm_bad_acks for c in clients)})
        lost = sum(1 for c in clients if c.closed)
        return {**st, "hist": hist.to_dict(), "clients": len(clients), "disconnected": lost, **w}

    # -- presence broadcast -----------------------------------------------------------------
    async def cmd_presence(self, group: str, mode: str, rate: float, window: int, t_start: int,
                           w0: int, t_end: int, drain_s: float = 3.0) -> dict:
        """Client 0 of the group is the center; every other client has it in its roster."""
        clients = self.groups[group]
        center, contacts = clients[0], [c for c in clients[1:] if not c.closed]
        ncont = len(contacts)
        hist = Histogram()
        st = {"sent": 0, "sent_window": 0, "deliveries": 0, "deliveries_window_sched": 0,
              "complete": 0, "complete_window": 0}
        pending: dict[int, int] = {}
        closed_loop = mode == "closed"
        cbare = center.bare
        loop = asyncio.get_running_loop()
        credit_sched = [False]

        def send(n: int, sched: int | None = None) -> None:
            now = _now()
            if now >= t_end:
                return
            parts = []
            for _ in range(n):
                s = now if sched is None else sched
                pending[s] = pending.get(s, 0) + ncont
                st["sent"] += 1
                if s >= w0:
                    st["sent_window"] += 1
                parts.append(f"<presence id='p{s}'><status>perf {s}</status></presence>")
            center.write("".join(parts).encode())

        def refill() -> None:
            credit_sched[0] = False
            n = center.credit
            center.credit = 0
            if n:
                send(n)

        def on_timed(kind: str, mid: str, now: int, frm: str) -> None:
            if kind != "presence" or not frm.startswith(cbare):
                return
            try:
                sched = int(mid[1:])
            except ValueError:
                return
            st["deliveries"] += 1
            if w0 <= sched < t_end:
                st["deliveries_window_sched"] += 1
                hist.record((now - sched) // 1000)
            left = pending.get(sched)
            if left is None:
                return
            if left <= 1:
                del pending[sched]
                st["complete"] += 1
                if w0 <= now < t_end:
                    st["complete_window"] += 1
                if closed_loop:
                    center.credit += 1
                    if not credit_sched[0]:
                        credit_sched[0] = True
                        loop.call_soon(refill)
            else:
                pending[sched] = left - 1

        center.credit = 0
        for c in contacts:
            c.on_timed = on_timed
        win = _Window(w0, t_end)
        await _sleep_until(t_start)
        if closed_loop:
            send(window)
        else:
            interval = 1e9 / rate
            n = 0
            while True:
                now = _now()
                if now >= t_end:
                    break
                due = int((now - t_start) / interval) + 1
                parts = []
                while n < due:
                    s = t_start + int(n * interval)
                    pending[s] = pending.get(s, 0) + ncont
                    st["sent"] += 1
                    if s >= w0:
                        st["sent_window"] += 1
                    parts.append(f"<presence id='p{s}'><status>perf {s}</status></presence>")
                    n += 1
                if parts:
                    center.write("".join(parts).encode())
                await asyncio.sleep(0.001)
        await _sleep_until(t_end)
        deadline = _now() + int(drain_s * 1e9)
        while st["deliveries_window_sched"] < st["sent_window"] * ncont and _now() < deadline:
            await asyncio.sleep(0.05)
        for c in contacts:
            c.on_timed = None
        w = await win.result()
        return {**st, "contacts": ncont, "hist": hist.to_dict(), **w}

    # -- MUC fan-out (XEP-0045) ----------------------------------------------------------
    async def cmd_muc_join(self, group: str, room: str, concurrency: int = 50,
                           timeout: float = 120.0) -> dict:
        """The group's clients join ``room`` (bare JID) under their user names: the first creates
        it and submits the empty owner form (an instant room, XEP-0045 §10.1.2: rooms stay locked
        until configured on some servers), then the others join, ``concurrency`` at a time, each
        waiting for its own presence from the room (no history asked). Afterwards every client
        counts the stanzas that take no fast path (occupants' presences, errors)."""
        clients = [c for c in self.groups[group] if not c.closed]
        t0 = _now()

        async def join(c: XMPPClient) -> None:
            me = f"{room}/{c.user}"
            fut = asyncio.get_running_loop().create_future()

            def watch(el: Any) -> None:
                if el.tag == "presence" and el.attrs.get("from") == me and not fut.done():
                    if el.attrs.get("type") == "error":
                        fut.set_exception(XMPPError(
                            f"{c.user} cannot join {room}: {[x.tag for x in el.children]}"))
                    else:
                        fut.set_result(None)
            c.on_stanza = watch
            c.write(f"<presence to='{me}' id='j{c.user}'><x xmlns='{NS_MUC}'>"
                    "<history maxstanzas='0'/></x></presence>".encode())
            await asyncio.wait_for(fut, timeout)

        await join(clients[0])
        await clients[0].iq(f"<query xmlns='{NS_MUC}#owner'><x xmlns='jabber:x:data' "
                            "type='submit'/></query>", "set", to=room, timeout=timeout)
        sem = asyncio.Semaphore(concurrency)

        async def limited(c: XMPPClient) -> None:
            async with sem:
                await join(c)

        await asyncio.gather(*(limited(c) for c in clients[1:]))
        for c in clients:
            c.on_stanza = self._muc_other(c)
        self.muc_other = {"presence": 0, "errors": 0, "error_samples": []}
        return {"joined": len(clients), "wall_s": (_now() - t0) / 1e9}

    def _muc_other(self, c: XMPPClient) -> Any:
        def on_stanza(el: Any) -> None:
            st = self.muc_other
            if el.attrs.get("type") == "error":
                st["errors"] += 1
                if len(st["error_samples"]) < 3:
                    st["error_samples"].append(
                        f"{c.user}: {el.tag} error {[x.tag for x in el.children]} "
                        f"{[y.tag for x in el.children for y in x.children]}")
            elif el.tag == "presence":
                st["presence"] += 1
        return on_stanza

    async def cmd_muc(self, group: str, room: str, mode: str, rate: float, senders: int,
                      window: int, t_start: int, w0: int, t_end: int,
                      drain_s: float = 5.0) -> dict:
        """The first ``senders`` occupants of the group send groupchat messages to ``room``;
        every occupant (the senders too: the room reflects their messages) counts what it gets.
        A message is complete when the last occupant got it; its latency to the last occupant
        goes to ``hist`` (``hist_all``: every delivery). Closed loop: ``window`` messages in
        flight per sender, a sender's credit returns when one of its messages is complete. Open
        loop: ``rate`` messages/s, scheduled in advance, round robin over the senders."""
        clients = [c for c in self.groups[group] if not c.closed]
        n_occ = len(clients)
        snd = clients[:max(1, senders)]
        hist, hist_all = Histogram(), Histogram()
        st = {"sent": 0, "sent_window": 0, "deliveries": 0, "deliveries_window": 0,
              "complete": 0, "complete_window": 0, "unknown": 0}
        pending: dict[str, list] = {}         # message id -> [occupants still to get it, sender]
        closed_loop = mode == "closed"
        prefix = room + "/"
        body = BODY
        seq = [0]
        other0 = dict(self.muc_other, error_samples=[])

        def send(c: XMPPClient, sched: int) -> None:
            seq[0] += 1
            mid = f"m{sched}_{seq[0]}"
            pending[mid] = [n_occ, c]
            st["sent"] += 1
            if sched >= w0:
                st["sent_window"] += 1
            c.wbuf.append(f"<message to='{room}' type='groupchat' id='{mid}'><body>{body}"
                          "</body></message>".encode())

        def emit(c: XMPPClient, n: int, now: int) -> None:
            for _ in range(n):
                send(c, now)
            c.flush()

        credits = _Credits(t_end, emit)

        def on_timed(kind: str, mid: str, now: int, frm: str) -> None:
            if kind != "message" or not frm.startswith(prefix):
                return
            st["deliveries"] += 1
            if w0 <= now < t_end:
                st["deliveries_window"] += 1
            p = pending.get(mid)
            if p is None:
                st["unknown"] += 1
                return
            sched = int(mid[1:mid.index("_")])
            in_window = w0 <= sched < t_end
            if in_window:
                hist_all.record((now - sched) // 1000)
            p[0] -= 1
            if p[0] > 0:
                return
            del pending[mid]
            st["complete"] += 1
            if w0 <= now < t_end:
                st["complete_window"] += 1
            if in_window:
                hist.record((now - sched) // 1000)
            if closed_loop and now < t_end:
                credits.give(p[1])

        for c in clients:
            c.credit = 0
            c.on_timed = on_timed
        win = _Window(w0, t_end)
        await _sleep_until(t_start)
        if closed_loop:
            credits.start(snd, window)
        else:
            interval = 1e9 / rate
            k = 0
            ns = len(snd)
            while True:
                now = _now()
                if now >= t_end:
                    break
                due = int((now - t_start) / interval) + 1
                touched = set()
                while k < due:
                    c = snd[k % ns]
                    send(c, t_start + int(k * interval))
                    touched.add(c)
                    k += 1
                for c in touched:
                    c.flush()
                await asyncio.sleep(0.001)
        await _sleep_until(t_end)
        deadline = _now() + int(drain_s * 1e9)
        while any(sched_in(m, w0, t_end) for m in pending) and _now() < deadline:
            await asyncio.sleep(0.05)
        for c in clients:
            c.on_timed = None
        w = await win.result()
        incomplete = sum(1 for m in pending if sched_in(m, w0, t_end))
        pending.clear()
        other = self.muc_other
        return {**st, "occupants": n_occ, "senders": len(snd), "incomplete_window": incomplete,
                "errors": other["errors"] - other0["errors"],
                "error_samples": other["error_samples"][:3],
                "disconnected": sum(1 for c in clients if c.closed),
                "hist": hist.to_dict(), "hist_all": hist_all.to_dict(), **w}

    # -- roster fetch -----------------------------------------------------------------------
    async def cmd_roster_fetch(self, group: str, t_start: int, w0: int, t_end: int) -> dict:
        clients = [c for c in self.groups[group] if not c.closed]
        hist = Histogram()
        st = {"fetches": 0, "fetches_window": 0, "items": 0, "errors": 0}
        win = _Window(w0, t_end)
        await _sleep_until(t_start)

        async def loop_(c: XMPPClient) -> None:
            while _now() < t_end and not c.closed:
                s = _now()
                try:
                    el = await c.iq("<query xmlns='jabber:iq:roster'/>", timeout=30)
                except (XMPPError, asyncio.TimeoutError):
                    st["errors"] += 1
                    continue
                e = _now()
                q = el.find("query")
                st["items"] = q.nchildren if q is not None else 0
                st["fetches"] += 1
                if w0 <= e < t_end:
                    st["fetches_window"] += 1
                    hist.record((e - s) // 1000)

        await asyncio.gather(*(loop_(c) for c in clients))
        w = await win.result()
        return {**st, "sessions": len(clients), "hist": hist.to_dict(), **w}

    # -- provisioning over the wire ---------------------------------------------------------
    async def cmd_provision_roster(self, user: str, password: str, opts: dict,
                                   items: list[str]) -> dict:
        """Roster-set each item (pipelined), then count the roster."""
        o = _opts(opts)
        o.roster = o.presence = False
        c = XMPPClient(user, password, "provision", o)
        c.build_roster_items = True
        await c.login()
        try:
            have = await c.iq("<query xmlns='jabber:iq:roster'/>", timeout=60)
            q = have.find("query")
            existing = {i.attrs.get("jid") for i in q.children} if q is not None else set()
            todo = [j for j in items if j not in existing]
            sem = asyncio.Semaphore(64)

            async def add(j: str) -> None:
                async with sem:
                    await c.iq(f"<query xmlns='jabber:iq:roster'><item jid='{j}' name='{j}'>"
                               "<group>perf</group></item></query>", "set", timeout=60)

            await asyncio.gather(*(add(j) for j in todo))
            el = await c.iq("<query xmlns='jabber:iq:roster'/>", timeout=60)
            q = el.find("query")
            return {"added": len(todo), "items": q.nchildren if q is not None else 0}
        finally:
            c.close()
            await c.wait_closed()

    async def cmd_provision_subs(self, center: str, contacts: list[str], password: str,
                                 opts: dict, timeout: float = 120.0) -> dict:
        """Mutual subscriptions ('both') between center and every contact, over the wire."""
        o = _opts(opts)
        clients = []
        try:
            for u in [center] + contacts:
                c = XMPPClient(u, password, "provision", o)
                c.auto_subscribe = True
                c.build_roster_items = True
                clients.append(c)
            await asyncio.gather(*(c.login() for c in clients))
            cc = clients[0]
            domain = o.domain
            cc.write("".join(f"<presence to='{u}@{domain}' type='subscribe'/>"
                             for u in contacts).encode())
            deadline = time.monotonic() + timeout
            both = 0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                el = await cc.iq("<query xmlns='jabber:iq:roster'/>", timeout=60)
                q = el.find("query")
                both = sum(1 for i in (q.children if q is not None else [])
                           if i.attrs.get("subscription") == "both")
                if both >= len(contacts):
                    break
            return {"both": both, "wanted": len(contacts)}
        finally:
            for c in clients:
                c.close()
            await asyncio.gather(*(c.wait_closed() for c in clients))

    # -- MAM (XEP-0313) --------------------------------------------------------------------
    async def cmd_mam_fill(self, opts: dict, pairs: list[tuple[str, str]], password: str, n: int,
                           window: int, timeout: float) -> dict:
        """Fill each owner's archive with n messages from its peer (pairs run concurrently)."""
        o = _opts(opts)
        cpu0, t0 = _cpu(), _now()
        res = await asyncio.gather(*(mamwire.fill(o, owner, peer, password, n, window, timeout)
                                     for owner, peer in pairs))
        wall = (_now() - t0) / 1e9
        return {"fills": res, "wall_s": wall, "cpu_s": _cpu() - cpu0,
                "msgs_per_s": round(n * len(pairs) / wall, 1)}

    async def cmd_mam_warm(self, group: str, n: int, warmup: int) -> dict:
        """Full (built and checked) last-page queries on every session of the group: the answer
        must be the last 50 messages sent, oldest first; their archive ids become what the light
        queries are checked against."""
        errors: list[str] = []
        expected = list(range(max(0, n - mamwire.PAGE), n))

        async def one(c: XMPPClient) -> None:
            q = mamwire.Querier(c, "q")
            ids: list[str] = []
            for _ in range(max(1, warmup)):
                _dt, fin, nums, ids = await q.last_page(full=True)
                err = mamwire.check_page(fin, nums or [], expected)
                if err:
                    errors.append(f"{c.user}: {err}")
                    break
            self.mam[c] = (q, list(ids))

        await asyncio.gather(*(one(c) for c in self.groups[group] if not c.closed))
        return {"errors": errors[:5], "failed": len(errors)}

    async def _mam_light(self, c: XMPPClient, stats: dict) -> int | None:
        """One counted (not built) last-page query: latency ns, or None when it was wrong."""
        q, ids = self.mam[c]
        try:
            dt, fin, _n, got = await q.last_page(full=False)
        except (XMPPError, asyncio.TimeoutError) as e:
            stats["errors"] += 1
            if len(stats["error_samples"]) < 3:
                stats["error_samples"].append(f"{c.user}: {type(e).__name__}: {e}")
            return None
        if fin.find("fin") is None or got != ids:
            stats["errors"] += 1
            if len(stats["error_samples"]) < 3:
                stats["error_samples"].append(f"{c.user}: {len(got)} results, expected "
                                              f"{len(ids)} (same archive ids as the warm-up)")
            return None
        return dt

    async def cmd_mam_latency(self, group: str, queries: int, max_s: float) -> dict:
        """Sequential last-page queries on the group's first session: ``queries`` of them or
        ``max_s`` seconds, whichever comes first."""
        c = next(c for c in self.groups[group] if not c.closed)
        hist = Histogram()
        st: dict[str, Any] = {"errors": 0, "error_samples": []}
        cpu0, t0 = time.process_time(), _now()     # ns resolution (os.times: 10 ms ticks)
        end = t0 + int(max_s * 1e9)
        done = 0
        while done < queries and _now() < end and not c.closed:
            dt = await self._mam_light(c, st)
            done += 1
            if dt is not None:
                hist.record(dt // 1000)
        return {**st, "queries": done, "hist": hist.to_dict(), "cpu_s": time.process_time() - cpu0,
                "wall_s": (_now() - t0) / 1e9, "bounded_by_time": done < queries}

    async def cmd_mam_throughput(self, group: str, t_start: int, w0: int, t_end: int) -> dict:
        """Every session of the group queries back to back (closed loop) until t_end."""
        clients = [c for c in self.groups[group] if not c.closed]
        hist = Histogram()
        st: dict[str, Any] = {"done": 0, "done_window": 0, "errors": 0, "error_samples": []}
        win = _Window(w0, t_end)
        await _sleep_until(t_start)

        async def loop_(c: XMPPClient) -> None:
            while _now() < t_end and not c.closed:
                dt = await self._mam_light(c, st)
                e = _now()
                if dt is None:
                    await asyncio.sleep(0.01)
                    continue
                st["done"] += 1
                if w0 <= e < t_end:
                    st["done_window"] += 1
                    hist.record(dt // 1000)

        tasks = [asyncio.ensure_future(loop_(c)) for c in clients]
        await _sleep_until(t_end)
        _done, pending = await asyncio.wait(tasks, timeout=60)
        for t in pending:
            t.cancel()
        w = await win.result()
        return {**st, "sessions": len(clients), "hist": hist.to_dict(), **w}

    async def cmd_stats(self) -> dict:
        return {"scram_cache": dict(SCRAM_CACHE_STATS), "groups": {k: len(v) for k, v in
                                                                   self.groups.items()}}


def _worker_main(conn: Any, idx: int, cpus: list[int], nice: int = 0) -> None:
    try:
        os.sched_setaffinity(0, cpus)
    except OSError:
        pass
    if nice:
        from .servers import set_priority
        try:
            os.setsid()
        except OSError:
            pass
        set_priority(nice)
    raise_nofile()
    # The generator must outrun the server: the same collector settings as the daemon's
    # (a young-generation collection every 700 allocations costs a Python client ~25%).
    from mbxmpp.util.tuning import tune_for_serving
    tune_for_serving()
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:   # pragma: no cover - uvloop is a perf requirement
        runner = asyncio.run
    runner(Worker(conn, idx).serve())


# ====================================================================== coordinator

class WorkerError(RuntimeError):
    pass


class Generator:
    """Worker processes pinned to ``cpus``; ``call`` sends one command to every worker."""

    def __init__(self, n_workers: int, cpus: list[int], nice: int = 0) -> None:
        ctx = mp.get_context("fork")
        self.cpus = cpus
        self.n = n_workers
        self.conns = []
        self.procs = []
        for i in range(n_workers):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(child, i, cpus, nice), daemon=True,
                            name=f"perf-worker-{i}")
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)

    def call(self, cmd: str, args: list[dict[str, Any] | None] | dict[str, Any],
             timeout: float = 600.0) -> list[Any]:
        if isinstance(args, dict):
            args = [args] * self.n
        used = [i for i, a in enumerate(args) if a is not None]
        for i in used:
            self.conns[i].send((cmd, args[i]))
        out: list[Any] = [None] * self.n
        deadline = time.monotonic() + timeout
        errs = []
        for i in used:
            left = deadline - time.monotonic()
            if not self.conns[i].poll(max(0.0, left)):
                raise WorkerError(f"worker {i} did not answer {cmd} within {timeout}s")
            status, res = self.conns[i].recv()
            if status != "ok":
                errs.append(f"worker {i}: {res}")
            out[i] = res
        if errs:
            raise WorkerError(f"{cmd} failed:\n" + "\n".join(errs))
        return out

    def close(self) -> None:
        for c, p in zip(self.conns, self.procs):
            try:
                if p.is_alive():
                    c.send(("quit", {}))
                    if c.poll(15):
                        c.recv()
            except (OSError, EOFError, BrokenPipeError):
                pass
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)


def gen_cpu_fraction(results: list[dict], n_cpus: int) -> float:
    """Share of the generator's cores it used over the measured window."""
    rs = [r for r in results if r]
    if not rs:
        return 0.0
    wall = max(r["wall_s"] for r in rs)
    return sum(r["cpu_s"] for r in rs) / (wall * n_cpus) if wall > 0 else 0.0


def merge_hists(results: list[dict]) -> Histogram:
    h = Histogram()
    for r in results:
        if r:
            h.merge(r["hist"])
    return h
