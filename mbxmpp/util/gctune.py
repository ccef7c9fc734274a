"""Garbage-collector settings for the serving daemon.

Stanzas are trees of small container objects that live for microseconds (parsed, routed, written,
freed by reference counting) or, with Stream Management, until the client's next ack. With
CPython's default threshold (a young-generation collection every 700 net allocations) the
collector re-walks that working set all the time: ~3 us of every routed message's ~12 us in
``perf/bench_sm.py``. Collecting the young generation every 10,000 allocations instead, and
freezing what exists at start-up (modules, caches, config: never garbage) out of every later
collection, took ~30% off the CPU per routed message there. Cyclic garbage (connection <-> stream
<-> callbacks) is still collected, a little later.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000


def tune_for_serving() -> None:
    """Call once the server is up (listening, modules started)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
