"""The c2s stream over real sockets: pre-auth slots released after an abandoned STARTTLS,
authenticated-but-unbound streams time out, a client that does not read cannot make the server
buffer without bound, and RFC 6120/6121 details a hostile suite checks."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.daemon import Daemon
from tests.rawclient import RawClient, connect_client


PW = "c2s-pw"
NS_SM = "urn:xmpp:sm:3"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


@pytest.fixture(scope="module")
def daemon():
    d = Daemon()
    with open(d.config_path) as f:
        text = f.read()
    # Lowered on purpose: the timeout to see it act; three pre-auth connections in all, so that
    # slots that leaked (below) would refuse the next connection.
    text = text.replace("[c2s]\n", '[c2s]\nauth_timeout = "2s"\nmax_unauthenticated_per_ip = 3\n'
                        'max_unauthenticated = 3\n', 1)
    with open(d.config_path, "w") as f:
        f.write(text)
    for u in ("alice", "bob"):
        d.add_user(f"{u}@localhost", PW)
    d.start()
    yield d
    d.finish()


def condition(el) -> str:
    err = el.find("error")
    assert err is not None, el
    return next(c.tag for c in err.elements() if c.ns == NS_STANZAS and c.tag != "text")


async def test_abandoned_starttls_handshakes_release_preauth_slots(daemon):
    # Connections dropped in the middle of the TLS handshake used to keep their pre-auth slot
    # (the loop never reports them lost): a few of them locked the IP out for good.
    for _ in range(4):
        c = await RawClient.connect(daemon.c2s)
        await c.open()
        await c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert (await c.element()).tag == "proceed"
        c.writer.transport.abort()
    await asyncio.sleep(0.3)
    ok = await RawClient.connect(daemon.c2s)
    assert (await ok.login("alice", PW)).startswith("alice@localhost/")
    await ok.close()


async def test_authenticated_but_unbound_stream_times_out(daemon, transport):
    c = await connect_client(daemon, transport)
    await c.auth("alice", PW)
    assert await c.stream_error(timeout=6) == "connection-timeout"
    await c.expect_closed()


async def test_client_that_does_not_read_is_disconnected(daemon):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", daemon.c2s))
    r, w = await asyncio.open_connection(sock=sock)
    c = RawClient(r, w)
    await c.login("bob", PW, resource="deaf")
    big = "x" * (200 * 1024)
    closed = False
    try:
        # Each service-unavailable error carries the 200 KB payload back: 30 MB the client never reads.
        for i in range(150):
            await c.send(f"<iq type='get' id='q{i}' to='localhost'><q xmlns='urn:x'>{big}</q></iq>")
        for _ in range(100):
            await asyncio.sleep(0.1)
            await c.send(" ")
    except (ConnectionError, OSError):
        closed = True
    assert closed, "the server kept buffering for a client that does not read"
    assert "unread output" in daemon.log()
    await c.close()
    # Everyone else is fine.
    a = await RawClient.connect(daemon.c2s)
    await a.login("alice", PW, resource="fine")
    await a.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await a.element()).get("type") == "result"
    await a.close()


async def test_legacy_session_iq_to_the_domain(daemon, transport):
    c = await connect_client(daemon, transport)
    await c.login("alice", PW, resource="legacy")
    await c.send("<iq type='set' id='sess' to='localhost'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    r = await c.element()
    assert r.get("id") == "sess" and r.get("type") == "result", r
    await c.close()


async def test_second_bind_refused_and_errors_not_answered(daemon, transport):
    c = await connect_client(daemon, transport)
    await c.login("alice", PW, resource="once")
    await c.send("<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                 "<resource>twice</resource></bind></iq>")
    r = await c.element()
    assert r.get("id") == "b2" and condition(r) == "not-allowed"
    # An IQ error without an id is not answered (RFC 6120 §8.3.1): the next reply is the ping's.
    await c.send("<iq type='error'/>")
    await c.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    r = await c.element()
    assert r.get("id") == "p" and r.get("type") == "result"
    await c.close()


async def test_message_of_unknown_type_to_a_gone_resource(daemon, transport):
    # RFC 6121 §5.2.2: an unknown type is 'normal', and a normal message to a resource that is
    # not there goes to the bare JID (§8.5.3.2.1), like a message without a type.
    bob = await connect_client(daemon, transport)
    bob_jid = await bob.login("bob", PW, resource="here")
    await bob.send("<presence/>")
    a = await RawClient.connect(daemon.c2s)
    await a.login("alice", PW, resource="sender")
    await a.send("<message to='bob@localhost/gone' type='bogus' id='u1'><body>hello</body></message>")
    while True:
        m = await bob.element()
        if m.tag == "message":
            break
    assert m.findtext("body") == "hello" and m.get("to") in ("bob@localhost/gone", bob_jid)
    await a.close()
    await bob.close()


async def test_peer_closing_first_gets_our_close_and_eof(daemon):
    c = await RawClient.connect(daemon.c2s)
    await c.login("alice", PW, resource="bye")
    await c.send("</stream:stream>")
    await c.expect_closed()
    assert await asyncio.wait_for(c.reader.read(), 3) == b""
