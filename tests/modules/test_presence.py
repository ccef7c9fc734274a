"""Presence (RFC 6121 §4) and subscriptions (RFC 6121 §3, Appendix A) between local users."""

from __future__ import annotations

from mbxmpp.xml.ns import NS_ROSTER
from tests.harness import ServerHarness, parse_stanza

MODULES = ["roster", "presence", "offline"]
A = "alice@localhost"
B = "bob@localhost"
C = "carol@localhost"


def is_push(s) -> bool:
    return s.tag == "iq" and s.get("type") == "set" and s.find("query", NS_ROSTER) is not None


def push_item(s):
    return s.find("query", NS_ROSTER).find("item", NS_ROSTER)


def pres(type_=None, frm=None):
    def pred(s):
        return (s.tag == "presence" and s.get("type") == type_
                and (frm is None or s.get("from") == frm))
    return pred


async def login(h, bare, res, *, presence=True, roster=True):
    """Log in, fetch the roster (to get pushes), optionally send initial presence."""
    c = await h.login(bare, res)
    if roster:
        h.send(c, "<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>")
        await c.expect(lambda s: s.get("id") == "rg")
    if presence:
        h.send(c, "<presence/>")
    await c.settle()
    return c


async def no_stanzas(c, pred=lambda s: True):
    got = [s for s in await c.settle() if pred(s)]
    assert got == [], got


def item_state(push):
    it = push_item(push)
    return it.get("subscription"), it.get("ask"), it.get("approved")


async def make_mutual(h, a, b):
    """alice and bob subscribe to each other (both online, both interested)."""
    h.send(a, "<presence to='bob@localhost' type='subscribe'/>")
    await b.expect(pres("subscribe", A))
    h.send(b, "<presence to='alice@localhost' type='subscribed'/>")
    h.send(b, "<presence to='alice@localhost' type='subscribe'/>")
    await a.expect(pres("subscribe", B))
    h.send(a, "<presence to='bob@localhost' type='subscribed'/>")
    await a.settle()
    await b.settle()
    roster = h.server.module("roster")
    assert roster.subscription(A, B) == "both" and roster.subscription(B, A) == "both"


async def test_full_handshake():
    async with ServerHarness(modules=MODULES) as h:
        roster = h.server.module("roster")
        a = await login(h, A, "r1")
        b = await login(h, B, "r1")
        # alice asks
        h.send(a, "<presence to='bob@localhost/whatever' type='subscribe'><status>hi</status></presence>")
        assert item_state(await a.expect(is_push)) == ("none", "subscribe", None)
        req = await b.expect(pres("subscribe"))
        assert req.get("from") == A and req.get("to") == B  # stamped with bare JIDs
        assert req.findtext("status") == "hi"
        await no_stanzas(b, is_push)  # the request does not touch bob's roster
        assert roster.is_pending_in(B, A)
        # bob accepts
        h.send(b, "<presence to='alice@localhost' type='subscribed'/>")
        assert item_state(await b.expect(is_push)) == ("from", None, None)
        assert item_state(await a.expect(is_push)) == ("to", None, None)
        ok = await a.expect(pres("subscribed"))
        assert ok.get("from") == B
        # ... and alice gets bob's current presence right away
        p = await a.expect(pres(None, B + "/r1"))
        assert p.get("to") == A
        assert not roster.is_pending_in(B, A)
        # bob asks back, alice accepts
        h.send(b, "<presence to='alice@localhost' type='subscribe'/>")
        assert item_state(await b.expect(is_push)) == ("from", "subscribe", None)
        await a.expect(pres("subscribe", B))
        h.send(a, "<presence to='bob@localhost' type='subscribed'/>")
        assert item_state(await a.expect(is_push)) == ("both", None, None)
        assert item_state(await b.expect(is_push)) == ("both", None, None)
        await b.expect(pres("subscribed", A))
        await b.expect(pres(None, A + "/r1"))
        assert roster.subscription(A, B) == "both" and roster.subscription(B, A) == "both"


