"""The group-commit writer: writes queued from any thread, applied by one writer thread in one
write transaction per batch, committed (fsync) before their futures resolve.

Inside a running loop a write is buffered and the whole loop iteration's writes are handed to the
writer as ONE unit (a :class:`Hand`: one queue put and at most one wake-up of the writer thread per
iteration, scheduled with ``call_soon`` by the iteration's first write); outside a loop a write is
handed over at once (after what is buffered: call order is kept).  Archive appends made in one
iteration share one future (a :class:`SharedFuture`, which refuses ``cancel()``); other writes have
their own.  The writer thread (started on the first write) takes everything handed over, applies
it in ONE write transaction (``apply.py``), commits with fsync and only then resolves the futures
(one ``call_soon_threadsafe`` per commit and loop).  Everything handed over while a commit runs
forms the next batch (group commit), so fsync never blocks the event loop and N concurrent writers
cost far fewer than N commits (``commits`` counts them).  If a batch fails, its writes are retried
one per transaction so that one bad write cannot fail the others (a failed append fails its hand's
shared future).  Nothing is acknowledged before its commit returned: a kill -9 loses no
acknowledged write.

Map full: the batch is aborted, the map grown (:meth:`LmdbEnv.grow`) and the batch retried.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any, Callable

import lmdb

from .. import keys
from ..api import SyncFuture
from .apply import apply_items
from .env import LmdbEnv
from .ops import AppendRun, ArDbs, LoopPut, Op, Pending, Touch, WithEntry, make

_get_running_loop = asyncio._get_running_loop
_new_id_locked = keys.ids.new_locked

MAX_BATCH = 10_000  # writes per write transaction (bounds commit latency under a flood)


class Job:
    """A write with its own future (keyval, map, deletes, flush, batches, anything called outside
    a loop).  Archive appends and single sets called inside a loop are not jobs: see :class:`Hand`."""

    __slots__ = ("seq", "ops", "touches", "fut", "result", "error")

    def __init__(self, seq: int, ops: list[Op], touches: list[Touch], fut: Any) -> None:
        self.seq = seq
        self.ops = ops
        self.touches = touches
        self.fut = fut
        self.result: Any = None
        self.error: BaseException | None = None


class SharedFuture(asyncio.Future):  # type: ignore[type-arg]
    """The one future of every archive append handed to the writer in the same loop iteration.

    Callers only await it or add done-callbacks; ``cancel()`` is refused (returns False) so that a
    task cancelled while awaiting its append cannot cancel the future of the others' appends: that
    task's cancellation takes effect once the commit has resolved the future."""

    def cancel(self, msg: Any = None) -> bool:
        return False


class Hand:
    """What the loop thread hands to the writer at once (one ``queue.put`` per loop iteration).

    ``items`` in call order: a :class:`Job`; a :class:`LoopPut` (its error, if any, in
    ``failed[id(item)]``); or an :class:`AppendRun` whose appends all resolve ``fut``, the shared
    future (its ``error``: any failed append of the hand).  ``n`` counts the writes.  A hand is
    never split over two commits.  (Few objects per pending write: fewer and cheaper garbage
    collections while writes wait for their commit.)"""

    __slots__ = ("items", "fut", "error", "n", "adopt", "failed")

    def __init__(self, items: list[Any], fut: Any = None, n: int = 1, adopt: bool = False) -> None:
        self.items = items
        self.fut = fut
        self.error: BaseException | None = None
        self.n = n
        self.adopt = adopt
        self.failed: dict[int, BaseException] | None = None

    def fail(self, item: LoopPut, e: BaseException) -> None:
        if self.failed is None:
            self.failed = {}
        self.failed.setdefault(id(item), e)


_STOP = Hand([], n=0)

Settle = list[tuple[Any, Any, "BaseException | None"]]  # (future, result, error)


def _resolve(settle: Settle) -> None:
    """Loop thread: settle the futures of one commit (one ``call_soon_threadsafe`` per commit)."""
    for f, result, error in settle:
        if not f.done():
            if error is not None:
                f.set_exception(error)
            else:
                f.set_result(result)


