"""Stream Management (XEP-0198) over real sockets: acks, resumption after a cut connection,
stolen resumption ids, bad acks, and what happens to unacked messages when a session dies."""

from __future__ import annotations

import asyncio

import pytest

from tests.daemon import Daemon
from tests.rawclient import STREAM_END, RawClient, connect_client

PW = "sm-pass"
NS_SM = "urn:xmpp:sm:3"


@pytest.fixture(scope="module")
def daemon():
    # (BOSH: a client that vanished is lost after 1 s without a request; RawClient.loss_delay)
    d = Daemon(extra='[sm]\nresume_timeout = "3s"\n', http_extra='bosh_inactivity = "1s"')
    for u in ("alice", "bob", "mallory"):
        d.add_user(f"{u}@localhost", PW)
    d.start()
    yield d
    d.finish()


async def sm_client(daemon, user, resource, transport="tcp"):
    c = await connect_client(daemon, transport)
    feats = await c.auth(user, PW)
    assert feats.find("sm", NS_SM) is not None
    jid = await c.bind(resource)
    await c.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    en = await c.element()
    assert en.tag == "enabled" and en.get("resume") == "true" and len(en.get("id")) >= 20
    await c.send("<presence/>")
    return c, jid, en.get("id")


async def messages(c, n, timeout=5.0):
    """The next n messages; every stanza seen is counted in c.handled (the client's SM h)."""
    out = []
    while len(out) < n:
        el = await c.element(timeout)
        if el.tag in ("message", "presence", "iq"):
            c.handled = getattr(c, "handled", 0) + 1
        if el.tag == "message":
            out.append(el)
        elif el.tag == "r" and el.ns == NS_SM:
            pass
    return out