async def test_duplicate_and_unsolicited_subscribed_ignored():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "r1")
        b = await login(h, B, "r1")
        await h.create_user(C)
        # Unsolicited subscribed from carol: alice never asked.
        h.server.route(parse_stanza(
            "<presence from='carol@localhost' to='alice@localhost' type='subscribed'/>"))
        await no_stanzas(a)
        assert h.server.module("roster").get_item(A, C) is None
        await make_mutual(h, a, b)
        # Duplicate subscribed from bob: no push, not delivered.
        h.send(b, "<presence to='alice@localhost' type='subscribed'/>")
        await no_stanzas(a)
        await no_stanzas(b, is_push)
        # Duplicate subscribe from alice: bob's server auto-replies 'subscribed' (which changes
        # nothing for alice, so it is not delivered: A.3.3) and sends bob's presence again.
        h.send(a, "<presence to='bob@localhost' type='subscribe'/>")
        await a.expect(pres(None, B + "/r1"))
        await no_stanzas(a, pres("subscribed"))
        await no_stanzas(a, is_push)
        await no_stanzas(b)


async def test_pre_approval():
    async with ServerHarness(modules=MODULES) as h:
        roster = h.server.module("roster")
        a = await login(h, A, "r1")
        b = await login(h, B, "r1")
        # bob pre-approves alice before she asks (RFC 6121 §3.4)
        h.send(b, "<presence to='alice@localhost' type='subscribed'/>")
        assert item_state(await b.expect(is_push)) == ("none", None, "true")
        await no_stanzas(a)  # not routed
        # alice asks: accepted at once, bob's clients are not asked
        h.send(a, "<presence to='bob@localhost' type='subscribe'/>")
        assert item_state(await a.expect(is_push)) == ("none", "subscribe", None)
        await a.expect(pres("subscribed", B))
        assert item_state(await a.expect(is_push)) == ("to", None, None)
        await a.expect(pres(None, B + "/r1"))
        assert item_state(await b.expect(is_push)) == ("from", None, None)
        await no_stanzas(b, pres("subscribe"))
        assert roster.subscription(B, A) == "from"
        assert roster.get_item(B, A).approved is False


async def test_pre_approval_cancelled_by_unsubscribed():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "r1")
        b = await login(h, B, "r1")
        h.send(b, "<presence to='alice@localhost' type='subscribed'/>")
        assert item_state(await b.expect(is_push)) == ("none", None, "true")
        h.send(b, "<presence to='alice@localhost' type='unsubscribed'/>")
        assert item_state(await b.expect(is_push)) == ("none", None, None)
        await a.settle()
        h.send(a, "<presence to='bob@localhost' type='subscribe'/>")
        await b.expect(pres("subscribe", A))  # asked normally now
        await no_stanzas(a, pres("subscribed"))


async def test_deny_request():
    async with ServerHarness(modules=MODULES) as h:
        roster = h.server.module("roster")
        a = await login(h, A, "r1")
        b = await login(h, B, "r1")
        h.send(a, "<presence to='bob@localhost' type='subscribe'/>")
        await b.expect(pres("subscribe", A))
        await a.expect(is_push)
        h.send(b, "<presence to='alice@localhost' type='unsubscribed'/>")
        await a.expect(pres("unsubscribed", B))
        assert item_state(await a.expect(is_push)) == ("none", None, None)
        await no_stanzas(b, is_push)  # bob has no item for alice
        assert not roster.is_pending_in(B, A)
        assert roster.get_item(B, A) is None


async def test_cancel_and_unsubscribe():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "r1")
        b = await login(h, B, "r1")
        await make_mutual(h, a, b)
        # bob cancels alice's subscription to him (RFC 6121 §3.2)
        h.send(b, "<presence to='alice@localhost' type='unsubscribed'/>")
        assert item_state(await b.expect(is_push)) == ("to", None, None)
        await a.expect(pres("unsubscribed", B))
        assert item_state(await a.expect(is_push)) == ("from", None, None)
        await a.expect(pres("unavailable", B + "/r1"))
        # bob's later presence no longer reaches alice; alice's still reaches bob
        h.send(b, "<presence><show>away</show></presence>")
        await no_stanzas(a, pres(None, B + "/r1"))
        h.send(a, "<presence><show>dnd</show></presence>")
        await b.expect(pres(None, A + "/r1"))
        # bob unsubscribes from alice (RFC 6121 §3.3)
        h.send(b, "<presence to='alice@localhost' type='unsubscribe'/>")
        assert item_state(await b.expect(is_push)) == ("none", None, None)
        await a.expect(pres("unsubscribe", B))
        assert item_state(await a.expect(is_push)) == ("none", None, None)
        await b.expect(pres("unavailable", A + "/r1"))
        roster = h.server.module("roster")
        assert roster.subscription(A, B) == "none" and roster.subscription(B, A) == "none"


