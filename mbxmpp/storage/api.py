"""The storage seam: the three store kinds of Prosody (keyval, map, archive) as typing.Protocols.

Features use only these; ``lmdb_backend`` and ``memory_backend`` implement them, and a distributed
backend would too.  Nothing outside ``mbxmpp.storage`` imports lmdb.

Common rules (both backends, checked by ``tests/storage/test_contract.py``):

* An *owner* is a str (bare JID, room JID, host name, or "" for global data) of at most
  ``keys.MAX_OWNER_BYTES`` UTF-8 bytes without NUL; anything else raises ValueError/TypeError at the
  call.  Values are msgpack-serialisable; they are packed at the call (TypeError there).
* Reads are synchronous and inline.  Writes return a future that resolves once the write is durable
  (``None``, or the method's result).  Called inside a running event loop the future is an
  ``asyncio.Future`` of that loop; called outside any loop it is a :class:`SyncFuture` (block
  with ``.result()``).  Writes are applied in call order.  Await a write's future or add
  done-callbacks to it, nothing else: the LMDB backend gives the archive appends made in one loop
  iteration the same future (whose ``cancel()`` is refused).
* keyval/map reads see writes at once (read-your-writes, before the commit).  Archive queries see an
  append only once its future has resolved (the memory backend shows it at once: do not rely on it).
* Archive ids are 32 lowercase hex digits (be64 microseconds + 8 random bytes): unique, sorting as
  strings in time order, usable as XEP-0359 stanza-ids.  An item's ``when`` is its id's time
  (microsecond precision).  ``reverse=True`` returns newest first (the "last page" of RSM).
* ``with_``: a bare JID matches every resource of it, a full JID only itself (XEP-0313 §4.1.1).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Iterator, NamedTuple, Protocol

from .records import RecordError, RecordVersionError, Upgrade

__all__ = [
    "ArchiveItem", "ItemNotFound", "RecordError", "RecordVersionError", "Upgrade",
    "KeyValStore", "MapStore", "ArchiveStore", "Batch", "Storage", "open_storage",
    "KEYVAL", "MAP", "ARCHIVE", "SyncFuture", "make_future", "run_sync",
]

KEYVAL = "keyval"
MAP = "map"
ARCHIVE = "archive"


class ItemNotFound(KeyError):
    """An ``after_id``/``before_id`` that is not in the owner's archive (XEP-0313: item-not-found)."""


class ArchiveItem(NamedTuple):
    id: str
    when: float
    with_: str | None
    value: Any


class KeyValStore(Protocol):
    name: str
    version: int

    def get(self, owner: str) -> Any | None: ...
    def set(self, owner: str, value: Any) -> asyncio.Future[None]:
        """Queue a write; ``value`` None deletes."""
    def owners(self, prefix: str = "") -> Iterator[str]:
        """Owners in byte order whose name starts with ``prefix``."""
    def owners_in_domain(self, domain: str) -> Iterator[str]:
        """Owners ending with ``"@" + domain`` (a scan of all owners: keys are owner-first)."""
    def count(self) -> int: ...


class MapStore(Protocol):
    name: str
    version: int

    def get(self, owner: str, key: str) -> Any | None: ...
    def get_all(self, owner: str) -> dict[str, Any]: ...
    def set(self, owner: str, key: str, value: Any) -> asyncio.Future[None]:
        """``value`` None deletes the key."""
    def set_many(self, owner: str, items: dict[str, Any]) -> asyncio.Future[None]: ...
    def delete_all(self, owner: str) -> asyncio.Future[None]: ...


class ArchiveStore(Protocol):
    name: str
    version: int

    def new_id(self, when: float | None = None) -> str:
        """A fresh id; strictly increasing per process when ``when`` is None."""
    def append(self, owner: str, value: Any, when: float | None = None, with_: str | None = None,
               id: str | None = None) -> tuple[str, asyncio.Future[None]]:
        """Store an item; returns its id at once.  A given ``id`` (from :meth:`new_id`) fixes the
        item's time and ``when`` is then ignored; re-using an id of the owner replaces that item."""
    def query(self, owner: str, *, start: float | None = None, end: float | None = None,
              with_: str | None = None, after_id: str | None = None, before_id: str | None = None,
              ids: list[str] | None = None, limit: int | None = None,
              reverse: bool = False) -> list[ArchiveItem]:
        """Items with start <= when <= end, after_id < id < before_id, matching ``with_``, among
        ``ids`` (unknown ids are skipped); oldest first, or newest first with ``reverse``; at most
        ``limit``.  ItemNotFound if after_id/before_id is not an item of the owner."""
    def count(self, owner: str, *, start: float | None = None, end: float | None = None,
              with_: str | None = None, after_id: str | None = None, before_id: str | None = None,
              ids: list[str] | None = None) -> int: ...
    def get(self, owner: str, id: str) -> ArchiveItem | None: ...
    def first_last(self, owner: str) -> tuple[ArchiveItem | None, ArchiveItem | None]: ...
    def delete(self, owner: str, ids: list[str] | None = None,
               before: float | None = None) -> asyncio.Future[int]:
        """Delete the owner's items in ``ids`` and/or older than ``before`` (both given: both must
        hold; neither: all).  Resolves to the number deleted."""
    def expire(self, before: float, budget: int = 1000) -> asyncio.Future[tuple[int, bool]]:
        """Delete at most ``budget`` items older than ``before`` over all owners, oldest first.
        Runs in the writer (bounded work, never on the loop); resolves to (deleted, more_left)."""
    def owners_sizes(self) -> Iterator[tuple[str, int]]:
        """(owner, item count) for every owner with items, in owner order."""


