"""Stream Management resumption after a graceful restart against hostile input, over the wire:
an h larger than what was sent (XEP-0198 §4: <undefined-condition/> with
<handled-count-too-high/>) or unreadable, an unknown previd, two resumptions of one session at
once: none of them takes the restored session from its owner (test_sm_restart.py has the
corrupt saved records)."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.test_sm_restart import (NS_SM, PW, bodies, daemon, finish, item_not_found, resume, sender,
                                               send_all, stanzas, stopped_with_unacked)
from tests.rawclient import RawClient

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"


async def test_resume_after_restart_with_h_too_high_is_handled_count_too_high():
    d = daemon()
    try:
        _, sm_id = await stopped_with_unacked(d, "phone", "unacked")
        d.start()
        # sent: its own presence and 'unacked' (2); the client claims 7
        c, err = await resume(d, "alice", sm_id, 7)
        assert err.tag == "error" and err.ns == NS_STREAMS, err  # type: ignore[attr-defined]
        assert err.find("undefined-condition", NS_STREAM_ERRORS) is not None  # type: ignore[attr-defined]
        hc = err.find("handled-count-too-high", NS_SM)  # type: ignore[attr-defined]
        assert hc is not None and (hc.get("h"), hc.get("send-count")) == ("7", "2")
        await c.expect_closed()
        # the session is still there for its owner's honest resumption
        a2, res = await resume(d, "alice", sm_id, 1)
        assert res.tag == "resumed", res  # type: ignore[attr-defined]
        assert await bodies(a2, 1) == ["unacked"]
        await a2.send(f"<a xmlns='{NS_SM}' h='2'/></stream:stream>")
        await a2.close()
        finish(d)
    finally:
        d.cleanup()


async def test_two_resumptions_at_once_after_restart_one_session_one_stream():
    """Both get <resumed/> in turn (XEP-0198 §5: the newer takes over); the one taken over ends
    with <conflict/>, the other carries the session."""
    d = daemon()
    try:
        a_jid, sm_id = await stopped_with_unacked(d, "phone", "unacked")
        d.start()
        c1, c2 = await asyncio.gather(*(_authenticated(d) for _ in range(2)))
        request = f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='1'/>"
        await asyncio.gather(c1.send(request), c2.send(request))
        outcomes = await asyncio.gather(_outcome(c1), _outcome(c2))
        assert sorted(outcomes) == ["conflict", "live"], outcomes
        live = c1 if outcomes[0] == "live" else c2
        b = await sender(d)
        await send_all(b, a_jid, ["after"])
        assert (await bodies(live, 1)) == ["after"]
        await live.send(f"<a xmlns='{NS_SM}' h='{live.handled}'/></stream:stream>")  # type: ignore[attr-defined]
        await live.close()
        await b.close()
        finish(d)
    finally:
        d.cleanup()


async def _authenticated(d):  # type: ignore[no-untyped-def]
    c = await RawClient.connect(d.c2s)
    await c.auth("alice", PW)
    return c


async def _outcome(c) -> str:  # type: ignore[no-untyped-def]
    """'live' for a resumed stream that stays, 'conflict' for one resumed then taken over."""
    res = await c.element()
    assert res.tag == "resumed", res
    c.handled = 1
    await stanzas(c, 1)  # 'unacked' again
    await c.send("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    while True:
        el = await c.element()
        if el.tag == "iq" and el.get("id") == "alive":
            return "live"
        if el.tag == "error" and el.ns == NS_STREAMS:
            assert el.find("conflict", NS_STREAM_ERRORS) is not None, el
            await c.expect_closed()
            return "conflict"


@pytest.mark.parametrize("attrs, condition", [
    ("h='abc'", "invalid-xml"),
    ("h='-1'", "invalid-xml"),
    ("h='4294967296'", "invalid-xml"),     # past the 32-bit counter
    ("", "invalid-xml"),                  # no h at all
])
async def test_resume_with_an_unreadable_h_ends_the_stream_and_keeps_the_session(shared, attrs, condition):
    """The restored session stays for an honest resumption."""
    d, sm_id = shared
    c = await _authenticated(d)
    await c.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' {attrs}/>")
    assert await c.stream_error() == condition
    await c.expect_closed()


@pytest.mark.parametrize("attrs", ["", "previd=''", "previd='" + "x" * 5000 + "'"])
async def test_resume_without_a_known_previd_is_item_not_found(shared, attrs):
    d, _ = shared
    c = await _authenticated(d)
    await c.send(f"<resume xmlns='{NS_SM}' {attrs} h='0'/>")
    assert item_not_found(await c.element())
    assert (await c.bind("after")).startswith("alice@localhost/")
    await c.close()


async def test_resume_before_authentication_is_not_authorized(shared):
    d, sm_id = shared
    c = await RawClient.connect(d.c2s)
    await c.secure_open()
    await c.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='0'/>")
    assert await c.stream_error() == "not-authorized"
    await c.close()


async def test_after_the_hostile_ones_the_owner_resumes(shared):
    d, sm_id = shared
    a2, res = await resume(d, "alice", sm_id, 1)
    assert res.tag == "resumed", res  # type: ignore[attr-defined]
    assert await bodies(a2, 1) == ["unacked"]
    await a2.send(f"<a xmlns='{NS_SM}' h='2'/></stream:stream>")
    await a2.close()


@pytest.fixture(scope="module")
def shared():  # type: ignore[no-untyped-def]
    """A daemon restarted with one of alice's sessions saved, not yet resumed (a long window)."""
    d = daemon("300s")
    loop = asyncio.new_event_loop()
    try:
        _, sm_id = loop.run_until_complete(stopped_with_unacked(d, "phone", "unacked"))
    finally:
        loop.close()
    d.start()
    yield d, sm_id
    finish(d)
    d.cleanup()
