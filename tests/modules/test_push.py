"""Push Notifications (XEP-0357): enable/disable, notifications for offline and hibernated
(Stream Management) sessions, coalescing, no body by default, error handling, the wake-up push
before a hibernation expires, the longer hibernation timeout, CSI, account deletion.

The app server is a logged-in local account with a full JID; its FakeClient answers the
publish IQs itself.
"""

from __future__ import annotations

import asyncio

import pytest

from mbxmpp.config import SMConfig
from mbxmpp.modules.push import NS_PUBSUB_PUBLISH_OPTIONS, NS_PUSH_SUMMARY, worth_pushing
from mbxmpp.modules.sm import StreamManagement
from mbxmpp.stream.c2s import ST_BIND
from mbxmpp.xml.element import Element
from mbxmpp.xml.ns import NS_CSI, NS_DATA, NS_DISCO_INFO, NS_PUBSUB, NS_PUSH, NS_SM, NS_STANZAS
from tests.harness import FakeClient, ServerHarness, parse_stanza

MODULES = ["disco", "roster", "presence", "offline", "sm", "csi", "push"]
A = "alice@localhost"
B = "bob@localhost"
APP = "appserver@localhost"
APPF = APP + "/srv"
OPTIONS = (f"<x xmlns='{NS_DATA}' type='submit'>"
           f"<field var='FORM_TYPE'><value>{NS_PUBSUB_PUBLISH_OPTIONS}</value></field>"
           "<field var='secret'><value>s3cret</value></field></x>")
COMPOSING = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"


# -- helpers ------------------------------------------------------------------------------------
def is_push(s: Element) -> bool:
    return s.tag == "iq" and s.get("type") == "set" and s.find("pubsub", NS_PUBSUB) is not None


def fields(iq: Element) -> dict[str, str]:
    n = iq.find("pubsub", NS_PUBSUB).find("publish").find("item").find("notification", NS_PUSH)
    x = n.find("x", NS_DATA)
    return {f.get("var"): f.findtext("value", NS_DATA) for f in x.findall("field", NS_DATA)}


def answer(h, app: FakeClient, iq: Element, error: str | None = None) -> None:
    if error is None:
        h.send(app, f"<iq type='result' to='{iq.get('from')}' id='{iq.get('id')}'/>")
    else:
        cond, etype = error.split("/")
        h.send(app, f"<iq type='error' to='{iq.get('from')}' id='{iq.get('id')}'><error type='{etype}'>"
                    f"<{cond} xmlns='{NS_STANZAS}'/></error></iq>")


async def enable(h, c: FakeClient, node: str = "n1", jid: str = APPF, form: str = OPTIONS,
                 id_: str = "e1") -> Element:
    h.send(c, f"<iq type='set' id='{id_}'><enable xmlns='{NS_PUSH}' jid='{jid}' node='{node}'>"
              f"{form}</enable></iq>")
    return await c.expect(lambda s: s.get("id") == id_)


def cond(s: Element) -> str | None:
    err = s.find("error")
    if err is None:
        return None
    return next(c.tag for c in err.elements() if c.ns == NS_STANZAS and c.tag != "text")


def sm_capable(c: FakeClient) -> FakeClient:
    """What SM needs from a stream besides what FakeClient has (raw writes, clean_close)."""
    c.written = []  # type: ignore[attr-defined]
    c.write = c.written.append  # type: ignore[attr-defined]
    c.clean_close = False  # type: ignore[attr-defined]
    return c


def enable_sm(h, c: FakeClient) -> str:
    sm_capable(c)
    assert h.server.handle_nonza(c, Element("enable", NS_SM, {"resume": "true"}))
    return c.session.mod[StreamManagement].id


def resume(h, user: str, sm_id: str) -> FakeClient:
    """A new connection resuming ``sm_id`` (XEP-0198 §5); returns it with what it got."""
    c = sm_capable(FakeClient(h, user))
    c.username, c.host = user.split("@")  # type: ignore[attr-defined]
    c.stage = ST_BIND  # type: ignore[attr-defined]

    def attach(session):  # type: ignore[no-untyped-def]
        c.session = session
        session.stream = c
    c.attach_session = attach  # type: ignore[attr-defined]
    assert h.server.handle_nonza(c, Element("resume", NS_SM, {"previd": sm_id, "h": "0"}))
    return c


async def setup(h, *, sm: bool = False):
    app = await h.login(APP, "srv")
    b = await h.login(B, "b1", presence=True)
    a = await h.login(A, "a1", presence=True)
    sm_id = enable_sm(h, a) if sm else None
    assert (await enable(h, a)).get("type") == "result"
    return app, a, b, sm_id


def push_mod(h):
    return h.server.module("push")


