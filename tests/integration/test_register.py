"""In-Band Registration (XEP-0077) over raw sockets: no sign-up before login, and each bad request
answered with its exact error; password change and removal for the account itself, with the
internal store and with a real Dovecot (the mail system owns the account there)."""

from __future__ import annotations

import base64
from typing import Iterator

import pytest

from mbxmpp.xml import Element
from tests.authservers import USERS
from tests.daemon import Daemon
from tests.rawclient import RawClient, connect_client

PASSWORD = "pw-register"
NS_REG = "jabber:iq:register"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(domains=("localhost", "example.test"))
    for u in ("alice@localhost", "bob@localhost", "carol@localhost", "dave@localhost",
              "erin@localhost", "zed@example.test"):
        d.add_user(u, PASSWORD)
    d.start()
    yield d
    d.finish()


def external_daemon(auth: str) -> Iterator[Daemon]:
    d = Daemon(domains=("mb.example",), extra=f'[accounts]\nchat_plans = ["paid"]\n{auth}')
    d.start()
    yield d
    d.finish()


@pytest.fixture(scope="module")
def dovecot_daemon(dovecot) -> Iterator[Daemon]:  # type: ignore[no-untyped-def]
    yield from external_daemon(
        f'[auth]\nbackend = "dovecot"\n[auth.dovecot]\nclient_socket = "{dovecot.client_socket}"\n'
        f'userdb_socket = "{dovecot.userdb_socket}"\ntimeout = "2s"\n')


@pytest.fixture(scope="module")
def ldap_daemon(slapd) -> Iterator[Daemon]:  # type: ignore[no-untyped-def]
    yield from external_daemon(
        f'[auth]\nbackend = "ldap"\n[auth.ldap]\nuri = "{slapd.uri}"\n'
        f'base_dn = "ou=people,{slapd.SUFFIX}"\nplan_attribute = "employeeType"\ntimeout = "2s"\n')


@pytest.fixture(params=["dovecot", "ldap"])
def external(request) -> Daemon:  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"{request.param}_daemon")


def query(body: str = "") -> str:
    return f"<query xmlns='{NS_REG}'>{body}</query>"


def stanza_error(el: Element) -> tuple[str, str | None, str | None]:
    """(condition, legacy code, text) of an IQ error."""
    assert el.tag == "iq" and el.get("type") == "error", el
    err = el.find("error")
    assert err is not None, el
    cond = next(c.tag for c in err.elements() if c.ns == NS_STANZAS and c.tag != "text")
    return cond, err.get("code"), err.findtext("text", NS_STANZAS)


async def iq(c: RawClient, type_: str, body: str, id_: str = "r1", to: str = "") -> Element:
    await c.send(f"<iq type='{type_}' id='{id_}'{f' to={to!r}' if to else ''}>{body}</iq>")
    return await c.element()


async def logged_in(d: Daemon, user: str, password: str = PASSWORD, resource: str = "raw",
                    domain: str = "localhost") -> RawClient:
    c = await RawClient.connect(d.c2s)
    await c.login(user, password, to=domain, resource=resource)
    return c


async def sasl_plain(d: Daemon, user: str, password: str, domain: str = "localhost") -> Element:
    """A fresh login attempt: the <success/> or <failure/> element."""
    c = await RawClient.connect(d.c2s)
    await c.secure_open(domain)
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    await c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    res = await c.element(10)
    await c.close()
    return res


# -- before authentication ------------------------------------------------------------------------

async def test_no_register_stream_feature(daemon):
    c = await RawClient.connect(daemon.c2s)
    features = await c.secure_open()
    assert features.find("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl") is not None
    assert features.find("register", "http://jabber.org/features/iq-register") is None
    await c.close()


async def test_before_login_there_is_no_sign_up(daemon, transport):
    c = await connect_client(daemon, transport)
    await c.secure_open()
    # §3.1: the host does not offer in-band registration: <service-unavailable/>.
    cond, code, text = stanza_error(await iq(c, "get", query(), "g1", to="localhost"))
    assert (cond, code) == ("service-unavailable", "503")
    assert "mail" in (text or "")
    # Registering: <not-allowed/>, and the request (with its password) is not echoed.
    reply = await iq(c, "set", query("<username>mallory</username><password>pw</password>"), "s1")
    assert stanza_error(reply)[:2] == ("not-allowed", "405")
    assert reply.find("query", NS_REG) is None and b"pw" not in reply.to_bytes()
    assert reply.get("id") == "s1"
    # Removing an account before logging in: §3.2 'not previously registered'.
    cond, code, _ = stanza_error(await iq(c, "set", query("<remove/>"), "s2"))
    assert (cond, code) == ("registration-required", "407")
    # An IQ without an id is a bad request (RFC 6120 §8.2.3).
    await c.send(f"<iq type='get'>{query()}</iq>")
    assert stanza_error(await c.element())[0] == "bad-request"
    # The stream is still usable: the same client logs in afterwards.
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    await c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    assert (await c.element()).tag == "success"
    await c.close()


