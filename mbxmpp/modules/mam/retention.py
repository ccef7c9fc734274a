"""Archive retention: a background sweep that deletes items older than ``[mam] retention``.

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
        before = self.clock() - self.retention
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