# -- tests --------------------------------------------------------------------------------------
def test_worth_pushing():
    def m(x: str) -> Element:
        return parse_stanza(x)
    assert worth_pushing(m("<message type='chat'><body>hi</body></message>"))
    assert worth_pushing(m("<message><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>"))
    assert not worth_pushing(m("<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/>"
                                 "</message>"))
    assert not worth_pushing(m("<message type='groupchat'><body>hi</body></message>"))
    assert not worth_pushing(m("<message type='error'><body>hi</body></message>"))
    assert not worth_pushing(m("<message><received xmlns='urn:xmpp:carbons:2'/></message>"))


async def test_disco_advertises_push_on_account():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "a1")
        h.send(a, f"<iq type='get' id='d1' to='{A}'><query xmlns='{NS_DISCO_INFO}'/></iq>")
        r = await a.expect(lambda s: s.get("id") == "d1")
        feats = {f.get("var") for f in r.find("query", NS_DISCO_INFO).findall("feature", NS_DISCO_INFO)}
        assert NS_PUSH in feats


@pytest.mark.parametrize("storage", ["memory", "lmdb"])
async def test_enable_disable(storage):
    async with ServerHarness(modules=MODULES, storage=storage) as h:
        a = await h.login(A, "a1")
        p = push_mod(h)
        assert (await enable(h, a, "n1", id_="e1")).get("type") == "result"
        assert (await enable(h, a, "n2", form="", id_="e2")).get("type") == "result"
        assert (await enable(h, a, "n1", jid="other.example", form="", id_="e3")).get("type") == "result"
        regs = p.registrations(A)
        assert sorted((r[1], r[2]) for r in regs.values()) == [(APPF, "n1"), (APPF, "n2"),
                                                               ("other.example", "n1")]
        r1 = regs[f"{APPF}\0n1"]
        assert r1 == [1, APPF, "n1", [["secret", ["s3cret"]]], A + "/a1"]
        # Enabling again replaces the publish options (XEP-0357 §5).
        assert (await enable(h, a, "n1", form="", id_="e4")).get("type") == "result"
        assert p.registrations(A)[f"{APPF}\0n1"][3] is None
        assert p.is_registered(a.session)
        # Disable one node, then every node of a service.
        h.send(a, f"<iq type='set' id='d1'><disable xmlns='{NS_PUSH}' jid='{APPF}' node='n2'/></iq>")
        assert (await a.expect(lambda s: s.get("id") == "d1")).get("type") == "result"
        assert sorted(r[2] for r in p.registrations(A).values()) == ["n1", "n1"]
        h.send(a, f"<iq type='set' id='d2'><disable xmlns='{NS_PUSH}' jid='{APPF}'/></iq>")
        assert (await a.expect(lambda s: s.get("id") == "d2")).get("type") == "result"
        assert [r[1] for r in p.registrations(A).values()] == ["other.example"]
        # Stored durably, removed with the account.
        await h.server.storage.flush()
        assert p.store.get_all(A)
        await h.server.storage.delete_owner(A)
        assert p.registrations(A) == {}


async def test_bad_enable_and_disable():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "a1")
        cases = [
            (f"<enable xmlns='{NS_PUSH}' node='n'/>", "bad-request"),
            (f"<enable xmlns='{NS_PUSH}' jid='a@b@c' node='n'/>", "jid-malformed"),
            (f"<enable xmlns='{NS_PUSH}' jid='push.example'/>", "bad-request"),
            (f"<enable xmlns='{NS_PUSH}' jid='push.example' node='n'><x xmlns='{NS_DATA}' type='submit'>"
             "<field var='FORM_TYPE'><value>urn:example</value></field></x></enable>", "bad-request"),
            (f"<disable xmlns='{NS_PUSH}'/>", "bad-request"),
            (f"<disable xmlns='{NS_PUSH}' jid='@bad'/>", "jid-malformed"),
        ]
        for i, (payload, want) in enumerate(cases):
            h.send(a, f"<iq type='set' id='b{i}'>{payload}</iq>")
            r = await a.expect(lambda s, i=i: s.get("id") == f"b{i}")
            assert r.get("type") == "error" and cond(r) == want, (payload, r)
        # Another user cannot enable push for alice.
        b = await h.login(B, "b1")
        h.send(b, f"<iq type='set' id='x' to='{A}'><enable xmlns='{NS_PUSH}' jid='p.example' node='n'/></iq>")
        r = await b.expect(lambda s: s.get("id") == "x")
        assert r.get("type") == "error"
        assert push_mod(h).registrations(A) == {}


