"""The archive store over LMDB: ``ar:NAME`` (items) and its indexes ``#w`` (with), ``#t`` (time,
for global expiry) and ``#n`` (item count per owner); key layouts in ``keys.py``.

Appends are packed at the call; in a running loop they are buffered by the writer and share one
future per loop iteration (``writer.py``).  Queries read inline; they see an append once its future
has resolved.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator

from .. import keys
from ..api import ArchiveItem, ItemNotFound
from ..records import Upgrade, current, unpack
from .env import CHUNK, scan
from .ops import NO_LAST_ID, ArDelete, ArExpire, ArPut, ArRec, LastId, WithEntry
from .stores import Store, _get_running_loop, _pack


class LmdbArchive(Store):
    kind = "archive"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self._a = self._env.ar_dbs(b"ar:" + self.name.encode())
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._wcache: dict[str | None, WithEntry] = {}  # record heads depend on the version

    def with_version(self, version: int, upgrade: Upgrade | None) -> Any:
        st = super().with_version(version, upgrade)
        st._reset_caches()
        return st

    def _with_entry(self, with_: str | None) -> WithEntry:
        if with_ is not None and not isinstance(with_, str):
            raise TypeError("with_ must be a str or None")
        head = b"\x92" + _pack(self.version) + b"\x92" + _pack(with_)
        e = WithEntry(head, b"", None) if with_ is None else WithEntry(
            head, keys.with_hash(with_), with_.encode("utf-8"))
        if type(with_) is str or with_ is None:
            if len(self._wcache) >= keys._CACHE_MAX:
                del self._wcache[next(iter(self._wcache))]  # the oldest (keys._CACHE_MAX)
            self._wcache[with_] = e
        return e

    def new_id(self, when: float | None = None) -> str:
        b = keys.ids.new(when)
        s = b.hex()
        self._s._last_id = LastId(s, b)
        return s

    def _id16(self, id: str | None, when: float | None) -> bytes:
        if id is None:
            return keys.ids.new(when)
        last = self._s._last_id
        if id is last.text:
            return last.id16
        b = keys.id_str_to_bytes(id)
        if b is None:
            raise ValueError(f"not an archive id: {id!r}")
        return b

    def _prep(self, owner: str, value: Any, when: float | None, with_: str | None,
              id: str | None, prefix_of: Callable[[str], bytes] = keys.owner_prefix) -> ArRec:
        """The record of an append made outside a loop or in a batch (never ``fresh``: such ids
        may name an existing item, and the id allocator's lock is not held)."""
        prefix = prefix_of(owner)
        e = self._wcache.get(with_) or self._with_entry(with_)
        id16 = self._id16(id, when)
        return ArRec(False, prefix, id16, None if e.utf8 is None else prefix + e.with_hash + id16,
                     e.utf8, e.head + _pack(value))

    def _op_append(self, owner: str, value: Any, when: float | None, with_: str | None,
                   id: str | None) -> ArPut:
        """(A batch's append: owners are not cached.)"""
        return ArPut(self._a, self._prep(owner, value, when, with_, id, keys.owner_prefix_uncached))

    def append(self, owner: str, value: Any, when: float | None = None, with_: str | None = None,
               id: str | None = None) -> tuple[str, Any]:
        loop = _get_running_loop()
        if loop is None:
            rec = self._prep(owner, value, when, with_, id)
            return rec.id16.hex(), self._w.submit([ArPut(self._a, rec)], [])
        # the hot path (archiving in a loop): validate and pack here, at the call; a fresh id is
        # allocated under the enqueue lock, which is the id allocator's lock
        prefix = keys._prefixes.get(owner) or keys.owner_prefix(owner)
        e = self._wcache.get(with_) or self._with_entry(with_)
        raw = e.head + _pack(value)
        if id is None and when is None:
            return self._w.append(self._a, prefix, e, raw, None, True, loop)
        # an id from new_id() is fresh for one append; any other may name an existing item
        first_use = id is not None and id is self._s._last_id.text
        id16 = self._id16(id, when)
        if first_use:
            self._s._last_id = NO_LAST_ID
        fresh = first_use and when is None
        return self._w.append(self._a, prefix, e, raw, id16, fresh, loop)

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
            for k, v in scan(txn, a.w, wp + lo, wp + hi, reverse):
                if keys.with_matches(with_, bytes(v).decode("utf-8")):
                    yield k[-16:], None
        elif values:
            n = len(prefix)
            for k, v in scan(txn, a.main, prefix + lo, prefix + hi, reverse):
                yield k[n:], v
        else:
            n = len(prefix)
            for k in scan(txn, a.main, prefix + lo, prefix + hi, reverse, values=False):
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
        return self._env.read(run)  # type: ignore[no-any-return]

    def count(self, owner: str, *, start: float | None = None, end: float | None = None,
              with_: str | None = None, after_id: str | None = None, before_id: str | None = None,
              ids: list[str] | None = None) -> int:
        prefix = keys.owner_prefix(owner)
        if (start, end, with_, after_id, before_id, ids) == (None,) * 6:
            raw = self._env.get(self._a.n, prefix)
            return 0 if raw is None else int.from_bytes(raw, "big")
        return self._env.read(lambda txn: sum(1 for _ in self._walk(  # type: ignore[no-any-return]
            txn, prefix, start, end, with_, after_id, before_id, ids, False, values=False)))

    def get(self, owner: str, id: str) -> ArchiveItem | None:
        prefix = keys.owner_prefix(owner)
        b = keys.id_str_to_bytes(id)
        raw = None if b is None else self._env.get(self._a.main, prefix + b)
        return None if raw is None or b is None else self._item(b, raw)

    def first_last(self, owner: str) -> tuple[ArchiveItem | None, ArchiveItem | None]:
        prefix = keys.owner_prefix(owner)
        hi = keys.prefix_end(prefix)

        def run(txn: Any) -> tuple[ArchiveItem | None, ArchiveItem | None]:
            ends = [next(scan(txn, self._a.main, prefix, hi, rev), None) for rev in (False, True)]
            f, l = (None if e is None else self._item(e[0][len(prefix):], e[1]) for e in ends)
            return f, l
        return self._env.read(run)  # type: ignore[no-any-return]

    def delete(self, owner: str, ids: list[str] | None = None, before: float | None = None) -> Any:
        prefix = keys.owner_prefix(owner)
        id16s = None if ids is None else [b for b in map(keys.id_str_to_bytes, ids) if b is not None]
        lim = None if before is None else keys.clamp_us(before)
        return self._w.submit([ArDelete(self._a, prefix, id16s, lim)], [])

    def expire(self, before: float, budget: int = 1000) -> Any:
        return self._w.submit([ArExpire(self._a, keys.clamp_us(before), budget)], [])

    def owners_sizes(self) -> Iterator[tuple[str, int]]:
        after = b""
        while True:
            chunk = self._env.read(lambda txn: list(itertools.islice(
                scan(txn, self._a.n, after, b"\xff" * keys.MAX_KEY), CHUNK)))
            for k, v in chunk:
                yield keys.owner_of(k), int.from_bytes(v, "big")
            if len(chunk) < CHUNK:
                return
            after = chunk[-1][0] + b"\0"
