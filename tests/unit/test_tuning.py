import gc

from mbxmpp.util.tuning import GEN0_THRESHOLD, tune_for_serving, tune_malloc


def test_tune_for_serving_freezes_startup_objects_and_raises_gen0():
    import signal
    before = gc.get_threshold()
    usr1 = signal.getsignal(signal.SIGUSR1)
    try:
        tune_for_serving()
        assert gc.get_threshold() == (GEN0_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > 1000  # everything imported so far
        # cyclic garbage is still collected
        a: list = []
        a.append(a)
        del a
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        signal.signal(signal.SIGUSR1, usr1)


def test_tune_malloc_sets_glibc_thresholds():
    import platform

    import pytest
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt thresholds are glibc's")
    assert tune_malloc()  # mallopt accepted both thresholds


def test_heap_report_counts_blocks_and_diffs_tracemalloc_snapshots():
    import tracemalloc

    from mbxmpp.util import tuning
    r = tuning.heap_report()
    assert r["allocated_blocks"] > 0 and r["gc_objects"] > 0
    assert "top_growth" not in r  # not tracing: no allocation sites
    tracemalloc.start(4)
    try:
        tuning.heap_report()  # the first snapshot
        kept = [bytearray(100) for _ in range(5000)]  # a "leak" at this line
        r = tuning.heap_report()
        assert r["traced_bytes"] > 500_000
        top = r["top_growth"][0]
        assert top["blocks"] >= 5000 and top["bytes"] >= 500_000
        assert top["at"][0].startswith(__file__)  # the most recent frame first
        del kept
    finally:
        tracemalloc.stop()
        tuning._last_snapshot = None


def test_sigusr1_logs_a_heap_report_in_the_daemon():
    import json
    import os
    import signal
    import time

    from tests.daemon import Daemon
    d = Daemon()
    try:
        d.start()
        pid = d.proc.pid

        def catches_usr1() -> bool:  # tune_for_serving() has installed the handler
            with open(f"/proc/{pid}/status") as f:
                caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
            return bool(caught & (1 << (signal.SIGUSR1 - 1)))

        deadline = time.monotonic() + 20
        while not catches_usr1() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(pid, signal.SIGUSR1)
        line = None
        while line is None and time.monotonic() < deadline:
            time.sleep(0.05)
            line = next((ln for ln in d.log().splitlines() if "heap report " in ln), None)
        assert line is not None, d.log()
        r = json.loads(line.split("heap report ", 1)[1])
        assert r["allocated_blocks"] > 0 and r["gc_frozen"] > 0
        assert d.proc.poll() is None  # still serving
    finally:
        d.finish()


def test_serving_daemon_trims_malloc_periodically(monkeypatch):
    import asyncio
    import platform
    import signal

    import pytest

    from mbxmpp.util import tuning
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    assert tuning.trim_malloc()
    calls = []
    monkeypatch.setattr(tuning, "TRIM_INTERVAL", 0.01)
    monkeypatch.setattr(tuning, "trim_malloc", lambda: calls.append(1) or len(calls) < 3)
    before, usr1 = gc.get_threshold(), signal.getsignal(signal.SIGUSR1)

    async def serve() -> None:
        tuning.tune_for_serving()
        for _ in range(100):
            await asyncio.sleep(0.01)
    try:
        asyncio.run(serve())
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        signal.signal(signal.SIGUSR1, usr1)
    assert len(calls) == 3  # every interval, until trimming is not possible
