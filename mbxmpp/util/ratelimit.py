"""Token buckets: rate limits that a normal user never hits, keyed by anything hashable.

A :class:`Rate` is a sustained rate with a burst: a bucket holds up to ``burst`` tokens and refills
at ``per_second``; an action takes tokens.  :class:`RateLimits` keeps named families of buckets
(one bucket per key: an address, an account, a session) in bounded memory; a family whose rate
is 0 is not limited.  For a feature module::

    wait = server.limits.take("muc_rooms", owner_bare_jid)   # 0.0: allowed, and counted
    if wait:
        raise StanzaError("policy-violation", f"too many new rooms; try again in {ceil(wait)} s")

``take`` refuses without taking anything; ``debit`` always takes (the bucket may go into debt)
and says how long the caller should hold back: back-pressure rather than refusal.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable

KEYS_PER_FAMILY = 100_000  # buckets kept per family; the oldest are forgotten first

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0,
          "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*")


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` tokens a second, at most ``burst`` saved up (per_second 0: no limit)."""
    per_second: float = 0.0
    burst: float = 0.0

    @classmethod
    def parse(cls, text: str, burst: float) -> Rate:
        """``"100/s"``, ``"10/min"``, ``"100/h"``, ``"5/day"``; "0" for no limit."""
        if text.strip() == "0":
            return cls()
        m = _RATE.fullmatch(text)
        if m is None or m.group(2) not in _UNITS:
            raise ValueError(f"invalid rate {text!r} (e.g. '100/s', '10/min', '100/h', '0')")
        return cls(float(m.group(1)) / _UNITS[m.group(2)], float(burst))

    def describe(self) -> str:
        return f"{self.text()}, burst {self.burst:g}" if self.per_second else "unlimited"

    def text(self) -> str:
        """The rate as written in the configuration ("10/min"; "0": no limit)."""
        if not self.per_second:
            return "0"
        for unit, secs in (("s", 1.0), ("min", 60.0), ("h", 3600.0), ("day", 86400.0)):
            n = self.per_second * secs
            if n >= 1 and abs(n - round(n)) < 1e-6:
                return f"{round(n)}/{unit}"
        return f"{self.per_second:g}/s"


class TokenBucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp

    def refill(self, rate: Rate, now: float) -> float:
        t = min(rate.burst, self.tokens + (now - self.stamp) * rate.per_second)
        self.tokens, self.stamp = t, now
        return t


class RateLimits:
    """Families of token buckets by name; ``rates`` maps each family to its :class:`Rate`."""

    def __init__(self, rates: dict[str, Rate], clock: Callable[[], float] = time.monotonic,
                 keys: int = KEYS_PER_FAMILY) -> None:
        self.rates = dict(rates)
        self.clock = clock
        self.keys = keys
        self._buckets: dict[str, dict[Hashable, TokenBucket]] = {n: {} for n in rates}

    def limited(self, family: str) -> bool:
        r = self.rates.get(family)
        return r is not None and r.per_second > 0

    def _bucket(self, family: str, key: Hashable) -> tuple[TokenBucket, Rate, float] | None:
        rate = self.rates.get(family)
        if rate is None or not rate.per_second:
            return None
        now = self.clock()
        buckets = self._buckets[family]
        b = buckets.get(key)
        if b is None:
            if len(buckets) >= self.keys:
                del buckets[next(iter(buckets))]  # the oldest key: most likely full again
            b = buckets[key] = TokenBucket(rate.burst, now)
        else:
            b.refill(rate, now)
        return b, rate, now

    def peek(self, family: str, key: Hashable, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens are there (0.0: now); takes nothing, and keeps nothing for a
        key it has not seen (every login peeks at its (account, address) failures: a bucket each
        would fill the family's keys with pairs that never failed)."""
        rate = self.rates.get(family)
        if rate is None or not rate.per_second:
            return 0.0
        b = self._buckets[family].get(key)
        if b is None:
            return 0.0 if rate.burst >= n else (n - rate.burst) / rate.per_second
        b.refill(rate, self.clock())
        return 0.0 if b.tokens >= n else (n - b.tokens) / rate.per_second

    def take(self, family: str, key: Hashable, n: float = 1.0) -> float:
        """Take ``n`` tokens and return 0.0, or take nothing and return the seconds until they
        are there."""
        got = self._bucket(family, key)
        if got is None:
            return 0.0
        b, rate, _ = got
        if b.tokens >= n:
            b.tokens -= n
            return 0.0
        return (n - b.tokens) / rate.per_second

    def debit(self, family: str, key: Hashable, n: float = 1.0) -> float:
        """Take ``n`` tokens even if that leaves a debt; return the seconds until it is paid."""
        got = self._bucket(family, key)
        if got is None:
            return 0.0
        b, rate, _ = got
        b.tokens -= n
        return 0.0 if b.tokens >= 0 else -b.tokens / rate.per_second

    def forget(self, family: str, key: Hashable) -> None:
        """Drop a key's bucket (its session ended)."""
        self._buckets.get(family, {}).pop(key, None)


class ReadThrottle:
    """Back-pressure on one connection (``stanzas_per_session``): after each read, what the
    stream counted is taken from the bucket; while it is in debt, reading from the connection
    pauses (``transport.pause_reading``), so a burst over the rate is slowed down, never refused.
    ``transport`` and ``loop`` are asyncio's; the caller passes the stream's running count."""

    __slots__ = ("rate", "bucket", "counted", "timer")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.bucket = TokenBucket(rate.burst, now)
        self.counted = 0
        self.timer: Any = None

    paused_total = 0  # how often reading was paused, in this process (for the operator)

    def charge(self, count: int, transport: Any, loop: Any) -> None:
        n = count - self.counted
        if n <= 0:
            return
        self.counted = count
        b = self.bucket
        b.refill(self.rate, loop.time())
        b.tokens -= n
        if b.tokens < 0 and self.timer is None and transport is not None \
                and not transport.is_closing():
            transport.pause_reading()
            ReadThrottle.paused_total += 1
            self.timer = loop.call_later(-b.tokens / self.rate.per_second, self._resume, transport)

    def _resume(self, transport: Any) -> None:
        self.timer = None
        if not transport.is_closing():
            transport.resume_reading()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
