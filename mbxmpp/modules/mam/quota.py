"""Storage quotas: how much one account's storage takes from others, per sender and in total.

Every message with a body is stored for its recipient (archive, offline storage), so without a
bound any account can fill the disk through every other account.  A :class:`Tally` counts what is
stored for one owner (bytes and items, per sender); a :class:`Bound` says how much is allowed; a
:class:`Ledger` keeps the tallies of recently written owners (a bounded cache) and rebuilds an
evicted or missing one from storage (``seed``), so the numbers survive restarts and memory stays
flat however many accounts are written to.

A second ledger counts what each sender put into other accounts' archives (``sent_bound``), so
that one account cannot fill thousands of others each up to its per-sender bound.

A window (``[mam] quota_window``, a UTC day by default) makes the archive's bounds a rate: each
window starts from zero.  Offline storage uses no window: its bound is on what is waiting.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ...util.units import format_duration, format_size

if TYPE_CHECKING:
    from ...config import Config
    from ..offline_options import OfflineConfig
    from .options import MAMConfig

CACHE = 10_000  # owners whose tallies are kept; others are rebuilt from storage when next written
# (owner, sender) pairs kept over all those owners (~100 B each): owners x senders per window
# would otherwise grow with every new pair (hundreds of MB on a busy day), not with the owners
MAX_SENDERS = 100_000


@dataclass(frozen=True, slots=True)
class Bound:
    """At most ``messages`` items and ``bytes`` bytes (0: that one is not bounded)."""
    bytes: int = 0
    messages: int = 0

    def admits(self, used: list[int], size: int) -> bool:
        """Whether one more item of ``size`` bytes fits beside ``used`` = [bytes, items]."""
        return ((not self.messages or used[1] < self.messages)
                and (not self.bytes or used[0] + size <= self.bytes))

    def describe(self) -> str:
        return (f"{self.messages} messages" if self.messages else "any number of messages") + \
            " / " + (format_size(self.bytes) if self.bytes else "any size")


_NONE = [0, 0]  # (read only)
OWN, ONE_SENDER, OTHERS = 1, 2, 3  # which bound refused (Tally.charge)


class Tally:
    """What is stored for one owner: [bytes, items] in total and per sender (bare JID)."""

    __slots__ = ("senders", "total", "window", "pairs")

    def __init__(self, window: int = 0) -> None:
        self.window = window
        self.total = [0, 0]
        self.senders: dict[str, list[int]] = {}
        # [entries in ``senders``] shared by all tallies of one Ledger (which bounds the sum)
        self.pairs = [0]

    def _new_sender(self, sender: str) -> list[int]:
        # interned: every owner's tally shares one copy of a sender's JID, not one per session
        used = self.senders[sys.intern(sender)] = [0, 0]
        self.pairs[0] += 1
        return used

    def sender(self, sender: str) -> list[int]:
        return self.senders.get(sender) or _NONE

    def others(self, owner: str) -> list[int]:
        """What everyone but the owner stored."""
        own = self.senders.get(owner)
        return self.total if own is None else [self.total[0] - own[0], self.total[1] - own[1]]

    def charge(self, owner: str, sender: str, size: int, own: Bound, one: Bound,
               others: Bound) -> int:
        """Count one item of ``size`` bytes from ``sender`` into ``owner``'s storage if the
        bounds allow it (0), else count nothing and say which one refused: OWN (the owner's own
        messages), ONE_SENDER or OTHERS (all other senders together).  On every archived
        message's path, hence inlined."""
        used = self.senders.get(sender) or _NONE
        total = self.total
        if sender == owner:
            if (own.messages and used[1] >= own.messages) or (own.bytes and used[0] + size > own.bytes):
                return OWN
        else:
            if (one.messages and used[1] >= one.messages) or (one.bytes and used[0] + size > one.bytes):
                return ONE_SENDER
            mine = self.senders.get(owner) or _NONE
            if ((others.messages and total[1] - mine[1] >= others.messages)
                    or (others.bytes and total[0] - mine[0] + size > others.bytes)):
                return OTHERS
        if used is _NONE:
            used = self._new_sender(sender)
        used[0] += size
        used[1] += 1
        total[0] += size
        total[1] += 1
        return 0

    def add(self, sender: str, size: int, n: int = 1) -> None:
        self.total[0] += size
        self.total[1] += n
        used = self.senders.get(sender)
        if used is None:
            used = self._new_sender(sender)
        used[0] += size
        used[1] += n
        if used[1] <= 0:
            del self.senders[sender]
            self.pairs[0] -= 1


