"""Hostile and broken input over real sockets: each gets the RFC 6120 error, and the server
keeps serving everyone else."""

from __future__ import annotations

import base64

import pytest

from mbxmpp.xml import StreamHeader
from tests.integration.conftest import PASSWORD
from tests.rawclient import HEADER, RawClient, connect_client


NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


async def logged_in(daemon, user="alice@localhost", resource="raw", transport="tcp"):
    c = await connect_client(daemon, transport)
    local, _, domain = user.partition("@")
    jid = await c.login(local, PASSWORD, to=domain, resource=resource)
    return c, jid


async def still_serving(daemon):
    """Another client can log in and ping the server."""
    c, _ = await logged_in(daemon, "bob@localhost", None)
    await c.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    r = await c.element()
    assert r.get("type") == "result" and r.get("id") == "p1"
    await c.close()


def stanza_error(el) -> str:
    err = el.find("error")
    assert err is not None, el
    return next(c.tag for c in err.elements() if c.ns == NS_STANZAS and c.tag != "text")


@pytest.mark.parametrize("payload,condition", [
    ("<message><body>x</bod></message>", "not-well-formed"),
    ("<!-- a comment -->", "restricted-xml"),
    ("<?pi data?>", "restricted-xml"),
    ("<message><body>&xxe;</body></message>", "restricted-xml"),
    (b"<message><body>\xff\xfe</body></message>", "unsupported-encoding"),
])
async def test_bad_xml_after_login(daemon, payload, condition, transport):
    c, _ = await logged_in(daemon, transport=transport)
    await c.send(payload)
    if transport == "bosh":
        # The payload makes the whole <body/> bad: XEP-0124's bad-request ends the session.
        await c.expect_closed()
        assert c.terminate_condition == "bad-request"
    else:
        assert await c.stream_error() == condition
        await c.expect_closed()
    await still_serving(daemon)


async def test_doctype_before_stream(daemon):
    c = await RawClient.connect(daemon.c2s)
    await c.send("<?xml version='1.0'?><!DOCTYPE foo [<!ENTITY x 'y'>]><stream:stream "
                 "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
    assert await c.stream_error() == "restricted-xml"
    await still_serving(daemon)


async def test_oversized_stanza(daemon):
    c, _ = await logged_in(daemon)
    await c.send("<message to='bob@localhost'><body>" + "a" * (300 * 1024) + "</body></message>")
    assert await c.stream_error() == "policy-violation"
    await still_serving(daemon)


async def test_stanza_before_auth(daemon):
    c = await RawClient.connect(daemon.c2s)
    await c.open()
    await c.starttls()
    await c.open()
    await c.send("<message to='bob@localhost'><body>spam</body></message>")
    assert await c.stream_error() == "not-authorized"
    await still_serving(daemon)


async def test_auth_before_tls_refused(daemon):
    c = await RawClient.connect(daemon.c2s)
    feats = await c.open()
    assert feats.find("starttls", "urn:ietf:params:xml:ns:xmpp-tls") is not None
    assert feats.find("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl") is None
    token = base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()
    await c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    fail = await c.element()
    assert fail.tag == "failure" and fail.find("encryption-required") is not None
    await c.close()


async def test_unknown_host_in_header(daemon):
    c = await RawClient.connect(daemon.c2s)
    await c.send(HEADER.format(to="not-served.example"))
    h = await c.next()
    assert isinstance(h, StreamHeader)
    assert await c.stream_error() == "host-unknown"


async def test_wrong_stream_namespace(daemon):
    c = await RawClient.connect(daemon.c2s)
    await c.send("<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='localhost' version='1.0'>")
    assert await c.stream_error() == "invalid-namespace"


async def test_bad_sasl_payloads(daemon, transport):
    c = await connect_client(daemon, transport)
    await c.secure_open()
    await c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!notbase64</auth>")
    f = await c.element()
    assert f.tag == "failure" and f.find("incorrect-encoding") is not None
    await c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-UNKNOWN'>=</auth>")
    f = await c.element()
    assert f.find("invalid-mechanism") is not None
    bad_authz = base64.b64encode(b"bob@localhost\0alice\0" + PASSWORD.encode()).decode()
    await c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{bad_authz}</auth>")
    f = await c.element()
    assert f.find("invalid-authzid") is not None
    await c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>"
                 + base64.b64encode(b"garbage").decode() + "</auth>")
    f = await c.element()
    assert f.tag == "failure"
    wrong = base64.b64encode(b"\0alice\0wrong").decode()
    await c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{wrong}</auth>")
    f = await c.element()
    assert f.find("not-authorized") is not None
    # Fifth failure: the stream is closed (RFC 6120 §6.4.5: a bounded number of retries).
    assert await c.stream_error() == "policy-violation"
    await still_serving(daemon)


