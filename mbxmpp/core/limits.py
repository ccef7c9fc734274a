"""The server's rate limits ([limits], mbxmpp/util/ratelimit.py): logins per address and account,
and the families other parts take from (stanzas_per_session in the connection, subscriptions in
the presence module, muc_rooms_per_account for the MUC module)."""

from __future__ import annotations

import math

from ..config import LimitsConfig
from ..util.ratelimit import RateLimits


def _retry(wait: float) -> str:
    return f"try again in {max(1, math.ceil(wait))} s"


class ServerLimits(RateLimits):
    def __init__(self, cfg: LimitsConfig) -> None:
        super().__init__(dict(cfg.rates))

    def login_attempt(self, ip: str) -> str | None:
        """A SASL exchange starts from ``ip``: a refusal text if over the address's rates."""
        wait = self.peek("failed_logins_per_address", ip) or self.take("logins_per_address", ip)
        return None if not wait else "too many login attempts from your address; " + _retry(wait)

    def login_outcome(self, ip: str, account: str, ok: bool) -> str | None:
        """SASL decided (``ok``) for ``account`` from ``ip``: a refusal text replaces the
        verdict if over a rate. Failures are counted per account *and* address, so that an
        attacker elsewhere cannot lock the account's user out."""
        key = (account, ip)
        wait = (self.peek("failed_logins_per_account", key)
                or self.take("logins_per_account", account))
        if wait:
            return "too many login attempts for this account; " + _retry(wait)
        if not ok:
            self.take("failed_logins_per_address", ip)
            self.take("failed_logins_per_account", key)
        return None