async def test_roster_remove_cancels_both_ways():
    async with ServerHarness(modules=MODULES) as h:
        roster = h.server.module("roster")
        a = await login(h, A, "r1")
        b = await login(h, B, "r1")
        await make_mutual(h, a, b)
        h.send(a, "<iq type='set' id='rm'><query xmlns='jabber:iq:roster'>"
                  "<item jid='bob@localhost' subscription='remove'/></query></iq>")
        r = await a.expect(lambda s: s.get("id") == "rm")
        assert r.get("type") == "result"
        assert push_item(await a.expect(is_push)).get("subscription") == "remove"
        await b.expect(pres("unsubscribe", A))
        await b.expect(pres("unsubscribed", A))
        await b.expect(pres("unavailable", A + "/r1"))
        assert item_state(await b.expect(is_push)) in (("to", None, None), ("from", None, None))
        assert item_state(await b.expect(is_push)) == ("none", None, None)
        assert roster.get_item(A, B) is None and roster.subscription(B, A) == "none"


async def test_pending_subscription_delivered_at_login():
    async with ServerHarness(modules=MODULES) as h:
        await h.create_user(B)
        a = await login(h, A, "r1")
        h.send(a, "<presence to='bob@localhost' type='subscribe'><status>let me in</status></presence>")
        await a.settle()
        b = await login(h, B, "r1", presence=False)
        await no_stanzas(b)  # nothing before initial presence
        h.send(b, "<presence/>")
        req = await b.expect(pres("subscribe", A))
        assert req.findtext("status") == "let me in" and req.get("to") == B
        # Unanswered: delivered again at the next login.
        h.disconnect(b)
        b2 = await login(h, B, "r2", presence=False)
        h.send(b2, "<presence/>")
        await b2.expect(pres("subscribe", A))
        h.send(b2, "<presence to='alice@localhost' type='subscribed'/>")
        await a.expect(pres("subscribed", B))
        h.disconnect(b2)
        b3 = await login(h, B, "r3")
        await no_stanzas(b3, pres("subscribe"))


async def test_subscribe_to_unknown_account():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "r1")
        h.send(a, "<presence to='nobody@localhost' type='subscribe'/>")
        assert item_state(await a.expect(is_push)) == ("none", "subscribe", None)
        await a.expect(pres("unsubscribed", "nobody@localhost"))
        assert item_state(await a.expect(is_push)) == ("none", None, None)


async def test_initial_presence_broadcast_and_probes():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "r1")
        b = await login(h, B, "r1")
        await make_mutual(h, a, b)
        h.disconnect(a)
        await b.expect(pres("unavailable", A + "/r1"))
        a2 = await login(h, A, "r2", presence=False)
        h.send(a2, "<presence><show>chat</show><status>here</status><priority>3</priority></presence>")
        # bob sees alice
        p = await b.expect(pres(None, A + "/r2"))
        assert p.findtext("status") == "here" and p.get("to") == B
        # alice gets her own presence back and bob's, through the probe
        await a2.expect(pres(None, A + "/r2"))
        p = await a2.expect(pres(None, B + "/r1"))
        assert p.get("to") == A + "/r2"
        assert a2.session.available and a2.session.priority == 3
        # Subsequent presence: to contacts and own resources
        h.send(a2, "<presence><show>away</show></presence>")
        p = await b.expect(pres(None, A + "/r2"))
        assert p.findtext("show") == "away"
        await a2.expect(pres(None, A + "/r2"))
        # Explicit unavailable
        h.send(a2, "<presence type='unavailable'><status>bye</status></presence>")
        p = await b.expect(pres("unavailable", A + "/r2"))
        assert p.findtext("status") == "bye"
        assert not a2.session.available


async def test_probe_of_offline_contact_gets_last_unavailable():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "r1")
        b = await login(h, B, "r1")
        await make_mutual(h, a, b)
        h.send(b, "<presence type='unavailable'><status>gone fishing</status></presence>")
        h.disconnect(b)
        h.disconnect(a)
        a2 = await login(h, A, "r2", presence=False)
        h.send(a2, "<presence/>")
        received = await a2.settle()
        last = [s for s in received if s.tag == "presence" and s.get("type") == "unavailable"]
        assert len(last) == 1 and last[0].get("from") == B and last[0].get("to") == A + "/r2"
        assert last[0].findtext("status") == "gone fishing"