async def test_offline_user_notified_without_body_and_message_kept():
    async with ServerHarness(modules=MODULES) as h:
        app, a, b, _ = await setup(h)
        h.disconnect(a)  # no Stream Management: the session ends
        await app.settle()
        h.send(b, f"<message to='{A}' type='chat' id='m1'><body>secret text</body></message>")
        iq = await app.expect(is_push)
        assert iq.get("from") == A and iq.get("to") == APPF
        ps = iq.find("pubsub", NS_PUBSUB)
        assert ps.find("publish").get("node") == "n1"
        f = fields(iq)
        assert f == {"FORM_TYPE": NS_PUSH_SUMMARY, "message-count": "1", "last-message-sender": B + "/b1"}
        assert b"secret text" not in iq.to_bytes()  # XEP-0357 §9: no body unless the operator wants
        po = ps.find("publish-options").find("x", NS_DATA)
        assert {f.get("var"): f.findtext("value", NS_DATA) for f in po.findall("field", NS_DATA)} == {
            "FORM_TYPE": NS_PUBSUB_PUBLISH_OPTIONS, "secret": "s3cret"}
        answer(h, app, iq)
        # Offline storage still took it; the sender got no error.
        assert h.server.module("offline").count(A) == 1
        assert [s for s in await b.settle() if s.get("type") == "error"] == []
        # Chat states alone do not notify.
        h.send(b, f"<message to='{A}' type='chat'>{COMPOSING}</message>")
        assert [s for s in await app.settle() if is_push(s)] == []
        assert push_mod(h).registrations(A)  # a result keeps it


async def test_body_included_when_operator_enables_it():
    async with ServerHarness(modules=MODULES) as h:
        push_mod(h).include_body = True
        app, a, b, _ = await setup(h)
        h.disconnect(a)
        h.send(b, f"<message to='{A}' type='chat'><body>hello there</body></message>")
        iq = await app.expect(is_push)
        assert fields(iq)["last-message-body"] == "hello there"


async def test_counts_coalesce_under_the_rate_limit_and_reset_when_online():
    async with ServerHarness(modules=MODULES) as h:
        p = push_mod(h)
        p.min_interval = 0.4
        app, a, b, _ = await setup(h)
        h.disconnect(a)
        for i in range(4):
            h.send(b, f"<message to='{A}' type='chat' id='m{i}'><body>{i}</body></message>")
        first = await app.expect(is_push)
        assert fields(first)["message-count"] == "1"
        answer(h, app, first)
        assert [s for s in await app.settle() if is_push(s)] == []  # held back by the limit
        second = await app.expect(is_push, timeout=1.0)
        assert fields(second)["message-count"] == "4"
        answer(h, app, second)
        await asyncio.sleep(0.5)
        assert [s for s in await app.settle() if is_push(s)] == []
        # Online again: the count starts over.
        a2 = await h.login(A, "a2", presence=True)  # gets the 4 offline messages
        assert h.server.module("offline").count(A) == 0
        h.disconnect(a2)
        h.send(b, f"<message to='{A}' type='chat'><body>again</body></message>")
        iq = await app.expect(is_push)
        assert fields(iq)["message-count"] == "1"


async def test_hibernated_session_notified_and_message_delivered_on_resumption():
    async with ServerHarness(modules=MODULES) as h:
        app, a, b, sm_id = await setup(h, sm=True)
        h.disconnect(a)
        sm = h.server.module("sm")
        assert sm.hibernating(a.session)
        await app.settle()
        h.send(b, f"<message to='{A}/a1' type='chat' id='h1'><body>while away</body></message>")
        iq = await app.expect(is_push)
        assert fields(iq)["message-count"] == "1"
        assert fields(iq)["last-message-sender"] == B + "/b1"
        answer(h, app, iq)
        # Nothing went to offline storage: the hibernated session queued it.
        assert h.server.module("offline").count(A) == 0
        a2 = resume(h, A, sm_id)
        out = b"".join(a2.written)
        assert b"<resumed" in out and b"while away" in out
        assert not sm.hibernating(a2.session)


async def test_no_push_while_another_resource_is_online():
    async with ServerHarness(modules=MODULES) as h:
        app, a, b, _ = await setup(h, sm=True)
        h.disconnect(a)
        desk = await h.login(A, "desk", presence=True)
        await app.settle()
        h.send(b, f"<message to='{A}' type='chat'><body>to all</body></message>")
        await desk.expect(lambda s: s.tag == "message")
        assert [s for s in await app.settle() if is_push(s)] == []


async def test_csi_inactive_hibernated_session():
    async with ServerHarness(modules=MODULES) as h:
        app, a, b, sm_id = await setup(h, sm=True)
        assert h.server.handle_nonza(a, Element("inactive", NS_CSI))
        h.disconnect(a)
        await app.settle()
        h.send(b, f"<message to='{A}/a1' type='chat'>{COMPOSING}</message>")
        assert [s for s in await app.settle() if is_push(s)] == []  # CSI holds it; no push
        h.send(b, f"<message to='{A}/a1' type='chat'><body>urgent</body></message>")
        iq = await app.expect(is_push)
        assert fields(iq)["message-count"] == "1"
        answer(h, app, iq)
        a2 = resume(h, A, sm_id)
        assert b"urgent" in b"".join(a2.written)


