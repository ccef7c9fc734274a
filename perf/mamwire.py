"""MAM (XEP-0313) over the wire: archive fill and "last page of 50" queries, shared by the
``mam_query`` scenario (``perf/scenarios.py``, run in the load generator's workers) and the
standalone ``perf/bench_mam_wire.py``.

- ``fill``: the peer (online) sends N chat messages to the owner (online, so nothing goes to offline
  storage), in windows of ``window`` messages each closed by a ping round trip (bounded rate); the
  servers archive both sides. Every message carries its number in the body.
- ``query_last_page``: ``<query xmlns='urn:xmpp:mam:2' queryid=...><set><max>50</max><before/>
  </set></query>``; latency = send -> arrival of the data that completed the ``<fin/>`` IQ result
  (all result messages come before it). ``full=True`` builds every result and returns the message
  numbers (to check them: the last 50 sent, oldest first); ``full=False`` only counts the results
  and keeps their archive ids (``XMPPClient.mam_queryid``), so that the client's parsing cost stays
  out of the figure as far as possible.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from .xmppclient import ClientOptions, El, XMPPClient

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
PAGE = 50
BODY_RE = re.compile(r"Message number (\d+):")
PING = "<ping xmlns='urn:xmpp:ping'/>"


def query(queryid: str, page: int = PAGE) -> str:
    """The last page: RSM ``<before/>`` (empty) with ``<max>page</max>``."""
    return (f"<query xmlns='{NS_MAM}' queryid='{queryid}'><set xmlns='{NS_RSM}'>"
            f"<max>{page}</max><before/></set></query>")


def message(to: str, i: int) -> bytes:
    """What the peer sends (like perf/bench_mam.py's archived stanzas: body, chat state,
    origin-id)."""
    return (f"<message to='{to}' type='chat' id='x{i:08d}'>"
            f"<body>Message number {i}: a fairly ordinary chat line of typical length.</body>"
            "<active xmlns='http://jabber.org/protocol/chatstates'/>"
            f"<origin-id xmlns='urn:xmpp:sid:0' id='o{i:08d}'/></message>").encode()


async def fill(opts: ClientOptions, owner: str, peer: str, password: str, n: int,
               window: int = 100, timeout: float = 600.0) -> dict[str, Any]:
    """peer -> owner, n chat messages, windows closed by a ping round trip; owner online.
    Bounded: n messages, and ``timeout`` seconds overall."""
    o = ClientOptions(opts.host, opts.port, opts.domain, tls=opts.tls, mech=opts.mech,
                      roster=False, presence=True, timeout=opts.timeout, src_ips=opts.src_ips)
    a = XMPPClient(owner, password, "fill", o)
    b = XMPPClient(peer, password, "fill", o)
    await asyncio.gather(a.login(), b.login())
    got = [0]

    def on_owner(el: El) -> None:
        if el.tag == "message" and el.find("body") is not None:
            got[0] += 1

    a.on_stanza = on_owner
    to = a.bare
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout
    try:
        for base in range(0, n, window):
            if time.monotonic() > deadline:
                raise RuntimeError(f"fill: {base} of {n} messages sent in {timeout:.0f}s")
            b.write(b"".join(message(to, i) for i in range(base, min(n, base + window))))
            await b.iq(PING, to=opts.domain, timeout=120)
        end = min(deadline, time.monotonic() + 60)
        while got[0] < n and time.monotonic() < end and not a.closed:
            await a.iq(PING, to=opts.domain, timeout=60)
            if got[0] < n:
                await asyncio.sleep(0.05)
        took = time.perf_counter() - t0
    finally:
        for c in (b, a):
            c.close()
        await asyncio.gather(*(c.wait_closed() for c in (a, b)))
    if got[0] < n:
        raise RuntimeError(f"fill: {owner} received {got[0]} of {n} messages")
    return {"fill_s": round(took, 2), "fill_msgs_per_s": round(n / took, 1)}


def numbers(results: list[El]) -> list[int]:
    """The message numbers of fully built result messages (-1 where the body is missing)."""
    nums = []
    for m in results:
        try:
            body = m.find("result").find("forwarded").find("message").find("body")  # type: ignore[union-attr]
            mm = BODY_RE.search(body.text)  # type: ignore[union-attr]
            nums.append(int(mm.group(1)) if mm else -1)
        except AttributeError:
            nums.append(-1)
    return nums


class Querier:
    """One logged-in session of the archive's owner that runs last-page queries."""

    def __init__(self, client: XMPPClient, queryid: str = "q") -> None:
        self.c = client
        self.queryid = queryid
        self.results: list[El] = []
        self._q = query(queryid)
        prev = client.on_stanza

        def on_stanza(el: El) -> None:
            if el.tag == "message":
                r = el.find("result")
                if r is not None and r.attrs.get("queryid") == queryid:
                    self.results.append(el)
                    return
            if prev is not None:
                prev(el)

        client.on_stanza = on_stanza

    async def last_page(self, full: bool,
                        timeout: float = 60.0) -> tuple[int, El, list[int] | None, list[str]]:
        """(latency ns, the <iq/> result, message numbers if ``full`` else None, archive ids)."""
        c = self.c
        self.results.clear()
        c.mam_ids = []
        c.mam_queryid = None if full else self.queryid
        t0 = time.monotonic_ns()
        try:
            fin = await c.iq(self._q, "set", timeout=timeout)
        finally:
            c.mam_queryid = None
        t1 = c.now               # arrival of the data that completed the <fin/> IQ
        if full:
            ids = [r.attrs.get("id", "") for m in self.results
                   if (r := m.find("result")) is not None]
            return t1 - t0, fin, numbers(self.results), ids
        return t1 - t0, fin, None, c.mam_ids


def check_page(fin: El, got: list[int], expected: list[int]) -> str | None:
    """None when the answer is right: a <fin/>, the expected message numbers in order."""
    if fin.find("fin") is None:
        return "no <fin/>"
    if got != expected:
        return (f"got {len(got)} results {got[:2]}..{got[-2:]}, want "
                f"{expected[0] if expected else ''}..{expected[-1] if expected else ''}")
    return None