@pytest.mark.parametrize("secure,stanza", [
    (True, "<iq type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>"),  # not ours
    (True, f"<iq type='result' id='x1'>{query()}</iq>"),   # nobody's answer
    # Encryption is required: nothing but STARTTLS before it (a password would go in clear).
    (False, f"<iq type='get' id='g1'>{query()}</iq>"),
])
async def test_before_login_anything_else_ends_the_stream(daemon, secure, stanza):
    c = await RawClient.connect(daemon.c2s)
    await (c.secure_open() if secure else c.open())
    await c.send(stanza)
    assert await c.stream_error() == "not-authorized"
    await c.close()


# -- after authentication: reading and bad requests --------------------------------------------

async def test_registered_account_reads_its_registration(daemon):
    c = await logged_in(daemon, "alice")
    for to in ("", "localhost", "alice@localhost"):
        reply = await iq(c, "get", query(), "g1", to=to)
        assert reply.get("type") == "result", reply
        q = reply.find("query", NS_REG)
        assert q is not None and q.find("registered") is not None
        assert q.findtext("username") == "alice"
        assert q.find("password") is not None and not q.findtext("password")
    await c.close()


async def test_disco_advertises_register_on_the_domain_only(daemon):
    c = await logged_in(daemon, "alice")
    info = "<query xmlns='http://jabber.org/protocol/disco#info'/>"
    domain = await iq(c, "get", info, "d1", to="localhost")
    account = await iq(c, "get", info, "d2", to="alice@localhost")
    assert NS_REG in [f.get("var") for f in domain.first_child().findall("feature")]  # type: ignore[union-attr]
    assert NS_REG not in [f.get("var") for f in account.first_child().findall("feature")]  # type: ignore[union-attr]
    await c.close()


@pytest.mark.parametrize("body,condition", [
    ("<username>alice</username>", "bad-request"),                           # no password
    ("<username>alice</username><password/>", "bad-request"),                # empty: kept (§3.3)
    ("<password>new</password>", "bad-request"),                             # no username
    ("<username>bob</username><password>new</password>", "bad-request"),     # not this account
    ("<username>alice@example.test</username><password>new</password>", "bad-request"),
    ("<username>ali ce</username><password>new</password>", "bad-request"),  # not a localpart
    ("<remove/><username>alice</username>", "bad-request"),                  # remove not alone
    ("<username>alice</username><password>bad\ue000pw</password>", "not-acceptable"),  # SASLprep
    ("", "bad-request"),
])
async def test_bad_requests_get_the_xep_errors_and_change_nothing(daemon, body, condition):
    c = await logged_in(daemon, "alice")
    reply = await iq(c, "set", query(body), "b1")
    assert stanza_error(reply)[0] == condition, reply
    assert reply.find("query", NS_REG) is None  # §3.3: the request is not returned
    # The session goes on, and the password is unchanged.
    assert (await iq(c, "get", "<ping xmlns='urn:xmpp:ping'/>", "p1")).get("type") == "result"
    await c.close()
    assert (await sasl_plain(daemon, "alice", PASSWORD)).tag == "success"


async def test_another_accounts_registration_is_forbidden(daemon):
    c = await logged_in(daemon, "alice")
    for type_, body in (("get", ""), ("set", "<username>bob</username><password>x</password>"),
                        ("set", "<remove/>")):
        cond, code, _ = stanza_error(await iq(c, type_, query(body), "f1", to="bob@localhost"))
        assert (cond, code) == ("forbidden", "403")
    # Another of this server's domains is not alice's home: she has no account there.
    cond, _, _ = stanza_error(await iq(c, "get", query(), "f2", to="example.test"))
    assert cond == "service-unavailable"
    cond, _, _ = stanza_error(await iq(c, "set", query("<remove/>"), "f3", to="example.test"))
    assert cond == "registration-required"
    await c.close()
    assert (await sasl_plain(daemon, "bob", PASSWORD)).tag == "success"


# -- password change and removal -----------------------------------------------------------------

