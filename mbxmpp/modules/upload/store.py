"""Where uploads live: sealed files under ``storage_dir``, their records in LMDB, and an in-memory
index of every slot by deadline for the sweep and the quotas.

Records (map ``upload_files``, owner = the uploader's bare JID, key = slot id)::

    pending: {"state": "pending", "size": n, "type": "image/png" | "", "created": t, "deadline": t}
    done:    {"state": "done", "size": n, "created": t, "uploaded": t, "meta": sealed, "verify": v}

and ``upload_slots`` (keyval, owner = slot id) -> {"owner": bare} finds the record of a URL. A
record is keyed by its owner so that deleting the account (even from the CLI, in another process)
removes it, after which the file is unreachable and the sweep removes its bytes. A finished
record keeps no name, type, key or secret in clear: those are in ``meta``, sealed with the key.

Files: ``files/<2 chars>/<slot>`` once complete; ``tmp/`` holds uploads in progress, emptied at
start. A file is renamed into place (after fsync) before its record says "done", so a crash
leaves either no record or a record whose file is whole.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...storage.api import Storage

log = logging.getLogger(__name__)

SWEEP_BATCH = 200          # files deleted per sweep step: bounded work per step
UPLOAD_GRACE = 60.0        # a PUT still streaming at its slot's deadline is looked at again then
AUDIT_BATCH = 500          # slots checked per audit for a record deleted behind our back


def expired(uploaded: float, expire_after: float, now: float) -> bool:
    """Past its retention: a file uploaded at ``uploaded`` is gone from ``uploaded + expire_after``."""
    return now >= uploaded + expire_after


@dataclass(slots=True)
class SlotInfo:
    owner: str
    size: int
    created: float
    deadline: float            # pending: the PUT token's end; done: the file's expiry
    done: bool = False


class UploadStore:
    def __init__(self, storage: Storage, root: str, expire_after: float) -> None:
        self.root = os.path.abspath(root)
        self.files_dir = os.path.join(self.root, "files")
        self.tmp_dir = os.path.join(self.root, "tmp")
        self.expire_after = expire_after
        self.records = storage.map("upload_files")
        self.index = storage.keyval("upload_slots")
        self.rates = storage.keyval("upload_rate")   # bare -> recent slot request times
        self.slots: dict[str, SlotInfo] = {}
        self.by_owner: dict[str, set[str]] = {}
        self._due: list[tuple[float, str]] = []      # heap of (deadline, slot)
        self.uploading: set[str] = set()             # slots whose PUT is streaming now
        self._audit: list[str] = []                  # slots still to check in this audit round

    # -- paths --------------------------------------------------------------------------------
    def path(self, slot: str) -> str:
        return os.path.join(self.files_dir, slot[:2], slot)

    def temp_path(self, slot: str) -> str:
        return os.path.join(self.tmp_dir, f"{slot}.{secrets.token_hex(4)}")

    # -- start-up -----------------------------------------------------------------------------
    async def load(self) -> None:
        """Rebuild the index from the records, and remove what a crash or an account deletion
        left behind: temporary files, files without a record, records without a file."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._make_dirs)
        on_disk = set(await loop.run_in_executor(None, self._list_files))
        stale_index: list[str] = []
        for slot in list(self.index.owners()):
            entry = self.index.get(slot)
            owner = entry.get("owner") if isinstance(entry, dict) else None
            rec = self.records.get(owner, slot) if owner else None
            if rec is None or (rec.get("state") == "done" and slot not in on_disk):
                stale_index.append(slot)
                if owner and rec is not None:
                    self.records.set(owner, slot, None)
                continue
            assert owner is not None
            self._remember(slot, owner, rec)
        for slot in stale_index:
            self.index.set(slot, None)
        orphans = [s for s in on_disk if s not in self.slots]
        if orphans:
            await loop.run_in_executor(None, self._unlink_all, [self.path(s) for s in orphans])
        log.info("upload: %d files and slots, %d leftovers removed", len(self.slots),
                 len(orphans) + len(stale_index))

    def _make_dirs(self) -> None:
        os.makedirs(self.files_dir, mode=0o700, exist_ok=True)
        os.makedirs(self.tmp_dir, mode=0o700, exist_ok=True)
        for name in os.listdir(self.tmp_dir):   # uploads cut short by a crash or a stop
            try:
                os.unlink(os.path.join(self.tmp_dir, name))
            except OSError:
                pass

    def _list_files(self) -> list[str]:
        out = []
        for sub in os.listdir(self.files_dir):
            d = os.path.join(self.files_dir, sub)
            if os.path.isdir(d):
                out.extend(os.listdir(d))
        return out

    # -- the in-memory index ---------------------------------------------------------------------
    def _remember(self, slot: str, owner: str, rec: dict[str, Any]) -> None:
        done = rec.get("state") == "done"
        deadline = rec["uploaded"] + self.expire_after if done else rec["deadline"]
        self.slots[slot] = SlotInfo(owner, rec["size"], rec["created"], deadline, done)
        self.by_owner.setdefault(owner, set()).add(slot)
        heapq.heappush(self._due, (deadline, slot))

    def used_bytes(self, owner: str) -> int:
        return sum(self.slots[s].size for s in self.by_owner.get(owner, ()))

    def owner_slots(self, owner: str) -> list[SlotInfo]:
        return [self.slots[s] for s in self.by_owner.get(owner, ())]

    # -- records ------------------------------------------------------------------------------
    def lookup(self, slot: str) -> tuple[str, dict[str, Any]] | None:
        entry = self.index.get(slot)
        owner = entry.get("owner") if isinstance(entry, dict) else None
        if not owner:
            return None
        rec = self.records.get(owner, slot)
        return None if rec is None else (owner, rec)

    async def add_pending(self, slot: str, owner: str, rec: dict[str, Any]) -> None:
        self._remember(slot, owner, rec)
        self.index.set(slot, {"owner": owner})
        await self.records.set(owner, slot, rec)

    async def complete(self, slot: str, owner: str, rec: dict[str, Any]) -> None:
        await self.records.set(owner, slot, rec)
        info = self.slots.get(slot)
        if info is not None:
            info.done = True
            info.deadline = rec["uploaded"] + self.expire_after
            heapq.heappush(self._due, (info.deadline, slot))

    # -- removal ------------------------------------------------------------------------------
    async def remove(self, slots: Iterable[str]) -> int:
        """Forget the slots and delete their files (in an executor); returns how many."""
        paths = []
        for slot in slots:
            info = self.slots.pop(slot, None)
            if info is None:
                continue
            owned = self.by_owner.get(info.owner)
            if owned is not None:
                owned.discard(slot)
                if not owned:
                    del self.by_owner[info.owner]
            self.records.set(info.owner, slot, None)
            self.index.set(slot, None)
            paths.append(self.path(slot))
        if paths:
            await asyncio.get_running_loop().run_in_executor(None, self._unlink_all, paths)
        return len(paths)

    @staticmethod
    def _unlink_all(paths: list[str]) -> None:
        for p in paths:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("upload: cannot delete %s: %s", p, e)

    async def sweep(self, now: float | None = None, budget: int = SWEEP_BATCH) -> tuple[int, bool]:
        """Delete at most ``budget`` slots past their deadline; returns (deleted, more are due)."""
        now = time.time() if now is None else now
        due: list[str] = []
        heap = self._due
        while heap and heap[0][0] <= now and len(due) < budget:
            deadline, slot = heapq.heappop(heap)
            info = self.slots.get(slot)
            if info is None or info.deadline != deadline:
                continue  # a stale entry (uploaded since, or deleted)
            if slot in self.uploading:  # its PUT started in time: let it finish
                info.deadline = now + UPLOAD_GRACE
                heapq.heappush(heap, (info.deadline, slot))
                continue
            due.append(slot)
        deleted = await self.remove(due)
        return deleted, bool(heap) and heap[0][0] <= now

    def next_due(self) -> float | None:
        return self._due[0][0] if self._due else None

    async def drop_orphans(self, budget: int = AUDIT_BATCH) -> int:
        """Delete the files of up to ``budget`` slots (round robin) whose record is gone: an
        account deleted by the CLI, in another process, took its records with it."""
        if not self._audit:
            self._audit = list(self.slots)
        gone = []
        while self._audit and budget > 0:
            slot = self._audit.pop()
            budget -= 1
            info = self.slots.get(slot)
            if info is not None and self.records.get(info.owner, slot) is None:
                gone.append(slot)
        return await self.remove(gone)

    async def remove_owner(self, owner: str) -> int:
        return await self.remove(list(self.by_owner.get(owner, ())))