class GroupCommitWriter:
    """See the module docstring.  ``lock`` guards the buffer, the overlays of the stores and the
    order of writes; it is the archive id allocator's lock, so that an append takes one lock."""

    def __init__(self, env: LmdbEnv) -> None:
        self._env = env
        self.lock = keys.ids.lock
        self.done_cond = threading.Condition()  # SyncFutures wait on it; notified per batch
        self._q: queue.SimpleQueue[Hand] = queue.SimpleQueue()
        # what the loop thread wrote during this loop iteration, handed to the writer as ONE
        # Hand by _handoff (scheduled with call_soon on the first write of the iteration)
        self._buf: list[Any] = []
        self._buf_n = 0
        # writes accepted (any thread, under lock) and writes the writer has finished with
        # (committed, or failed and reported): equal when nothing is waiting for a commit
        self._accepted = 0
        self._finished = 0
        self._buf_fut: SharedFuture | None = None    # the appends' future of this hand
        self._buf_loop: asyncio.AbstractEventLoop | None = None  # where _handoff is scheduled
        self._seq = 0
        self._thread: threading.Thread | None = None
        self.closed = False
        self.commits = 0   # committed write transactions
        self.on_commit: Callable[[float], None] | None = None  # seconds each commit took

    # -- queueing (any thread) ------------------------------------------------------------------

    def submit(self, ops: list[Op], touches: list[Touch], fut: Any = None,
               adopt: bool = False) -> Any:
        """A job: its overlay entries applied now, its future resolved once committed."""
        if self.closed:
            raise RuntimeError("storage is closed")
        loop = None
        if fut is None:
            loop = _get_running_loop()
            fut = SyncFuture(self.done_cond) if loop is None else loop.create_future()
        with self.lock:
            seq = self._seq = self._seq + 1
            for t in touches:
                t.store._pend_set(t.token, Pending(seq, t.raw))
            if loop is not None and self._buf_loop is not loop:
                self._rebind(loop)
            self._buf.append(Job(seq, ops, touches, fut))
            self._one_more_locked(loop is None, adopt)
        if self._thread is None:
            self._start()
        return fut

    def append(self, a: ArDbs, prefix: bytes, e: WithEntry, raw: bytes, id16: bytes | None,
               fresh: bool, loop: asyncio.AbstractEventLoop) -> tuple[str, Any]:
        """An archive append from ``loop``'s thread (``LmdbArchive.append``): buffered, resolved
        by the hand's shared future; consecutive appends to one archive form one AppendRun.
        ``id16`` None: a fresh id, allocated here under the lock."""
        if self.closed:
            raise RuntimeError("storage is closed")
        with self.lock:
            if id16 is None:
                id16 = _new_id_locked()
            if self._buf_loop is not loop:
                self._rebind(loop)
            fut = self._buf_fut
            if fut is None:
                fut = self._buf_fut = SharedFuture(loop=loop)
            buf = self._buf
            run: Any = buf[-1] if buf else None
            if run.__class__ is not AppendRun or run.dbs is not a:
                run = AppendRun(a)
                buf.append(run)
            utf8 = e.utf8  # (an ArRec, column by column)
            run.fresh.append(fresh)
            run.prefixes.append(prefix)
            run.id16s.append(id16)
            run.wkeys.append(None if utf8 is None else prefix + e.with_hash + id16)
            run.wvals.append(utf8)
            run.raws.append(raw)
            self._one_more_locked()
        if self._thread is None:
            self._start()
        return id16.hex(), fut

    def put1(self, store: Any, db: Any, key: bytes, token: Any, raw: bytes | None,
             loop: asyncio.AbstractEventLoop) -> Any:
        """A keyval or map set from ``loop``'s thread: one buffered LoopPut, its own future."""
        if self.closed:
            raise RuntimeError("storage is closed")
        fut = loop.create_future()
        with self.lock:
            seq = self._seq = self._seq + 1
            put = make(LoopPut, (db, key, raw, store, token, seq, fut))
            store._pend_set(token, put)
            if self._buf_loop is not loop:
                self._rebind(loop)
            self._buf.append(put)
            self._one_more_locked()
        if self._thread is None:
            self._start()
        return fut

    def _one_more_locked(self, now: bool = False, adopt: bool = False) -> None:
        """(``lock`` held) One more buffered write: counted (``idle()``), and the buffer handed
        to the writer when it is full, or ``now``."""
        self._buf_n += 1
        self._accepted += 1
        if now or self._buf_n >= MAX_BATCH:
            self._handoff_locked(adopt)

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """(``lock`` held) The first buffered write of ``loop`` (in its thread): hand off what
        another loop buffered, and schedule the hand-off of this iteration's writes."""
        self._handoff_locked()
        self._buf_loop = loop
        loop.call_soon(self._handoff)

    def _handoff(self) -> None:
        with self.lock:
            self._buf_loop = None
            self._handoff_locked()

    def _handoff_locked(self, adopt: bool = False) -> None:
        if self._buf:
            self._q.put(Hand(self._buf, self._buf_fut, self._buf_n, adopt))
            self._buf, self._buf_fut, self._buf_n = [], None, 0

    # -- waiting ----------------------------------------------------------------------------------

    def idle(self) -> bool:
        """Whether every write accepted so far is committed (no flush needed to be sure)."""
        return self._finished == self._accepted

    def pending_writes(self) -> int:
        """Writes accepted but not yet committed (the queue depth /metrics shows)."""
        return self._accepted - self._finished

    async def flush(self) -> None:
        if self._thread is not None and not self.closed:
            await self.submit([], [])

    def flush_sync(self) -> None:
        if self._thread is not None and not self.closed:
            self.submit([], [], SyncFuture(self.done_cond)).result()

    def adopt_new_size(self) -> None:
        """A read met a map another process grew: the writer adopts the size between batches."""
        fut = SyncFuture(self.done_cond)
        self.submit([], [], fut, adopt=True)
        fut.result()

    def close(self) -> None:
        """After a flush: stop the thread."""
        self.closed = True
        if self._thread is not None:
            self._q.put(_STOP)
            self._thread.join()

    # -- the writer thread ------------------------------------------------------------------------

    def _start(self) -> None:
        with self.lock:
            if self._thread is None:
                t = threading.Thread(target=self._run, name="mbxmpp-storage-writer", daemon=True)
                t.start()
                self._thread = t

    def _run(self) -> None:
        q = self._q
        while True:
            hands = [q.get()]
            n = hands[0].n
            while n < MAX_BATCH:  # whole hands only: a hand's shared future needs all its writes
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
                        if it.__class__ is Job:
                            it.error = it.error or e
                        elif it.__class__ is LoopPut:
                            h.fail(it, e)
                if not counted:
                    self._finished += n
                self._finish(hands)
            if stop:
                return

    def _process(self, hands: list[Hand]) -> None:
        if any(h.adopt for h in hands):
            self._env.adopt_size()
        items = hands[0].items if len(hands) == 1 else [it for h in hands for it in h.items]
        if any(it.__class__ is not Job or it.ops for it in items):  # (not for flushes alone)
            err = self._commit(items)
            if err is not None:
                self._isolate(hands, len(items) == 1 and (
                    items[0].__class__ is not AppendRun or len(items[0]) == 1), err)

    def _commit(self, items: list[Any]) -> Exception | None:
        """Apply ``items`` in one write transaction and commit; the error if that failed."""
        env = self._env
        grows = 0
        while True:
            try:
                t0 = time.perf_counter()
                with env.env.begin(write=True) as txn:
                    apply_items(env, txn, items)
                self.commits += 1
                if self.on_commit is not None:  # (the writer thread: the observer must be thread-safe)
                    self.on_commit(time.perf_counter() - t0)
                return None
            except lmdb.MapFullError as e:
                grows += 1
                if grows > 16:
                    return e
                env.grow()
            except lmdb.MapResizedError:
                env.adopt_size()
            except Exception as e:
                return e

    def _isolate(self, hands: list[Hand], single: bool, err: Exception) -> None:
        """A batch failed: commit its writes one per transaction so that one bad write cannot fail
        the others (an append that fails fails its hand's shared future)."""
        for h in hands:
            for it in h.items:
                if it.__class__ is AppendRun:
                    for i in range(len(it)):
                        e = err if single else self._commit([it.one(i)])
                        if e is not None and h.error is None:
                            h.error = e
                else:
                    e = err if single else self._commit([it])
                    if e is not None:
                        if it.__class__ is LoopPut:
                            h.fail(it, e)
                        else:
                            it.error = e

    def _finish(self, hands: list[Hand]) -> None:
        settle: dict[asyncio.AbstractEventLoop, Settle] = {}
        touched: list[Job] = []
        sync: list[Job] = []
        sets: list[LoopPut] = []
        for h in hands:
            f = h.fut
            if f is not None:
                settle.setdefault(f.get_loop(), []).append((f, None, h.error))
            failed = h.failed
            for it in h.items:
                if it.__class__ is LoopPut:
                    sets.append(it)
                    f = it.fut
                    settle.setdefault(f.get_loop(), []).append(
                        (f, None, None if failed is None else failed.get(id(it))))
                elif it.__class__ is Job:
                    if it.touches:
                        touched.append(it)
                    f = it.fut
                    if isinstance(f, asyncio.Future):
                        settle.setdefault(f.get_loop(), []).append((f, it.result, it.error))
                    elif f is not None:
                        sync.append(it)
        if touched or sets:  # the overlay entries of committed writes (the database has them now)
            with self.lock:
                for j in touched:
                    for t in j.touches:
                        t.store._unpend(t.token, j.seq)
                for p in sets:
                    p.store._unpend(p.token, p.seq)
        if sync:
            for j in sync:
                j.fut._set(j.result, j.error)
            with self.done_cond:
                self.done_cond.notify_all()
        for loop, lst in settle.items():
            try:
                loop.call_soon_threadsafe(_resolve, lst)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass
