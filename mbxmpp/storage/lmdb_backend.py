"""LMDB storage: one environment in ``<data_dir>/db``, one named database per store, group commit.

Databases: ``kv:NAME``, ``map:NAME``, ``ar:NAME`` plus its indexes ``ar:NAME#w`` (with),
``ar:NAME#t`` (time, for global expiry) and ``ar:NAME#n`` (item count per owner); ``_meta``.
Key layouts are in ``keys.py``.

Reads run inline on the caller's thread in a short read transaction (1-2 µs of LMDB for a keyval
get; a read transaction reused for a whole loop tick would save ~1 µs but must be renewed after each
of our commits and pins pages, so it is not worth it here: see perf/bench_storage.py).

Writes: the caller packs (and validates) at the call and gets a future.  Inside a running loop the
write is buffered and the whole loop iteration's writes are handed to the writer as ONE unit (a
``_Hand``: one queue put and at most one wake-up of the writer thread per iteration, scheduled with
``call_soon`` by the iteration's first write); outside a loop a write is handed over at once (after
what is buffered: call order is kept).  Archive appends made in one iteration share one future (a
``_SharedFuture``, which refuses ``cancel()``); other writes have their own.  A single writer
thread (started on the first write) takes everything handed over, applies it in ONE write
transaction, commits with fsync and only then resolves the futures (one ``call_soon_threadsafe``
per commit and loop).  Everything handed over while a commit runs forms the next batch (group
commit), so fsync never blocks the event loop and N concurrent writers cost far fewer than N
commits (``storage.commits`` counts them).  An append costs the writer three cursor puts (item,
time index, with-index); the per-owner item counts are summed and written once per transaction.
keyval and map keep an overlay of queued values so that reads see writes before their commit.  If a
batch fails, its writes are retried one per transaction so that one bad write cannot fail the others
(a failed append fails its hand's shared future).

Map full: the writer aborts, doubles the map (``set_mapsize``, +8 GiB steps past 8 GiB) and retries
the batch.  Remapping invalidates every open transaction of the process, so every read holds
``_rlock`` (uncontended, ~0.1 µs) and the remap takes it.  When another process (the CLI while the
server runs) grew the map, a read or the writer gets MapResizedError and the writer adopts the new
size the same way.

Synchronous use (CLI): reads are synchronous anyway; write methods called outside a running loop
return a ``SyncFuture``; ``batch()`` commits many writes as one transaction; then
``flush_sync()`` / ``close_sync()``.  Keep a batch under ~100k ops (LMDB's dirty-page limit).
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
import os
import queue
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterator

import lmdb

from . import keys
from .api import ArchiveItem, ItemNotFound, SyncFuture, run_sync
from .records import Upgrade, _packer, current, decode, pack, unpack

_pack = _packer.pack
_new_id_locked = keys.ids.new_locked
_get_running_loop = asyncio._get_running_loop
_bulk_prefix = keys.owner_prefix_uncached  # batch(): many distinct owners, caching only costs

FORMAT = 1
GiB = 1 << 30
_CHUNK = 1000  # keys per read transaction when iterating owners
_MAX_BATCH = 10_000  # jobs per write transaction (bounds commit latency under a flood)

# writer ops: tuples whose first item is one of these
OP_PUT, OP_DELPREFIX, OP_AR_PUT, OP_AR_DEL, OP_AR_EXPIRE, OP_DEL_OWNER = range(6)

Op = tuple[Any, ...]
Pend = tuple[Any, Any, Any]      # (store, overlay token, packed value or None)


class _Job:
    """A write with its own future (keyval, map, deletes, flush, batches, anything called outside
    a loop).  Archive appends called inside a loop are not jobs: see :class:`_Hand`."""

    __slots__ = ("seq", "ops", "touches", "fut", "result", "error")

    def __init__(self, seq: int, ops: list[Op], touches: list[Pend], fut: Any) -> None:
        self.seq = seq
        self.ops = ops
        self.touches = touches
        self.fut = fut
        self.result: Any = None
        self.error: BaseException | None = None


class _SharedFuture(asyncio.Future):  # type: ignore[type-arg]
    """The one future of every archive append handed to the writer in the same loop iteration.

    Callers only await it or add done-callbacks; ``cancel()`` is refused (returns False) so that a
    task cancelled while awaiting its append cannot cancel the future of the others' appends: that
    task's cancellation takes effect once the commit has resolved the future."""

    def cancel(self, msg: Any = None) -> bool:
        return False


class _Hand:
    """What the loop thread hands to the writer at once (one ``queue.put`` per loop iteration).

    ``items`` in call order: a ``_Job``; a single keyval/map set from a loop, as one tuple
    ``(OP_PUT, db, key, raw, store, overlay token, seq, future)`` (its error, if any, in
    ``failed[id(item)]``); or a run of appends to one archive ``[_ArDbs, rec, ...]`` that all resolve
    ``fut``, the shared future (its ``error``: any failed append of the hand).  ``n`` counts the
    writes.  A hand is never split over two commits.  (Few objects per pending write: fewer and
    cheaper garbage collections while writes wait for their commit.)"""

    __slots__ = ("items", "fut", "error", "n", "adopt", "failed")

    def __init__(self, items: list[Any], fut: Any = None, n: int = 1, adopt: bool = False) -> None:
        self.items = items
        self.fut = fut
        self.error: BaseException | None = None
        self.n = n
        self.adopt = adopt
        self.failed: dict[int, BaseException] | None = None

    def fail(self, item: Any, e: BaseException) -> None:
        """Record the error of a tuple item (a single set)."""
        if self.failed is None:
            self.failed = {}
        self.failed.setdefault(id(item), e)


_STOP = _Hand([], n=0)


def _resolve(settle: list[tuple[Any, Any, BaseException | None]]) -> None:
    """Loop thread: settle the futures of one commit (one ``call_soon_threadsafe`` per commit)."""
    for f, result, error in settle:
        if not f.done():
            if error is not None:
                f.set_exception(error)
            else:
                f.set_result(result)


