"""The LMDB environment: opening it (and checking the storage format), its named databases, inline
reads, map growth, and the online backup.

Reads run inline on the caller's thread in a short read transaction (1-2 µs of LMDB for a keyval
get; a read transaction reused for a whole loop tick would save ~1 µs but must be renewed after each
of our commits and pins pages, so it is not worth it here: see perf/bench_storage.py).

Map full: the writer aborts, doubles the map (:meth:`LmdbEnv.grow`, +8 GiB steps past 8 GiB) and
retries the batch.  Remapping invalidates every open transaction of the process, so every read holds
``rlock`` (uncontended, ~0.1 µs) and the remap takes it.  When another process (the CLI while the
server runs) grew the map, a read gets MapResizedError and asks the writer to adopt the new size
(``on_resized``: the writer must be idle for that).
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any, Callable, Iterator

import lmdb

from .. import keys
from .ops import ArDbs

FORMAT = 1
GiB = 1 << 30
CHUNK = 1000  # keys per read transaction when iterating owners


def scan(txn: Any, db: Any, lo: bytes, hi: bytes, reverse: bool = False,
         values: bool = True) -> Iterator[Any]:
    """(key, value) (or keys) with lo <= key < hi, ascending or descending."""
    cur = txn.cursor(db=db)
    if not reverse:
        if cur.set_range(lo):
            for kv in cur.iternext(keys=True, values=values):
                if (kv[0] if values else kv) >= hi:
                    return
                yield kv
    else:
        ok = cur.prev() if cur.set_range(hi) else cur.last()
        if ok:
            for kv in cur.iterprev(keys=True, values=values):
                if (kv[0] if values else kv) < lo:
                    return
                yield kv


class LmdbEnv:
    """One environment in ``<data_dir>/db``; see the module docstring."""

    def __init__(self, path: str, map_size: int, max_dbs: int, sync: bool,
                 metasync: bool | None, max_readers: int) -> None:
        self.path = os.path.join(path, "db")
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self.env = lmdb.open(self.path, map_size=map_size, max_dbs=max_dbs, sync=sync,
                             metasync=sync if metasync is None else metasync, readahead=False,
                             max_spare_txns=1, max_readers=max_readers)
        self.rlock = threading.Lock()   # held by every read; taken to remap (set_mapsize)
        self.grows = 0                  # map size increases
        self.on_resized: Callable[[], None] = self.adopt_size  # the storage routes it to the writer
        self._dbs: dict[bytes, Any] = {}
        self._check_format()

    def _check_format(self) -> None:
        meta = self.open_db(b"_meta")
        with self.env.begin(write=True, db=meta) as txn:
            fmt = txn.get(b"format")
            if fmt is None:
                txn.put(b"format", str(FORMAT).encode())
            elif int(fmt) > FORMAT:
                raise RuntimeError(f"{self.path}: storage format {int(fmt)} is newer than this "
                                   f"mbxmpp (format {FORMAT}); upgrade mbxmpp")

    def close(self) -> None:
        self.env.close()

    # -- databases ------------------------------------------------------------------------------

    def open_db(self, name: bytes, create: bool = True) -> Any:
        db = self._dbs.get(name)
        if db is None:
            db = self._dbs[name] = self.env.open_db(name, create=create)
        return db

    def ar_dbs(self, base: bytes) -> ArDbs:
        return ArDbs(*(self.open_db(base + sfx) for sfx in (b"", b"#w", b"#t", b"#n")))

    # -- reads ----------------------------------------------------------------------------------

    def get(self, db: Any, key: bytes) -> bytes | None:
        with self.rlock:
            try:
                txn = self.env.begin(db=db)
            except lmdb.MapResizedError:
                txn = None
            if txn is not None:
                try:
                    return txn.get(key)  # type: ignore[no-any-return]
                finally:
                    txn.abort()
        self.on_resized()
        return self.get(db, key)

    def read(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(txn)`` in a short read transaction."""
        with self.rlock:
            try:
                txn = self.env.begin()
            except lmdb.MapResizedError:
                txn = None
            if txn is not None:
                try:
                    return fn(txn)
                finally:
                    txn.abort()
        self.on_resized()
        return self.read(fn)

    def iter_keys(self, db: Any, prefix: bytes) -> Iterator[bytes]:
        """Keys starting with ``prefix``, read in chunks (no transaction stays open across yields)."""
        lo = prefix
        while True:
            chunk: list[bytes] = self.read(lambda txn: list(itertools.islice(
                scan(txn, db, lo, b"\xff" * keys.MAX_KEY, values=False), CHUNK)))
            for k in chunk:
                if not k.startswith(prefix):
                    return
                yield k
            if len(chunk) < CHUNK:
                return
            lo = chunk[-1] + b"\0"

    # -- map size (the writer's thread, no write transaction open) ------------------------------

    def grow(self) -> None:
        with self.rlock:
            size = self.env.info()["map_size"]
            self.env.set_mapsize(size * 2 if size < 8 * GiB else size + 8 * GiB)
        self.grows += 1

    def adopt_size(self) -> None:
        """Take the map size another process set."""
        with self.rlock:
            self.env.set_mapsize(0)


def backup(data_dir: str, dest: str) -> str:
    """A consistent copy of the database in ``data_dir`` into the new folder ``dest`` while the
    server may be writing: LMDB copies from one read transaction (a snapshot), compacted."""
    src = os.path.join(data_dir, "db")
    if not os.path.exists(os.path.join(src, "data.mdb")):
        raise FileNotFoundError(f"no database in {data_dir}")
    target = os.path.join(dest, "db")
    os.makedirs(target, mode=0o700)
    env = lmdb.open(src, readonly=True, max_dbs=128, create=False)
    try:
        env.copy(target, compact=True)
    finally:
        env.close()
    return target
