"""LMDB storage: one environment in ``<data_dir>/db``, one named database per store, group commit.

Databases: ``kv:NAME``, ``map:NAME``, ``ar:NAME`` plus its indexes ``ar:NAME#w`` (with),
``ar:NAME#t`` (time, for global expiry) and ``ar:NAME#n`` (item count per owner); ``_meta``.
Key layouts are in ``keys.py``, record encoding in ``records.py``.

By concern:

* ``env.py``: the environment, its databases, inline reads, map growth, ``backup``;
* ``stores.py`` / ``archive.py``: the keyval and map stores (with their overlays of queued
  writes) and the archive store; each write is packed and validated at the call;
* ``ops.py``: the named records the stores queue for the writer (one class per operation kind);
* ``writer.py``: the group-commit writer (buffering per loop iteration, the writer thread, commit
  with fsync, then the futures);
* ``apply.py``: applying the operations inside the writer's write transaction;
* ``storage.py``: ``LmdbStorage`` tying them together, and ``LmdbBatch``.

Synchronous use (CLI): reads are synchronous anyway; write methods called outside a running loop
return a ``SyncFuture``; ``batch()`` commits many writes as one transaction; then
``flush_sync()`` / ``close_sync()``.  Keep a batch under ~100k ops (LMDB's dirty-page limit).
"""

from .archive import LmdbArchive
from .env import FORMAT, backup
from .storage import LmdbBatch, LmdbStorage
from .stores import LmdbKeyVal, LmdbMap

__all__ = ["FORMAT", "LmdbArchive", "LmdbBatch", "LmdbKeyVal", "LmdbMap", "LmdbStorage", "backup"]
