"""PreauthAdmission on a hand-driven clock: the bucket, stalled connections making room, the
global bound, the byte budget, and a table that forgets addresses (its over-the-wire tests are
tests/integration/test_preauth_admission.py)."""

from __future__ import annotations

import pytest

from mbxmpp.config import C2SConfig
from mbxmpp.core.admission import PreauthAdmission, Ticket, address_key
from mbxmpp.errors import StreamError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Conn:
    """What a transport does with its ticket."""

    def __init__(self, adm: PreauthAdmission, ip: str) -> None:
        self.ended: StreamError | None = None
        self.ticket: Ticket = adm.admit(ip, self.evicted)

    def evicted(self, err: StreamError) -> None:
        self.ended = err


def make(**kw) -> tuple[PreauthAdmission, Clock]:
    clock = Clock()
    args = {"max_total": 100, "max_per_address": 3, "stall_after": 10.0, "burst": 10, "rate": 2.0}
    args.update(kw)
    return PreauthAdmission(clock=clock, **args), clock  # type: ignore[arg-type]


def refusal(adm: PreauthAdmission, ip: str) -> str:
    with pytest.raises(StreamError) as e:
        adm.admit(ip, lambda err: None)
    return e.value.condition


def test_address_key_groups_an_ipv6_64_and_unmaps_ipv4():
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2::5") == address_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::5") != address_key("2001:db8:1:2::5")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("fe80::1%eth0") == "fe80::/64"


def test_bucket_refuses_the_burst_overflow_and_refills():
    adm, clock = make(max_per_address=100)
    conns = [Conn(adm, "192.0.2.1") for _ in range(10)]
    assert refusal(adm, "192.0.2.1") == "policy-violation"
    assert Conn(adm, "192.0.2.2").ticket  # another address has its own bucket
    clock.now += 0.5  # one token back at 2 a second
    Conn(adm, "192.0.2.1")
    assert refusal(adm, "192.0.2.1") == "policy-violation"
    assert adm.count("192.0.2.1") == 11 and all(c.ended is None for c in conns)


def test_authenticating_gives_the_token_back():
    adm, _ = make(max_per_address=100)
    for _ in range(50):  # five times the burst, at once, all of them logging in
        c = Conn(adm, "192.0.2.1")
        c.ticket.authenticated()
    assert adm.count() == 0
    for _ in range(10):
        Conn(adm, "192.0.2.1")
    assert refusal(adm, "192.0.2.1") == "policy-violation"


def test_over_the_address_budget_the_longest_stalled_makes_room():
    adm, clock = make()
    a, b, c = (Conn(adm, "192.0.2.1") for _ in range(3))
    d = Conn(adm, "192.0.2.1")  # over the budget, but nobody has stalled: admitted
    assert adm.count("192.0.2.1") == 4 and not any(x.ended for x in (a, b, c))
    clock.now += 5
    a.ticket.progress()  # a made a step: b is now the one stalled longest
    clock.now += 6
    e = Conn(adm, "192.0.2.1")
    assert b.ended is not None and b.ended.condition == "policy-violation"
    assert a.ended is None and c.ended is None and d.ended is None
    assert adm.count("192.0.2.1") == 4
    b.ticket.release()  # the transport ends it: nothing happens twice
    assert adm.count("192.0.2.1") == 4
    Conn(adm, "192.0.2.1")
    assert c.ended is not None and adm.count("192.0.2.1") == 4
    assert e.ended is None


def test_global_bound_ends_the_longest_stalled_anywhere_or_refuses():
    adm, clock = make(max_total=4)
    conns = [Conn(adm, f"192.0.2.{i}") for i in range(4)]
    assert refusal(adm, "192.0.2.9") == "resource-constraint"  # none stalled yet
    clock.now += 11
    for c in conns[:2] + conns[3:]:
        c.ticket.progress()
    Conn(adm, "192.0.2.9")
    assert [c.ended is not None for c in conns] == [False, False, True, False]
    assert conns[2].ended.condition == "resource-constraint"  # type: ignore[union-attr]
    assert adm.count() == 4


def test_preauth_bytes_are_bounded():
    adm, _ = make(max_bytes=1000)
    c = Conn(adm, "192.0.2.1")
    assert c.ticket.take_bytes(600) and c.ticket.take_bytes(400)
    assert not c.ticket.take_bytes(1)


def test_the_table_forgets_addresses_whose_bucket_has_refilled():
    adm, clock = make()
    for i in range(1000):
        Conn(adm, f"10.0.{i // 250}.{i % 250}").ticket.release()
    clock.now += 10 / 2.0 + 0.1  # burst / rate: every bucket is full again
    Conn(adm, "192.0.2.1")
    assert len(adm._addresses) == 1 and len(adm._idle) == 0


def test_defaults_come_from_the_config():
    adm = PreauthAdmission.from_config(C2SConfig())
    assert (adm.max_total, adm.max_per_address, adm.stall_after, adm.burst, adm.rate) == \
        (5000, 10, 10.0, 300, 30)


def test_config_keys_old_and_new(tmp_path):
    from mbxmpp.config import ConfigError, load_config
    path = tmp_path / "mbxmpp.toml"
    base = '[server]\ndomains = ["example.org"]\n[c2s]\n'
    # The old key alone keeps working (now: the budget beyond which stalled ones make room).
    path.write_text(base + "max_unauthenticated_per_ip = 3\n")
    c2s = load_config(str(path)).c2s
    assert c2s.max_unauthenticated_per_ip == 3 and c2s.connection_burst_per_ip == 300
    path.write_text(base + 'max_unauthenticated = 7\nstalled_after = "5s"\n'
                    "connection_burst_per_ip = 50\nconnection_rate_per_ip = 4\n")
    adm = PreauthAdmission.from_config(load_config(str(path)).c2s)
    assert (adm.max_total, adm.stall_after, adm.burst, adm.rate) == (7, 5.0, 50, 4)
    path.write_text(base + 'connection_rate_per_ip = 0\nstalled_after = "soon"\n')
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert [err.split(":")[0] for err in e.value.errors] == ["c2s.stalled_after",
                                                           "c2s.connection_rate_per_ip"]