class Ledger:
    """Tallies per owner. ``seed(owner, since)`` rebuilds one from storage (items stored at
    ``since`` or later; ``since`` is None without a window)."""

    def __init__(self, seed: Callable[[str, float | None], Tally], window: float | None = None,
                 clock: Callable[[], float] = time.time, size: int = CACHE,
                 max_senders: int | None = None) -> None:
        self.seed = seed
        self.window = window
        self.clock = clock
        self.size = size
        self.max_senders = MAX_SENDERS if max_senders is None else max_senders
        self.pairs = [0]  # sender entries over all tallies kept (each Tally counts into it)
        # Insertion order: the first entry is the one written to longest ago (get() re-inserts
        # only on a miss, so this is FIFO, not LRU: cheaper per message, and an evicted tally is
        # rebuilt exactly anyway).
        self._tallies: dict[str, Tally] = {}
        self._w = 0                # the current window's number
        self._w_end = 0.0          # and when it ends

    def _window(self) -> int:
        if self.window is None:
            return 0
        now = self.clock()
        if now >= self._w_end or now < self._w_end - self.window:
            self._w = int(now // self.window)
            self._w_end = (self._w + 1) * self.window
        return self._w

    def window_end(self) -> float:
        """When the current window ends (and its quotas start from zero again)."""
        self._window()
        return self._w_end

    def get(self, owner: str) -> Tally:
        w = self._window()
        t = self._tallies.get(owner)
        if t is None:
            t = self.seed(owner, None if self.window is None else w * self.window)
            t.window = w
            self._put(owner, t)
        elif t.window != w:
            # Every write of the new window goes through get() first: nothing to rebuild.
            t = Tally(w)
            self._put(owner, t)
        if self.pairs[0] >= self.max_senders:
            self._shed(owner)  # (the caller may add one more sender to ``t``)
        return t

    def _put(self, owner: str, t: Tally) -> None:
        tallies = self._tallies
        old = tallies.get(owner)
        if old is not None:
            self.pairs[0] -= len(old.senders)
        elif len(tallies) >= self.size:
            self._evict(next(iter(tallies)))
        t.pairs = self.pairs
        self.pairs[0] += len(t.senders)
        tallies[owner] = t

    def _evict(self, owner: str) -> None:
        self.pairs[0] -= len(self._tallies.pop(owner).senders)

    def _shed(self, keep: str) -> None:
        """Evict the tallies written to longest ago (not ``keep``'s) until below max_senders."""
        for owner in list(self._tallies):
            if self.pairs[0] < self.max_senders:
                return
            if owner != keep:
                self._evict(owner)

    def reset(self, owner: str) -> None:
        """The owner's storage was emptied (the deletion may not be committed yet)."""
        self._put(owner, Tally(self._window()))


def sent_bound(cfg: MAMConfig) -> Bound:
    """What one sender may put into all other accounts' archives together per quota window."""
    return Bound(cfg.max_bytes_to_others)


def archive_bounds(cfg: MAMConfig) -> tuple[Bound, Bound, Bound]:
    """(own sent messages, one sender, all others together) per account and quota window."""
    return (Bound(cfg.max_bytes_own, cfg.max_messages_own),
            Bound(cfg.max_bytes_per_sender, cfg.max_messages_per_sender),
            Bound(cfg.max_bytes_from_others, cfg.max_messages_from_others))


def offline_bounds(cfg: OfflineConfig) -> tuple[Bound, Bound]:
    """(all senders together, one sender) of what waits in one account's offline storage."""
    return (Bound(cfg.max_bytes, cfg.max_messages),
            Bound(cfg.max_bytes_per_sender, cfg.max_messages_per_sender))


def describe_bounds(cfg: Config) -> list[str]:
    """The storage bounds per account, for ``check-config`` and ``archive sizes``."""
    own, sender, others = archive_bounds(cfg.mam)
    total, per_sender = offline_bounds(cfg.offline)
    archive = (f"archive quotas per account and {format_duration(cfg.mam.quota_window)}: "
               f"own sent {own.describe()}; from one sender {sender.describe()}; "
               f"from all others {others.describe()}; "
               f"one sender into all others {sent_bound(cfg.mam).describe()} "
               f"(kept {format_duration(cfg.mam.retention)})")
    if cfg.offline.max_messages == 0:
        return [archive, "offline storage: none (max_messages = 0)"]
    return [archive, f"offline storage per account: {total.describe()}; "
                     f"from one sender {per_sender.describe()}"]
