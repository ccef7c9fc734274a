"""Stream Management sessions across a graceful restart (issue 17, item 9), over the wire: the
daemon gets SIGTERM, says <system-shutdown/>, saves its resumable sessions, and after the
restart a client resumes with its h and gets exactly what it had not handled; a wrong previd,
an expired window and a kill -9 of the restarted daemon end as any hibernated session does."""

from __future__ import annotations

import asyncio

import pytest

from tests.daemon import Daemon
from tests.rawclient import RawClient, connect_client

PW = "restart-pass"
NS_SM = "urn:xmpp:sm:3"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def daemon(timeout: str = "60s") -> Daemon:
    d = Daemon(extra=f'[sm]\nresume_timeout = "{timeout}"\n')
    for u in ("alice", "bob"):
        d.add_user(f"{u}@localhost", PW)
    d.start()
    return d


async def sm_client(d: Daemon, user: str, resource: str,
                    transport: str = "tcp") -> tuple[RawClient, str, str]:
    c = await connect_client(d, transport)
    await c.auth(user, PW)
    jid = await c.bind(resource)
    await c.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    en = await c.element()
    assert en.tag == "enabled" and en.get("resume") == "true"
    await c.send("<presence/>")
    c.handled = 0  # type: ignore[attr-defined]
    return c, jid, en.get("id")  # type: ignore[return-value]


async def stanzas(c: RawClient, n: int, tag: str = "message") -> list:
    """The next n stanzas named ``tag``; every stanza seen counts in c.handled (the client's h)."""
    out = []
    while len(out) < n:
        el = await c.element()
        if el.tag in ("message", "presence", "iq"):
            c.handled = getattr(c, "handled", 0) + 1  # type: ignore[attr-defined]
            if el.tag == tag:
                out.append(el)
    return out


async def bodies(c: RawClient, n: int) -> list[str]:
    return [m.findtext("body") for m in await stanzas(c, n)]


async def sender(d: Daemon, user: str = "bob") -> RawClient:
    b = await RawClient.connect(d.c2s)
    await b.login(user, PW, resource="desk")
    return b


async def send_all(b: RawClient, to: str, texts: list[str]) -> None:
    """Messages to ``to``, then a ping answered after them (they have been routed)."""
    for t in texts:
        await b.send(f"<message to='{to}' type='chat'><body>{t}</body></message>")
    await b.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    while (await b.element()).get("id") != "sync":
        pass


async def resume(d: Daemon, user: str, previd: str, h: int,
                 transport: str = "tcp") -> tuple[RawClient, object]:
    c = await connect_client(d, transport)
    feats = await c.auth(user, PW)
    assert feats.find("sm", NS_SM) is not None
    await c.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='{h}'/>")
    return c, await c.element()


async def stopped_with_unacked(d: Daemon, resource: str, text: str) -> tuple[str, str]:
    """alice's session (on ``resource``) got ``text`` and never acked it when the daemon got
    SIGTERM; returns its full JID and resumption id."""
    a, a_jid, sm_id = await sm_client(d, "alice", resource)
    b = await sender(d)
    await send_all(b, a_jid, [text])
    assert await bodies(a, 1) == [text]
    await b.close()
    assert d.stop() == 0
    await a.close()
    return a_jid, sm_id


async def offline_bodies(c: RawClient, resource: str, n: int) -> list[str]:
    """Bind ``resource`` on authenticated ``c``, go available: what waited offline."""
    jid = await c.bind(resource)
    await c.send("<presence/>")
    got = await bodies(c, n)
    assert jid.endswith("/" + resource)
    return got


def finish(d: Daemon) -> None:
    assert d.stop() == 0
    assert "Traceback" not in d.log(), d.log()


def item_not_found(el) -> bool:  # type: ignore[no-untyped-def]
    return el.tag == "failed" and el.ns == NS_SM and el.find("item-not-found", NS_STANZAS) is not None


