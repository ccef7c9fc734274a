"""In-band registration (XEP-0077) before authentication against hostile input, over TCP and
WebSocket: only the server's own registration IQ is answered (with its stanza error); anything
else before authentication ends the stream with <not-authorized/> (RFC 6120 §4.9.3.12), and the
pre-auth byte budget bounds a flood (<policy-violation/>). The server goes on serving."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.daemon import Daemon
from tests.integration.test_register import NS_REG, PASSWORD, iq, query, stanza_error
from tests.rawclient import RawClient, connect_client


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(domains=("localhost", "example.test"))
    for u in ("alice@localhost", "bob@localhost"):
        d.add_user(u, PASSWORD)
    d.start()
    yield d
    d.finish()


@pytest.fixture(params=["tcp", "ws"])
def transport(request):  # type: ignore[no-untyped-def]
    return request.param


async def still_serving(d: Daemon) -> None:
    c = await RawClient.connect(d.c2s)
    await c.login("bob", PASSWORD, resource="check")
    await c.send("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await c.element()).get("id") == "alive"
    await c.close()


@pytest.mark.parametrize("stanza", [
    f"<iq type='error' id='e1'>{query()}</iq>",                              # nobody's answer
    f"<iq type='error' id='e2'>{query()}<error type='cancel'><bad-request "
    "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
    "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
    "<iq type='get' id='n1'/>",                                               # no payload
    f"<iq type='get' id='x1'><query xmlns='{NS_REG}x'/></iq>",               # a namespace near ours
    f"<iq type='get' id='w1'><wrong xmlns='{NS_REG}'/></iq>",                # our namespace, not <query/>
    f"<message type='chat' to='alice@localhost'><body>hi</body>{query()}</message>",
    f"<presence>{query()}</presence>",
    # registration addressed elsewhere: not this server's to answer (nor to answer for)
    f"<iq type='get' id='o1' to='example.org'>{query()}</iq>",
    f"<iq type='set' id='o2' to='example.org'>{query('<username>m</username><password>p</password>')}</iq>",
    f"<iq type='get' id='o3' to='alice@localhost'>{query()}</iq>",
    f"<iq type='get' id='o4' to='localhost/res'>{query()}</iq>",
    f"<iq type='get' id='o5' to='example.test'>{query()}</iq>",               # our other domain
])
async def test_before_login_only_the_servers_registration_is_answered(daemon, transport, stanza):
    c = await connect_client(daemon, transport)
    await c.secure_open()
    await c.send(stanza)
    assert await c.stream_error() == "not-authorized"
    await c.close()
    await still_serving(daemon)


async def test_registration_addressed_to_the_stream_host_is_answered(daemon, transport):
    """The other served domain, when the stream is to it; and a bare or absent 'to'."""
    c = await connect_client(daemon, transport)
    await c.secure_open("example.test")
    reply = await iq(c, "get", query(), "t1", to="example.test")
    assert stanza_error(reply)[:2] == ("service-unavailable", "503")
    assert reply.get("from") in (None, "example.test")
    reply = await iq(c, "get", query(), "t2")
    assert stanza_error(reply)[:2] == ("service-unavailable", "503")
    reply = await iq(c, "get", query(), "t3", to="Example.TEST")  # the same domain (RFC 7622)
    assert stanza_error(reply)[:2] == ("service-unavailable", "503")
    await c.close()


async def test_removal_with_anothers_credentials_before_login_removes_nothing(daemon, transport):
    c = await connect_client(daemon, transport)
    await c.secure_open()
    body = query(f"<remove/><username>alice</username><password>{PASSWORD}</password>")
    cond, code, _ = stanza_error(await iq(c, "set", body, "rm1"))
    assert (cond, code) == ("registration-required", "407")
    await c.close()
    alice = await RawClient.connect(daemon.c2s)
    await alice.login("alice", PASSWORD, resource="kept")  # the account is still there
    await alice.close()


@pytest.mark.parametrize("body", [
    query() + query(),                                                         # two payloads
    query() + "<ping xmlns='urn:xmpp:ping'/>",
])
async def test_iq_with_two_payloads_before_login_is_bad_request(daemon, transport, body):
    """RFC 6120 §8.2.3: an IQ get or set has exactly one payload."""
    c = await connect_client(daemon, transport)
    await c.secure_open()
    reply = await iq(c, "set", body, "two")
    assert stanza_error(reply)[0] == "bad-request"
    await c.close()


async def test_duplicate_and_nested_fields_before_login_are_refused_alike(daemon, transport):
    """No sign-up whatever the form looks like: <not-allowed/>, nothing echoed."""
    c = await connect_client(daemon, transport)
    await c.secure_open()
    body = query("<username>a</username><username>b</username><password>secret-1</password>"
                 "<password>secret-2</password><query xmlns='jabber:iq:register'><remove/></query>"
                 "<x xmlns='jabber:x:data' type='submit'><field var='username'><value>c</value></field></x>")
    reply = await iq(c, "set", body, "dup")
    assert stanza_error(reply)[:2] == ("not-allowed", "405")
    assert b"secret" not in reply.to_bytes()
    await c.close()


async def test_a_flood_of_registration_iqs_before_login_hits_the_budget(daemon, transport):
    """Each is answered, but what a connection may send before it authenticates is bounded
    (64 KiB): then <policy-violation/>."""
    c = await connect_client(daemon, transport)
    await c.secure_open()
    one = f"<iq type='get' id='f'>{query()}</iq>"
    per_send = 1 if transport == "ws" else 50  # (RFC 7395: one stanza per WebSocket message)
    for _ in range(2 * 64 * 1024 // (len(one) * per_send) + 1):
        await c.send(one * per_send)
    assert await c.stream_error(10) == "policy-violation"
    await c.close()
    await still_serving(daemon)


async def test_before_login_a_spoofed_from_reaches_nobody_and_removes_nothing(daemon, transport):
    """The answer goes back on the stream it came from, never to the JID it claims."""
    alice = await RawClient.connect(daemon.c2s)
    await alice.login("alice", PASSWORD, resource="phone")
    c = await connect_client(daemon, transport)
    await c.secure_open()
    body = query(f"<remove/><username>alice</username><password>{PASSWORD}</password>")
    await c.send(f"<iq type='set' id='sp1' from='alice@localhost/phone'>{body}</iq>")
    reply = await c.element()
    assert stanza_error(reply)[:2] == ("registration-required", "407")
    await c.close()
    await alice.send("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    got = await alice.element()
    assert got.tag == "iq" and got.get("id") == "alive"  # (no error reply reached alice first)
    await alice.close()
    again = await RawClient.connect(daemon.c2s)
    await again.login("alice", PASSWORD, resource="kept")
    await again.close()
