"""Authentication backends: where passwords and plans come from.

The internal SCRAM store is the default; a mail provider points the server at the mail system's
own: Dovecot's authentication socket (as Postfix does for SMTP) or LDAP. Every backend answers
the same two questions, asynchronously, and says "unavailable" rather than "wrong password" when
it cannot tell (RFC 6120 §6.5.12: <temporary-auth-failure/>).
"""

from __future__ import annotations

import abc
import enum
import time
from dataclasses import dataclass
from typing import Protocol


class Outcome(enum.Enum):
    OK = "ok"
    WRONG = "wrong"              # no such user or wrong password: <not-authorized/>
    UNAVAILABLE = "unavailable"  # the backend did not answer: <temporary-auth-failure/>


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    plan: str | None = None      # the customer's plan, where the backend knows it
    reason: str = ""             # for the log (never a password)


@dataclass(frozen=True, slots=True)
class Lookup:
    exists: bool | None          # None: the backend did not answer
    plan: str | None = None


class AuthBackend(Protocol):
    name: str
    offers_scram: bool           # SCRAM needs the backend's salted secrets; otherwise PLAIN over TLS

    async def authenticate(self, jid: str, password: str, remote_ip: str | None = None) -> Verdict: ...
    async def lookup(self, jid: str, fresh: bool = False) -> Lookup: ...  # fresh: not from cache
    async def close(self) -> None: ...


def plausible(jid: str) -> bool:
    """A JID the mail system may be asked about: no control characters (nodeprep forbids them;
    a directory may ignore a trailing NUL and match another account)."""
    return bool(jid) and not any(ord(c) < 32 or c == "\x7f" for c in jid)


class TTLCache:
    """Answers of an external backend kept briefly, negative ones too, so that routing a message
    to an account does not ask the mail system each time. Bounded: the oldest entries go first."""

    def __init__(self, ttl: float, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._data: dict[str, tuple[float, Lookup]] = {}

    def get(self, key: str) -> Lookup | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._data[key]
            return None
        return hit[1]

    def put(self, key: str, value: Lookup) -> None:
        if value.exists is None:
            return  # an outage is not an answer
        if len(self._data) >= self.max_entries:
            for k in list(self._data)[: self.max_entries // 10 or 1]:
                del self._data[k]
        self._data[key] = (time.monotonic() + self.ttl, value)

    def forget(self, key: str) -> None:
        self._data.pop(key, None)


class CachedLookups(abc.ABC):
    """What the external backends share: a lookup answered from the brief cache unless
    ``fresh``, asked of the backend (``_ask``) otherwise and remembered (an outage is not)."""

    cache: TTLCache

    async def lookup(self, jid: str, fresh: bool = False) -> Lookup:
        if not plausible(jid):
            return Lookup(False)
        hit = None if fresh else self.cache.get(jid)
        if hit is not None:
            return hit
        found = await self._ask(jid)
        self.cache.put(jid, found)
        return found

    @abc.abstractmethod
    async def _ask(self, jid: str) -> Lookup:
        """The backend's own answer for ``jid`` (Lookup(None) when it did not answer)."""