def _scan(txn: Any, db: Any, lo: bytes, hi: bytes, reverse: bool = False,
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


class _ArDbs:
    __slots__ = ("main", "w", "t", "n")

    def __init__(self, main: Any, w: Any, t: Any, n: Any) -> None:
        self.main, self.w, self.t, self.n = main, w, t, n


class _Store:
    kind = ""

    def __init__(self, s: LmdbStorage, name: str, version: int, upgrade: Upgrade | None) -> None:
        self._s = s
        self.name = name
        self.version = version
        self._upgrade = upgrade
        self._pend: dict[Any, Any] = {}

    def _decode(self, raw: bytes) -> Any:
        return decode(raw, self.version, self.name, self._upgrade)


class LmdbKeyVal(_Store):
    kind = "keyval"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self._db = self._s._open_db(b"kv:" + self.name.encode())

    def get(self, owner: str) -> Any | None:
        key = keys.owner_prefix(owner)
        e = self._pend.get(key)
        raw = e[1] if e is not None else self._s._get(self._db, key)
        return None if raw is None else self._decode(raw)

    def _op_set(self, owner: str, value: Any, prefix_of: Callable[[str], bytes] = keys.owner_prefix
                ) -> tuple[list[Op], list[Pend]]:
        key = prefix_of(owner)
        raw = None if value is None else pack(self.version, value)
        return [(OP_PUT, self._db, key, raw)], [(self, key, raw)]

    def set(self, owner: str, value: Any) -> Any:
        loop = _get_running_loop()
        if loop is None:
            return self._s._submit(*self._op_set(owner, value))
        key = keys._prefixes.get(owner) or keys.owner_prefix(owner)
        raw = None if value is None else _pack([self.version, value])  # (version checked at open)
        return self._s._put1(self, self._db, key, key, raw, loop)

    def _pend_apply(self, token: bytes, seq: int, raw: bytes | None) -> None:
        self._pend[token] = (seq, raw)

    def _unpend(self, token: bytes, seq: int) -> None:
        e = self._pend.get(token)
        if e is not None and e[0] == seq:
            del self._pend[token]

    def owners(self, prefix: str = "") -> Iterator[str]:
        pb = prefix.encode("utf-8")
        with self._s._olock:
            pend = dict(self._pend)
        adds = sorted(k for k, e in pend.items() if e[1] is not None and k.startswith(pb))
        last = None
        for k in heapq.merge(self._s._iter_keys(self._db, pb), adds):
            if k != last:
                last = k
                e = pend.get(k)
                if e is None or e[1] is not None:
                    yield keys.owner_of(k)

    def owners_in_domain(self, domain: str) -> Iterator[str]:
        suffix = "@" + domain
        return (o for o in self.owners() if o.endswith(suffix))

    def count(self) -> int:
        with self._s._olock:
            pend = dict(self._pend)

        def run(txn: Any) -> int:
            n: int = txn.stat(self._db)["entries"]
            for k, (_, raw) in pend.items():
                there = txn.get(k, db=self._db) is not None
                n += (raw is not None and not there) - (raw is None and there)
            return n
        return self._s._read(run)  # type: ignore[no-any-return]


class _MapPend:
    __slots__ = ("cleared", "keys")

    def __init__(self) -> None:
        self.cleared = 0                                     # seq of a queued delete_all
        self.keys: dict[bytes, tuple[int, bytes | None]] = {}


class LmdbMap(_Store):
    kind = "map"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self._db = self._s._open_db(b"map:" + self.name.encode())

    def get(self, owner: str, key: str) -> Any | None:
        prefix = keys.owner_prefix(owner)
        k = keys.map_key(prefix, key)
        p = self._pend.get(prefix)
        e = p.keys.get(k) if p is not None else None
        if e is not None:
            raw = e[1]
        elif p is not None and p.cleared:
            raw = None
        else:
            raw = self._s._get(self._db, k)
        return None if raw is None else self._decode(raw)

    def get_all(self, owner: str) -> dict[str, Any]:
        prefix = keys.owner_prefix(owner)
        with self._s._olock:  # overlay first, then the database (the overlay is never older)
            p = self._pend.get(prefix)
            cleared, pk = (p.cleared, dict(p.keys)) if p is not None else (0, {})
        raws: dict[bytes, bytes | None] = {}
        if not cleared:
            hi = keys.prefix_end(prefix)
            raws = self._s._read(lambda txn: dict(_scan(txn, self._db, prefix, hi)))
        for k, (_, raw) in pk.items():
            raws[k] = raw
        return {keys.map_key_part(prefix, k): self._decode(raw)
                for k, raw in sorted(raws.items()) if raw is not None}

    def _op_set_many(self, owner: str, items: dict[str, Any],
                     prefix_of: Callable[[str], bytes] = keys.owner_prefix
                     ) -> tuple[list[Op], list[Pend]]:
        prefix = prefix_of(owner)
        ops: list[Op] = []
        pends: list[Pend] = []
        for key, value in items.items():
            k = keys.map_key(prefix, key)
            raw = None if value is None else pack(self.version, value)
            ops.append((OP_PUT, self._db, k, raw))
            pends.append((self, (prefix, k), raw))
        return ops, pends

    def set(self, owner: str, key: str, value: Any) -> Any:
        loop = _get_running_loop()
        if loop is None:
            return self._s._submit(*self._op_set_many(owner, {key: value}))
        prefix = keys._prefixes.get(owner) or keys.owner_prefix(owner)
        k = keys.map_key(prefix, key)
        raw = None if value is None else _pack([self.version, value])
        return self._s._put1(self, self._db, k, (prefix, k), raw, loop)

    def set_many(self, owner: str, items: dict[str, Any]) -> Any:
        return self._s._submit(*self._op_set_many(owner, items))

    def delete_all(self, owner: str) -> Any:
        prefix = keys.owner_prefix(owner)
        return self._s._submit([(OP_DELPREFIX, self._db, prefix)], [(self, (prefix, None), None)])

    def _pend_apply(self, token: tuple[bytes, bytes | None], seq: int, raw: bytes | None) -> None:
        prefix, k = token
        p = self._pend.get(prefix)
        if p is None:
            p = self._pend[prefix] = _MapPend()
        if k is None:
            p.cleared = seq
            p.keys.clear()
        else:
            p.keys[k] = (seq, raw)

    def _unpend(self, token: tuple[bytes, bytes | None], seq: int) -> None:
        prefix, k = token
        p = self._pend.get(prefix)
        if p is None:
            return
        if k is None:
            if p.cleared == seq:
                p.cleared = 0
        else:
            e = p.keys.get(k)
            if e is not None and e[0] == seq:
                del p.keys[k]
        if not p.cleared and not p.keys:
            del self._pend[prefix]


class LmdbArchive(_Store):
    kind = "archive"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self._a = self._s._ar_dbs(b"ar:" + self.name.encode())
        self._reset_caches()

    def _reset_caches(self) -> None:
        """(Also for a copy of this store with another schema version.)"""
        # with_ -> (record head, with-hash, with_ in UTF-8): a record is msgpack
        # [version, [with_, value]], i.e. this head (fixed per version and with_) + pack(value)
        self._wcache: dict[str | None, tuple[bytes, bytes, bytes | None]] = {}

    def _with_entry(self, with_: str | None) -> tuple[bytes, bytes, bytes | None]:
        if with_ is not None and not isinstance(with_, str):
            raise TypeError("with_ must be a str or None")
        head = b"\x92" + _pack(self.version) + b"\x92" + _pack(with_)
        e = (head, b"", None) if with_ is None else (head, keys.with_hash(with_),
                                                     with_.encode("utf-8"))
        if type(with_) is str or with_ is None:
            if len(self._wcache) >= keys._CACHE_MAX:
                del self._wcache[next(iter(self._wcache))]  # the oldest (keys._CACHE_MAX)
            self._wcache[with_] = e
        return e

    def new_id(self, when: float | None = None) -> str:
        b = keys.ids.new(when)
        s = b.hex()
        self._s._last_id = (s, b)  # append(id=s) then needs no parsing
        return s

    def _id16(self, id: str | None, when: float | None) -> bytes:
        if id is None:
            return keys.ids.new(when)
        last = self._s._last_id
        if id is last[0]:
            return last[1]
        b = keys.id_str_to_bytes(id)
        if b is None:
            raise ValueError(f"not an archive id: {id!r}")
        return b

    def _prep(self, owner: str, value: Any, when: float | None, with_: str | None,
              id: str | None, prefix_of: Callable[[str], bytes] = keys.owner_prefix
              ) -> tuple[bytes, bytes, bytes, bytes | None, bytes | None, bytes]:
        """(id16, owner prefix, id16, with-index key, with_ bytes, record) of an append."""
        prefix = prefix_of(owner)
        e = self._wcache.get(with_) or self._with_entry(with_)
        id16 = self._id16(id, when)
        return (id16, prefix, id16, None if e[2] is None else prefix + e[1] + id16, e[2],
                e[0] + _pack(value))

    def _op_append(self, owner: str, value: Any, when: float | None, with_: str | None,
                   id: str | None) -> tuple[bytes, Op]:
        """(A batch's append: owners are not cached.)"""
        id16, *rec = self._prep(owner, value, when, with_, id, keys.owner_prefix_uncached)
        return id16, (OP_AR_PUT, self._a, *rec)

    def append(self, owner: str, value: Any, when: float | None = None, with_: str | None = None,
               id: str | None = None) -> tuple[str, Any]:
        loop = _get_running_loop()
        if loop is None:
            rec = self._prep(owner, value, when, with_, id)
            return rec[0].hex(), self._s._submit([(OP_AR_PUT, self._a, *rec[1:])], [])
        # the hot path (archiving in a loop): validate and pack here, at the call; a fresh id is
        # allocated under the enqueue lock, which is the id allocator's lock
        prefix = keys._prefixes.get(owner) or keys.owner_prefix(owner)
        e = self._wcache.get(with_) or self._with_entry(with_)
        raw = e[0] + _pack(value)
        if id is None and when is None:
            return self._s._append(self._a, prefix, e, raw, None, True, loop)
        # an id from new_id() is fresh for one append; any other may name an existing item
        first_use = id is not None and id is self._s._last_id[0]
        id16 = self._id16(id, when)
        if first_use:
            self._s._last_id = (None, b"")
        fresh = first_use and when is None
        return self._s._append(self._a, prefix, e, raw, id16, fresh, loop)

    def _item(self, id16: bytes, raw: bytes) -> ArchiveItem:
        version, (with_, value) = unpack(raw)
        return ArchiveItem(id16.hex(), keys.id_when(id16), with_,
                           current(version, value, self.version, self.name, self._upgrade))

    def _walk(self, txn: Any, prefix: bytes, start: float | None, end: float | None,
              with_: str | None, after_id: str | None, before_id: str | None,
              ids: list[str] | None, reverse: bool,
              values: bool = True) -> Iterator[tuple[bytes, Any]]:
        """(id16, raw record or None) of the matching items; None for the with-index path, and
        for the plain path when ``values`` is false (counting)."""
        a = self._a
        lo, hi = b"", b"\xff" * 17  # bounds on the id16 part: lo <= id16 < hi

        def existing(s: str) -> bytes:
            b = keys.id_str_to_bytes(s)
            if b is None or txn.get(prefix + b, db=a.main) is None:
                raise ItemNotFound(s)
            return b
        if after_id is not None:
            lo = existing(after_id) + b"\0"
        if before_id is not None:
            hi = existing(before_id)
        if start is not None:
            lo = max(lo, keys.ts_bound(keys.clamp_us(start)))
        if end is not None and keys.clamp_us(end) < keys.U64:
            hi = min(hi, keys.ts_bound(keys.clamp_us(end) + 1))
        if with_ is not None and not isinstance(with_, str):
            raise TypeError("with_ must be a str or None")
        if ids is not None:
            cand = sorted({b for b in map(keys.id_str_to_bytes, ids) if b is not None},
                          reverse=reverse)
            for id16 in cand:
                if lo <= id16 < hi:
                    raw = txn.get(prefix + id16, db=a.main)
                    if raw is not None and (with_ is None or keys.with_matches(with_, unpack(raw)[1][0])):
                        yield id16, raw
        elif with_ is not None:
            wp = prefix + keys.with_hash(with_)
            for k, v in _scan(txn, a.w, wp + lo, wp + hi, reverse):
                if keys.with_matches(with_, bytes(v).decode("utf-8")):
                    yield k[-16:], None
        elif values:
            n = len(prefix)
            for k, v in _scan(txn, a.main, prefix + lo, prefix + hi, reverse):
                yield k[n:], v
        else:
            n = len(prefix)
            for k in _scan(txn, a.main, prefix + lo, prefix + hi, reverse, values=False):
                yield k[n:], None

    def query(self, owner: str, *, start: float | None = None, end: float | None = None,
              with_: str | None = None, after_id: str | None = None, before_id: str | None = None,
              ids: list[str] | None = None, limit: int | None = None,
              reverse: bool = False) -> list[ArchiveItem]:
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        prefix = keys.owner_prefix(owner)

        def run(txn: Any) -> list[ArchiveItem]:
            out: list[ArchiveItem] = []
            if limit == 0:  # still validate after_id/before_id
                next(self._walk(txn, prefix, start, end, with_, after_id, before_id, ids, reverse), None)
                return out
            for id16, raw in self._walk(txn, prefix, start, end, with_, after_id, before_id, ids,
                                        reverse):
                if raw is None:
                    raw = txn.get(prefix + id16, db=self._a.main)
                out.append(self._item(id16, raw))
                if len(out) == limit:
                    break
            return out
        return self._s._read(run)  # type: ignore[no-any-return]

    def count(self, owner: str, *, start: float | None = None, end: float | None = None,
              with_: str | None = None, after_id: str | None = None, before_id: str | None = None,
              ids: list[str] | None = None) -> int:
        prefix = keys.owner_prefix(owner)
        if (start, end, with_, after_id, before_id, ids) == (None,) * 6:
            raw = self._s._get(self._a.n, prefix)
            return 0 if raw is None else int.from_bytes(raw, "big")
        return self._s._read(lambda txn: sum(1 for _ in self._walk(  # type: ignore[no-any-return]
            txn, prefix, start, end, with_, after_id, before_id, ids, False, values=False)))

    def get(self, owner: str, id: str) -> ArchiveItem | None:
        prefix = keys.owner_prefix(owner)
        b = keys.id_str_to_bytes(id)
        raw = None if b is None else self._s._get(self._a.main, prefix + b)
        return None if raw is None or b is None else self._item(b, raw)

    def first_last(self, owner: str) -> tuple[ArchiveItem | None, ArchiveItem | None]:
        prefix = keys.owner_prefix(owner)
        hi = keys.prefix_end(prefix)

        def run(txn: Any) -> tuple[ArchiveItem | None, ArchiveItem | None]:
            ends = [next(_scan(txn, self._a.main, prefix, hi, rev), None) for rev in (False, True)]
            f, l = (None if e is None else self._item(e[0][len(prefix):], e[1]) for e in ends)
            return f, l
        return self._s._read(run)  # type: ignore[no-any-return]

    def delete(self, owner: str, ids: list[str] | None = None, before: float | None = None) -> Any:
        prefix = keys.owner_prefix(owner)
        id16s = None if ids is None else [b for b in map(keys.id_str_to_bytes, ids) if b is not None]
        lim = None if before is None else keys.clamp_us(before)
        return self._s._submit([(OP_AR_DEL, self._a, prefix, id16s, lim)], [])

    def expire(self, before: float, budget: int = 1000) -> Any:
        return self._s._submit([(OP_AR_EXPIRE, self._a, keys.clamp_us(before), budget)], [])

    def owners_sizes(self) -> Iterator[tuple[str, int]]:
        after = b""
        while True:
            chunk = self._s._read(lambda txn: list(itertools.islice(
                _scan(txn, self._a.n, after, b"\xff" * keys.MAX_KEY), _CHUNK)))
            for k, v in chunk:
                yield keys.owner_of(k), int.from_bytes(v, "big")
            if len(chunk) < _CHUNK:
                return
            after = chunk[-1][0] + b"\0"


class LmdbBatch:
    def __init__(self, s: LmdbStorage) -> None:
        self._s = s
        self._ops: list[Op] = []
        self._pends: list[Pend] = []

    def __len__(self) -> int:
        return len(self._ops)

    def _add(self, ops: list[Op], pends: list[Pend]) -> None:
        self._ops += ops
        self._pends += pends

    def set(self, store: Any, owner: str, value: Any) -> None:
        self._add(*store._op_set(owner, value, _bulk_prefix))

    def map_set(self, store: Any, owner: str, key: str, value: Any) -> None:
        self._add(*store._op_set_many(owner, {key: value}, _bulk_prefix))

    def map_set_many(self, store: Any, owner: str, items: dict[str, Any]) -> None:
        self._add(*store._op_set_many(owner, items, _bulk_prefix))

    def append(self, store: Any, owner: str, value: Any, when: float | None = None,
               with_: str | None = None, id: str | None = None) -> str:
        id16, op = store._op_append(owner, value, when, with_, id)
        self._ops.append(op)
        return str(id16.hex())

    def commit(self) -> Any:
        ops, pends, self._ops, self._pends = self._ops, self._pends, [], []
        return self._s._submit(ops, pends)

    def __enter__(self) -> LmdbBatch:
        return self

    def __exit__(self, et: Any, *exc: object) -> None:
        if et is None:
            fut = self._s._submit(self._ops, self._pends, SyncFuture(self._s._done_cond))
            self._ops, self._pends = [], []
            fut.result()

    async def __aenter__(self) -> LmdbBatch:
        return self

    async def __aexit__(self, et: Any, *exc: object) -> None:
        if et is None:
            await self.commit()


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


class LmdbStorage:
    """See the module docstring.

    ``sync=False`` skips fsync entirely (tests, benchmarks: a kill -9 still loses nothing, an OS
    crash may lose recent commits); ``metasync=False`` keeps the data fsync but not the second one
    for the meta page (~2x commits/s; an OS crash may undo the last commit only)."""

    def __init__(self, path: str, map_size: int = GiB, max_dbs: int = 128, sync: bool = True,
                 metasync: bool | None = None, max_readers: int = 126) -> None:
        self.path = os.path.join(path, "db")
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self._env = lmdb.open(self.path, map_size=map_size, max_dbs=max_dbs, sync=sync,
                              metasync=sync if metasync is None else metasync, readahead=False,
                              max_spare_txns=1, max_readers=max_readers)
        self._rlock = threading.Lock()   # held by every read; taken to remap (set_mapsize)
        # overlays + enqueue order; it is the id allocator's lock, so that an append takes one lock
        self._olock = keys.ids.lock
        self._done_cond = threading.Condition()  # SyncFutures wait on it; notified per batch
        self._q: queue.SimpleQueue[_Hand] = queue.SimpleQueue()
        # what the loop thread wrote during this loop iteration, handed to the writer as ONE
        # _Hand by _handoff (scheduled with call_soon on the first write of the iteration)
        self._buf: list[Any] = []
        self._buf_n = 0
        # writes accepted (any thread, under _olock) and writes the writer has finished with
        # (committed, or failed and reported): equal when nothing is waiting for a commit
        self._accepted = 0
        self._finished = 0
        self._buf_fut: _SharedFuture | None = None    # the appends' future of this hand
        self._buf_loop: asyncio.AbstractEventLoop | None = None  # where _handoff is scheduled
        self._seq = 0
        self._last_id: tuple[str | None, bytes] = (None, b"")  # the last new_id(), str and bytes
        self._writer: threading.Thread | None = None
        self._closed = False
        self._stores: dict[tuple[str, str, int], Any] = {}
        self._first: dict[tuple[str, str], Any] = {}
        self._dbs: dict[bytes, Any] = {}
        self.commits = 0   # committed write transactions of the writer
        self.on_commit: Callable[[float], None] | None = None  # seconds each commit took
        self.grows = 0     # map size increases
        meta = self._open_db(b"_meta")
        with self._env.begin(write=True, db=meta) as txn:
            fmt = txn.get(b"format")
            if fmt is None:
                txn.put(b"format", str(FORMAT).encode())
            elif int(fmt) > FORMAT:
                raise RuntimeError(f"{self.path}: storage format {int(fmt)} is newer than this "
                                   f"mbxmpp (format {FORMAT}); upgrade mbxmpp")

    # -- databases and stores -------------------------------------------------------------------

    def _open_db(self, name: bytes, create: bool = True) -> Any:
        db = self._dbs.get(name)
        if db is None:
            db = self._dbs[name] = self._env.open_db(name, create=create)
        return db

    def _ar_dbs(self, base: bytes) -> _ArDbs:
        return _ArDbs(*(self._open_db(base + sfx) for sfx in (b"", b"#w", b"#t", b"#n")))

    def _open(self, cls: Any, name: str, version: int, upgrade: Upgrade | None) -> Any:
        if self._closed:
            raise RuntimeError("storage is closed")
        keys.check_store(name, version)
        k = (cls.kind, name, version)
        st = self._stores.get(k)
        if st is None:
            first = self._first.get((cls.kind, name))
            if first is None:
                st = self._first[(cls.kind, name)] = cls(self, name, version, upgrade)
            else:  # another schema version over the same data and the same overlay
                st = copy.copy(first)
                st.version, st._upgrade = version, upgrade
                if isinstance(st, LmdbArchive):
                    st._reset_caches()
            self._stores[k] = st
        return st

    def keyval(self, name: str, version: int = 1, upgrade: Upgrade | None = None) -> LmdbKeyVal:
        return self._open(LmdbKeyVal, name, version, upgrade)  # type: ignore[no-any-return]

    def map(self, name: str, version: int = 1, upgrade: Upgrade | None = None) -> LmdbMap:
        return self._open(LmdbMap, name, version, upgrade)  # type: ignore[no-any-return]

    def archive(self, name: str, version: int = 1, upgrade: Upgrade | None = None) -> LmdbArchive:
        return self._open(LmdbArchive, name, version, upgrade)  # type: ignore[no-any-return]

    def batch(self) -> LmdbBatch:
        return LmdbBatch(self)

    @staticmethod
    def run_sync(coro: Any) -> Any:
        """Run a coroutine to completion from synchronous code (the CLI)."""
        return run_sync(coro)

    # -- reads ----------------------------------------------------------------------------------

    def _get(self, db: Any, key: bytes) -> bytes | None:
        with self._rlock:
            try:
                txn = self._env.begin(db=db)
            except lmdb.MapResizedError:
                txn = None
            if txn is not None:
                try:
                    return txn.get(key)
                finally:
                    txn.abort()
        self._adopt_size()
        return self._get(db, key)

    def _read(self, fn: Callable[[Any], Any]) -> Any:
        with self._rlock:
            try:
                txn = self._env.begin()
            except lmdb.MapResizedError:
                txn = None
            if txn is not None:
                try:
                    return fn(txn)
                finally:
                    txn.abort()
        self._adopt_size()
        return self._read(fn)

    def _iter_keys(self, db: Any, prefix: bytes) -> Iterator[bytes]:
        """Keys starting with ``prefix``, read in chunks (no transaction stays open across yields)."""
        lo = prefix
        while True:
            chunk: list[bytes] = self._read(lambda txn: list(itertools.islice(
                _scan(txn, db, lo, b"\xff" * keys.MAX_KEY, values=False), _CHUNK)))
            for k in chunk:
                if not k.startswith(prefix):
                    return
                yield k
            if len(chunk) < _CHUNK:
                return
            lo = chunk[-1] + b"\0"

    def _adopt_size(self) -> None:
        """Another process grew the map: let the writer adopt the new size (it must be idle)."""
        fut = SyncFuture(self._done_cond)
        self._submit([], [], fut, adopt=True)
        fut.result()

    # -- writes ---------------------------------------------------------------------------------
    #
    # Inside a running loop, writes are buffered (``_buf``) and handed to the writer once per loop
    # iteration: one queue put and at most one wake-up of the writer per iteration, however many
    # writes.  Writes from outside a loop (or waiting on a SyncFuture) are handed off at once,
    # after what is buffered, so the call order is kept.  Archive appends in a loop share one
    # future per hand (``_SharedFuture``); every other write has its own.

    def _submit(self, ops: list[Op], pends: list[Pend], fut: Any = None,
                adopt: bool = False) -> Any:
        if self._closed:
            raise RuntimeError("storage is closed")
        loop = None
        if fut is None:
            loop = _get_running_loop()
            fut = SyncFuture(self._done_cond) if loop is None else loop.create_future()
        with self._olock:
            seq = self._seq = self._seq + 1
            for store, token, raw in pends:
                store._pend_apply(token, seq, raw)
            if loop is not None and self._buf_loop is not loop:
                self._rebind(loop)
            self._buf.append(_Job(seq, ops, pends, fut))
            self._one_more_locked(loop is None, adopt)
        if self._writer is None:
            self._start_writer()
        return fut

    def _append(self, a: _ArDbs, prefix: bytes, e: tuple[bytes, bytes, bytes | None], raw: bytes,
                id16: bytes | None, fresh: bool, loop: asyncio.AbstractEventLoop
                ) -> tuple[str, Any]:
        """An archive append from ``loop``'s thread (``LmdbArchive.append``): buffered, resolved
        by the hand's shared future.  Consecutive appends to one archive form a run
        ``[a, rec, rec, ...]`` (a ``rec`` holds only bytes and flags: the garbage collector stops
        tracking it); ``rec[0]`` is True when the id was never used (the writer's fast path).
        ``id16`` None: a fresh id, allocated here under the lock."""
        if self._closed:
            raise RuntimeError("storage is closed")
        with self._olock:
            if id16 is None:
                id16 = _new_id_locked()
            rec = (fresh, prefix, id16, None if e[2] is None else prefix + e[1] + id16, e[2], raw)
            if self._buf_loop is not loop:
                self._rebind(loop)
            fut = self._buf_fut
            if fut is None:
                fut = self._buf_fut = _SharedFuture(loop=loop)
            buf = self._buf
            if buf and buf[-1].__class__ is list and buf[-1][0] is a:
                buf[-1].append(rec)
            else:
                buf.append([a, rec])
            self._one_more_locked()
        if self._writer is None:
            self._start_writer()
        return id16.hex(), fut

    def _put1(self, store: Any, db: Any, key: bytes, token: Any, raw: bytes | None,
              loop: asyncio.AbstractEventLoop) -> Any:
        """A keyval or map set from ``loop``'s thread: one buffered tuple, its own future."""
        if self._closed:
            raise RuntimeError("storage is closed")
        fut = loop.create_future()
        with self._olock:
            seq = self._seq = self._seq + 1
            store._pend_apply(token, seq, raw)
            if self._buf_loop is not loop:
                self._rebind(loop)
            self._buf.append((OP_PUT, db, key, raw, store, token, seq, fut))
            self._one_more_locked()
        if self._writer is None:
            self._start_writer()
        return fut

    def _one_more_locked(self, now: bool = False, adopt: bool = False) -> None:
        """(``_olock`` held) One more buffered write: counted (``idle()``), and the buffer handed
        to the writer when it is full, or ``now``."""
        self._buf_n += 1
        self._accepted += 1
        if now or self._buf_n >= _MAX_BATCH:
            self._handoff_locked(adopt)

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """(``_olock`` held) The first buffered write of ``loop`` (in its thread): hand off what
        another loop buffered, and schedule the hand-off of this iteration's writes."""
        self._handoff_locked()
        self._buf_loop = loop
        loop.call_soon(self._handoff)

    def _handoff(self) -> None:
        with self._olock:
            self._buf_loop = None
            self._handoff_locked()

    def _handoff_locked(self, adopt: bool = False) -> None:
        if self._buf:
            self._q.put(_Hand(self._buf, self._buf_fut, self._buf_n, adopt))
            self._buf, self._buf_fut, self._buf_n = [], None, 0

    def _start_writer(self) -> None:
        with self._olock:
            if self._writer is None:
                t = threading.Thread(target=self._run, name="mbxmpp-storage-writer", daemon=True)
                t.start()
                self._writer = t

    def _run(self) -> None:
        q = self._q
        while True:
            hands = [q.get()]
            n = hands[0].n
            while n < _MAX_BATCH:  # whole hands only: a hand's shared future needs all its writes
                try:
                    h = q.get_nowait()
                except queue.Empty:
                    break
                hands.append(h)
                n += h.n
            stop = _STOP in hands
            if stop:
                hands = [h for h in hands if h is not _STOP]
            counted = False
            try:
                self._process(hands)
                # before the futures resolve: whoever they wake sees idle() true
                self._finished += n
                counted = True
                self._finish(hands)
            except BaseException as e:  # never leave a future hanging
                for h in hands:
                    h.error = h.error or e
                    for it in h.items:
                        if it.__class__ is _Job:
                            it.error = it.error or e
                        elif it.__class__ is tuple:
                            h.fail(it, e)
                if not counted:
                    self._finished += n
                self._finish(hands)
            if stop:
                return

    def _process(self, hands: list[_Hand]) -> None:
        if any(h.adopt for h in hands):
            with self._rlock:
                self._env.set_mapsize(0)
        items = hands[0].items if len(hands) == 1 else [it for h in hands for it in h.items]
        if any(it.__class__ is not _Job or it.ops for it in items):  # (not for flushes alone)
            err = self._commit(items)
            if err is not None:
                self._isolate(hands, len(items) == 1 and (
                    items[0].__class__ is not list or len(items[0]) == 2), err)

    def _commit(self, items: list[Any]) -> Exception | None:
        """Apply ``items`` in one write transaction and commit; the error if that failed."""
        grows = 0
        while True:
            try:
                t0 = time.perf_counter()
                with self._env.begin(write=True) as txn:
                    self._apply_items(txn, items)
                self.commits += 1
                if self.on_commit is not None:  # (the writer thread: the observer must be thread-safe)
                    self.on_commit(time.perf_counter() - t0)
                return None
            except lmdb.MapFullError as e:
                grows += 1
                if grows > 16:
                    return e
                self._grow()
            except lmdb.MapResizedError:
                with self._rlock:
                    self._env.set_mapsize(0)
            except Exception as e:
                return e

    def _isolate(self, hands: list[_Hand], single: bool, err: Exception) -> None:
        """A batch failed: commit its writes one per transaction so that one bad write cannot fail
        the others (an append that fails fails its hand's shared future)."""
        for h in hands:
            for it in h.items:
                if it.__class__ is list:
                    for rec in itertools.islice(it, 1, None):
                        e = err if single else self._commit([[it[0], rec]])
                        if e is not None and h.error is None:
                            h.error = e
                else:
                    e = err if single else self._commit([it])
                    if e is not None:
                        if it.__class__ is tuple:
                            h.fail(it, e)
                        else:
                            it.error = e

    def _grow(self) -> None:
        with self._rlock:
            size = self._env.info()["map_size"]
            self._env.set_mapsize(size * 2 if size < 8 * GiB else size + 8 * GiB)
        self.grows += 1

    def _finish(self, hands: list[_Hand]) -> None:
        settle: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, BaseException | None]]] = {}
        touched: list[_Job] = []
        sync: list[_Job] = []
        sets: list[tuple[Any, ...]] = []
        for h in hands:
            f = h.fut
            if f is not None:
                settle.setdefault(f.get_loop(), []).append((f, None, h.error))
            failed = h.failed
            for it in h.items:
                if it.__class__ is tuple:
                    sets.append(it)
                    f = it[7]
                    settle.setdefault(f.get_loop(), []).append(
                        (f, None, None if failed is None else failed.get(id(it))))
                elif it.__class__ is _Job:
                    if it.touches:
                        touched.append(it)
                    f = it.fut
                    if isinstance(f, asyncio.Future):
                        settle.setdefault(f.get_loop(), []).append((f, it.result, it.error))
                    elif f is not None:
                        sync.append(it)
        if touched or sets:  # the overlay entries of committed writes (the database has them now)
            with self._olock:
                for j in touched:
                    for store, token, _ in j.touches:
                        store._unpend(token, j.seq)
                for it in sets:
                    it[4]._unpend(it[5], it[6])
        if sync:
            for j in sync:
                j.fut._set(j.result, j.error)
            with self._done_cond:
                self._done_cond.notify_all()
        for loop, lst in settle.items():
            try:
                loop.call_soon_threadsafe(_resolve, lst)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass

    # -- the writer's operations (writer thread, inside the write transaction) ------------------

    def _apply_items(self, txn: Any, items: list[Any]) -> None:
        """Apply a batch in call order.  Item counts of appends are summed per owner and written
        once per transaction (before any other archive op, so that its count updates see them)."""
        counts: dict[_ArDbs, dict[bytes, int]] = {}
        ar_puts = self._ar_puts
        apply = self._apply
        for it in items:
            cls = it.__class__
            if cls is list:
                ar_puts(txn, it, counts)
                continue
            if cls is tuple:  # a single set: (OP_PUT, db, key, raw, ...)
                apply(txn, it)
                continue
            run: list[Any] = []
            for op in it.ops:
                code = op[0]
                if code == OP_AR_PUT:
                    if not run or run[0] is not op[1]:
                        if run:
                            ar_puts(txn, run, counts)
                        run = [op[1]]
                    run.append(op[1:])
                    continue
                if run:
                    ar_puts(txn, run, counts)
                    run = []
                if counts and code >= OP_AR_DEL:
                    self._flush_counts(txn, counts)
                it.result = self._apply(txn, op)
            if run:
                ar_puts(txn, run, counts)
                it.result = None
        if counts:
            self._flush_counts(txn, counts)

    def _apply(self, txn: Any, op: Op) -> Any:
        code = op[0]
        if code == OP_PUT:
            if op[3] is None:
                txn.delete(op[2], db=op[1])
            else:
                txn.put(op[2], op[3], db=op[1])
            return None
        if code == OP_AR_PUT:
            counts: dict[_ArDbs, dict[bytes, int]] = {}
            self._ar_puts(txn, [op[1], op[1:]], counts)
            self._flush_counts(txn, counts)
            return None
        if code == OP_DELPREFIX:
            hi = keys.prefix_end(op[2])
            for k in list(_scan(txn, op[1], op[2], hi, values=False)):
                txn.delete(k, db=op[1])
            return None
        if code == OP_AR_DEL:
            return self._ar_delete(txn, *op[1:])
        if code == OP_AR_EXPIRE:
            return self._ar_expire(txn, *op[1:])
        if code == OP_DEL_OWNER:
            return self._del_owner(txn, op[1])
        raise AssertionError(f"unknown op {code}")

    @staticmethod
    def _count_add(txn: Any, a: _ArDbs, prefix: bytes, delta: int) -> None:
        raw = txn.get(prefix, db=a.n)
        n = (0 if raw is None else int.from_bytes(raw, "big")) + delta
        if n > 0:
            txn.put(prefix, n.to_bytes(8, "big"), db=a.n)
        elif raw is not None:
            txn.delete(prefix, db=a.n)

    def _flush_counts(self, txn: Any, counts: dict[_ArDbs, dict[bytes, int]]) -> None:
        for a, per_owner in counts.items():
            for prefix, delta in per_owner.items():
                self._count_add(txn, a, prefix, delta)
        counts.clear()

    def _ar_puts(self, txn: Any, run: list[Any], counts: dict[_ArDbs, dict[bytes, int]]) -> None:
        """A run of appends ``[a, (fresh, prefix, id16, wkey, wval, raw), ...]``: each item (new,
        or replacing the owner's item of that id), its time-index and with-index entries; the
        owners' item counts go to ``counts``.  The writer's hot loop: when every id is fresh
        (allocated in this process and used once: no item can have it), one ``putmulti`` per
        database, loops in C; otherwise item by item."""
        a = run[0]
        recs = run[1:]
        cnt = counts.get(a)
        if cnt is None:
            cnt = counts[a] = {}
        if not all(r[0] is True for r in recs):
            self._ar_put_each(txn, a, recs, cnt)
            return
        consumed, added = txn.cursor(db=a.main).putmulti(
            [(r[1] + r[2], r[5]) for r in recs], overwrite=False)
        if added != consumed:  # a fresh id already stored: the id allocator is broken
            raise RuntimeError(f"archive: {consumed - added} fresh id(s) already in use")
        txn.cursor(db=a.t).putmulti([(r[2] + r[1][:-1], b"") for r in recs])
        txn.cursor(db=a.w).putmulti([(r[3], r[4]) for r in recs if r[3] is not None])
        for prefix, n in Counter(r[1] for r in recs).items():
            cnt[prefix] = cnt.get(prefix, 0) + n

    def _ar_put_each(self, txn: Any, a: _ArDbs, recs: list[Any], cnt: dict[bytes, int]) -> None:
        """Appends whose id may name an existing item (imports, explicit ids), in order."""
        mput = txn.cursor(db=a.main).put
        tput = txn.cursor(db=a.t).put
        wput = txn.cursor(db=a.w).put
        for _, prefix, id16, wkey, wval, raw in recs:
            if mput(prefix + id16, raw, True, False):  # (dupdata, overwrite=False): a new item
                tput(id16 + prefix[:-1], b"")
                cnt[prefix] = cnt.get(prefix, 0) + 1
            else:  # the same id again: replace the item, and its with-index entry
                mk = prefix + id16
                old_with = unpack(txn.get(mk, db=a.main))[1][0]
                if old_with is not None:
                    txn.delete(prefix + keys.with_hash(old_with) + id16, db=a.w)
                txn.put(mk, raw, db=a.main)
            if wkey is not None:
                wput(wkey, wval)

    def _ar_unlink(self, txn: Any, a: _ArDbs, prefix: bytes, id16: bytes, raw: bytes) -> None:
        """Remove the index entries of a deleted item."""
        with_ = unpack(raw)[1][0]
        if with_ is not None:
            txn.delete(prefix + keys.with_hash(with_) + id16, db=a.w)
        txn.delete(id16 + prefix[:-1], db=a.t)

    def _ar_delete(self, txn: Any, a: _ArDbs, prefix: bytes, id16s: list[bytes] | None,
                   before_us: int | None) -> int:
        n = 0
        if id16s is not None:
            for id16 in id16s:
                if before_us is not None and keys.id_ts_us(id16) >= before_us:
                    continue
                raw = txn.pop(prefix + id16, db=a.main)
                if raw is not None:
                    self._ar_unlink(txn, a, prefix, id16, raw)
                    n += 1
        else:
            hi = keys.prefix_end(prefix) if before_us is None else prefix + keys.ts_bound(before_us)
            for k, raw in list(_scan(txn, a.main, prefix, hi)):
                txn.delete(k, db=a.main)
                self._ar_unlink(txn, a, prefix, k[len(prefix):], raw)
                n += 1
        if n:
            self._count_add(txn, a, prefix, -n)
        return n

    def _ar_expire(self, txn: Any, a: _ArDbs, before_us: int, budget: int) -> tuple[int, bool]:
        budget = max(budget, 0)
        old = list(itertools.islice(
            _scan(txn, a.t, b"", keys.ts_bound(before_us), values=False), budget + 1))
        more = len(old) > budget
        per_owner: dict[bytes, int] = {}
        for k in old[:budget]:
            id16, prefix = k[:16], k[16:] + b"\0"
            raw = txn.pop(prefix + id16, db=a.main)
            if raw is not None:
                with_ = unpack(raw)[1][0]
                if with_ is not None:
                    txn.delete(prefix + keys.with_hash(with_) + id16, db=a.w)
                per_owner[prefix] = per_owner.get(prefix, 0) + 1
            txn.delete(k, db=a.t)
        for prefix, d in per_owner.items():
            self._count_add(txn, a, prefix, -d)
        return len(old) - more, more

    def _del_owner(self, txn: Any, prefix: bytes) -> None:
        names = [bytes(k) for k in _scan(txn, None, b"", b"\xff" * keys.MAX_KEY, values=False)]
        for name in names:
            if name.startswith(b"ar:") and b"#" not in name:
                a = _ArDbs(*(self._env.open_db(name + s, txn=txn) for s in (b"", b"#w", b"#t", b"#n")))
                self._ar_delete(txn, a, prefix, None, None)
                hi = keys.prefix_end(prefix)
                for k in list(_scan(txn, a.w, prefix, hi, values=False)):  # (unneeded if coherent)
                    txn.delete(k, db=a.w)
            elif name.startswith(b"kv:"):
                txn.delete(prefix, db=self._env.open_db(name, txn=txn))
            elif name.startswith(b"map:"):
                self._apply(txn, (OP_DELPREFIX, self._env.open_db(name, txn=txn), prefix))

    # -- flush, close, owners ---------------------------------------------------------------------

    def idle(self) -> bool:
        """Whether every write accepted so far is committed (no flush needed to be sure)."""
        return self._finished == self._accepted

    def pending_writes(self) -> int:
        """Writes accepted and not committed yet: the writer's queue depth (metrics)."""
        return self._accepted - self._finished

    async def flush(self) -> None:
        if self._writer is not None and not self._closed:
            await self._submit([], [])

    def flush_sync(self) -> None:
        if self._writer is not None and not self._closed:
            self._submit([], [], SyncFuture(self._done_cond)).result()

    def close_sync(self) -> None:
        if self._closed:
            return
        self.flush_sync()
        self._closed = True
        if self._writer is not None:
            self._q.put(_STOP)
            self._writer.join()
        self._env.close()

    async def close(self) -> None:
        await self.flush()
        self.close_sync()

    def _delete_owner_job(self, owner: str, fut: Any = None) -> Any:
        prefix = keys.owner_prefix(owner)
        pends: list[Pend] = []
        for st in self._first.values():
            if st.kind == "keyval":
                pends.append((st, prefix, None))
            elif st.kind == "map":
                pends.append((st, (prefix, None), None))
        return self._submit([(OP_DEL_OWNER, prefix)], pends, fut)

    async def delete_owner(self, owner: str) -> None:
        await self._delete_owner_job(owner)

    def delete_owner_sync(self, owner: str) -> None:
        self._delete_owner_job(owner, SyncFuture(self._done_cond)).result()