class Batch(Protocol):
    """Writes collected and committed as one transaction (atomic), for bulk jobs such as
    ``user import``.  ``with storage.batch() as b:`` commits on exit and blocks until durable
    (outside a loop); ``async with`` awaits instead.  An exception in the block discards it.
    Writes become visible to reads when the batch is committed."""

    def set(self, store: KeyValStore, owner: str, value: Any) -> None: ...
    def map_set(self, store: MapStore, owner: str, key: str, value: Any) -> None: ...
    def map_set_many(self, store: MapStore, owner: str, items: dict[str, Any]) -> None: ...
    def append(self, store: ArchiveStore, owner: str, value: Any, when: float | None = None,
               with_: str | None = None, id: str | None = None) -> str: ...
    def commit(self) -> asyncio.Future[None]: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> Batch: ...
    def __exit__(self, et: Any, *exc: object) -> None: ...
    async def __aenter__(self) -> Batch: ...
    async def __aexit__(self, et: Any, *exc: object) -> None: ...


class Storage(Protocol):
    """One backend instance.  The writer starts lazily on the first write; there is no start()."""

    commits: int  # committed write transactions (0 for memory): lets tests see group commit

    def keyval(self, name: str, version: int = 1, upgrade: Upgrade | None = None) -> KeyValStore: ...
    def map(self, name: str, version: int = 1, upgrade: Upgrade | None = None) -> MapStore: ...
    def archive(self, name: str, version: int = 1, upgrade: Upgrade | None = None) -> ArchiveStore: ...
    def batch(self) -> Batch: ...
    def idle(self) -> bool:
        """Whether every write queued so far is durable already (``flush()`` would not wait)."""
    async def flush(self) -> None:
        """Wait until every write queued so far is durable."""
    async def close(self) -> None:
        """Flush, then close; the object is unusable afterwards."""
    async def delete_owner(self, owner: str) -> None:
        """Remove every record of ``owner`` in every store, opened or not (account deletion)."""
    def flush_sync(self) -> None: ...
    def close_sync(self) -> None: ...
    def delete_owner_sync(self, owner: str) -> None: ...
    @staticmethod
    def run_sync(coro: Any) -> Any:
        """Run a coroutine to completion from synchronous code (the CLI)."""


def open_storage(kind: str, path: str | None = None, **opts: Any) -> Storage:
    """``open_storage("lmdb", data_dir, map_size=..., max_dbs=...)`` or ``open_storage("memory")``."""
    if kind == "lmdb":
        if not path:
            raise ValueError("the lmdb storage needs a data directory")
        from .lmdb_backend import LmdbStorage
        return LmdbStorage(path, **opts)
    if kind == "memory":
        from .memory_backend import MemoryStorage
        return MemoryStorage(**opts)
    raise ValueError(f"unknown storage kind {kind!r} (expected 'lmdb' or 'memory')")


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from synchronous code (CLI); not from inside a running loop."""
    return asyncio.run(coro)


class SyncFuture:
    """What a write returns when called outside a running event loop (the CLI): ``result()``
    blocks until the write is durable and returns its result or raises its error.  Lighter than
    ``concurrent.futures.Future`` (no lock per write: one shared condition per storage)."""

    __slots__ = ("_cond", "_state", "_value")

    def __init__(self, cond: threading.Condition | None = None) -> None:
        self._cond = cond
        self._state = 0  # 0 pending, 1 result, 2 exception
        self._value: Any = None

    def done(self) -> bool:
        return self._state != 0

    def _set(self, value: Any, error: BaseException | None) -> None:
        """Settle; the settler then notifies the shared condition (once per batch)."""
        self._value, self._state = (error, 2) if error is not None else (value, 1)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self._state:
            assert self._cond is not None
            with self._cond:
                if not self._cond.wait_for(self.done, timeout):
                    raise TimeoutError("storage write not committed in time")
        return self._value if self._state == 2 else None

    def result(self, timeout: float | None = None) -> Any:
        e = self.exception(timeout)
        if e is not None:
            raise e
        return self._value


def make_future(cond: threading.Condition | None = None) -> Any:
    """A future for a write: the running loop's, else a SyncFuture settled by ``cond``'s owner."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return SyncFuture(cond)
    return loop.create_future()
