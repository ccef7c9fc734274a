"""Dict-based storage: the reference implementation for the contract tests (Prosody
mod_storage_memory) and a backend for tests that need no disk.

Semantics are those of ``api.py``; writes apply at once, and their futures resolve on the next loop
iteration (outside a loop: already resolved).  Values are kept packed, so they round-trip through
msgpack exactly as with LMDB (tuples come back as lists, mutating a returned dict changes nothing).
Query logic here is deliberately naive (filter a list) so that it can serve as an oracle.
"""

from __future__ import annotations

import asyncio
import bisect
from typing import Any, Callable, Iterator, NamedTuple

from . import keys
from .api import ArchiveItem, ItemNotFound, make_future, run_sync
from .records import Upgrade, pack
from .registry import StoreRegistry, VersionedStore


def _done(result: Any = None) -> Any:
    fut = make_future()
    if isinstance(fut, asyncio.Future):
        fut.get_loop().call_soon(_set_result, fut, result)
    else:
        fut._set(result, None)
    return fut


def _set_result(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _check_with(with_: str | None) -> None:
    if with_ is not None and not isinstance(with_, str):
        raise TypeError("with_ must be a str or None")


class _Store(VersionedStore):
    def __init__(self, storage: MemoryStorage, name: str, version: int, upgrade: Upgrade | None):
        super().__init__(name, version, upgrade)
        self._storage = storage

    def _pack(self, value: Any) -> bytes:
        return pack(self.version, value)


class MemoryKeyVal(_Store):
    kind = "keyval"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self._d: dict[str, bytes] = {}

    def get(self, owner: str) -> Any | None:
        keys.owner_prefix(owner)
        raw = self._d.get(owner)
        return None if raw is None else self._decode(raw)

    def _op_set(self, owner: str, value: Any) -> Callable[[], None]:
        keys.owner_prefix(owner)
        raw = None if value is None else self._pack(value)

        def apply() -> None:
            if raw is None:
                self._d.pop(owner, None)
            else:
                self._d[owner] = raw
        return apply

    def set(self, owner: str, value: Any) -> Any:
        self._op_set(owner, value)()
        return _done()

    def owners(self, prefix: str = "") -> Iterator[str]:
        return iter([o for o in sorted(self._d) if o.startswith(prefix)])

    def owners_in_domain(self, domain: str) -> Iterator[str]:
        suffix = "@" + domain
        return iter([o for o in sorted(self._d) if o.endswith(suffix)])

    def count(self) -> int:
        return len(self._d)

    def _delete_owner(self, owner: str) -> None:
        self._d.pop(owner, None)


class MemoryMap(_Store):
    kind = "map"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self._d: dict[str, dict[str, bytes]] = {}

    def get(self, owner: str, key: str) -> Any | None:
        keys.map_key(keys.owner_prefix(owner), key)
        raw = self._d.get(owner, {}).get(key)
        return None if raw is None else self._decode(raw)

    def get_all(self, owner: str) -> dict[str, Any]:
        keys.owner_prefix(owner)
        m = self._d.get(owner, {})
        return {k: self._decode(m[k]) for k in sorted(m)}

    def _op_set_many(self, owner: str, items: dict[str, Any]) -> Callable[[], None]:
        prefix = keys.owner_prefix(owner)
        packed = [(k, None if v is None else self._pack(v))
                  for k, v in items.items() if keys.map_key(prefix, k)]

        def apply() -> None:
            m = self._d.setdefault(owner, {})
            for k, raw in packed:
                if raw is None:
                    m.pop(k, None)
                else:
                    m[k] = raw
            if not m:
                del self._d[owner]
        return apply

    def set(self, owner: str, key: str, value: Any) -> Any:
        self._op_set_many(owner, {key: value})()
        return _done()

    def set_many(self, owner: str, items: dict[str, Any]) -> Any:
        self._op_set_many(owner, items)()
        return _done()

    def delete_all(self, owner: str) -> Any:
        keys.owner_prefix(owner)
        self._d.pop(owner, None)
        return _done()

    def _delete_owner(self, owner: str) -> None:
        self._d.pop(owner, None)


class StoredItem(NamedTuple):
    """An archive item as stored (the LMDB backend stores ``with_`` inside the record instead)."""
    id16: bytes
    with_: str | None
    raw: bytes              # the packed value


class MemoryArchive(_Store):
    kind = "archive"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self._d: dict[str, list[StoredItem]] = {}

    def new_id(self, when: float | None = None) -> str:
        return keys.id_bytes_to_str(keys.ids.new(when))

    def _op_append(self, owner: str, value: Any, when: float | None, with_: str | None,
                   id: str | None) -> tuple[str, Callable[[], None]]:
        keys.owner_prefix(owner)
        _check_with(with_)
        if id is None:
            id16 = keys.ids.new(when)
        else:
            b = keys.id_str_to_bytes(id)
            if b is None:
                raise ValueError(f"not an archive id: {id!r}")
            id16 = b
        item = StoredItem(id16, with_, self._pack(value))

        def apply() -> None:
            lst = self._d.setdefault(owner, [])
            i = bisect.bisect_left(lst, id16, key=lambda it: it.id16)
            if i < len(lst) and lst[i].id16 == id16:
                lst[i] = item
            else:
                lst.insert(i, item)
        return keys.id_bytes_to_str(id16), apply

    def append(self, owner: str, value: Any, when: float | None = None, with_: str | None = None,
               id: str | None = None) -> tuple[str, Any]:
        sid, apply = self._op_append(owner, value, when, with_, id)
        apply()
        return sid, _done()

    def _item(self, it: StoredItem) -> ArchiveItem:
        return ArchiveItem(keys.id_bytes_to_str(it.id16), keys.id_when(it.id16), it.with_,
                           self._decode(it.raw))

    def _select(self, owner: str, start: float | None, end: float | None, with_: str | None,
                after_id: str | None, before_id: str | None,
                ids: list[str] | None) -> list[StoredItem]:
        keys.owner_prefix(owner)
        _check_with(with_)
        lst = self._d.get(owner, [])
        present = {it.id16 for it in lst}

        def existing(s: str) -> bytes:
            b = keys.id_str_to_bytes(s)
            if b is None or b not in present:
                raise ItemNotFound(s)
            return b
        after = existing(after_id) if after_id is not None else None
        before = existing(before_id) if before_id is not None else None
        lo = keys.clamp_us(start) if start is not None else None
        hi = keys.clamp_us(end) if end is not None else None
        idset = None if ids is None else {keys.id_str_to_bytes(s) for s in ids}
        return [it for it in lst
                if (lo is None or keys.id_ts_us(it.id16) >= lo)
                and (hi is None or keys.id_ts_us(it.id16) <= hi)
                and (after is None or it.id16 > after)
                and (before is None or it.id16 < before)
                and (with_ is None or keys.with_matches(with_, it.with_))
                and (idset is None or it.id16 in idset)]

    def query(self, owner: str, *, start: float | None = None, end: float | None = None,
              with_: str | None = None, after_id: str | None = None, before_id: str | None = None,
              ids: list[str] | None = None, limit: int | None = None,
              reverse: bool = False) -> list[ArchiveItem]:
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        sel = self._select(owner, start, end, with_, after_id, before_id, ids)
        if reverse:
            sel.reverse()
        if limit is not None:
            sel = sel[:limit]
        return [self._item(it) for it in sel]

    def count(self, owner: str, *, start: float | None = None, end: float | None = None,
              with_: str | None = None, after_id: str | None = None, before_id: str | None = None,
              ids: list[str] | None = None) -> int:
        return len(self._select(owner, start, end, with_, after_id, before_id, ids))

    def get(self, owner: str, id: str) -> ArchiveItem | None:
        keys.owner_prefix(owner)
        b = keys.id_str_to_bytes(id)
        for it in self._d.get(owner, []):
            if it.id16 == b:
                return self._item(it)
        return None

    def first_last(self, owner: str) -> tuple[ArchiveItem | None, ArchiveItem | None]:
        keys.owner_prefix(owner)
        lst = self._d.get(owner)
        if not lst:
            return None, None
        return self._item(lst[0]), self._item(lst[-1])

    def delete(self, owner: str, ids: list[str] | None = None, before: float | None = None) -> Any:
        keys.owner_prefix(owner)
        lst = self._d.get(owner, [])
        idset = None if ids is None else {keys.id_str_to_bytes(s) for s in ids}
        lim = None if before is None else keys.clamp_us(before)
        keep = [it for it in lst
                if not ((idset is None or it.id16 in idset)
                        and (lim is None or keys.id_ts_us(it.id16) < lim))]
        n = len(lst) - len(keep)
        if keep:
            self._d[owner] = keep
        else:
            self._d.pop(owner, None)
        return _done(n)

    def expire(self, before: float, budget: int = 1000) -> Any:
        lim = keys.clamp_us(before)
        old = sorted((it.id16 + o.encode(), o, it.id16) for o, lst in self._d.items()
                     for it in lst if keys.id_ts_us(it.id16) < lim)
        for _, owner, id16 in old[:max(budget, 0)]:
            lst = [it for it in self._d[owner] if it.id16 != id16]
            if lst:
                self._d[owner] = lst
            else:
                del self._d[owner]
        n = min(len(old), max(budget, 0))
        return _done((n, len(old) > n))

    def owners_sizes(self) -> Iterator[tuple[str, int]]:
        return iter([(o, len(self._d[o])) for o in sorted(self._d)])

    def _delete_owner(self, owner: str) -> None:
        self._d.pop(owner, None)


class MemoryBatch:
    def __init__(self, storage: MemoryStorage):
        self._storage = storage
        self._ops: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self._ops)

    def set(self, store: Any, owner: str, value: Any) -> None:
        self._ops.append(store._op_set(owner, value))

    def map_set(self, store: Any, owner: str, key: str, value: Any) -> None:
        self._ops.append(store._op_set_many(owner, {key: value}))

    def map_set_many(self, store: Any, owner: str, items: dict[str, Any]) -> None:
        self._ops.append(store._op_set_many(owner, items))

    def append(self, store: Any, owner: str, value: Any, when: float | None = None,
               with_: str | None = None, id: str | None = None) -> str:
        sid, op = store._op_append(owner, value, when, with_, id)
        self._ops.append(op)
        return str(sid)

    def _apply(self) -> None:
        ops, self._ops = self._ops, []
        for op in ops:
            op()

    def commit(self) -> Any:
        self._apply()
        return _done()

    def __enter__(self) -> MemoryBatch:
        return self

    def __exit__(self, et: Any, *exc: object) -> None:
        if et is None:
            self._apply()

    async def __aenter__(self) -> MemoryBatch:
        return self

    async def __aexit__(self, et: Any, *exc: object) -> None:
        if et is None:
            await self.commit()


