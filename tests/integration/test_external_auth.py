"""Accounts from the mail system over the wire: the daemon authenticates against a real Dovecot
(auth sockets) and a real OpenLDAP, with the plan deciding chat (tests/authservers.py)."""

from __future__ import annotations

import asyncio
import base64

import pytest

from tests.authservers import USERS
from tests.daemon import Daemon
from tests.rawclient import RawClient

REFUSAL = "Chat is not part of your plan."


def _daemon(auth: str) -> Daemon:
    d = Daemon(domains=("mb.example",),
               extra=f'[accounts]\nchat_plans = ["paid"]\nrefusal_text = "{REFUSAL}"\n{auth}')
    d.start()
    return d


@pytest.fixture(scope="module")
def dovecot_daemon(dovecot):
    d = _daemon(f'[auth]\nbackend = "dovecot"\n[auth.dovecot]\nclient_socket = "{dovecot.client_socket}"\n'
                f'userdb_socket = "{dovecot.userdb_socket}"\ntimeout = "1s"\ncache_ttl = "1s"\n')
    yield d
    d.finish()


@pytest.fixture(scope="module")
def ldap_daemon(slapd):
    d = _daemon(f'[auth]\nbackend = "ldap"\n[auth.ldap]\nuri = "{slapd.uri}"\n'
                f'base_dn = "ou=people,{slapd.SUFFIX}"\nplan_attribute = "employeeType"\n'
                'timeout = "1s"\ncache_ttl = "1s"\n')
    yield d
    d.finish()


@pytest.fixture(params=["dovecot", "ldap"])
def backend(request):
    return request.param, request.getfixturevalue(f"{request.param}_daemon"), \
        request.getfixturevalue("dovecot" if request.param == "dovecot" else "slapd")


async def _sasl(d: Daemon, user: str, password: str) -> tuple[RawClient, object]:
    c = await RawClient.connect(d.c2s)
    await c.open("mb.example")
    await c.starttls()
    features = await c.open("mb.example")
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    await c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    return c, (features, await c.element(10))


def _condition(el) -> str:  # type: ignore[no-untyped-def]
    return next(ch.tag for ch in el.children if ch.tag != "text")


async def test_mail_password_logs_in_and_only_plain_is_offered(backend):
    _, d, _ = backend
    c, (features, res) = await _sasl(d, "alice", "mail pass")
    mechs = [m.text for c in features.children if c.tag == "mechanisms" for m in c.children]
    assert mechs == ["PLAIN"], mechs  # no SCRAM without the backend's secrets
    assert res.tag == "success", res
    await c.open("mb.example")
    assert (await c.bind("web")).startswith("alice@mb.example/")
    await c.close()


async def test_wrong_password_and_injection_are_not_authorized(backend):
    _, d, _ = backend
    for user, pw in (("alice", "wrong"), ("*", "mail pass"), ("nobody", "x")):
        c, (_, res) = await _sasl(d, user, pw)
        assert res.tag == "failure" and _condition(res) == "not-authorized", (user, res)
        await c.close()


async def test_plan_without_chat_is_refused_with_the_operators_text(backend):
    _, d, _ = backend
    c, (_, res) = await _sasl(d, "light", "lightpw")
    assert res.tag == "failure" and _condition(res) == "account-disabled"
    assert res.findtext("text") == REFUSAL
    await c.close()


async def test_backend_down_is_temporary_auth_failure(backend):
    _, d, server = backend
    server.pause()
    try:
        c, (_, res) = await _sasl(d, "alice", "mail pass")
        assert res.tag == "failure" and _condition(res) == "temporary-auth-failure", res
        await c.close()
    finally:
        server.resume()
    c, (_, res) = await _sasl(d, "alice", "mail pass")
    assert res.tag == "success"
    await c.close()


async def test_downgrade_while_logged_in_ends_the_session(dovecot, dovecot_daemon):
    c = await RawClient.connect(dovecot_daemon.c2s)
    await c.login("bob", USERS["bob@mb.example"][0], to="mb.example")
    dovecot.write_users({**USERS, "bob@mb.example": (USERS["bob@mb.example"][0], "light")})
    try:
        assert await c.stream_error(timeout=10) == "not-authorized"
        c2, (_, res) = await _sasl(dovecot_daemon, "bob", USERS["bob@mb.example"][0])
        assert _condition(res) == "account-disabled"
        await c2.close()
    finally:
        dovecot.write_users(USERS)
        await c.close()


async def test_offline_message_to_a_mail_user_who_never_logged_in(slapd, ldap_daemon):
    sender = await RawClient.connect(ldap_daemon.c2s)
    await sender.login("alice", "mail pass", to="mb.example")
    await sender.send("<message to='bob@mb.example' type='chat' id='o1'><body>waiting for you</body></message>")
    await sender.send("<message to='nobody@mb.example' type='chat' id='o2'><body>lost</body></message>")
    err = await sender.element(10)
    assert err.get("id") == "o2" and err.get("type") == "error"
    assert _condition(err.find("error")) == "service-unavailable"
    bob = await RawClient.connect(ldap_daemon.c2s)
    await bob.login("bob", USERS["bob@mb.example"][0], to="mb.example")
    await bob.send("<presence/>")
    while True:
        m = await bob.element(10)
        if m.tag == "message":
            assert m.findtext("body") == "waiting for you"
            break
    await asyncio.gather(sender.close(), bob.close())
