"""Migration in and out: XEP-0227 export/import (``xep0227``) and Prosody's data directory
(``prosody``). Readers yield one :class:`~.account.AccountData` at a time; :func:`import_accounts`
writes them in batches, each account wholly inside one write transaction (an account is imported
completely or not at all), through the same stores and records the modules use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .account import AccountData, Stores
from .xep0227 import Rejected

BATCH_ACCOUNTS = 2000
BATCH_ITEMS = 50_000   # archived/offline messages per transaction (a few MB)


@dataclass
class Summary:
    accounts: int = 0
    messages: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    error: str | None = None  # why the reading stopped early (a malformed file)


def _derive(password: str) -> dict[str, Any]:
    """Worker: SCRAM keys for a plain password (PBKDF2 is the cost of such an import)."""
    from ..stream.scram import make_credentials
    return make_credentials(password)


def import_accounts(storage: Any, accounts: Iterable[AccountData | Rejected], *,
                    dry_run: bool = False,
                    progress: Callable[[Summary], None] | None = None,
                    rejected: Callable[[Rejected], None] | None = None,
                    workers: int = 1,
                    stop_on: tuple[type[BaseException], ...] = ()) -> Summary:
    """Write ``accounts`` into ``storage`` (synchronous: the CLI, outside any event loop).
    An exception of a ``stop_on`` type from the reader ends the import (``Summary.error``)
    after the accounts read until then are written."""
    stores = Stores(storage)
    s = Summary()
    pending: list[AccountData] = []
    items = 0
    pool = ProcessPoolExecutor(workers) if workers > 1 else None

    def flush() -> None:
        nonlocal items
        plain = [a for a in pending if a.password is not None]
        if plain:
            passwords = [a.password or "" for a in plain]
            derived = (pool.map(_derive, passwords, chunksize=16) if pool
                       else map(_derive, passwords))
            for a, creds in zip(plain, derived):
                a.scram = creds  # the password gives every mechanism (it wins over SCRAM keys)
        if not dry_run and pending:
            with storage.batch() as b:  # one write transaction; durable when the block ends
                for a in pending:
                    stores.write(b, a)
        for a in pending:
            s.accounts += 1
            s.messages += len(a.archive) + len(a.offline)
        pending.clear()
        items = 0
        if progress is not None:
            progress(s)

    it = iter(accounts)
    try:
        while True:
            try:
                a = next(it)
            except StopIteration:
                break
            except stop_on as e:
                flush()  # the accounts read before a broken part of the file are whole: keep them
                s.error = str(e)
                break
            if isinstance(a, Rejected):
                s.rejected.append(a)
                if rejected is not None:
                    rejected(a)
                continue
            pending.append(a)
            items += len(a.archive) + len(a.offline) + len(a.roster) + 1
            if len(pending) >= BATCH_ACCOUNTS or items >= BATCH_ITEMS:
                flush()
        flush()
    finally:
        if pool is not None:
            pool.shutdown()
    return s


__all__ = ["AccountData", "Rejected", "Stores", "Summary", "import_accounts"]
