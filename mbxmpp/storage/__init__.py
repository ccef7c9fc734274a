"""Storage: Prosody's three store kinds (keyval, map, archive) over LMDB, or memory for tests.

Async code (features)::

    storage = open_storage("lmdb", config.data_dir)      # or open_storage("memory")
    accounts = storage.keyval("accounts")                # version=1; bump it when the schema changes
    rec = accounts.get("user@example.org")               # inline read, microseconds
    await accounts.set("user@example.org", {...})        # resolves once durable (group commit)
    mam = storage.archive("mam")
    sid, done = mam.append("user@example.org", stanza_bytes, with_="peer@example.net/res")
    page = mam.query("user@example.org", with_="peer@example.net", limit=50, reverse=True)
    deleted, more = await mam.expire(time.time() - retention, budget=1000)
    await storage.close()

Synchronous code (CLI): reads are plain calls; write methods called outside a running loop return a
``SyncFuture`` (``.result()`` blocks until durable); for bulk work (``user import``)::

    with storage.batch() as b:                           # one write transaction, durable on exit
        for jid, record in chunk:                        # ~10,000 lines per batch
            b.set(accounts, jid, record)
    storage.delete_owner_sync("user@example.org")        # `user del`
    list(accounts.owners_in_domain("example.org"))       # `user list DOMAIN`
    storage.close_sync()

``run_sync(coro)`` runs an async helper from the CLI.  The LMDB writer thread starts lazily on the
first write; there is no start().  See ``api.py`` for the contract.
"""

from .api import (ARCHIVE, KEYVAL, MAP, ArchiveItem, ArchiveStore, Batch, ItemNotFound, KeyValStore,
                  MapStore, RecordError, RecordVersionError, Storage, Upgrade, open_storage, run_sync)

__all__ = [
    "ARCHIVE", "KEYVAL", "MAP", "ArchiveItem", "ArchiveStore", "Batch", "ItemNotFound",
    "KeyValStore", "MapStore", "RecordError", "RecordVersionError", "Storage", "Upgrade",
    "open_storage", "run_sync",
]
