"""Token buckets (mbxmpp/util/ratelimit.py) and the [limits] section."""

from __future__ import annotations

import pytest

from mbxmpp.config import ConfigError, LimitsConfig, load_config
from mbxmpp.core.limits import ServerLimits
from mbxmpp.util.ratelimit import Rate, RateLimits, ReadThrottle

MINIMAL = '[server]\ndomains = ["example.org"]\n'


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_parse_and_describe():
    assert Rate.parse("100/s", 5) == Rate(100.0, 5)
    assert Rate.parse("10/min", 30) == Rate(10 / 60, 30)
    assert Rate.parse("100/h", 1) == Rate(100 / 3600, 1)
    assert Rate.parse("5/day", 1).per_second == 5 / 86400
    assert Rate.parse("0", 9) == Rate()
    for bad in ("100", "x/s", "10/fortnight", "-1/s"):
        with pytest.raises(ValueError):
            Rate.parse(bad, 1)
    assert Rate(10 / 60, 30).describe() == "10/min, burst 30"
    assert Rate().describe() == "unlimited"


def test_take_refuses_without_taking_and_refills():
    clock = Clock()
    rl = RateLimits({"x": Rate(2.0, 3)}, clock=clock)
    assert [rl.take("x", "k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.take("x", "k") == pytest.approx(0.5)   # one token in half a second
    assert rl.take("x", "other") == 0.0             # keys are separate
    clock.now += 0.5
    assert rl.take("x", "k") == 0.0 and rl.peek("x", "k") == pytest.approx(0.5)
    clock.now += 100
    assert rl.peek("x", "k", 3) == 0.0 and rl.peek("x", "k", 4) == pytest.approx(0.5)  # the burst caps


def test_debit_goes_into_debt_and_unlimited_families():
    clock = Clock()
    rl = RateLimits({"x": Rate(10.0, 5), "off": Rate()}, clock=clock)
    assert rl.debit("x", 1, 25) == pytest.approx(2.0)  # 20 in debt at 10/s
    assert rl.take("x", 1) > 0
    assert rl.take("off", 1, 10**9) == 0.0 and rl.take("unknown", 1) == 0.0
    assert not rl.limited("off") and rl.limited("x")


def test_memory_is_bounded_per_family():
    rl = RateLimits({"x": Rate(1.0, 1)}, keys=3)
    for k in range(10):
        rl.take("x", k)
    assert len(rl._buckets["x"]) == 3


def test_read_throttle_pauses_and_resumes():
    class Transport:
        paused = False

        def is_closing(self) -> bool:
            return False

        def pause_reading(self) -> None:
            self.paused = True

        def resume_reading(self) -> None:
            self.paused = False

    class Loop:
        def __init__(self) -> None:
            self.later: list = []

        def time(self) -> float:
            return 0.0

        def call_later(self, delay, fn, *args):  # type: ignore[no-untyped-def]
            self.later.append((delay, fn, args))
            return self

        def cancel(self) -> None:
            pass
    t, loop = Transport(), Loop()
    th = ReadThrottle(Rate(5.0, 10), 0.0)
    th.charge(10, t, loop)
    assert not t.paused and not loop.later
    th.charge(20, t, loop)  # 10 over: two seconds at 5/s
    assert t.paused and loop.later[0][0] == pytest.approx(2.0)
    _, fn, args = loop.later[0]
    fn(*args)
    assert not t.paused


def test_login_limits_count_failures_per_account_and_address():
    clock = Clock()
    lim = ServerLimits(LimitsConfig(failed_logins_per_account=Rate(1 / 60, 2)))
    lim.clock = clock
    assert lim.login_attempt("1.2.3.4") is None
    assert lim.login_outcome("1.2.3.4", "a@x", False) is None
    assert lim.login_outcome("1.2.3.4", "a@x", False) is None
    why = lim.login_outcome("1.2.3.4", "a@x", True)  # the right password, after two failures
    assert why == "too many login attempts for this account; try again in 60 s"
    assert lim.login_outcome("5.6.7.8", "a@x", True) is None  # from elsewhere
    clock.now += 60
    assert lim.login_outcome("1.2.3.4", "a@x", True) is None


def test_limits_section(tmp_path):
    d = load_config(None).limits
    assert d.logins_per_address == Rate(100.0, 10_000)
    assert d.stanzas_per_session == Rate(5000.0, 50_000)
    p = tmp_path / "c.toml"
    p.write_text(MINIMAL + '[limits]\nlogins_per_address = "20/min"\nlogins_per_address_burst = 7\n'
                 'stanzas_per_session = 0\nsubscriptions_per_account_burst = 3\n')
    cfg = load_config(p).limits
    assert cfg.logins_per_address == Rate(20 / 60, 7)
    assert cfg.stanzas_per_session == Rate()
    assert cfg.subscriptions_per_account == Rate(100 / 3600, 3)
    p.write_text(MINIMAL + '[limits]\nlogins_per_account = "lots"\nmuc_rooms_per_account_burst = 0\n'
                 'logins_per_hour = 3\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    errs = str(e.value)
    assert "limits.logins_per_account: invalid rate 'lots'" in errs
    assert "limits.muc_rooms_per_account_burst" in errs and "limits.logins_per_hour" in errs


def test_peek_keeps_no_bucket_for_an_unseen_key():
    # Every login peeks at its (account, address) failures: pairs that never failed must not
    # occupy the family's bounded keys (issue 11, item 5: memory under login churn).
    now = [0.0]
    rl = RateLimits({"f": Rate(1.0, 2.0)}, clock=lambda: now[0], keys=4)
    for i in range(100):
        assert rl.peek("f", ("u@localhost", f"10.0.0.{i}")) == 0.0
    assert rl._buckets["f"] == {}
    assert rl.peek("f", "k", n=3) == 1.0  # a fresh bucket holds the burst (2): 1 s to 3
    assert rl.take("f", "k", 2) == 0.0
    assert rl.peek("f", "k") == 1.0  # empty now
    now[0] = 0.5
    assert rl.peek("f", "k") == 0.5
