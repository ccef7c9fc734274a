"""The external authentication backends against the real thing: Dovecot's auth sockets and an
OpenLDAP slapd, seeded with accounts and plans (tests/authservers.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from mbxmpp.auth import Outcome
from mbxmpp.auth.dovecot import DovecotBackend
from mbxmpp.auth.ldap import LDAPBackend
from tests.authservers import Dovecot, Slapd


def dovecot_backend(d: Dovecot, **kw) -> DovecotBackend:  # type: ignore[no-untyped-def]
    return DovecotBackend(d.client_socket, d.userdb_socket, **kw)


def ldap_backend(s: Slapd, **kw) -> LDAPBackend:  # type: ignore[no-untyped-def]
    return LDAPBackend(s.uri, f"ou=people,{s.SUFFIX}", plan_attribute="employeeType", **kw)


@pytest.fixture(params=["dovecot", "ldap"])
def backend(request, dovecot, slapd):
    b = dovecot_backend(dovecot) if request.param == "dovecot" else ldap_backend(slapd)
    yield b
    asyncio.get_event_loop_policy()  # (closed by the test's loop)


async def test_password_and_plan(backend):
    v = await backend.authenticate("alice@mb.example", "mail pass")
    assert v.outcome is Outcome.OK and v.plan == "paid"
    v = await backend.authenticate("light@mb.example", "lightpw")
    assert v.outcome is Outcome.OK and v.plan == "light"
    assert (await backend.authenticate("alice@mb.example", "wrong")).outcome is Outcome.WRONG
    assert (await backend.authenticate("nobody@mb.example", "x")).outcome is Outcome.WRONG
    assert (await backend.authenticate("alice@mb.example", "")).outcome is Outcome.WRONG
    await backend.close()


async def test_lookup_for_routing(backend):
    found = await backend.lookup("bob@mb.example")
    assert found.exists is True and found.plan == "paid"
    assert (await backend.lookup("nobody@mb.example")).exists is False
    await backend.close()


@pytest.mark.parametrize("user", ["*", "*@mb.example", ")(uid=*", "alice@mb.example)(|(mail=*",
                                  "alice@mb.example\x00", "a\tb\nc"])
async def test_injection_in_the_username_matches_nothing(backend, user):
    assert (await backend.authenticate(user, "mail pass")).outcome is Outcome.WRONG
    assert (await backend.lookup(user)).exists in (False, None)
    await backend.close()


async def test_a_hanging_dovecot_is_unavailable_not_a_wrong_password(dovecot):
    b = dovecot_backend(dovecot, timeout=1.0, cache_ttl=0.01)
    assert (await b.authenticate("alice@mb.example", "mail pass")).outcome is Outcome.OK
    dovecot.pause()
    try:
        t0 = time.monotonic()
        v = await b.authenticate("alice@mb.example", "mail pass")
        assert v.outcome is Outcome.UNAVAILABLE and time.monotonic() - t0 < 3
        await asyncio.sleep(0.05)
        assert (await b.lookup("carol@mb.example")).exists is None
    finally:
        dovecot.resume()
    assert (await b.authenticate("alice@mb.example", "mail pass")).outcome is Outcome.OK
    await b.close()


async def test_a_dovecot_socket_that_is_gone_is_unavailable(tmp_path):
    b = DovecotBackend(str(tmp_path / "no-socket"), str(tmp_path / "no-userdb"), timeout=1.0)
    assert (await b.authenticate("alice@mb.example", "x")).outcome is Outcome.UNAVAILABLE
    assert (await b.lookup("alice@mb.example")).exists is None


async def test_a_hanging_ldap_is_unavailable(slapd):
    b = ldap_backend(slapd, timeout=1.0)
    slapd.pause()
    try:
        t0 = time.monotonic()
        assert (await b.authenticate("alice@mb.example", "mail pass")).outcome is Outcome.UNAVAILABLE
        assert time.monotonic() - t0 < 5
    finally:
        slapd.resume()
    assert (await b.authenticate("alice@mb.example", "mail pass")).outcome is Outcome.OK


async def test_negative_answers_are_cached_briefly(dovecot):
    b = dovecot_backend(dovecot, cache_ttl=1.0)
    assert (await b.lookup("new@mb.example")).exists is False
    from tests.authservers import USERS
    dovecot.write_users({**USERS, "new@mb.example": ("pw", "paid")})
    try:
        assert (await b.lookup("new@mb.example")).exists is False  # still the cached answer
        await asyncio.sleep(1.05)
        for _ in range(50):  # (Dovecot notices the file's change on its own schedule)
            if (await b.lookup("new@mb.example")).exists:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the new account never showed up")
    finally:
        dovecot.write_users(USERS)
    await b.close()