async def test_resume_after_restart_gets_exactly_the_unhandled_stanzas():
    d = daemon()
    try:
        a, a_jid, sm_id = await sm_client(d, "alice", "phone")
        assert await stanzas(a, 1, "presence")  # own presence echo: h = 1
        b = await sender(d)
        await send_all(b, a_jid, ["one", "two", "three"])
        assert await bodies(a, 3) == ["one", "two", "three"]  # read, never acked
        await b.close()
        assert d.stop() == 0  # SIGTERM
        assert await a.stream_error() == "system-shutdown"
        await a.close()
        d.start()
        b = await sender(d)
        # While the client is away after the restart: to its bare JID (the restored session is
        # available and the only resource) and to its full JID.
        await send_all(b, "alice@localhost", ["four"])
        await send_all(b, a_jid, ["five"])
        # Someone else's id, and an id that never existed: not found, and nothing is taken over.
        m, failed = await resume(d, "bob", sm_id, 0)
        assert item_not_found(failed), failed
        await m.close()
        w, failed = await resume(d, "alice", "no-such-id", 0)
        assert item_not_found(failed), failed
        assert (await w.bind("other")).startswith("alice@localhost/")  # may still bind
        await w.close()
        # The phone had handled its presence and 'one' (h=2): 'two' and 'three' come again.
        a2, res = await resume(d, "alice", sm_id, 2)
        assert res.tag == "resumed" and res.get("previd") == sm_id  # type: ignore[attr-defined]
        assert res.get("h") == "1"  # type: ignore[attr-defined]  # the server had its presence
        a2.handled = 2  # type: ignore[attr-defined]
        assert await bodies(a2, 4) == ["two", "three", "four", "five"]
        # The same session, bound resource and all: its full JID reaches the resumed stream.
        await send_all(b, a_jid, ["after"])
        assert await bodies(a2, 1) == ["after"]
        await a2.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        (iq,) = await stanzas(a2, 1, "iq")
        assert iq.get("type") == "result" and iq.get("to") == a_jid
        await a2.send(f"<a xmlns='{NS_SM}' h='{a2.handled}'/>")  # type: ignore[attr-defined]
        await a2.send("</stream:stream>")
        await a2.close()
        await b.close()
        finish(d)
    finally:
        d.cleanup()


async def test_restored_session_not_resumed_in_time_goes_offline():
    d = daemon("5s")
    try:
        a_jid, sm_id = await stopped_with_unacked(d, "tablet", "before the stop")
        d.start()
        b = await sender(d)
        await send_all(b, a_jid, ["after the start"])
        await asyncio.sleep(6)  # the 5 s window, counted again from the start, is over
        a2, res = await resume(d, "alice", sm_id, 1)
        assert item_not_found(res), res
        # Both unacknowledged messages were moved to offline storage when the session ended.
        assert sorted(await offline_bodies(a2, "new", 2)) == ["after the start", "before the stop"]
        await a2.close()
        await b.close()
        finish(d)
    finally:
        d.cleanup()


async def test_kill9_after_the_restart_loses_nothing_and_resumes_nothing():
    """The saved session is restored; the daemon is then killed: its record (counters as of the
    stop) is not trusted again, the session ends at the next start and its queue goes offline."""
    d = daemon()
    try:
        _, sm_id = await stopped_with_unacked(d, "laptop", "saved at the stop")
        d.start()
        b = await sender(d)  # (served: the restored session is back)
        await b.close()
        d.kill9()
        d.start()
        a2, res = await resume(d, "alice", sm_id, 0)
        assert item_not_found(res), res
        assert await offline_bodies(a2, "again", 1) == ["saved at the stop"]
        await a2.close()
        finish(d)
    finally:
        d.cleanup()


async def test_clean_close_and_plain_sessions_are_not_kept():
    """Only hibernated resumable sessions are saved: a session without SM ends at the stop as
    before (its full JID is free after the restart, and nothing waits for it)."""
    d = daemon()
    try:
        plain = await sender(d, "alice")  # no SM
        a, a_jid, sm_id = await sm_client(d, "alice", "kept")
        assert d.stop() == 0
        await plain.close()
        await a.close()
        d.start()
        again = await RawClient.connect(d.c2s)
        assert await again.login("alice", PW, resource="desk") == "alice@localhost/desk"
        await again.close()
        a2, res = await resume(d, "alice", sm_id, 0)
        assert res.tag == "resumed", res  # type: ignore[attr-defined]
        await a2.send("</stream:stream>")
        await a2.close()
        finish(d)
    finally:
        d.cleanup()


async def _presence_from(c: RawClient, frm: str, type_: str | None) -> object:
    while True:
        el = await c.element()
        if el.tag == "presence" and el.get("from") == frm and el.get("type") == type_:
            return el


