"""The server's rate limits ([limits], mbxmpp/util/ratelimit.py): logins per address and account,
and the families other parts take from (stanzas_per_session in the connection, subscriptions in
the presence module, muc_rooms_per_account for the MUC module)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..options import RATE, option
from ..util.ratelimit import Rate, RateLimits


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """abuse: token buckets a normal user never hits
    Each is a sustained rate ("N/s", "N/min", "N/h", "N/day"; 0 = no limit) and <name>_burst, how many at
    once (mbxmpp/util/ratelimit.py). Logins over a limit get SASL <temporary-auth-failure/> with "try
    again in N s"."""
    logins_per_address: Rate = option(Rate(100.0, 10_000), RATE, "every login attempt from one IP address: a "
                                      "carrier NAT's reconnect storm is thousands at once")
    failed_logins_per_address: Rate = option(Rate(10.0, 1_000), RATE, "failed ones from one address (all accounts)")
    logins_per_account: Rate = option(Rate(2.0, 600), RATE, "every attempt for one account (all its devices "
                                      "reconnecting at once fit the burst)")
    failed_logins_per_account: Rate = option(Rate(10 / 60, 30), RATE, "per account AND address: guessing is "
                                             "slowed; an attacker elsewhere cannot lock its user out")
    stanzas_per_session: Rate = option(Rate(5000.0, 50_000), RATE, "over it, reading from the connection waits: "
                                       "bursts slow down, nothing is refused (load tests: per pair)")
    subscriptions_per_account: Rate = option(Rate(100 / 3600, 1_000), RATE, "presence subscription requests "
                                             "sent; over it the request bounces with <policy-violation/>")
    muc_rooms_per_account: Rate = option(Rate(10 / 3600, 100), RATE, "new group chat rooms one account creates; "
                                         "over it <policy-violation/> ([muc] max_rooms_per_user: how many kept)")
    reports_per_account: Rate = option(Rate(100 / 86400, 100), RATE, "spam reports (XEP-0377) recorded from one "
                                       "account; over it the JID is still blocked, not reported")
    bosh_sessions_per_address: Rate = option(Rate(20.0, 2_000), RATE, "new BOSH sessions from one address; over "
                                             "it the request gets <body type='terminate' "
                                             "condition='policy-violation'/>")

    @property
    def rates(self) -> dict[str, Rate]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


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