async def test_ack_request_answered_with_count(daemon, transport):
    c, jid, _ = await sm_client(daemon, "alice", "acks", transport)
    for i in range(3):
        await c.send(f"<iq type='get' id='p{i}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    await c.send(f"<r xmlns='{NS_SM}'/>")
    while True:
        el = await c.element()
        if el.tag == "a":
            break
    # presence + 3 pings were handled
    assert el.get("h") == "4"
    await c.send("</stream:stream>")
    await c.close()


SPELLINGS = [f"<r xmlns='{NS_SM}'/>", f'<r xmlns="{NS_SM}"/>', f"<r xmlns='{NS_SM}' />",
             f'<r xmlns="{NS_SM}" />', f"<r xmlns='{NS_SM}'></r>", f"<sm:r xmlns:sm='{NS_SM}'/>"]


def _ping(i: int) -> str:
    return f"<iq type='get' id='q{i}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"


async def test_requests_in_every_spelling_answered_in_order(daemon):
    """Requests after stanzas, after requests and alone in a write, however they are spelled
    (the compiled tokenizer answers the usual spellings without its XML parser): each gets the
    count of what came before it, in order with the stanzas' answers."""
    c, _, _ = await sm_client(daemon, "alice", "spellings")
    await c.send(_ping(1) + SPELLINGS[0] + _ping(2) + SPELLINGS[1] + SPELLINGS[2] + _ping(3)
                 + SPELLINGS[3] + " " + SPELLINGS[4])
    await c.send(SPELLINGS[5])
    await c.send(SPELLINGS[0])
    await c.send(_ping(4) + SPELLINGS[1])
    want = ["q1", "2", "q2", "3", "3", "q3", "4", "4", "4", "4", "q4", "5"]
    got = []
    while len(got) < len(want):
        el = await c.element()
        if el.tag == "a":
            got.append(el.get("h"))
        elif el.tag == "iq":
            assert el.get("type") == "result"
            got.append(el.get("id"))
    assert got == want
    await c.send("</stream:stream>")
    await c.close()


@pytest.mark.parametrize("data", [
    f"<message to='bob@localhost' a='><r xmlns='{NS_SM}'/>'/>",     # '<' in an attribute value
    f"<message to='bob@localhost' <r xmlns='{NS_SM}'/>>",           # inside a start tag
])
async def test_request_bytes_where_no_element_may_start(daemon, data):
    c, _, _ = await sm_client(daemon, "mallory", "broken")
    await c.send(data)
    assert await c.stream_error() == "not-well-formed"


async def test_server_asks_for_an_ack_after_request_every_stanzas(daemon, transport):
    """[sm] request_every (default 10): one <r/> right after the 10th unacked stanza, no other
    until that request is answered."""
    a, a_jid, _ = await sm_client(daemon, "alice", "asks", transport)
    b = await RawClient.connect(daemon.c2s)
    await b.login("bob", PW, resource="asker")
    for i in range(25):
        await b.send(f"<message to='{a_jid}' type='chat' id='q{i}'><body>{i}</body></message>")
    seen, asked_at = 0, []
    while seen < 26:  # alice's own presence echo, then the 25 messages
        el = await a.element()
        if el.tag in ("message", "presence", "iq"):
            seen += 1
        elif el.tag == "r" and el.ns == NS_SM:
            asked_at.append(seen)
    assert asked_at == [10]  # unanswered: no second request
    await a.send(f"<a xmlns='{NS_SM}' h='{seen}'/>")
    await a.send("</stream:stream>")
    await b.close()
    await a.close()


@pytest.mark.parametrize("resume_over", ["tcp", "ws", "bosh"])
async def test_resume_after_cut_connection_redelivers(daemon, transport, resume_over):
    """Resumed over the same transport or the other one (a phone leaving the web app)."""
    a, a_jid, sm_id = await sm_client(daemon, "alice", "phone", transport)
    b = await RawClient.connect(daemon.c2s)
    await b.login("bob", PW, resource="desk")
    await b.send(f"<message to='{a_jid}' type='chat' id='m0'><body>before</body></message>")
    (m0,) = await messages(a, 1)
    assert m0.findtext("body") == "before"
    a.abort()  # the phone loses its network
    await asyncio.sleep(0.3)
    for i in range(3):
        await b.send(f"<message to='{a_jid}' type='chat' id='m{i + 1}'><body>while away {i}</body></message>")
    await asyncio.sleep(0.2)
    a2 = await connect_client(daemon, resume_over)
    await a2.auth("alice", PW)
    # What the phone handled before the cut: its own presence echo and 'before'.
    await a2.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='{a.handled}'/>")
    res = await a2.element()
    assert res.tag == "resumed" and res.get("previd") == sm_id
    a2.handled = a.handled  # h carries over across resumption
    got = await messages(a2, 3)
    assert [m.findtext("body") for m in got] == [f"while away {i}" for i in range(3)]
    # The session is the same one: its full JID still reaches the resumed stream.
    await b.send(f"<message to='{a_jid}' type='chat'><body>after</body></message>")
    (m,) = await messages(a2, 1)
    assert m.findtext("body") == "after"
    # Acknowledge everything, or the clean close would treat it as undelivered (to offline).
    await a2.send(f"<a xmlns='{NS_SM}' h='{a2.handled}'/>")
    await a2.send("</stream:stream>")
    await b.close()
    await a.close()
    await a2.close()


async def test_stolen_resumption_id_refused(daemon, transport):
    a, _, sm_id = await sm_client(daemon, "alice", "victim", transport)
    a.abort()
    await asyncio.sleep(0.2)
    m = await connect_client(daemon, transport)
    await m.auth("mallory", PW)
    await m.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='0'/>")
    res = await m.element()
    assert res.tag == "failed" and res.find("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas") is not None
    # RFC-style recovery: mallory may still bind normally.
    jid = await m.bind("own")
    assert jid.startswith("mallory@localhost/")
    await m.close()
    await a.close()


async def test_handled_count_too_high(daemon, transport):
    c, _, _ = await sm_client(daemon, "bob", "liar", transport)
    await c.send(f"<a xmlns='{NS_SM}' h='999'/>")
    while True:
        el = await c.element()
        if el.tag == "error":
            break
    assert el.find("undefined-condition", "urn:ietf:params:xml:ns:xmpp-streams") is not None
    hc = el.find("handled-count-too-high", NS_SM)
    assert hc is not None and hc.get("h") == "999"
    await c.close()


async def test_enable_before_bind_fails(daemon, transport):
    c = await connect_client(daemon, transport)
    await c.auth("bob", PW)
    await c.send(f"<enable xmlns='{NS_SM}'/>")
    f = await c.element()
    assert f.tag == "failed" and f.find("unexpected-request", "urn:ietf:params:xml:ns:xmpp-stanzas") is not None
    await c.close()


async def test_expired_hibernation_moves_unacked_to_offline(daemon, transport):
    a, a_jid, _ = await sm_client(daemon, "alice", "tablet", transport)
    b = await RawClient.connect(daemon.c2s)
    await b.login("bob", PW, resource="sender")
    a.abort()
    await asyncio.sleep(0.2)
    await b.send(f"<message to='{a_jid}' type='chat'><body>do not lose me</body></message>")
    await asyncio.sleep(4.0 + a.loss_delay)  # resume_timeout is 3 s, once the loss is noticed
    a2 = await connect_client(daemon, transport)
    await a2.login("alice", PW, resource="new")
    await a2.send("<presence/>")
    (m,) = await messages(a2, 1)
    assert m.findtext("body") == "do not lose me"
    await a2.close()
    await b.close()
    await a.close()


async def test_acks_in_every_spelling_release_what_they_cover(daemon):
    """Acks written as clients write them, alone or behind a stanza (the compiled tokenizer
    applies those itself): what they covered is gone from the unacked queue, so when the
    hibernated session expires only the rest goes to offline storage."""
    a, a_jid, _ = await sm_client(daemon, "alice", "spelled-acks")
    b = await RawClient.connect(daemon.c2s)
    await b.login("bob", PW, resource="sender")
    for i in range(5):
        await b.send(f"<message to='{a_jid}' type='chat'><body>n{i}</body></message>")
    await messages(a, 5)  # a.handled: the presence echo and 5 messages
    await a.send(f'<a xmlns="{NS_SM}" h="2"/>')
    await a.send(_ping(1) + f"<a xmlns='{NS_SM}' h='4' />")
    await a.send(_ping(2) + f'<a xmlns="{NS_SM}" h="{a.handled - 1}"/>' + SPELLINGS[0])
    got = []
    while len(got) < 3:
        el = await a.element()
        got.append(el.get("id") if el.tag == "iq" else el.get("h") if el.tag == "a" else el.tag)
    assert got == ["q1", "q2", "3"]  # presence + 2 pings handled
    a.abort()
    await asyncio.sleep(4.0)  # resume_timeout is 3 s: the session dies, n4 was never acked
    a2 = await RawClient.connect(daemon.c2s)
    await a2.login("alice", PW, resource="later")
    await a2.send("<presence/>")
    assert [m.findtext("body") for m in await messages(a2, 1)] == ["n4"]
    await a2.send(_ping(3))
    before_pong = []
    while (el := await a2.element()).tag != "iq":
        before_pong.append(el.tag)
    assert "message" not in before_pong  # nothing else came from offline storage
    await a2.close()
    await b.close()


async def test_resume_sends_what_csi_held_once_after_resumed(daemon, transport):
    """CSI held a chat state while the phone was inactive; at resumption it goes out after
    <resumed/> and exactly once (before, it was written before <resumed/> and re-sent after)."""
    a, a_jid, sm_id = await sm_client(daemon, "alice", "csi-phone", transport)
    await a.element()  # own presence
    await a.send("<inactive xmlns='urn:xmpp:csi:0'/>")
    b = await RawClient.connect(daemon.c2s)
    await b.login("bob", PW, resource="csi-desk")
    await asyncio.sleep(0.1)
    a.abort()
    await asyncio.sleep(0.3)
    await b.send(f"<message to='{a_jid}' type='chat' id='cs2'>"
                 "<paused xmlns='http://jabber.org/protocol/chatstates'/></message>")
    await asyncio.sleep(0.2)
    a2 = await connect_client(daemon, transport)
    await a2.auth("alice", PW)
    await a2.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='1'/>")
    seq = []
    while len(seq) < 3:
        el = await a2.element()
        seq.append((el.tag, el.get("id")))
    assert seq == [("resumed", None), ("message", "cs2"), ("r", None)]
    await a2.send(f"<a xmlns='{NS_SM}' h='2'/>")
    await a2.send("</stream:stream>")
    await b.close()
    await a.close()
    await a2.close()


@pytest.fixture(scope="module")
def slow_ack_daemon():
    d = Daemon(extra='[sm]\nack_delay = "400ms"\n')
    d.add_user("carol@localhost", PW)
    d.add_user("dave@localhost", PW)
    d.add_user("erin@localhost", PW)
    d.add_user("frank@localhost", PW)
    d.start()
    yield d
    d.finish()


async def _answer_time(c) -> tuple[float, list[str]]:
    """Seconds until the next <a/>, and the tags of what came before it."""
    t0 = asyncio.get_running_loop().time()
    before = []
    while True:
        el = await c.element()
        if el.tag == "a" and el.ns == NS_SM:
            return asyncio.get_running_loop().time() - t0, before
        before.append(el.tag)


async def test_lone_ack_waits_at_most_ack_delay(slow_ack_daemon):
    """[sm] ack_delay: an <a/> with nothing to share a write with, on a stream that had other
    output lately (here the presence echo), goes out after the delay, not before, and not much
    later."""
    c, _jid, _ = await sm_client(slow_ack_daemon, "carol", "lone")
    await c.element()  # presence echo
    await c.send(f"<r xmlns='{NS_SM}'/>")
    took, before = await _answer_time(c)
    assert before == [] and 0.35 <= took < 2.0
    await c.close()


async def test_ack_at_once_on_a_quiet_stream(slow_ack_daemon):
    """Nothing went to the client for longer than ack_delay: no company is in sight, the <a/>
    goes at once; and the <a/> itself is not company, so a client that waits for each answer
    before it sends on (here chat states) never waits for the delay."""
    c, _jid, _ = await sm_client(slow_ack_daemon, "frank", "quiet")
    await c.element()  # presence echo
    await asyncio.sleep(0.5)
    for i in range(5):
        await c.send(f"<message to='dave@localhost' type='chat' id='s{i}'>"
                     "<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
                     f"<r xmlns='{NS_SM}'/>")
        took, before = await _answer_time(c)
        assert before == [] and took < 0.2, (i, took, before)
    await c.close()


async def test_ack_rides_with_other_output(slow_ack_daemon):
    """An <a/> whose stream has other output in the same loop iteration goes with it at once;
    one that is waiting goes out with the next write, before it (h never falls behind)."""
    c, jid, _ = await sm_client(slow_ack_daemon, "erin", "rides")
    await c.element()  # presence echo
    # a ping answered by the server in the same iteration as the <r/>
    await c.send(f"<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
                 f"<r xmlns='{NS_SM}'/>")
    took, before = await _answer_time(c)
    assert before == ["iq"] and took < 0.3
    # a waiting <a/> leaves with the next stanza for this client (from another session)
    d = await RawClient.connect(slow_ack_daemon.c2s)
    await d.login("dave", PW, resource="d")
    await c.send(f"<r xmlns='{NS_SM}'/>")
    await asyncio.sleep(0.05)
    await d.send(f"<message to='{jid}' type='chat' id='x'><body>hi</body></message>")
    took, before = await _answer_time(c)
    assert before == [] and took < 0.3  # the <a/> first, well before the 400 ms
    el = await c.element()
    assert el.tag == "message" and el.get("id") == "x"
    await d.close()
    await c.close()


async def test_waiting_ack_goes_out_before_the_closing_tag(slow_ack_daemon):
    c, _jid, _ = await sm_client(slow_ack_daemon, "dave", "closing")
    await c.element()  # presence echo
    await c.send(f"<r xmlns='{NS_SM}'/></stream:stream>")
    took, _before = await _answer_time(c)
    assert took < 0.3
    assert await c.next() is STREAM_END
    await c.close()


async def test_sm_h_counts_stanzas_answered_with_errors(daemon, transport):
    c = await connect_client(daemon, transport)
    await c.login("alice", PW, resource="counted")
    await c.send(f"<enable xmlns='{NS_SM}'/>")
    assert (await c.element()).tag == "enabled"
    await c.send("<iq type='get' id='nopayload' to='localhost'/>")
    await c.send("<presence type='bogus'/>")
    await c.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    await c.send(f"<r xmlns='{NS_SM}'/>")
    while True:
        el = await c.element()
        if el.tag == "a":
            break
    assert el.get("h") == "3"
    await c.close()



async def test_hibernated_session_is_resumable_after_a_restart():
    # A graceful stop used to end hibernated sessions (their unacknowledged messages to offline
    # storage); now they are saved and restored (modules/sm_restart.py), the window counted
    # again from the start. A session hibernated before the stop resumes like a live one.
    d = Daemon()
    try:
        for u in ("alice", "bob"):
            d.add_user(f"{u}@localhost", PW)
        d.start()
        b = await RawClient.connect(d.c2s)
        b_jid = await b.login("bob", PW, resource="phone")
        await b.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        enabled = await b.element()
        assert enabled.tag == "enabled"
        await b.send("<presence/>")
        await b.element()  # own presence (h=1)
        b.writer.transport.abort()  # hibernates
        await asyncio.sleep(0.3)
        a = await RawClient.connect(d.c2s)
        await a.login("alice", PW, resource="desk")
        await a.send(f"<message to='{b_jid}' type='chat' id='keep'><body>do not lose me</body></message>")
        await a.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        while (await a.element()).get("id") != "p":
            pass
        await a.close()
        assert d.stop() == 0
        d.start()
        b2 = await RawClient.connect(d.c2s)
        await b2.auth("bob", PW)
        await b2.send(f"<resume xmlns='{NS_SM}' previd='{enabled.get('id')}' h='1'/>")
        assert (await b2.element()).tag == "resumed"
        while True:
            m = await b2.element()
            if m.tag == "message":
                break
        assert m.findtext("body") == "do not lose me" and m.get("to") == b_jid
        await b2.send(f"<a xmlns='{NS_SM}' h='2'/>")
        await b2.send("</stream:stream>")
        await b2.close()
        assert d.stop() == 0
        assert "Traceback" not in d.log(), d.log()
    finally:
        d.cleanup()