async def test_plan_without_chat_refused_with_text(daemon, transport):
    c = await connect_client(daemon, transport)
    await c.secure_open()
    token = base64.b64encode(b"\0free\0" + PASSWORD.encode()).decode()
    await c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    f = await c.element()
    assert f.tag == "failure" and f.find("account-disabled") is not None
    assert f.findtext("text") == "Chat is not part of your plan."
    await c.close()


async def test_forged_from_is_a_stream_error(daemon, transport):
    c, _ = await logged_in(daemon, transport=transport)
    await c.send("<message from='bob@localhost/x' to='eve@localhost'><body>forged</body></message>")
    assert await c.stream_error() == "invalid-from"
    await still_serving(daemon)


async def test_from_is_stamped(daemon, transport):
    eve, eve_jid = await logged_in(daemon, "eve@localhost", "e", transport)
    await eve.send("<presence/>")
    a, a_jid = await logged_in(daemon, "alice@localhost", "stamp", transport)
    await a.send(f"<message to='{eve_jid}' type='chat'><body>hi</body></message>")
    while True:
        m = await eve.element()
        if m.tag == "message":
            break
    assert m.get("from") == a_jid
    await a.close()
    await eve.close()


async def test_stanza_errors(daemon, transport):
    c, jid = await logged_in(daemon, transport=transport)
    await c.send("<message to='nobody@localhost' id='m1' type='chat'><body>x</body></message>")
    r = await c.element()
    assert r.get("type") == "error" and stanza_error(r) == "service-unavailable"
    await c.send("<message to='a@b@c' id='m2'><body>x</body></message>")
    r = await c.element()
    assert stanza_error(r) == "jid-malformed"
    await c.send("<iq to='localhost' type='get' id='i1'><query xmlns='urn:example:unknown'/></iq>")
    r = await c.element()
    assert stanza_error(r) == "service-unavailable"
    await c.send("<message to='user@remote.example' id='m3'><body>x</body></message>")
    r = await c.element()
    assert r.get("id") == "m3" and stanza_error(r) in ("remote-server-not-found", "remote-server-timeout")
    await c.send("<iq type='get' id='i2' to='localhost'/>")
    r = await c.element()
    assert stanza_error(r) == "bad-request"
    await c.close()


async def test_virtual_hosts_are_separate(daemon, transport):
    c = await connect_client(daemon, transport)
    # zed exists only on example.test; logging in as zed@localhost must fail.
    await c.secure_open("localhost")
    token = base64.b64encode(b"\0zed\0" + PASSWORD.encode()).decode()
    await c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    f = await c.element()
    assert f.find("not-authorized") is not None
    await c.close()
    z = await connect_client(daemon, transport)
    jid = await z.login("zed", PASSWORD, to="example.test")
    assert jid.startswith("zed@example.test/")
    await z.close()


async def test_many_bad_clients_do_not_disturb_a_chat(daemon):
    eve, eve_jid = await logged_in(daemon, "eve@localhost", "calm")
    await eve.send("<presence/>")
    bad = [await RawClient.connect(daemon.c2s) for _ in range(5)]
    for b in bad:
        await b.send("<<<garbage>>>")
    a, _ = await logged_in(daemon, "alice@localhost", "calm")
    await a.send(f"<message to='{eve_jid}' type='chat'><body>still here</body></message>")
    while True:
        m = await eve.element()
        if m.tag == "message":
            break
    assert m.findtext("body") == "still here"
    for b in bad:
        await b.close()
