"""Message Carbons (XEP-0280): enable/disable, sent and received copies, eligibility (§6.1),
private/no-copy (§9), forged carbons (§11)."""

from __future__ import annotations

import pytest

from mbxmpp.core.iq import IQContext
from mbxmpp.core.modules import SELF
from mbxmpp.errors import StanzaError
from mbxmpp.jid import JID
from mbxmpp.modules.carbons import Carbons, is_eligible
from mbxmpp.xml.ns import NS_CARBONS, NS_CLIENT, NS_FORWARD, NS_STANZAS
from tests.harness import FakeClient, ServerHarness, parse_stanza
from tests.modules.test_mam_support import ALL_MODULES, chat, iq
from tests.modules.test_pep import error_of

MODULES = ["roster", "presence", "offline", "carbons"]
A = "alice@localhost"
B = "bob@localhost"


def carbon(kind: str):
    def pred(s):
        return s.tag == "message" and s.find(kind, NS_CARBONS) is not None
    return pred


def inner(s):
    """The forwarded message inside a carbon."""
    w = s.find("sent", NS_CARBONS) or s.find("received", NS_CARBONS)
    return w.find("forwarded", NS_FORWARD).find("message", NS_CLIENT)


def error_condition(s):
    err = s.find("error", NS_CLIENT)
    if err is None:
        return None
    for c in err.elements():
        if c.ns == NS_STANZAS and c.tag != "text":
            return c.tag
    return None


async def login(h, bare, res, *, carbons=False, priority=None, presence=True):
    c = await h.login(bare, res)
    if presence:
        p = "<presence/>" if priority is None else f"<presence><priority>{priority}</priority></presence>"
        h.send(c, p)
    if carbons:
        await enable(h, c)
    await c.settle()
    return c


async def enable(h, c, action="enable", id_="cb"):
    h.send(c, f"<iq type='set' id='{id_}'><{action} xmlns='urn:xmpp:carbons:2'/></iq>")
    r = await c.expect(lambda s: s.get("id") == id_)
    assert r.get("type") == "result", r
    return r


async def quiet(*clients):
    for c in clients:
        got = await c.settle()
        assert got == [], (c.jid, got)


async def three(h, *, a3_carbons=False):
    """alice with 3 resources (a1, a2 carbons-enabled; a3 not), and bob."""
    a1 = await login(h, A, "a1", carbons=True)
    a2 = await login(h, A, "a2", carbons=True)
    a3 = await login(h, A, "a3", carbons=a3_carbons)
    b = await login(h, B, "b1")
    for c in (a1, a2, a3, b):
        await c.settle()
    return a1, a2, a3, b


# -- enable / disable --------------------------------------------------------------------------