async def test_restored_session_keeps_its_presence_for_contacts():
    """Contacts were never told it left: a contact's probe after the restart is answered with
    the saved presence (status and priority), and the resumed client sees the contact's
    presence changes that happened while it was away."""
    d = daemon()
    try:
        a = await RawClient.connect(d.c2s)
        await a.auth("alice", PW)
        a_jid = await a.bind("phone")
        await a.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        sm_id = (await a.element()).get("id")
        await a.send("<presence><status>on the train</status><priority>5</priority></presence>")
        b = await sender(d)
        b_jid = "bob@localhost/desk"
        await b.send("<presence/>")
        await a.send("<presence to='bob@localhost' type='subscribe'/>")
        await _presence_from(b, "alice@localhost", "subscribe")
        await b.send("<presence to='alice@localhost' type='subscribed'/>")
        await b.send("<presence to='alice@localhost' type='subscribe'/>")
        await _presence_from(a, "bob@localhost", "subscribe")
        await a.send("<presence to='bob@localhost' type='subscribed'/>")
        await _presence_from(b, a_jid, None)  # mutual now: alice's presence reaches bob
        assert d.stop() == 0
        await a.close()
        await b.close()
        d.start()
        b = await sender(d)
        await b.send("<presence/>")  # initial presence: probes its contacts
        p = await _presence_from(b, a_jid, None)
        assert p.findtext("status") == "on the train" and p.findtext("priority") == "5"  # type: ignore[attr-defined]
        a2, res = await resume(d, "alice", sm_id, 0)  # type: ignore[arg-type]
        assert res.tag == "resumed", res  # type: ignore[attr-defined]
        # Queued while away: bob leaving at the stop, then bob back after the start.
        await _presence_from(a2, b_jid, "unavailable")
        await _presence_from(a2, b_jid, None)
        await a2.close()
        await b.close()
        finish(d)
    finally:
        d.cleanup()


async def test_server_down_longer_than_the_window_restores_nothing_resumable():
    d = daemon("2s")
    try:
        a_jid, sm_id = await stopped_with_unacked(d, "watch", "kept in storage")
        await asyncio.sleep(3)  # down longer than the whole 2 s window
        d.start()
        a2, res = await resume(d, "alice", sm_id, 1)
        assert item_not_found(res), res
        # The resource is free again (the session ended at the start); its message waited.
        assert await offline_bodies(a2, "watch", 1) == ["kept in storage"]
        await a2.close()
        finish(d)
    finally:
        d.cleanup()


async def tamper(d: Daemon, change) -> None:  # type: ignore[no-untyped-def]
    """Edit the saved sessions while the daemon is stopped: ``change(records)`` per account."""
    from mbxmpp.modules.sm_restart import RECORD_VERSION, STORE
    from mbxmpp.storage import open_storage
    storage = open_storage("lmdb", f"{d.dir}/data")
    try:
        store = storage.keyval(STORE, RECORD_VERSION)
        for owner in list(store.owners()):
            await store.set(owner, change(store.get(owner)))
    finally:
        await storage.close()


@pytest.mark.parametrize("damage", [
    {"h_out": "many", "full": "@@"},
    {"priority": "high", "directed": 5},  # presence-side fields: read after the counters
], ids=["counters", "presence-fields"])
async def test_unreadable_saved_session_is_dropped_and_the_others_resume(damage):
    """Dropped whole: its full JID is not left bound to a session nobody can resume (an IQ to
    it gets service-unavailable, RFC 6120 §10.5.3.2, instead of waiting in a ghost's queue)."""
    d = daemon()
    try:
        good, good_jid, good_id = await sm_client(d, "alice", "good")
        bad, bad_jid, bad_id = await sm_client(d, "alice", "bad")
        assert d.stop() == 0
        await good.close()
        await bad.close()
        await tamper(d, lambda recs: {k: (dict(v, **damage) if k == bad_id else v)
                                for k, v in recs.items()})
        d.start()
        b2, res = await resume(d, "alice", bad_id, 0)
        assert item_not_found(res), res
        await b2.close()
        b = await sender(d)
        await b.send(f"<iq type='get' id='ghost' to='{bad_jid}'><ping xmlns='urn:xmpp:ping'/></iq>")
        reply = await b.element()
        assert reply.get("id") == "ghost" and reply.get("type") == "error", reply
        assert reply.find("error").find("service-unavailable", NS_STANZAS) is not None  # type: ignore[union-attr]
        await b.close()
        g2, res = await resume(d, "alice", good_id, 0)
        assert res.tag == "resumed", res  # type: ignore[attr-defined]
        await g2.send("</stream:stream>")
        await g2.close()
        finish(d)
    finally:
        d.cleanup()


