"""Router micro-benchmark: stanzas routed per second through mbxmpp.core.router.Router, no I/O.

    python perf/bench_router.py [--sessions 10000] [--stanzas 200000] [--repeat 3]

Cases (pre-built stanzas, a sink stream that only counts, no feature modules registered):
  message->bare     chat to a bare JID with one available resource (RFC 6121 §8.5.2 selection)
  message->full     chat to a full JID
  message->2 res    chat to a bare JID with two available resources of equal priority
  iq->full          an IQ result routed to a full JID
  message->offline  chat to an existing account with no session (bounced: service-unavailable)
Prints routed stanzas/s and ns/stanza for each case; with a DELIVER hook registered as well,
to show the cost of a delivery filter.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mbxmpp.core import events as ev  # noqa: E402
from mbxmpp.core.hooks import HookBus  # noqa: E402
from mbxmpp.core.router import Router  # noqa: E402
from mbxmpp.core.sessions import SessionManager  # noqa: E402
from mbxmpp.jid import JID  # noqa: E402
from mbxmpp.xml.element import Element  # noqa: E402

DOMAIN = "example.org"


class Sink:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def send_stanza(self, stanza: Element) -> None:
        self.n += 1

    def close(self, error: Any = None) -> None:
        pass


def _msg(to: str, frm: str) -> Element:
    body = Element("body")
    body.children.append("hello there, this is a routed message")
    m = Element("message", attrs={"to": to, "from": frm, "type": "chat", "id": "x1"})
    m.children.append(body)
    return m


def build(n_sessions: int, deliver_hook: bool) -> tuple[Router, SessionManager, list, Sink]:
    hooks = HookBus()
    sm = SessionManager(hooks)
    sink = Sink()
    users = set()
    sessions = []
    for i in range(n_sessions):
        bare = JID(f"user{i}", DOMAIN)
        s = sm.bind(bare, sink, "r1")
        s.available = True
        users.add(bare.bare)
        sessions.append(s)
    # user0 .. user9 have a second resource
    for i in range(10):
        s = sm.bind(JID(f"user{i}", DOMAIN), sink, "r2")
        s.available = True
    users.add(f"offline@{DOMAIN}")
    router = Router({DOMAIN}, hooks, sm, users.__contains__)
    if deliver_hook:
        hooks.add(ev.DELIVER, lambda e: None)
    return router, sm, sessions, sink


def run_case(router: Router, origins: list, stanzas: list[Element], n: int) -> float:
    route = router.route
    k = len(stanzas)
    gc.disable()
    try:
        t0 = time.perf_counter()
        for i in range(n):
            j = i % k
            route(stanzas[j], origins[j])
        return time.perf_counter() - t0
    finally:
        gc.enable()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--stanzas", type=int, default=200000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for deliver_hook in (False, True):
        router, sm, sessions, sink = build(args.sessions, deliver_hook)
        n = len(sessions)
        pairs = [(sessions[i], sessions[(i * 7919 + 1) % n]) for i in range(min(n, 1000))]
        cases = {
            "message->bare": [(_msg(b.bare, a.full), a) for a, b in pairs],
            "message->full": [(_msg(b.full, a.full), a) for a, b in pairs],
            "message->2 res": [(_msg(f"user{i % 10}@{DOMAIN}", a.full), a)
                               for i, (a, _b) in enumerate(pairs)],
            "iq->full": [(Element("iq", attrs={"to": b.full, "from": a.full, "type": "result",
                                               "id": "i1"}), a) for a, b in pairs],
            "message->offline": [(_msg(f"offline@{DOMAIN}", a.full), a) for a, _b in pairs],
        }
        print(f"\nRouter, {n} sessions, DELIVER hook: {'yes' if deliver_hook else 'no'}")
        print(f"{'case':<18} {'stanzas/s':>12} {'ns/stanza':>10}  delivered")
        for name, items in cases.items():
            stanzas = [s for s, _ in items]
            origins = [o for _, o in items]
            best = float("inf")
            for _ in range(args.repeat):
                sink.n = 0
                best = min(best, run_case(router, origins, stanzas, args.stanzas))
            delivered = sink.n / args.stanzas
            print(f"{name:<18} {args.stanzas / best:>12,.0f} {best / args.stanzas * 1e9:>10,.0f}"
                  f"  {delivered:.2f}/stanza")


if __name__ == "__main__":
    main()
