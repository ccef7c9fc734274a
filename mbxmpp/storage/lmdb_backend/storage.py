"""``LmdbStorage``: the environment (``env.py``), the group-commit writer (``writer.py``) and the
stores opened over them (``stores.py``, ``archive.py``); ``LmdbBatch`` for bulk jobs."""

from __future__ import annotations

from typing import Any, Callable

from .. import keys
from ..api import SyncFuture, run_sync
from ..records import Upgrade
from ..registry import StoreRegistry
from .archive import LmdbArchive
from .env import GiB, LmdbEnv
from .ops import NO_LAST_ID, DelOwner, LastId, Op, Touch
from .stores import LmdbKeyVal, LmdbMap
from .writer import GroupCommitWriter

_bulk_prefix = keys.owner_prefix_uncached  # batch(): many distinct owners, caching only costs


class LmdbBatch:
    def __init__(self, s: LmdbStorage) -> None:
        self._s = s
        self._ops: list[Op] = []
        self._touches: list[Touch] = []

    def __len__(self) -> int:
        return len(self._ops)

    def _add(self, ops: list[Op], touches: list[Touch]) -> None:
        self._ops += ops
        self._touches += touches

    def set(self, store: Any, owner: str, value: Any) -> None:
        self._add(*store._op_set(owner, value, _bulk_prefix))

    def map_set(self, store: Any, owner: str, key: str, value: Any) -> None:
        self._add(*store._op_set_many(owner, {key: value}, _bulk_prefix))

    def map_set_many(self, store: Any, owner: str, items: dict[str, Any]) -> None:
        self._add(*store._op_set_many(owner, items, _bulk_prefix))

    def append(self, store: Any, owner: str, value: Any, when: float | None = None,
               with_: str | None = None, id: str | None = None) -> str:
        op = store._op_append(owner, value, when, with_, id)
        self._ops.append(op)
        return str(op.rec.id16.hex())

    def commit(self) -> Any:
        ops, touches, self._ops, self._touches = self._ops, self._touches, [], []
        return self._s._writer.submit(ops, touches)

    def __enter__(self) -> LmdbBatch:
        return self

    def __exit__(self, et: Any, *exc: object) -> None:
        if et is None:
            w = self._s._writer
            fut = w.submit(self._ops, self._touches, SyncFuture(w.done_cond))
            self._ops, self._touches = [], []
            fut.result()

    async def __aenter__(self) -> LmdbBatch:
        return self

    async def __aexit__(self, et: Any, *exc: object) -> None:
        if et is None:
            await self.commit()


class LmdbStorage:
    """See the package docstring.

    ``sync=False`` skips fsync entirely (tests, benchmarks: a kill -9 still loses nothing, an OS
    crash may lose recent commits); ``metasync=False`` keeps the data fsync but not the second one
    for the meta page (~2x commits/s; an OS crash may undo the last commit only)."""

    def __init__(self, path: str, map_size: int = GiB, max_dbs: int = 128, sync: bool = True,
                 metasync: bool | None = None, max_readers: int = 126) -> None:
        self._env = LmdbEnv(path, map_size, max_dbs, sync, metasync, max_readers)
        self.path = self._env.path
        self._writer = GroupCommitWriter(self._env)
        self._env.on_resized = self._writer.adopt_new_size
        self._last_id: LastId = NO_LAST_ID  # the last new_id() of any archive
        self._closed = False
        self._registry = StoreRegistry()

    # counters for tests and metrics
    def pending_writes(self) -> int:
        return self._writer.pending_writes()

    @property
    def commits(self) -> int:
        """Committed write transactions of the writer."""
        return self._writer.commits

    @commits.setter
    def commits(self, n: int) -> None:
        self._writer.commits = n

    @property
    def on_commit(self) -> Callable[[float], None] | None:
        """Called by the writer thread with the seconds each commit took (must be thread-safe)."""
        return self._writer.on_commit

    @on_commit.setter
    def on_commit(self, fn: Callable[[float], None] | None) -> None:
        self._writer.on_commit = fn

    @property
    def grows(self) -> int:
        """Map size increases."""
        return self._env.grows

    # -- stores ---------------------------------------------------------------------------------

    def _open(self, cls: Any, name: str, version: int, upgrade: Upgrade | None) -> Any:
        if self._closed:
            raise RuntimeError("storage is closed")
        return self._registry.open(self, cls, name, version, upgrade)

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

    # -- flush, close, owners ---------------------------------------------------------------------

    def idle(self) -> bool:
        """Whether every write accepted so far is committed (no flush needed to be sure)."""
        return self._writer.idle()

    async def flush(self) -> None:
        await self._writer.flush()

    def flush_sync(self) -> None:
        self._writer.flush_sync()

    def close_sync(self) -> None:
        if self._closed:
            return
        self._writer.flush_sync()
        self._closed = True
        self._writer.close()
        self._env.close()

    async def close(self) -> None:
        await self.flush()
        self.close_sync()

    def _delete_owner_job(self, owner: str, fut: Any = None) -> Any:
        prefix = keys.owner_prefix(owner)
        touches: list[Touch] = []
        for st in self._registry.stores():
            if st.kind == "keyval":
                touches.append(Touch(st, prefix, None))
            elif st.kind == "map":
                touches.append(Touch(st, (prefix, None), None))
        return self._writer.submit([DelOwner(prefix)], touches, fut)

    async def delete_owner(self, owner: str) -> None:
        await self._delete_owner_job(owner)

    def delete_owner_sync(self, owner: str) -> None:
        self._delete_owner_job(owner, SyncFuture(self._writer.done_cond)).result()