async def test_resume_across_a_restart_over_each_transport(transport):
    """WebSocket and BOSH streams get their <system-shutdown/> before the HTTP side stops: their
    sessions hibernate and are saved like TCP ones, and resume over the same transport."""
    d = daemon()
    try:
        a, a_jid, sm_id = await sm_client(d, "alice", "web", transport)
        b = await sender(d)
        await send_all(b, a_jid, ["unacked"])
        assert await bodies(a, 1) == ["unacked"]
        await b.close()
        assert d.stop() == 0
        await a.close()
        d.start()
        a2, res = await resume(d, "alice", sm_id, 0, transport)
        assert res.tag == "resumed", res  # type: ignore[attr-defined]
        assert await bodies(a2, 1) == ["unacked"]  # (after the re-sent presence echo)
        await a2.send(f"<a xmlns='{NS_SM}' h='2'/>")
        await a2.close()
        finish(d)
    finally:
        d.cleanup()


async def test_a_start_that_fails_before_restoring_keeps_the_saved_sessions():
    """A start that fails after the modules loaded but before the sessions were restored (here
    the s2s port is taken) stops without having restored anything: the saved sessions, and the
    unacknowledged messages in them, must wait for the next start instead of being wiped."""
    import socket
    d = daemon()
    try:
        a_jid, sm_id = await stopped_with_unacked(d, "phone", "kept through a failed start")
        taken = socket.socket()
        taken.bind(("127.0.0.1", d.s2s))
        taken.listen()
        try:
            try:
                d.start()
            except RuntimeError:
                pass  # exited: the s2s listener could not bind
            else:
                raise AssertionError("the daemon started with its s2s port taken")
            assert d.proc is not None and d.proc.poll() is not None
            d.stop()
        finally:
            taken.close()
        d.start()
        a2, res = await resume(d, "alice", sm_id, 1)  # (handled: its presence echo)
        assert res.tag == "resumed", res  # type: ignore[attr-defined]
        assert await bodies(a2, 1) == ["kept through a failed start"]
        await a2.send(f"<a xmlns='{NS_SM}' h='2'/>")
        await a2.send("</stream:stream>")
        await a2.close()
        finish(d)
    finally:
        d.cleanup()


async def push_registered(d: Daemon) -> tuple[RawClient, RawClient, str]:
    """The app server (a local resource, app@localhost/desk, that the publishes reach) and
    alice's SM session, push-registered with it (XEP-0357 enable)."""
    d.add_user("app@localhost", PW)
    app = await sender(d, "app")
    await app.send("<presence/>")
    a, a_jid, _ = await sm_client(d, "alice", "phone")
    await a.send("<iq type='set' id='p1'><enable xmlns='urn:xmpp:push:0' "
                 "jid='app@localhost/desk' node='n1'/></iq>")
    while (await a.element()).get("id") != "p1":
        pass
    return app, a, a_jid


async def test_push_count_of_a_restored_session_counts_each_message_once():
    """A push-registered session hibernated with one unacknowledged message: the restart brings
    it back (and notifies again), but the stored XEP-0357 message-count stays 1, not 2."""
    from mbxmpp.storage import open_storage
    d = daemon()
    try:
        app, a, a_jid = await push_registered(d)
        a.writer.transport.abort()  # hibernates
        b = await sender(d)
        await send_all(b, a_jid, ["pending"])
        while True:
            el = await app.element()
            if el.tag == "iq" and el.get("type") == "set":
                await app.send(f"<iq type='result' id='{el.get('id')}' to='{el.get('from')}'/>")
                break
        await b.close()
        await app.close()
        assert d.stop() == 0
        d.start()
        b = await sender(d)  # (served: the restored session is back and notified)
        await send_all(b, "bob@localhost", [])
        await b.close()
        assert d.stop() == 0
        storage = open_storage("lmdb", f"{d.dir}/data")
        try:
            count = storage.map("push").get("alice@localhost", "summary")[1]
        finally:
            await storage.close()
        assert count == 1, count
    finally:
        d.cleanup()


async def test_a_graceful_stop_keeps_the_push_registrations():
    """The stop hibernates a push-registered session holding an unacknowledged message; the
    notification then fails because the server's own links are going down (here the app
    server's session ends too; a remote one is cut off by the stopped federation). That is
    not the app server's refusal (XEP-0357 §7.1): the registration stays for the restart."""
    from mbxmpp.storage import open_storage
    d = daemon()
    try:
        app, a, a_jid = await push_registered(d)
        b = await sender(d)
        await send_all(b, a_jid, ["unacked at the stop"])
        assert await bodies(a, 1) == ["unacked at the stop"]
        assert d.stop() == 0
        for c in (a, b, app):
            await c.close()
        storage = open_storage("lmdb", f"{d.dir}/data")
        try:
            kept = [k for k in storage.map("push").get_all("alice@localhost") if k != "summary"]
        finally:
            await storage.close()
        assert len(kept) == 1, (kept, d.log())
    finally:
        d.cleanup()