async def test_enable_disable_repeatable():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "r1")
        mod = h.server.module("carbons")
        assert not mod.enabled(a.session)
        await enable(h, a, id_="e1")
        await enable(h, a, id_="e2")      # §10.1: a second enable is not an error
        assert mod.enabled(a.session)
        await enable(h, a, "disable", "d1")
        await enable(h, a, "disable", "d2")
        assert not mod.enabled(a.session)
        # explicit 'to' = own bare JID works too
        h.send(a, "<iq type='set' id='e3' to='alice@localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        r = await a.expect(lambda s: s.get("id") == "e3")
        assert r.get("type") == "result" and r.get("from") == A


async def test_enable_not_allowed_without_local_session():
    async with ServerHarness(modules=MODULES) as h:
        mod = h.server.module("carbons")
        iq = parse_stanza("<iq type='set' id='x'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        ctx = IQContext(JID.parse(A + "/r"), JID.parse(A), None, SELF)
        with pytest.raises(StanzaError) as ei:
            mod.enable(iq, ctx)
        assert ei.value.condition == "not-allowed"


async def test_carbons_on_other_account_refused():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "r1")
        await login(h, B, "r1")
        h.send(a, "<iq type='set' id='x' to='bob@localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        r = await a.expect(lambda s: s.get("id") == "x")
        assert r.get("type") == "error"


def test_feature_and_metadata():
    assert Carbons.features == [NS_CARBONS]
    assert Carbons.xeps == {"0280": "1.0.1"}


# -- sent carbons ------------------------------------------------------------------------------

async def test_sent_carbons_three_resources():
    async with ServerHarness(modules=MODULES) as h:
        a1, a2, a3, b = await three(h)
        h.send(a1, "<message to='bob@localhost' type='chat' id='m1'><body>hi</body></message>")
        orig = await b.expect(lambda s: s.get("id") == "m1")
        assert orig.findtext("body") == "hi"
        c = await a2.expect(carbon("sent"))
        assert c.get("from") == A and c.get("to") == a2.jid and c.get("type") == "chat"
        m = inner(c)
        assert m.get("from") == a1.jid and m.get("to") == B and m.get("id") == "m1"
        assert m.findtext("body") == "hi"
        await quiet(a1, a2, a3, b)   # not to the sender, not to a disabled resource


async def test_sent_carbons_even_if_sender_disabled():
    async with ServerHarness(modules=MODULES) as h:
        a1, a2, a3, b = await three(h, a3_carbons=True)
        await enable(h, a1, "disable")
        h.send(a1, "<message to='bob@localhost' type='chat' id='m1'><body>x</body></message>")
        await b.expect(lambda s: s.get("id") == "m1")
        await a2.expect(carbon("sent"))
        await a3.expect(carbon("sent"))
        await quiet(a1, a2, a3, b)


async def test_sent_to_remote_is_copied():
    async with ServerHarness(modules=MODULES) as h:
        a1, a2, a3, b = await three(h)
        h.send(a1, "<message to='romeo@remote.example' type='chat' id='m1'><body>x</body></message>")
        c = await a2.expect(carbon("sent"))
        assert inner(c).get("to") == "romeo@remote.example"
        # the bounce (no s2s in the harness) reaches the sender, and, as an error answering an
        # eligible message (XEP-0280 §6.1), is copied to the other enabled resource
        err = await a1.expect(lambda s: s.get("type") == "error")
        assert error_condition(err) == "remote-server-not-found"
        assert inner(await a2.expect(carbon("received"))).get("type") == "error"
        await quiet(a1, a2, a3)


# -- received carbons --------------------------------------------------------------------------

async def test_received_carbons_to_full_jid():
    async with ServerHarness(modules=MODULES) as h:
        a1, a2, a3, b = await three(h)
        h.send(b, "<message to='alice@localhost/a1' type='chat' id='m1'><body>yo</body></message>")
        await a1.expect(lambda s: s.get("id") == "m1")
        c = await a2.expect(carbon("received"))
        assert c.get("from") == A and c.get("to") == a2.jid and c.get("type") == "chat"
        m = inner(c)
        assert m.get("from") == b.jid and m.get("to") == a1.jid
        await quiet(a1, a2, a3, b)
        # to a3 (disabled): a1 and a2 both get copies
        h.send(b, "<message to='alice@localhost/a3' type='chat' id='m2'><body>yo</body></message>")
        await a3.expect(lambda s: s.get("id") == "m2")
        await a1.expect(carbon("received"))
        await a2.expect(carbon("received"))
        await quiet(a1, a2, a3, b)


async def test_received_carbons_to_bare_skip_top_priority():
    async with ServerHarness(modules=MODULES) as h:
        a1 = await login(h, A, "a1", carbons=True, priority=5)
        a2 = await login(h, A, "a2", carbons=True, priority=1)
        a3 = await login(h, A, "a3", carbons=True, priority=5)
        a4 = await login(h, A, "a4", carbons=False, priority=0)
        b = await login(h, B, "b1")
        for c in (a1, a2, a3, a4):
            await c.settle()
        h.send(b, "<message to='alice@localhost' type='chat' id='m1'><body>yo</body></message>")
        # RFC 6121 §8.5.2.1.1: the top-priority resources get the original...
        await a1.expect(lambda s: s.get("id") == "m1")
        await a3.expect(lambda s: s.get("id") == "m1")
        # ... and only the other enabled ones a copy
        c = await a2.expect(carbon("received"))
        assert inner(c).get("to") == A
        await quiet(a1, a2, a3, a4, b)


async def test_received_to_unknown_resource_is_handled_as_bare():
    async with ServerHarness(modules=MODULES) as h:
        a1 = await login(h, A, "a1", carbons=True, priority=5)
        a2 = await login(h, A, "a2", carbons=True, priority=0)
        b = await login(h, B, "b1")
        await a1.settle()
        h.send(b, "<message to='alice@localhost/gone' type='chat' id='m1'><body>yo</body></message>")
        await a1.expect(lambda s: s.get("id") == "m1")
        await a2.expect(carbon("received"))
        await quiet(a1, a2, b)


async def test_no_carbons_when_message_goes_offline():
    async with ServerHarness(modules=MODULES) as h:
        # two sessions, carbons on, but no available resource: the message is stored offline
        a1 = await login(h, A, "a1", carbons=True, presence=False)
        a2 = await login(h, A, "a2", carbons=True, presence=False)
        b = await login(h, B, "b1")
        h.send(b, "<message to='alice@localhost' type='chat' id='m1'><body>later</body></message>")
        await quiet(a1, a2, b)
        # a negative priority does not take bare-JID messages either
        a3 = await login(h, A, "a3", carbons=True, priority=-1)
        await a3.settle()
        h.send(b, "<message to='alice@localhost' type='chat' id='m2'><body>later</body></message>")
        await quiet(a1, a2, a3, b)


async def test_message_to_self():
    async with ServerHarness(modules=MODULES) as h:
        a1, a2, a3, b = await three(h, a3_carbons=True)
        h.send(a1, "<message to='alice@localhost/a2' type='chat' id='m1'><body>note</body></message>")
        await a2.expect(lambda s: s.get("id") == "m1")
        c = await a3.expect(carbon("received"))
        assert inner(c).get("from") == a1.jid
        await quiet(a1, a2, a3, b)   # no sent carbon, nothing back to the sender


# -- eligibility (§6.1) --------------------------------------------------------------------------

@pytest.mark.parametrize("xml,copied", [
    ("<message type='chat'><body>x</body></message>", True),
    ("<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>", True),
    ("<message><body>x</body></message>", True),
    ("<message type='normal'><body>x</body></message>", True),
    ("<message type='normal'><subject>s</subject></message>", False),
    ("<message><received xmlns='urn:xmpp:receipts' id='r'/></message>", True),
    ("<message><displayed xmlns='urn:xmpp:chat-markers:0' id='r'/></message>", True),
    ("<message><composing xmlns='http://jabber.org/protocol/chatstates'/></message>", True),
    ("<message><x xmlns='jabber:x:conference' jid='room@muc.example'/></message>", True),
    ("<message><x xmlns='http://jabber.org/protocol/muc#user'><invite from='c@x'/></x></message>", True),
    ("<message><x xmlns='http://jabber.org/protocol/muc#user'/></message>", False),
    ("<message type='headline'><body>news</body></message>", False),
    ("<message type='groupchat'><body>x</body></message>", False),
    ("<message type='error'><body>x</body></message>", False),
    ("<message><event xmlns='http://jabber.org/protocol/pubsub#event'/></message>", False),
    ("<message type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>", False),
    ("<message type='chat'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>", False),
    ("<message type='chat'><private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/>"
     "<body>x</body></message>", False),
])
def test_eligibility(xml, copied):
    assert is_eligible(parse_stanza(xml)) is copied


@pytest.mark.parametrize("payload,copied", [
    ("<body>x</body>", True),
    ("<body>x</body><private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/>", False),
    ("<body>x</body><private xmlns='urn:xmpp:carbons:2'/>", False),
    ("<body>x</body><no-copy xmlns='urn:xmpp:hints'/>", False),
])
async def test_private_both_directions(payload, copied):
    async with ServerHarness(modules=MODULES) as h:
        a1, a2, a3, b = await three(h)
        h.send(a1, f"<message to='bob@localhost/b1' type='chat' id='s1'>{payload}</message>")
        orig = await b.expect(lambda s: s.get("id") == "s1")
        # §9: the original is delivered as sent (the <private/> element is not removed)
        assert (orig.find("private", NS_CARBONS) is not None) == ("private" in payload)
        h.send(b, f"<message to='alice@localhost/a1' type='chat' id='r1'>{payload}</message>")
        await a1.expect(lambda s: s.get("id") == "r1")
        if copied:
            await a2.expect(carbon("sent"))
            await a2.expect(carbon("received"))
        await quiet(a1, a2, a3, b)


@pytest.mark.parametrize("xml", [
    "<message to='bob@localhost/b1' type='groupchat' id='x'><body>x</body></message>",
    "<message to='bob@localhost/b1' type='headline' id='x'><body>x</body></message>",
    "<message to='bob@localhost/b1' type='normal' id='x'><thread>t</thread></message>",
])
async def test_not_eligible_not_copied(xml):
    async with ServerHarness(modules=MODULES) as h:
        a1, a2, a3, b = await three(h)
        h.send(a1, xml)
        await b.expect(lambda s: s.get("id") == "x")
        await quiet(a1, a2, a3, b)


async def test_eligible_kinds_copied_end_to_end():
    async with ServerHarness(modules=MODULES) as h:
        a1, a2, a3, b = await three(h)
        for i, payload in enumerate([
            "<body>plain normal</body>",
            "<received xmlns='urn:xmpp:receipts' id='m0'/>",
            "<displayed xmlns='urn:xmpp:chat-markers:0' id='m0'/>",
        ]):
            h.send(a1, f"<message to='bob@localhost' id='k{i}'>{payload}</message>")
            c = await a2.expect(carbon("sent"))
            assert inner(c).get("id") == f"k{i}" and c.get("type") is None
        await quiet(a2, a3)


async def test_muc_private_messages():
    async with ServerHarness(modules=MODULES) as h:
        a1, a2, a3, b = await three(h)
        # §6.1: a PM from an occupant (carries muc#user <x/>) is not copied...
        h.server.route(parse_stanza(
            "<message from='room@conference.remote.example/nick' to='alice@localhost/a1' type='chat'"
            " id='pm'><body>psst</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>"))
        await a1.expect(lambda s: s.get("id") == "pm")
        await quiet(a1, a2, a3)
        # ... a PM to an occupant is (sent to a full JID)
        h.send(a1, "<message to='room@conference.remote.example/nick' type='chat' id='pm2'>"
                   "<body>hey</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>")
        await a2.expect(carbon("sent"))
        # a mediated invitation is copied
        h.server.route(parse_stanza(
            "<message from='room@conference.remote.example' to='alice@localhost/a1' id='inv'>"
            "<x xmlns='http://jabber.org/protocol/muc#user'><invite from='carol@remote.example'/></x>"
            "</message>"))
        await a1.expect(lambda s: s.get("id") == "inv")
        await a2.expect(carbon("received"))


# -- forged carbons (§11) --------------------------------------------------------------------------

FORGED = ("<{kind} xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
          "<message xmlns='jabber:client' from='{frm}' to='alice@localhost' type='chat'>"
          "<body>I am your bank</body></message></forwarded></{kind}>")


@pytest.mark.parametrize("kind", ["sent", "received"])
async def test_forged_carbon_from_client_refused(kind):
    async with ServerHarness(modules=MODULES) as h:
        a1, a2, a3, b = await three(h)
        h.send(a1, f"<message to='bob@localhost' type='chat' id='f1'>"
                   f"{FORGED.format(kind=kind, frm='bank@localhost')}</message>")
        err = await a1.expect(lambda s: s.get("id") == "f1")
        assert err.get("type") == "error" and error_condition(err) == "not-allowed"
        await quiet(a1, a2, a3, b)
        # to one's own account too
        h.send(a1, f"<message to='alice@localhost/a2' type='chat' id='f2'>"
                   f"{FORGED.format(kind=kind, frm='bank@localhost')}</message>")
        err = await a1.expect(lambda s: s.get("id") == "f2")
        assert error_condition(err) == "not-allowed"
        await quiet(a1, a2, a3, b)


@pytest.mark.parametrize("kind", ["sent", "received"])
@pytest.mark.parametrize("to", ["alice@localhost", "alice@localhost/a1"])
async def test_forged_carbon_from_other_user_refused(kind, to):
    async with ServerHarness(modules=MODULES) as h:
        a1, a2, a3, b = await three(h)
        h.send(b, f"<message to='{to}' type='chat' id='f1'>"
                  f"{FORGED.format(kind=kind, frm='bank@localhost')}</message>")
        err = await b.expect(lambda s: s.get("id") == "f1")
        assert err.get("type") == "error" and error_condition(err) == "not-allowed"
        await quiet(a1, a2, a3, b)


async def test_forged_carbon_from_remote_dropped():
    async with ServerHarness(modules=MODULES) as h:
        a1, a2, a3, b = await three(h)
        h.server.route(parse_stanza(
            f"<message from='mallory@evil.example/x' to='alice@localhost' type='chat' id='f1'>"
            f"{FORGED.format(kind='received', frm='bank@localhost')}</message>"))
        # even claiming to be the account's own bare JID from outside
        h.server.route(parse_stanza(
            f"<message from='alice@localhost' to='alice@localhost/a1' type='chat' id='f2'>"
            f"{FORGED.format(kind='sent', frm='alice@localhost/a2')}</message>"))
        await quiet(a1, a2, a3, b)


async def test_one_copy_per_enabled_resource():
    async with ServerHarness(modules=MODULES) as h:
        a1, a2, a3, b = await three(h, a3_carbons=True)
        h.send(a1, "<message to='bob@localhost' type='chat' id='m'><body>x</body></message>")
        c2 = await a2.expect(carbon("sent"))
        c3 = await a3.expect(carbon("sent"))
        assert c2.get("to") == a2.jid and c3.get("to") == a3.jid
        assert inner(c2) == inner(c3)
        await quiet(a1, a2, a3)


async def carbons_on(h: ServerHarness, *clients: FakeClient) -> None:
    for c in clients:
        r = await iq(h, c, f"<enable xmlns='{NS_CARBONS}'/>", "set")
        assert r.get("type") == "result", r
        await c.settle()


# -- XEP-0280 -------------------------------------------------------------------------------------

async def test_xep0280_enable_addressed_to_the_server_domain():
    async with ServerHarness(modules=ALL_MODULES) as h:
        a1 = await h.login(A, "r1", presence=True)
        a2 = await h.login(A, "r2", presence=True)
        b = await h.login(B, "r1", presence=True)
        r = await iq(h, a2, f"<enable xmlns='{NS_CARBONS}'/>", "set", to="localhost")
        assert r.get("type") == "result", r
        h.send(a1, chat(B))
        await a2.expect(carbon("sent"))
        r = await iq(h, a2, f"<disable xmlns='{NS_CARBONS}'/>", "set", to="localhost")
        assert r.get("type") == "result", r
        h.send(b, chat(A, id_="m2"))
        await a1.expect(lambda s: s.get("id") == "m2")
        assert [s for s in await a2.settle() if s.find("received", NS_CARBONS) is not None] == []


async def test_xep0280_other_accounts_carbons_not_allowed():
    async with ServerHarness(modules=ALL_MODULES) as h:
        await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        for what in ("enable", "disable"):
            r = await iq(h, b, f"<{what} xmlns='{NS_CARBONS}'/>", "set", to=A)
            assert r.get("type") == "error"
            assert error_of(r)[0] == "not-allowed"


async def test_xep0280_6_1_error_answering_an_eligible_message_is_copied():
    async with ServerHarness(modules=ALL_MODULES) as h:
        a1 = await h.login(A, "r1", presence=True)
        a2 = await h.login(A, "r2", presence=True)
        await carbons_on(h, a1, a2)
        h.send(a1, chat("nobody@localhost", id_="lost"))
        err = await a1.expect(lambda s: s.get("type") == "error" and s.get("id") == "lost")
        assert error_of(err)[0] == "service-unavailable"
        await a2.expect(carbon("sent"))
        c = await a2.expect(carbon("received"))
        assert c.get("type") == "error" and c.get("from") == A
        assert inner(c).get("type") == "error" and inner(c).get("id") == "lost"
        # An error that answers nothing the account sent is not copied.
        h.server.route(parse_stanza(
            f"<message from='x@remote.example' to='{A}/r1' type='error' id='unrelated'>"
            "<error type='cancel'><service-unavailable "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"))
        await a1.expect(lambda s: s.get("id") == "unrelated")
        assert await a2.settle() == []
