"""[auth]: where passwords and plans come from (read by mbxmpp/options.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from ..options import DURATION, STR, TABLE, ErrorFn, one_of, option, show

AUTH_BACKENDS = ("internal", "dovecot", "ldap")


def _ldap_filter(f: str) -> str:
    if "{jid}" not in f:
        raise ValueError(f"must contain {{jid}}, got {show(f)}")
    return f


@dataclass(frozen=True, slots=True)
class DovecotAuthConfig:
    """backend = "dovecot": Dovecot's auth sockets, as Postfix uses them"""
    client_socket: str = option("/run/dovecot/auth-client", STR, "checks passwords (SASL PLAIN over TLS only: "
                                "no SCRAM secrets in Dovecot)")
    userdb_socket: str = option("/run/dovecot/auth-userdb", STR, "account lookups, so messages reach users "
                                'who never logged in; "" = none', allow_empty=True)
    plan_field: str = option("plan", STR, "passdb/userdb extra field holding the plan ([accounts] chat_plans)")
    timeout: float = option(5.0, DURATION, 'no answer within this: <temporary-auth-failure/>, never "wrong '
                            'password"')
    cache_ttl: float = option(60.0, DURATION, "answers kept this long; online accounts' plans re-read this often")


@dataclass(frozen=True, slots=True)
class LDAPAuthConfig:
    """backend = "ldap": the account is the entry whose mail is the address"""
    uri: str = option("ldap://127.0.0.1", STR, "ldap:// or ldaps://")
    base_dn: str = option("", STR, "where accounts are searched (required for ldap)", allow_empty=True,
                          example="ou=people,dc=example,dc=org")
    bind_dn: str = option("", STR, 'service account for the search; "" = anonymous', allow_empty=True)
    bind_password: str = option("", STR, "its password", allow_empty=True)
    filter: str = option("(mail={jid})", STR, "{jid}: the escaped address (RFC 4515)", check=_ldap_filter)
    plan_attribute: str = option("", STR, 'attribute holding the plan, e.g. "employeeType"; "" = default_plan '
                                 "for all", allow_empty=True)
    timeout: float = option(5.0, DURATION, "no answer within this: <temporary-auth-failure/>")
    cache_ttl: float = option(60.0, DURATION, "answers kept this long; online accounts' plans re-read this often")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """where passwords and plans come from"""
    backend: str = option("internal", STR, "internal (SCRAM store, `user add`), dovecot or ldap: the mail "
                          "system's accounts", check=one_of(AUTH_BACKENDS))
    dovecot: DovecotAuthConfig = option(DovecotAuthConfig, TABLE, "", factory=True)
    ldap: LDAPAuthConfig = option(LDAPAuthConfig, TABLE, "", factory=True)

    def validate(self, error: ErrorFn) -> Self:
        if self.backend == "ldap" and not self.ldap.base_dn:
            error("ldap.base_dn", 'required with backend = "ldap" (in [auth.ldap], with uri)')
        return self
