"""kill -9 safety: whatever the server acknowledged (a resolved future) is on disk."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mbxmpp.storage.lmdb_backend import LmdbStorage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WRITER = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, sys.argv[2])
    from mbxmpp.storage.lmdb_backend import LmdbStorage

    async def task(st, t):
        kv, m, ar = st.keyval("kv"), st.map("m"), st.archive("ar")
        for i in range(10**9):
            n = f"{t}.{i}"
            kv.set(f"u{n}@x", {"n": n, "pad": "x" * 500})
            m.set(f"u{t}@x", str(i), n)
            sid, fut = ar.append(f"u{t}@x", n, with_="peer@x/r")
            await fut  # the three writes are queued in order: this one resolving covers all
            print(n, sid, flush=True)

    async def main():
        st = LmdbStorage(sys.argv[1], map_size=1 << 20)  # small: the map grows during the run
        await asyncio.gather(*(task(st, t) for t in range(int(sys.argv[3]))))

    asyncio.run(main())
""")


def run_and_kill(path: str, tasks: int, want: int) -> list[tuple[str, str]]:
    p = subprocess.Popen([sys.executable, "-u", "-c", WRITER, path, ROOT, str(tasks)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    acked: list[tuple[str, str]] = []
    buf = b""
    deadline = time.monotonic() + 60
    try:
        while len(acked) < want and time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 1)
            if not r:
                assert p.poll() is None, p.stderr.read().decode()
                continue
            chunk = os.read(p.stdout.fileno(), 65536)
            assert chunk, p.stderr.read().decode()
            buf += chunk
            *lines, buf = buf.split(b"\n")
            acked += [tuple(ln.decode().split()) for ln in lines]  # type: ignore[misc]
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        p.stderr.close()
    assert len(acked) >= want, "writer too slow"
    return acked


@pytest.mark.parametrize("tasks", [1, 8])
def test_acknowledged_writes_survive_sigkill(tmp_path, tasks):
    acked = run_and_kill(str(tmp_path), tasks, want=400)
    st = LmdbStorage(str(tmp_path))
    kv, m, ar = st.keyval("kv"), st.map("m"), st.archive("ar")
    missing = []
    for n, sid in acked:
        t, i = n.split(".")
        item = ar.get(f"u{t}@x", sid)
        if (kv.get(f"u{n}@x") or {}).get("n") != n or m.get(f"u{t}@x", i) != n or \
                item is None or item.value != n:
            missing.append(n)
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    # the indexes agree with the data after the crash
    for t in range(tasks):
        owner = f"u{t}@x"
        assert ar.count(owner) == len(ar.query(owner)) == ar.count(owner, with_="peer@x")
    # and the environment is writable again
    kv.set("after@x", 1).result(timeout=10)
    st.close_sync()
