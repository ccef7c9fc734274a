"""Applying queued writes to LMDB: the writer thread, inside its write transaction; one function
per operation kind (``ops.py``).

An append costs three cursor puts (item, time index, with-index); the per-owner item counts of a
transaction's appends are summed and written once, before any operation that reads or changes
them (deletes, expiry, account deletion).
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any, Callable

from .. import keys
from ..records import unpack
from .env import LmdbEnv, scan
from .ops import (AppendRun, ArDbs, ArDelete, ArExpire, ArPut, DelOwner, DelPrefix, LoopPut,
                  Put)

Counts = dict[ArDbs, dict[bytes, int]]  # item count changes per archive and owner prefix


def apply_items(env: LmdbEnv, txn: Any, items: list[Any]) -> None:
    """Apply a batch in call order: ``LoopPut``\\ s, ``AppendRun``\\ s and jobs (``writer.Job``:
    their ``ops``, the last op's result as the job's ``result``)."""
    counts: Counts = {}
    for it in items:
        cls = it.__class__
        if cls is AppendRun:
            ar_puts(txn, it, counts)
            continue
        if cls is LoopPut:
            put(env, txn, it)
            continue
        run: AppendRun | None = None
        for op in it.ops:
            kind = op.__class__
            if kind is ArPut:  # consecutive appends to one archive go together
                if run is None or op.dbs is not run.dbs:
                    if run is not None:
                        ar_puts(txn, run, counts)
                    run = AppendRun(op.dbs)
                run.add(op.rec)
                continue
            if run is not None:
                ar_puts(txn, run, counts)
                run = None
            if counts and kind in _READS_COUNTS:
                flush_counts(txn, counts)
            it.result = APPLY[kind](env, txn, op)
        if run is not None:
            ar_puts(txn, run, counts)
            it.result = None
    if counts:
        flush_counts(txn, counts)


def put(env: LmdbEnv, txn: Any, op: Put | LoopPut) -> None:
    if op.raw is None:
        txn.delete(op.key, db=op.db)
    else:
        txn.put(op.key, op.raw, db=op.db)


def del_prefix(env: LmdbEnv, txn: Any, op: DelPrefix) -> None:
    hi = keys.prefix_end(op.prefix)
    for k in list(scan(txn, op.db, op.prefix, hi, values=False)):
        txn.delete(k, db=op.db)


# -- archives ---------------------------------------------------------------------------------

def count_add(txn: Any, a: ArDbs, prefix: bytes, delta: int) -> None:
    raw = txn.get(prefix, db=a.n)
    n = (0 if raw is None else int.from_bytes(raw, "big")) + delta
    if n > 0:
        txn.put(prefix, n.to_bytes(8, "big"), db=a.n)
    elif raw is not None:
        txn.delete(prefix, db=a.n)


def flush_counts(txn: Any, counts: Counts) -> None:
    for a, per_owner in counts.items():
        for prefix, delta in per_owner.items():
            count_add(txn, a, prefix, delta)
    counts.clear()


def ar_puts(txn: Any, run: AppendRun, counts: Counts) -> None:
    """A run of appends: each item (new, or replacing the owner's item of that id), its time-index
    and with-index entries; the owners' item counts go to ``counts``.  The writer's hot loop: when
    every id is fresh (allocated in this process and used once: no item can have it), one
    ``putmulti`` per database, loops in C; otherwise item by item."""
    a = run.dbs
    cnt = counts.get(a)
    if cnt is None:
        cnt = counts[a] = {}
    if not all(run.fresh):
        _ar_put_each(txn, run, cnt)
        return
    prefixes, id16s = run.prefixes, run.id16s
    consumed, added = txn.cursor(db=a.main).putmulti(
        [(p + i, raw) for p, i, raw in zip(prefixes, id16s, run.raws)], overwrite=False)
    if added != consumed:  # a fresh id already stored: the id allocator is broken
        raise RuntimeError(f"archive: {consumed - added} fresh id(s) already in use")
    txn.cursor(db=a.t).putmulti([(i + p[:-1], b"") for i, p in zip(id16s, prefixes)])
    txn.cursor(db=a.w).putmulti([(k, v) for k, v in zip(run.wkeys, run.wvals) if k is not None])
    for prefix, n in Counter(prefixes).items():
        cnt[prefix] = cnt.get(prefix, 0) + n


def _ar_put_each(txn: Any, run: AppendRun, cnt: dict[bytes, int]) -> None:
    """Appends whose id may name an existing item (imports, explicit ids), in order."""
    a = run.dbs
    mput = txn.cursor(db=a.main).put
    tput = txn.cursor(db=a.t).put
    wput = txn.cursor(db=a.w).put
    for prefix, id16, wkey, wval, raw in zip(run.prefixes, run.id16s, run.wkeys, run.wvals,
                                              run.raws):
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


def _ar_unlink(txn: Any, a: ArDbs, prefix: bytes, id16: bytes, raw: bytes) -> None:
    """Remove the index entries of a deleted item."""
    with_ = unpack(raw)[1][0]
    if with_ is not None:
        txn.delete(prefix + keys.with_hash(with_) + id16, db=a.w)
    txn.delete(id16 + prefix[:-1], db=a.t)


def ar_delete(env: LmdbEnv, txn: Any, op: ArDelete) -> int:
    a, prefix, before_us = op.dbs, op.prefix, op.before_us
    n = 0
    if op.id16s is not None:
        for id16 in op.id16s:
            if before_us is not None and keys.id_ts_us(id16) >= before_us:
                continue
            raw = txn.pop(prefix + id16, db=a.main)
            if raw is not None:
                _ar_unlink(txn, a, prefix, id16, raw)
                n += 1
    else:
        hi = keys.prefix_end(prefix) if before_us is None else prefix + keys.ts_bound(before_us)
        for k, raw in list(scan(txn, a.main, prefix, hi)):
            txn.delete(k, db=a.main)
            _ar_unlink(txn, a, prefix, k[len(prefix):], raw)
            n += 1
    if n:
        count_add(txn, a, prefix, -n)
    return n


def ar_expire(env: LmdbEnv, txn: Any, op: ArExpire) -> tuple[int, bool]:
    a = op.dbs
    budget = max(op.budget, 0)
    old = list(itertools.islice(
        scan(txn, a.t, b"", keys.ts_bound(op.before_us), values=False), budget + 1))
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
        count_add(txn, a, prefix, -d)
    return len(old) - more, more


# -- accounts ---------------------------------------------------------------------------------

def del_owner(env: LmdbEnv, txn: Any, op: DelOwner) -> None:
    """Every database of the environment, opened by this process or not."""
    prefix = op.prefix
    names = [bytes(k) for k in scan(txn, None, b"", b"\xff" * keys.MAX_KEY, values=False)]
    for name in names:
        if name.startswith(b"ar:") and b"#" not in name:
            a = ArDbs(*(env.env.open_db(name + s, txn=txn) for s in (b"", b"#w", b"#t", b"#n")))
            ar_delete(env, txn, ArDelete(a, prefix, None, None))
            hi = keys.prefix_end(prefix)
            for k in list(scan(txn, a.w, prefix, hi, values=False)):  # (unneeded if coherent)
                txn.delete(k, db=a.w)
        elif name.startswith(b"kv:"):
            txn.delete(prefix, db=env.env.open_db(name, txn=txn))
        elif name.startswith(b"map:"):
            del_prefix(env, txn, DelPrefix(env.env.open_db(name, txn=txn), prefix))


APPLY: dict[type, Callable[[Any, Any, Any], Any]] = {
    Put: put, DelPrefix: del_prefix, ArDelete: ar_delete, ArExpire: ar_expire, DelOwner: del_owner,
}
# operations that read or change the item counts: the appends' summed counts are written first
_READS_COUNTS = frozenset({ArDelete, ArExpire, DelOwner})

