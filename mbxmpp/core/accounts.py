"""Accounts: SCRAM credentials only (never the password), the customer's plan, creation time.

Record (keyval store ``accounts``, owner = bare JID): ``{"scram": {mech: record}, "plan": str|None,
"created": float}``, plus ``"disabled": True`` while the operator has disabled it.

Given the server's hooks, creating and deleting an account fire ``ACCOUNT_CREATED`` and
``ACCOUNT_DELETED`` with an :class:`AccountEvent`; the command line, which writes storage itself
only when no daemon runs, has no hooks and fires nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterator

from ..auth import Outcome, Verdict
from ..stream.scram import HASHES, ScramCredential, derive, make_credentials
from ..util.lru import LRU
from . import events as ev

# Routing asks "does this account exist?" for every stanza to a bare JID. Known accounts are
# remembered for a while. A deletion through the daemon (its control socket) forgets at once;
# one written into storage by another process (a bulk import, say) is seen within this time.
EXISTS_TTL = 30.0

if TYPE_CHECKING:
    from ..storage.api import Storage
    from .hooks import HookBus


# PBKDF2 of PLAIN logins (Accounts.login): CPU-bound, so no more threads than cores.
_hashing: ThreadPoolExecutor | None = None


class AccountEvent:
    """What ACCOUNT_CREATED and ACCOUNT_DELETED handlers receive."""

    __slots__ = ("bare", "host", "username")

    def __init__(self, bare: str) -> None:
        self.bare = bare
        self.username, _, self.host = bare.partition("@")

    def __repr__(self) -> str:
        return f"<AccountEvent {self.bare}>"


class Accounts:
    def __init__(self, storage: Storage, iterations: int = 4096, hooks: HookBus | None = None) -> None:
        self.storage = storage
        self.hooks = hooks
        self.store = storage.keyval("accounts")
        self.iterations = iterations
        self._known: LRU[str, float] = LRU(100_000)

    def get(self, bare: str) -> dict[str, Any] | None:
        return self.store.get(bare)

    def exists(self, bare: str) -> bool:
        now = time.monotonic()
        seen = self._known.get(bare)
        if seen is not None and now - seen < EXISTS_TTL:
            return True
        if self.store.get(bare) is None:
            return False
        self._known.put(bare, now)
        return True

    def credential(self, bare: str, mech: str) -> ScramCredential | None:
        rec = self.store.get(bare)
        if rec is None:
            return None
        r = rec.get("scram", {}).get(mech)
        return None if r is None else ScramCredential.from_record(r)

    def check_password(self, bare: str, password: str) -> bool:
        return self._matches(self.store.get(bare), password)

    async def login(self, bare: str, password: str) -> Verdict:
        """``check_password`` for a SASL PLAIN login, with PBKDF2 (~1.3 ms at 4096 iterations)
        off the event loop: hashlib releases the GIL while it hashes, so the loop goes on serving
        the other streams (and a second core hashes). See perf/README.md for the figures."""
        global _hashing
        if _hashing is None:
            _hashing = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="mbxmpp-pbkdf2")
        rec = self.store.get(bare)
        ok = await asyncio.get_running_loop().run_in_executor(_hashing, self._matches, rec, password)
        return Verdict(Outcome.OK if ok else Outcome.WRONG)

    def _matches(self, rec: dict[str, Any] | None, password: str) -> bool:
        try:
            if rec is None:
                # Same work as for a real account, so timing does not reveal which accounts exist.
                derive("SCRAM-SHA-256", password, b"\0" * 16, self.iterations)
                return False
            scram = rec.get("scram", {})
            mech = "SCRAM-SHA-256" if "SCRAM-SHA-256" in scram else next(iter(scram), None)
            if mech is None:
                return False
            cred = ScramCredential.from_record(scram[mech])
            probe = derive(mech, password, cred.salt, cred.iterations)
        except ValueError:  # a password SASLprep refuses matches no account
            return False
        return hmac.compare_digest(probe.stored_key, cred.stored_key)

    def record(self, password: str | None = None, creds: dict[str, ScramCredential] | None = None,
               plan: str | None = None, old: dict[str, Any] | None = None) -> dict[str, Any]:
        rec = dict(old) if old else {"created": time.time(), "plan": plan}
        if plan is not None:
            rec["plan"] = plan
        if password is not None:
            creds = make_credentials(password, self.iterations)
        if creds is not None:
            # New credentials replace all the old ones: an old password must not keep working
            # through a mechanism the new credentials leave out.
            rec["scram"] = {m: c.to_record() for m, c in creds.items()}
        return rec

    async def create(self, bare: str, password: str | None = None,
                     creds: dict[str, ScramCredential] | None = None, plan: str | None = None) -> bool:
        """Create or update an account; returns True if it was new. ACCOUNT_CREATED fires once
        the new account is stored."""
        old = self.store.get(bare)
        await self.store.set(bare, self.record(password, creds, plan, old))
        if old is None and self.hooks is not None:
            self.hooks.fire_all(ev.ACCOUNT_CREATED, AccountEvent(bare))
        return old is None

    def set_credentials(self, bare: str, creds: dict[str, ScramCredential]) -> Any:
        """Replace the account's SCRAM credentials (a new password: the old ones all go)."""
        rec: dict[str, Any] = dict(self.store.get(bare) or self.record())
        rec["scram"] = {m: c.to_record() for m, c in creds.items()}
        return self.store.set(bare, rec)

    def set_disabled(self, bare: str, disabled: bool) -> Any:
        """Disable (logins refused with <account-disabled/>) or enable the account; readers see
        the change at once, the future says when it is durable."""
        rec: dict[str, Any] = dict(self.store.get(bare) or self.record())
        if disabled:
            rec["disabled"] = True
        else:
            rec.pop("disabled", None)
        return self.store.set(bare, rec)

    async def delete(self, bare: str) -> bool:
        """Delete the account and everything stored under it. ACCOUNT_DELETED fires first, while
        the data is still there (the presence module reads the roster to tell the contacts);
        the deletion is queued in the same step, so no reader sees the account half gone."""
        if self.store.get(bare) is None:
            return False
        self._known.pop(bare)
        if self.hooks is not None:
            self.hooks.fire_all(ev.ACCOUNT_DELETED, AccountEvent(bare))
        await self.storage.delete_owner(bare)  # (queued before this coroutine first yields)
        return True

    def list(self, domain: str | None = None) -> Iterator[str]:
        for owner in self.store.owners():
            if domain is None or owner.endswith("@" + domain):
                yield owner

    @staticmethod
    def mechanisms() -> list[str]:
        return list(HASHES)