class MemoryStorage:
    commits = 0

    def __init__(self, **opts: Any) -> None:
        self._registry = StoreRegistry()
        self._closed = False

    def _open(self, cls: Any, name: str, version: int, upgrade: Upgrade | None) -> Any:
        if self._closed:
            raise RuntimeError("storage is closed")
        return self._registry.open(self, cls, name, version, upgrade)

    def keyval(self, name: str, version: int = 1, upgrade: Upgrade | None = None) -> MemoryKeyVal:
        return self._open(MemoryKeyVal, name, version, upgrade)  # type: ignore[no-any-return]

    def map(self, name: str, version: int = 1, upgrade: Upgrade | None = None) -> MemoryMap:
        return self._open(MemoryMap, name, version, upgrade)  # type: ignore[no-any-return]

    def archive(self, name: str, version: int = 1, upgrade: Upgrade | None = None) -> MemoryArchive:
        return self._open(MemoryArchive, name, version, upgrade)  # type: ignore[no-any-return]

    def batch(self) -> MemoryBatch:
        return MemoryBatch(self)

    @staticmethod
    def run_sync(coro: Any) -> Any:
        """Run a coroutine to completion from synchronous code (the CLI)."""
        return run_sync(coro)

    def idle(self) -> bool:
        return True  # writes apply at once

    async def flush(self) -> None:
        await asyncio.sleep(0)

    async def close(self) -> None:
        await self.flush()
        self._closed = True

    def flush_sync(self) -> None:
        pass

    def close_sync(self) -> None:
        self._closed = True

    def _delete_owner(self, owner: str) -> None:
        keys.owner_prefix(owner)
        for st in self._registry.stores():
            st._delete_owner(owner)

    async def delete_owner(self, owner: str) -> None:
        self._delete_owner(owner)
        await asyncio.sleep(0)

    def delete_owner_sync(self, owner: str) -> None:
        self._delete_owner(owner)