@pytest.mark.parametrize("error,kept", [("item-not-found/cancel", False), ("not-authorized/auth", False),
                                         ("resource-constraint/wait", True)])
async def test_error_reply_disables_unless_transient(error, kept):
    async with ServerHarness(modules=MODULES) as h:
        app, a, b, _ = await setup(h)
        h.disconnect(a)
        h.send(b, f"<message to='{A}' type='chat'><body>x</body></message>")
        iq = await app.expect(is_push)
        answer(h, app, iq, error)
        await app.settle()
        await asyncio.sleep(0.05)
        assert bool(push_mod(h).registrations(A)) is kept


async def test_timeout_keeps_registration():
    async with ServerHarness(modules=MODULES) as h:
        push_mod(h).publish_timeout = 0.1
        app, a, b, _ = await setup(h)
        h.disconnect(a)
        h.send(b, f"<message to='{A}' type='chat'><body>x</body></message>")
        await app.expect(is_push)  # never answered
        await asyncio.sleep(0.3)
        assert push_mod(h).registrations(A)


async def test_unreachable_remote_app_server_disables():
    async with ServerHarness(modules=MODULES) as h:
        b = await h.login(B, "b1", presence=True)
        a = await h.login(A, "a1", presence=True)
        assert (await enable(h, a, jid="push.remote.example", form="")).get("type") == "result"
        h.disconnect(a)
        h.send(b, f"<message to='{A}' type='chat'><body>x</body></message>")
        await b.settle()
        await asyncio.sleep(0.05)
        # The router bounced the publish with remote-server-not-found (type cancel).
        assert push_mod(h).registrations(A) == {}


async def test_sm_uses_push_timeout_for_registered_sessions():
    async with ServerHarness(modules=MODULES, sm=SMConfig(resume_timeout=1, push_resume_timeout=50)) as h:
        await h.login(APP, "srv")
        a = await h.login(A, "a1", presence=True)
        c = await h.login(A, "c1", presence=True)
        # Push enabled before SM: SM picks the push timeout when enabling.
        assert (await enable(h, a)).get("type") == "result"
        enable_sm(h, a)
        assert a.session.mod[StreamManagement].max == 50
        # Another resource of the account without its own registration: the short one.
        enable_sm(h, c)
        assert c.session.mod[StreamManagement].max == 1
        assert not push_mod(h).is_registered(c.session)
        h.disconnect(c)
        assert c.session.stream.timer.when() - asyncio.get_running_loop().time() < 1.5
        # Push enabled after SM: the hibernation still gets the push timeout.
        d = await h.login(A, "d1", presence=True)
        enable_sm(h, d)
        assert d.session.mod[StreamManagement].max == 1
        assert (await enable(h, d, node="n2", id_="e2")).get("type") == "result"
        h.disconnect(d)
        await asyncio.sleep(0)
        assert h.server.module("sm").hibernating(d.session)
        assert d.session.stream.timer.when() - asyncio.get_running_loop().time() > 40


async def test_wake_up_push_before_hibernation_expires():
    async with ServerHarness(modules=MODULES, sm=SMConfig(resume_timeout=1, push_resume_timeout=2)) as h:
        app = await h.login(APP, "srv")
        a = await h.login(A, "a1", presence=True)
        assert (await enable(h, a)).get("type") == "result"
        enable_sm(h, a)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        h.disconnect(a)
        sm = h.server.module("sm")
        iq = await app.expect(is_push, timeout=3.0)
        waited = loop.time() - t0
        assert 1.5 < waited < 2.0, waited  # 10% of the 2 s timeout before expiry
        assert fields(iq)["message-count"] == "0"
        assert sm.hibernating(a.session)  # not expired yet
        answer(h, app, iq)
        await asyncio.sleep(0.4)
        assert a.session.closed  # then it expired


async def test_unacked_messages_pushed_when_hibernation_starts():
    async with ServerHarness(modules=MODULES) as h:
        app, a, b, sm_id = await setup(h, sm=True)
        # Sent on the live stream, never acknowledged by the client.
        a.session.mod[StreamManagement].outbound(parse_stanza(  # the queue holds bytes
            f"<message from='{B}/b1' to='{A}/a1' type='chat'><body>unseen</body></message>"
        ).to_bytes())
        await app.settle()
        h.disconnect(a)
        iq = await app.expect(is_push)
        assert fields(iq)["message-count"] == "1"
