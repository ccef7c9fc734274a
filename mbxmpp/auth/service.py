"""Accounts that live in the mail system (Dovecot, LDAP): logins, existence for routing, and the
plan that decides chat, kept in step with the backend while users are online.

An account the backend knows gets a local record (no credentials, its plan, ``external``) the
first time it logs in or is looked up, so that rosters, offline messages and archives have an
owner; the backend stays the authority: its plan is re-read at every login and, for online
accounts, every ``cache_ttl``; a plan without chat ends the sessions at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from ..errors import StreamError
from . import AuthBackend, Lookup, Outcome, Verdict

if TYPE_CHECKING:
    from ..config import AuthConfig
    from ..server import Server

log = logging.getLogger(__name__)

# Stanzas held per unknown account while the backend is asked (beyond: bounced at once).
MAX_WAITING = 100


def open_backend(cfg: AuthConfig) -> AuthBackend | None:
    """The configured external backend, or None for the internal SCRAM store."""
    if cfg.backend == "dovecot":
        from .dovecot import DovecotBackend
        d = cfg.dovecot
        return DovecotBackend(d.client_socket, d.userdb_socket or None, plan_field=d.plan_field,
                              timeout=d.timeout, cache_ttl=d.cache_ttl)
    if cfg.backend == "ldap":
        from .ldap import LDAPBackend
        lc = cfg.ldap
        return LDAPBackend(lc.uri, lc.base_dn, bind_dn=lc.bind_dn, bind_password=lc.bind_password,
                           filter=lc.filter, plan_attribute=lc.plan_attribute, timeout=lc.timeout,
                           cache_ttl=lc.cache_ttl)
    return None


class ExternalAccounts:
    def __init__(self, server: Server, backend: AuthBackend, cache_ttl: float) -> None:
        self.server = server
        self.backend = backend
        self.recheck_every = cache_ttl   # plans of online accounts are re-read this often
        self.negative_ttl = cache_ttl
        self._negative: dict[str, float] = {}          # bare -> until (monotonic)
        self._waiting: dict[str, list[Callable[[], None]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recheck: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._recheck = asyncio.ensure_future(self._recheck_loop())

    async def stop(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
        for t in list(self._tasks):
            t.cancel()
        await self.backend.close()

    # -- logins -------------------------------------------------------------------------------
    async def login(self, bare: str, password: str, remote_ip: str | None) -> Verdict:
        verdict = await self.backend.authenticate(bare, password, remote_ip)
        if verdict.outcome is Outcome.OK:
            await self._remember(bare, verdict.plan)
        log.info("login %s via %s: %s%s", bare, self.backend.name, verdict.outcome.value,
                 f" ({verdict.reason})" if verdict.reason and verdict.outcome is not Outcome.OK else "")
        return verdict

    async def _remember(self, bare: str, plan: str | None) -> None:
        """A local record for an account the backend knows, with the backend's plan."""
        self._negative.pop(bare, None)
        accounts = self.server.accounts
        rec = accounts.get(bare)
        if rec is None:
            await accounts.create(bare, plan=plan)
            rec = accounts.get(bare) or {}
            await accounts.store.set(bare, {**rec, "external": True})
        elif rec.get("plan") != plan or not rec.get("external"):
            await accounts.store.set(bare, {**rec, "plan": plan, "external": True})

    # -- existence for routing ------------------------------------------------------------------
    def exists(self, bare: str) -> bool | None:
        """True or False when known now; None while the backend is asked (see when_known)."""
        if self.server.accounts.exists(bare):
            return True
        until = self._negative.get(bare)
        if until is not None:
            if until > time.monotonic():
                return False
            del self._negative[bare]
        if bare not in self._waiting:
            self._waiting[bare] = []
            self._spawn(self._lookup(bare))
        return None

    def when_known(self, bare: str, fn: Callable[[], None]) -> bool:
        """Run ``fn`` once the backend has answered for ``bare``; False when too many wait."""
        waiting = self._waiting.get(bare)
        if waiting is None or len(waiting) >= MAX_WAITING:
            return False
        waiting.append(fn)
        return True

    async def _lookup(self, bare: str) -> None:
        found = Lookup(None)
        try:
            found = await self.backend.lookup(bare)
            if found.exists:
                await self._remember(bare, found.plan)
            else:
                # Unknown or no answer: not an account for now (an outage is not remembered
                # long: the next stanza asks again after a short while).
                ttl = self.negative_ttl if found.exists is False else min(5.0, self.negative_ttl)
                self._negative[bare] = time.monotonic() + ttl
        finally:
            for fn in self._waiting.pop(bare, ()):
                try:
                    fn()
                except Exception:
                    log.exception("routing after the lookup of %s failed", bare)

    # -- plans of online accounts -----------------------------------------------------------------
    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_every)
            try:
                await self.recheck_online()
            except Exception:
                log.exception("re-checking the plans of online accounts failed")

    async def recheck_online(self) -> int:
        """Ask the backend for the plan of every online account; end the sessions of those whose
        plan no longer includes chat (or that are gone). Returns how many accounts ended."""
        ended = 0
        acfg = self.server.config.accounts
        for bare in list(self.server.sessions.by_bare):
            found = await self.backend.lookup(bare, fresh=True)
            if found.exists is None:
                continue  # an outage never ends sessions
            if found.exists is False:
                self.server.end_sessions(bare, StreamError("not-authorized", "the account no longer exists"))
                ended += 1
                continue
            await self._remember(bare, found.plan)
            if not acfg.allows_chat(found.plan):
                self.server.end_sessions(bare, StreamError("not-authorized", acfg.refusal_text))
                ended += 1
        return ended

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
