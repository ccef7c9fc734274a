"""[limits] muc_rooms_per_account: the rate of new rooms one account creates (server.limits)."""

from __future__ import annotations

from mbxmpp.config import LimitsConfig
from mbxmpp.util.ratelimit import Rate
from tests.harness import ServerHarness
from tests.modules.test_muc_support import MODULES, SERVICE, A, B, create, error_of, join


async def test_new_rooms_over_the_rate_get_policy_violation():
    limits = LimitsConfig(muc_rooms_per_account=Rate(1 / 3600, 2))
    async with ServerHarness(modules=MODULES, limits=limits) as h:
        a = await h.login(A, "r1")
        b = await h.login(B, "r1")
        await create(h, a, "alice", f"r0@{SERVICE}")
        await create(h, a, "alice", f"r1@{SERVICE}")
        got = await join(h, a, "alice", f"r2@{SERVICE}")
        assert error_of(got) == "policy-violation"
        err = [s for s in got if s.get("type") == "error"][-1].find("error")
        assert err.get("type") == "wait"
        text = err.findtext("text", "urn:ietf:params:xml:ns:xmpp-stanzas") or ""
        assert text.startswith("too many new rooms; try again in ")
        # Joining existing rooms is not creating; others have their own bucket.
        got = await join(h, b, "bob", f"r1@{SERVICE}")
        assert got and not [s for s in got if s.get("type") == "error"]
        await create(h, b, "bob", f"b0@{SERVICE}")
