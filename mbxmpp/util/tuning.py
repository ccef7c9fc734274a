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
"""

from __future__ import annotations

import ctypes
import gc

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


def tune_for_serving() -> None:
    """Call once the server is up (listening, modules started)."""
    tune_malloc()
    tune_gc()