async def test_password_change_keeps_this_session_and_resets_the_others(daemon):
    asking = await logged_in(daemon, "carol", resource="phone")
    other = await logged_in(daemon, "carol", resource="laptop")
    reply = await iq(asking, "set", query("<username>carol</username><password>fresh pw</password>"), "c1")
    assert reply.get("type") == "result", reply
    assert await other.stream_error() == "reset"  # as `user passwd` does
    # The asking session goes on.
    assert (await iq(asking, "get", "<ping xmlns='urn:xmpp:ping'/>", "p1")).get("type") == "result"
    await asking.send("</stream:stream>")
    await asking.expect_closed()
    old = await sasl_plain(daemon, "carol", PASSWORD)
    assert old.tag == "failure" and old.first_child().tag == "not-authorized"  # type: ignore[union-attr]
    assert (await sasl_plain(daemon, "carol", "fresh pw")).tag == "success"
    c = await logged_in(daemon, "carol", "fresh pw")  # SCRAM-less PLAIN login binds too
    await c.close()


async def test_username_as_bare_jid_is_accepted(daemon):
    c = await logged_in(daemon, "erin")
    reply = await iq(c, "set", query("<username>Erin@localhost</username><password>pw two</password>"), "c1")
    assert reply.get("type") == "result", reply
    await c.close()
    assert (await sasl_plain(daemon, "erin", "pw two")).tag == "success"


async def test_removal_answers_then_ends_every_stream_and_deletes_the_account(daemon):
    asking = await logged_in(daemon, "dave", resource="phone")
    other = await logged_in(daemon, "dave", resource="laptop")
    # Something stored for dave, to see it go with the account.
    await asking.send("<iq type='set' id='r0'><query xmlns='jabber:iq:roster'>"
                      "<item jid='alice@localhost'/></query></iq>")
    while True:
        el = await asking.element()
        if el.get("id") == "r0":
            break
    await asking.send(f"<iq type='set' id='u1'>{query('<remove/>')}</iq>")
    while True:  # (a roster push may come first)
        el = await asking.element()
        if el.tag == "iq" and el.get("id") == "u1":
            break
    assert el.get("type") == "result", el
    assert await asking.stream_error() == "not-authorized"  # §3.2
    assert await other.stream_error() == "not-authorized"
    res = await sasl_plain(daemon, "dave", PASSWORD)
    assert res.tag == "failure" and res.first_child().tag == "not-authorized"  # type: ignore[union-attr]
    listed = daemon.cli("user", "list").stdout.split()
    assert "dave@localhost" not in listed and "alice@localhost" in listed
    # Its data went with it (ACCOUNT_DELETED): a new account of that name starts empty.
    daemon.add_user("dave@localhost", "another pw")
    c = await logged_in(daemon, "dave", "another pw")
    roster = await iq(c, "get", "<query xmlns='jabber:iq:roster'/>", "r1")
    assert roster.get("type") == "result" and roster.first_child().findall("item") == []  # type: ignore[union-attr]
    await c.close()


# -- an external backend (Dovecot, LDAP): the mail system owns the account -------------------------------------

async def test_with_a_mail_backend_the_mail_provider_owns_password_and_account(external):
    password = USERS["alice@mb.example"][0]
    c = await logged_in(external, "alice", password, domain="mb.example")
    reply = await iq(c, "get", query(), "g1")
    q = reply.find("query", NS_REG)
    assert reply.get("type") == "result" and q is not None and q.find("registered") is not None
    assert q.findtext("username") == "alice" and q.find("password") is None
    cond, code, text = stanza_error(await iq(c, "set", query(
        "<username>alice</username><password>new mail pw</password>"), "c1"))
    assert (cond, code) == ("not-allowed", "405") and "mail password" in (text or "")
    cond, code, text = stanza_error(await iq(c, "set", query("<remove/>"), "u1"))
    assert (cond, code) == ("not-allowed", "405") and "mail provider" in (text or "")
    # Bad requests stay bad requests; another account stays forbidden.
    assert stanza_error(await iq(c, "set", query("<username>alice</username>"), "b1"))[0] == "bad-request"
    assert stanza_error(await iq(c, "set", query("<remove/>"), "f1", to="bob@mb.example"))[0] == "forbidden"
    # Not advertised: clients do not offer a password change that always fails.
    info = await iq(c, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", "d1", to="mb.example")
    assert NS_REG not in [f.get("var") for f in info.first_child().findall("feature")]  # type: ignore[union-attr]
    # Still logged in, and the mail password still works.
    assert (await iq(c, "get", "<ping xmlns='urn:xmpp:ping'/>", "p1")).get("type") == "result"
    await c.close()
    assert (await sasl_plain(external, "alice", password, "mb.example")).tag == "success"
    # Before login, the same: no sign-up.
    c = await RawClient.connect(external.c2s)
    await c.secure_open("mb.example")
    assert stanza_error(await iq(c, "set", query("<username>new</username><password>x</password>"), "s1"))[0] \
        == "not-allowed"
    await c.close()
