"""LDAP: the account is the directory entry whose mail attribute is the JID; the password is
checked by binding as that entry; the plan is an attribute of it.

ldap3 is synchronous: each operation runs in the default executor, one connection per call
(binds change a connection's identity). The JID is escaped into the filter (RFC 4515), so a
username like ``*`` or ``)(uid=*`` matches nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
from functools import partial
from typing import Any

import ldap3
from ldap3.core import exceptions as lexc
from ldap3.utils.conv import escape_filter_chars

from . import CachedLookups, Lookup, Outcome, TTLCache, Verdict, plausible

log = logging.getLogger(__name__)


class LDAPBackend(CachedLookups):
    name = "ldap"
    offers_scram = False

    def __init__(self, uri: str, base_dn: str, *, bind_dn: str = "", bind_password: str = "",
                 filter: str = "(mail={jid})", plan_attribute: str = "", timeout: float = 5.0,
                 cache_ttl: float = 60.0) -> None:
        self.server = ldap3.Server(uri, connect_timeout=timeout, get_info=ldap3.NONE)
        self.base_dn = base_dn
        self.bind_dn = bind_dn
        self.bind_password = bind_password
        self.filter = filter
        self.plan_attribute = plan_attribute
        self.timeout = timeout
        self.cache = TTLCache(cache_ttl)

    def _connection(self, user: str | None = None, password: str | None = None) -> Any:
        return ldap3.Connection(self.server, user=user, password=password, auto_bind=False,
                                receive_timeout=max(1, math.ceil(self.timeout)), raise_exceptions=False,
                                client_strategy=ldap3.SAFE_SYNC)

    def _find(self, jid: str) -> tuple[str, str | None] | None:
        """(dn, plan) of the account's entry, or None; raises on an outage."""
        conn = self._connection(self.bind_dn or None, self.bind_password or None)
        try:
            if not conn.bind()[0]:
                raise lexc.LDAPBindError("service bind refused")
            flt = self.filter.replace("{jid}", escape_filter_chars(jid))
            attrs = [self.plan_attribute] if self.plan_attribute else []
            ok, _result, entries, _ = conn.search(self.base_dn, flt, attributes=attrs, size_limit=2)
            entries = [e for e in entries if e.get("type") == "searchResEntry"]
            if len(entries) != 1:
                return None  # none, or ambiguous: never log in to one of two entries
            entry = entries[0]
            plan = None
            if self.plan_attribute:
                values = entry["attributes"].get(self.plan_attribute) or []
                plan = str(values[0]) if isinstance(values, list) and values else (str(values) if values else None)
            return entry["dn"], plan
        finally:
            conn.unbind()

    def _authenticate(self, jid: str, password: str) -> Verdict:
        if not password:
            return Verdict(Outcome.WRONG, reason="empty password")  # would be an anonymous bind
        try:
            found = self._find(jid)
            if found is None:
                return Verdict(Outcome.WRONG, reason="no such account")
            dn, plan = found
            conn = self._connection(dn, password)
            try:
                ok = conn.bind()[0]
                result = conn.result or {}
            finally:
                conn.unbind()
        except (lexc.LDAPException, OSError) as e:
            log.warning("ldap %s: %s", self.server, type(e).__name__)
            return Verdict(Outcome.UNAVAILABLE, reason="the directory did not answer")
        if ok:
            self.cache.put(jid, Lookup(True, plan))
            return Verdict(Outcome.OK, plan)
        if result.get("result") == 49:  # invalidCredentials
            return Verdict(Outcome.WRONG, reason="wrong password")
        return Verdict(Outcome.UNAVAILABLE, reason=f"bind failed: {result.get('description', '?')}")

    def _lookup(self, jid: str) -> Lookup:
        try:
            found = self._find(jid)
        except (lexc.LDAPException, OSError) as e:
            log.warning("ldap %s: %s", self.server, type(e).__name__)
            return Lookup(None)
        return Lookup(False) if found is None else Lookup(True, found[1])

    async def authenticate(self, jid: str, password: str, remote_ip: str | None = None) -> Verdict:
        if not plausible(jid):
            return Verdict(Outcome.WRONG, reason="malformed username")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, partial(self._authenticate, jid, password))

    async def _ask(self, jid: str) -> Lookup:
        return await asyncio.get_running_loop().run_in_executor(None, partial(self._lookup, jid))

    async def close(self) -> None:
        pass