async def test_probe_from_unsubscribed_is_refused():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "r1")
        b = await login(h, B, "r1")
        h.send(a, "<presence to='bob@localhost' type='probe'/>")
        # bob's server answers 'unsubscribed'; alice's server, with no subscription to bob,
        # has nothing to change and does not deliver it (RFC 6121 A.3.4).
        await no_stanzas(a)
        await no_stanzas(b)
        # With a subscription, the probe is answered with bob's presence.
        await make_mutual(h, a, b)
        h.send(a, "<presence to='bob@localhost' type='probe'/>")
        p = await a.expect(pres(None, B + "/r1"))
        assert p.get("to") == A + "/r1"


async def test_own_resources_see_each_other():
    async with ServerHarness(modules=MODULES) as h:
        a1 = await login(h, A, "r1")
        a2 = await login(h, A, "r2", presence=False)
        h.send(a2, "<presence><status>two</status></presence>")
        p = await a1.expect(pres(None, A + "/r2"))
        assert p.findtext("status") == "two"
        await a2.expect(pres(None, A + "/r1"))
        await a2.expect(pres(None, A + "/r2"))
        h.disconnect(a2)
        await a1.expect(pres("unavailable", A + "/r2"))


async def test_directed_presence_and_unavailable_on_disconnect():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "r1")
        c = await login(h, C, "r1")
        h.send(a, "<presence to='carol@localhost/r1'><status>psst</status></presence>")
        p = await c.expect(pres(None, A + "/r1"))
        assert p.findtext("status") == "psst"
        assert a.session.directed == {C + "/r1"}
        # Subsequent broadcasts do not go to directed recipients (RFC 6121 §4.6.2).
        h.send(a, "<presence><show>away</show></presence>")
        await no_stanzas(c)
        h.disconnect(a)
        await c.expect(pres("unavailable", A + "/r1"))


async def test_directed_unavailable_clears_tracking():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "r1")
        c = await login(h, C, "r1")
        h.send(a, "<presence to='carol@localhost'/>")
        await c.expect(pres(None, A + "/r1"))
        h.send(a, "<presence to='carol@localhost' type='unavailable'/>")
        await c.expect(pres("unavailable", A + "/r1"))
        assert a.session.directed == set()
        h.disconnect(a)
        await no_stanzas(c)


async def test_unavailable_broadcast_on_disconnect():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "r1")
        b = await login(h, B, "r1")
        await make_mutual(h, a, b)
        h.disconnect(a)
        p = await b.expect(pres("unavailable", A + "/r1"))
        assert p.get("to") == B
        await no_stanzas(b)


async def test_priority_and_bare_message_delivery():
    async with ServerHarness(modules=MODULES) as h:
        b = await login(h, B, "r1")
        a1 = await login(h, A, "hi", presence=False)
        a2 = await login(h, A, "lo", presence=False)
        a3 = await login(h, A, "neg", presence=False)
        h.send(a1, "<presence><priority>5</priority></presence>")
        h.send(a2, "<presence><priority>1</priority></presence>")
        h.send(a3, "<presence><priority>-1</priority></presence>")
        for c in (a1, a2, a3):
            await c.settle()
        assert (a1.session.priority, a2.session.priority, a3.session.priority) == (5, 1, -1)
        h.send(b, "<message to='alice@localhost' type='chat' id='m1'><body>1</body></message>")
        await a1.expect(lambda s: s.tag == "message" and s.get("id") == "m1")
        await no_stanzas(a2, lambda s: s.tag == "message")
        await no_stanzas(a3, lambda s: s.tag == "message")
        # A full-JID message reaches even the negative-priority resource.
        h.send(b, "<message to='alice@localhost/neg' type='chat' id='m2'><body>2</body></message>")
        await a3.expect(lambda s: s.get("id") == "m2")
        h.disconnect(a1)
        h.send(b, "<message to='alice@localhost' type='chat' id='m3'><body>3</body></message>")
        await a2.expect(lambda s: s.get("id") == "m3")
        h.disconnect(a2)
        # Only a negative-priority resource left: the message waits offline.
        h.send(b, "<message to='alice@localhost' type='chat' id='m4'><body>4</body></message>")
        await no_stanzas(a3, lambda s: s.tag == "message")
        await no_stanzas(b, lambda s: s.tag == "message")
        assert h.server.module("offline").store.count(A) == 1
        # Raising the priority hands it over.
        h.send(a3, "<presence><priority>0</priority></presence>")
        await a3.expect(lambda s: s.get("id") == "m4")
