"""Archive retention: what is older than ``[mam] retention`` is never shown, and a background
sweep deletes it.

The promise is kept to the second by readers, not by the sweep: every read filters with
:func:`oldest_kept` (a retention or expiry of N is observable at N), so the sweep only reclaims
space and may run late or rarely.  Uploads' expiry and room archives use the same helper.

Deletion runs in the storage writer in bounded batches (``ArchiveStore.expire(before, budget)``),
oldest first over all owners (XEP-0313 §3.2: only the oldest messages may go, no holes), and the
loop gets control back between batches, so a large backlog never stalls routing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from ...storage.api import ArchiveStore

log = logging.getLogger(__name__)

BUDGET = 1000  # items per expire() call


def oldest_kept(retention: float, now: float | None = None) -> float:
    """The cut-off time of a retention (or expiry) of ``retention`` seconds: an item stored at
    time ``t`` is shown while ``t >= oldest_kept(...)``, i.e. for exactly ``retention`` seconds."""
    return (time.time() if now is None else now) - retention


def expired(when: float, retention: float, now: float | None = None) -> bool:
    """Whether an item stored at ``when`` is past its retention (never to be shown again)."""
    return when < oldest_kept(retention, now)


class Sweeper:
    def __init__(self, archive: ArchiveStore, retention: float, interval: float,
                 budget: int = BUDGET, clock: Callable[[], float] = time.time) -> None:
        self.archive = archive
        self.retention = retention
        self.interval = interval
        self.budget = budget
        self.clock = clock
        self.deleted = 0   # total, for metrics and tests
        self.sweeps = 0
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """One pass: expire everything older than the retention, batch by batch."""
        before = oldest_kept(self.retention, self.clock())
        n_total = 0
        while True:
            n, more = await self.archive.expire(before, self.budget)
            n_total += n
            if not more:
                break
            await asyncio.sleep(0)  # let routing run between batches
        self.deleted += n_total
        self.sweeps += 1
        if n_total:
            log.info("archive retention: %d items older than %.0fs deleted", n_total,
                     self.retention)
        return n_total

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("archive retention sweep failed")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mam-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
