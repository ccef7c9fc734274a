"""Tokenizer and serializer throughput: compiled vs pure Python vs ElementTree's XMLPullParser.

    python perf/bench_tokenizer.py [--stanzas 50000] [--chunk 4096] [--repeat 3]

The stream is a seeded mix of c2s traffic (chat messages with receipts and chat states, presence
with caps, IQ pings and roster gets, disco results, MAM results, SM acks, some non-ASCII text),
fed in fixed-size chunks. XMLPullParser is driven the way slixmpp's XMLStream.data_received does
it (start/end events, depth tracking, clearing the root after each stanza): the baseline to beat.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mbxmpp.xml import CXMLParser, PyXMLParser, c_serialize  # noqa: E402
from mbxmpp.xml.element import Element, py_serialize  # noqa: E402

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0' "
          b"xml:lang='en'>")
END = b"</stream:stream>"

WORDS = ["hello", "world", "meeting", "tomorrow", "ok", "\u00e7a va", "\u4f60\u597d", "\U0001F600",
         "lunch?", "the build is green", "&", "<3", "see https://example.org/x?a=1&b=2"]


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;")


def _jid(r: random.Random) -> str:
    return f"user{r.randrange(1000)}@example.org/res{r.randrange(5)}"


def make_stanza(r: random.Random, i: int) -> str:
    k = r.random()
    if k < 0.45:
        body = _esc(" ".join(r.choice(WORDS) for _ in range(r.randrange(1, 25))))
        return (f"<message to='{_jid(r)}' from='{_jid(r)}' type='chat' id='m{i}'><body>{body}</body>"
                f"<active xmlns='http://jabber.org/protocol/chatstates'/>"
                f"<request xmlns='urn:xmpp:receipts'/>"
                f"<origin-id xmlns='urn:xmpp:sid:0' id='o{i}-{r.randrange(10**9)}'/></message>")
    if k < 0.65:
        return (f"<presence from='{_jid(r)}'><show>away</show><status>{_esc(r.choice(WORDS))}</status>"
                f"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://conversations.im' "
                f"ver='QgayPKawpkPSDYmwT/WM94uAlu0='/><priority>{r.randrange(10)}</priority></presence>")
    if k < 0.75:
        return f"<iq type='get' id='p{i}' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>"
    if k < 0.80:
        return f"<iq type='get' id='r{i}'><query xmlns='jabber:iq:roster' ver='v{i}'/></iq>"
    if k < 0.85:
        feats = "".join(f"<feature var='urn:xmpp:f{j}'/>" for j in range(r.randrange(5, 20)))
        return (f"<iq type='result' id='d{i}' from='{_jid(r)}'><query xmlns='http://jabber.org/protocol/disco#info'>"
                f"<identity category='client' type='phone' name='Conversations'/>{feats}</query></iq>")
    if k < 0.92:
        return (f"<message to='{_jid(r)}' id='a{i}'><result xmlns='urn:xmpp:mam:2' queryid='q1' id='{i}'>"
                f"<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2024-01-01T00:00:00Z'/>"
                f"<message xmlns='jabber:client' from='{_jid(r)}' to='{_jid(r)}' type='chat'>"
                f"<body>{_esc(r.choice(WORDS))}</body></message>"
                f"</forwarded></result></message>")
    if k < 0.96:
        return "<r xmlns='urn:xmpp:sm:3'/>"
    return f"<a xmlns='urn:xmpp:sm:3' h='{i}'/>"


def make_stream(n: int, seed: int = 7) -> bytes:
    r = random.Random(seed)
    parts = [HEADER]
    for i in range(n):
        parts.append(make_stanza(r, i).encode())
        if r.random() < 0.05:
            parts.append(b" ")  # whitespace keepalive
    parts.append(END)
    return b"".join(parts)


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def run_tokenizer(cls, chunks: list[bytes]) -> int:
    p = cls()
    n = 0
    for c in chunks:
        for ev in p.feed(c):
            if ev.__class__ is Element:
                n += 1
    return n


def run_pullparser(chunks: list[bytes]) -> int:
    """slixmpp's XMLStream.data_received loop, minus the event dispatch."""
    parser = ET.XMLPullParser(("start", "end"))
    depth = 0
    root = None
    n = 0
    for c in chunks:
        parser.feed(c)
        for event, xml in parser.read_events():
            if event == "start":
                if depth == 0:
                    root = xml
                depth += 1
            elif event == "end":
                depth -= 1
                if depth == 1:
                    n += 1
                    root.clear()
    return n


def best_of(repeat: int, fn, *args) -> tuple[float, object]:
    """Best CPU time of `repeat` runs (process time: other load on the machine counts less)."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        gc.collect()
        t0 = time.process_time()
        result = fn(*args)
        best = min(best, time.process_time() - t0)
    return best, result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stanzas", type=int, default=50_000)
    ap.add_argument("--chunk", type=int, default=4096, help="bytes per feed() (default 4096)")
    ap.add_argument("--repeat", type=int, default=5, help="best of N runs (default 5)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    data = make_stream(args.stanzas, args.seed)
    chunks = chunks_of(data, args.chunk)
    mb = len(data) / 1e6
    print(f"stream: {args.stanzas} stanzas, {mb:.1f} MB, {len(chunks)} chunks of {args.chunk} B, "
          f"best CPU time of {args.repeat} runs")
    print()
    print(f"{'tokenizer':<28}{'stanzas/s':>12}{'MB/s':>9}{'x ET':>7}")
    rows = []
    if CXMLParser is not None:
        rows.append(("mbxmpp C (expat capsule)", run_tokenizer, CXMLParser))
    rows.append(("mbxmpp Python twin", run_tokenizer, PyXMLParser))
    rows.append(("ET.XMLPullParser (slixmpp)", None, None))
    results = {}
    for name, fn, cls in rows:
        if fn is None:
            t, n = best_of(args.repeat, run_pullparser, chunks)
        else:
            t, n = best_of(args.repeat, fn, cls, chunks)
        if n != args.stanzas:
            print(f"{name}: counted {n} stanzas, expected {args.stanzas}", file=sys.stderr)
            return 1
        results[name] = t
    base = results["ET.XMLPullParser (slixmpp)"]
    for name, t in results.items():
        print(f"{name:<28}{args.stanzas / t:>12,.0f}{mb / t:>9.1f}{base / t:>7.2f}")

    # serializer: the same stanzas, cache cleared (Element.to_bytes would cache them)
    elements = [e for e in (CXMLParser or PyXMLParser)().feed(data) if e.__class__ is Element]

    def ser(fn) -> int:
        total = 0
        for e in elements:
            total += len(fn(e))
        return total

    print()
    print(f"{'serializer':<28}{'stanzas/s':>12}{'MB/s':>9}{'x Py':>7}")
    t_py, size = best_of(args.repeat, ser, py_serialize)
    sers = [("Python (element.py)", t_py)]
    if c_serialize is not None:
        t_c, size_c = best_of(args.repeat, ser, c_serialize)
        assert size_c == size
        sers.insert(0, ("C (serializer.pyx)", t_c))
    for name, t in sers:
        print(f"{name:<28}{len(elements) / t:>12,.0f}{size / 1e6 / t:>9.1f}{t_py / t:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
