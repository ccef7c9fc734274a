"""The keyval and map stores over LMDB (databases ``kv:NAME`` and ``map:NAME``).

Each keeps an overlay of its queued writes (``_pend``, guarded by the writer's lock) so that reads
see a write at once, before its commit; the writer removes an entry once its write is committed
(unless a later write replaced it).
"""

from __future__ import annotations

import asyncio
import heapq
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .. import keys
from ..records import Upgrade, _packer, pack
from ..registry import VersionedStore
from .env import scan
from .ops import DelPrefix, LoopPut, Op, Pending, Put, Touch

if TYPE_CHECKING:
    from .storage import LmdbStorage

_pack = _packer.pack
_get_running_loop = asyncio._get_running_loop


class Store(VersionedStore):
    def __init__(self, s: LmdbStorage, name: str, version: int, upgrade: Upgrade | None) -> None:
        super().__init__(name, version, upgrade)
        self._s = s
        self._env = s._env
        self._w = s._writer


class LmdbKeyVal(Store):
    kind = "keyval"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self._db = self._env.open_db(b"kv:" + self.name.encode())
        self._pend: dict[bytes, Pending | LoopPut] = {}

    def get(self, owner: str) -> Any | None:
        key = keys.owner_prefix(owner)
        p = self._pend.get(key)
        raw = p.raw if p is not None else self._env.get(self._db, key)
        return None if raw is None else self._decode(raw)

    def _op_set(self, owner: str, value: Any, prefix_of: Callable[[str], bytes] = keys.owner_prefix
                ) -> tuple[list[Op], list[Touch]]:
        key = prefix_of(owner)
        raw = None if value is None else pack(self.version, value)
        return [Put(self._db, key, raw)], [Touch(self, key, raw)]

    def set(self, owner: str, value: Any) -> Any:
        loop = _get_running_loop()
        if loop is None:
            return self._w.submit(*self._op_set(owner, value))
        key = keys._prefixes.get(owner) or keys.owner_prefix(owner)
        raw = None if value is None else _pack([self.version, value])  # (version checked at open)
        return self._w.put1(self, self._db, key, key, raw, loop)

    def _pend_set(self, token: bytes, p: Pending | LoopPut) -> None:
        self._pend[token] = p

    def _unpend(self, token: bytes, seq: int) -> None:
        p = self._pend.get(token)
        if p is not None and p.seq == seq:
            del self._pend[token]

    def owners(self, prefix: str = "") -> Iterator[str]:
        pb = prefix.encode("utf-8")
        with self._w.lock:
            pend = dict(self._pend)
        adds = sorted(k for k, p in pend.items() if p.raw is not None and k.startswith(pb))
        last = None
        for k in heapq.merge(self._env.iter_keys(self._db, pb), adds):
            if k != last:
                last = k
                p = pend.get(k)
                if p is None or p.raw is not None:
                    yield keys.owner_of(k)

    def owners_in_domain(self, domain: str) -> Iterator[str]:
        suffix = "@" + domain
        return (o for o in self.owners() if o.endswith(suffix))

    def count(self) -> int:
        with self._w.lock:
            pend = dict(self._pend)

        def run(txn: Any) -> int:
            n: int = txn.stat(self._db)["entries"]
            for k, p in pend.items():
                there = txn.get(k, db=self._db) is not None
                n += (p.raw is not None and not there) - (p.raw is None and there)
            return n
        return self._env.read(run)  # type: ignore[no-any-return]


class MapPending:
    """The overlay of one owner's map: queued values per key, and a queued ``delete_all``."""

    __slots__ = ("cleared", "keys")

    def __init__(self) -> None:
        self.cleared = 0                                     # seq of a queued delete_all
        self.keys: dict[bytes, Pending | LoopPut] = {}


class LmdbMap(Store):
    kind = "map"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self._db = self._env.open_db(b"map:" + self.name.encode())
        self._pend: dict[bytes, MapPending] = {}

    def get(self, owner: str, key: str) -> Any | None:
        prefix = keys.owner_prefix(owner)
        k = keys.map_key(prefix, key)
        mp = self._pend.get(prefix)
        p = mp.keys.get(k) if mp is not None else None
        if p is not None:
            raw = p.raw
        elif mp is not None and mp.cleared:
            raw = None
        else:
            raw = self._env.get(self._db, k)
        return None if raw is None else self._decode(raw)

    def get_all(self, owner: str) -> dict[str, Any]:
        prefix = keys.owner_prefix(owner)
        with self._w.lock:  # overlay first, then the database (the overlay is never older)
            mp = self._pend.get(prefix)
            cleared, pk = (mp.cleared, dict(mp.keys)) if mp is not None else (0, {})
        raws: dict[bytes, bytes | None] = {}
        if not cleared:
            hi = keys.prefix_end(prefix)
            raws = self._env.read(lambda txn: dict(scan(txn, self._db, prefix, hi)))
        for k, p in pk.items():
            raws[k] = p.raw
        return {keys.map_key_part(prefix, k): self._decode(raw)
                for k, raw in sorted(raws.items()) if raw is not None}

    def _op_set_many(self, owner: str, items: dict[str, Any],
                     prefix_of: Callable[[str], bytes] = keys.owner_prefix
                     ) -> tuple[list[Op], list[Touch]]:
        prefix = prefix_of(owner)
        ops: list[Op] = []
        touches: list[Touch] = []
        for key, value in items.items():
            k = keys.map_key(prefix, key)
            raw = None if value is None else pack(self.version, value)
            ops.append(Put(self._db, k, raw))
            touches.append(Touch(self, (prefix, k), raw))
        return ops, touches

    def set(self, owner: str, key: str, value: Any) -> Any:
        loop = _get_running_loop()
        if loop is None:
            return self._w.submit(*self._op_set_many(owner, {key: value}))
        prefix = keys._prefixes.get(owner) or keys.owner_prefix(owner)
        k = keys.map_key(prefix, key)
        raw = None if value is None else _pack([self.version, value])
        return self._w.put1(self, self._db, k, (prefix, k), raw, loop)

    def set_many(self, owner: str, items: dict[str, Any]) -> Any:
        return self._w.submit(*self._op_set_many(owner, items))

    def delete_all(self, owner: str) -> Any:
        prefix = keys.owner_prefix(owner)
        return self._w.submit([DelPrefix(self._db, prefix)], [Touch(self, (prefix, None), None)])

    def _pend_set(self, token: tuple[bytes, bytes | None], p: Pending | LoopPut) -> None:
        prefix, k = token
        mp = self._pend.get(prefix)
        if mp is None:
            mp = self._pend[prefix] = MapPending()
        if k is None:
            mp.cleared = p.seq
            mp.keys.clear()
        else:
            mp.keys[k] = p

    def _unpend(self, token: tuple[bytes, bytes | None], seq: int) -> None:
        prefix, k = token
        mp = self._pend.get(prefix)
        if mp is None:
            return
        if k is None:
            if mp.cleared == seq:
                mp.cleared = 0
        else:
            p = mp.keys.get(k)
            if p is not None and p.seq == seq:
                del mp.keys[k]
        if not mp.cleared and not mp.keys:
            del self._pend[prefix]
