"""Process settings for the serving daemon: the garbage collector and the C allocator.

Garbage collector. Stanzas are trees of small container objects that live for microseconds
(parsed, routed, written, freed by reference counting). With CPython's default threshold (a
young-generation collection every 700 net allocations) the collector re-walks that working set
all the time: ~3 us of every routed message's ~12 us in ``perf/bench_sm.py``. Collecting the
young generation every 10,000 allocations instead, and freezing what exists at start-up (modules,
caches, config: never garbage) out of every later collection, took ~30% off the CPU per routed
message there. Cyclic garbage (connection <-> stream <-> callbacks) is still collected, a little
later.

C allocator. Every TLS read asks ``SSLObject.read`` for up to 256 KiB: a fresh bytes object that
large comes from glibc's ``mmap``, is shrunk to what was read with ``mremap`` and later given back
with ``munmap`` (three system calls and page faults per read; ~15% of the loop thread's samples
under load in a native profile). Because the block is shrunk before it is freed, glibc's dynamic
mmap threshold never learns to serve it from the heap. Fixing the thresholds (mmap above 4 MiB,
trim the heap top above 64 MiB) keeps these buffers in the heap.

Trimming. Under login churn glibc's heaps fill with free holes (perf/soak_churn.py: bytes in use
flat or falling, free bytes inside the heap and RSS growing): the pages of those holes stay
resident. ``malloc_trim(0)`` once a minute gives whole free pages back to the kernel
(``madvise``), wherever they are in the heap; it takes a few ms on a heap of tens of MB.

Heap report. ``kill -USR1 <pid>`` logs one ``heap report`` line (JSON): Python's allocated blocks,
live objects per gc generation, glibc's ``mallinfo2`` (bytes in use vs. free inside the heap) and,
in a daemon started with ``PYTHONTRACEMALLOC=N``, the allocation sites that grew most since the
previous report. It tells a leak (blocks and bytes in use grow) from fragmentation (only RSS does).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import logging
import signal
import sys
import tracemalloc
from typing import Any

log = logging.getLogger(__name__)

GEN0_THRESHOLD = 10_000

# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 64 << 20


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


def tune_malloc() -> bool:
    """Fix glibc's mmap and trim thresholds; False where there is no glibc ``mallopt``."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked with
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def malloc_info() -> dict[str, int] | None:
    """glibc's main-arena-plus-threads totals: bytes in use, free inside the heap, mmapped."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _Mallinfo2
    m = fn()
    return {"heap_bytes": m.arena, "in_use_bytes": m.uordblks, "free_bytes": m.fordblks,
            "mmapped_bytes": m.hblkhd}


TRACE_TOP = 15
_last_snapshot: tracemalloc.Snapshot | None = None


def heap_report() -> dict[str, Any]:
    """What the process holds now (see the module docstring); diffs tracemalloc snapshots."""
    global _last_snapshot
    r: dict[str, Any] = {"allocated_blocks": sys.getallocatedblocks(),
                         "gc_objects": len(gc.get_objects()),
                         "gc_frozen": gc.get_freeze_count(), "gc_counts": gc.get_count(),
                         "malloc": malloc_info()}
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),))
        r["traced_bytes"] = tracemalloc.get_traced_memory()[0]
        if _last_snapshot is not None:
            r["top_growth"] = [
                {"bytes": d.size_diff, "blocks": d.count_diff,
                 "at": [f"{f.filename}:{f.lineno}" for f in reversed(d.traceback[-6:])]}
                for d in snap.compare_to(_last_snapshot, "traceback")[:TRACE_TOP]]
        _last_snapshot = snap
    return r


def _log_heap_report(signum: int, frame: object) -> None:
    log.warning("heap report %s", json.dumps(heap_report()))


TRIM_INTERVAL = 60.0  # seconds between malloc_trim(0) calls in a serving daemon


def trim_malloc() -> bool:
    """Give the free pages inside glibc's heaps back to the kernel; False without glibc."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    fn.argtypes = (ctypes.c_size_t,)
    fn.restype = ctypes.c_int
    fn(0)
    return True


def _trim_periodically(loop: asyncio.AbstractEventLoop) -> None:
    if trim_malloc():
        loop.call_later(TRIM_INTERVAL, _trim_periodically, loop)


def tune_for_serving() -> None:
    """Call once the server is up (listening, modules started)."""
    tune_malloc()
    tune_gc()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        loop.call_later(TRIM_INTERVAL, _trim_periodically, loop)
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, _log_heap_report)
