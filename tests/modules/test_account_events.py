"""What the modules do when an account is deleted (ACCOUNT_DELETED), and how the server ends
an account's sessions for the operator (Server.end_sessions)."""

from __future__ import annotations

from mbxmpp.errors import StreamError
from tests.harness import ServerHarness
from tests.modules.test_presence import login, make_mutual, pres

A = "alice@localhost"
B = "bob@localhost"
C = "carol@localhost"


async def test_deleting_an_account_cancels_subscriptions_and_pending_requests():
    async with ServerHarness(modules=["roster", "presence", "offline"]) as h:
        a = await login(h, A, "a")
        b = await login(h, B, "b")
        c = await login(h, C, "c")
        await make_mutual(h, a, b)
        h.send(a, "<presence to='carol@localhost' type='subscribe'/>")  # alice asks carol...
        await c.expect(pres("subscribe", A))
        h.send(c, "<presence to='alice@localhost' type='subscribe'/>")  # ...and carol asks alice
        await a.expect(pres("subscribe", C))
        roster = h.server.module("roster")
        assert roster.is_pending_in(C, A) and roster.is_pending_in(A, C)
        await a.settle()
        await b.settle()
        await c.settle()

        assert h.server.end_sessions(A, StreamError("not-authorized")) == 1
        assert a.closed
        await h.server.accounts.delete(A)

        assert roster.get_item(B, A).subscription == "none"
        assert not roster.is_pending_in(C, A)  # alice's request to carol is withdrawn
        carol_item = roster.get_item(C, A)
        assert carol_item.ask is None  # carol's request to alice is refused
        got = await c.settle()
        assert any(s.tag == "presence" and s.get("type") == "unsubscribed" for s in got), got
        assert roster._cache.get(A) is None  # nothing cached of the deleted roster
        assert roster.items(A) == {} and roster.pending_in(A) == {}
        assert not h.server.accounts.exists(A)


async def test_end_sessions_takes_one_resource_or_all():
    async with ServerHarness(modules=["roster", "presence", "offline"]) as h:
        one = await login(h, A, "one")
        two = await login(h, A, "two")
        assert h.server.end_sessions(A + "/one", StreamError("policy-violation")) == 1
        assert one.closed and not two.closed
        assert [s.resource for s in h.server.sessions.resources(A)] == ["two"]
        assert h.server.end_sessions(A + "/one", StreamError("policy-violation")) == 0
        assert h.server.end_sessions(A, StreamError("reset")) == 1
        assert h.server.sessions.resources(A) == []


async def test_a_deleted_account_leaves_nothing_cached_for_a_new_one_of_that_name():
    from tests.modules.test_pep import publish, reply
    from tests.modules.test_vcard import photo, vcard_set
    modules = ["disco", "roster", "presence", "offline", "blocking", "mam", "pep", "vcard", "private",
               "sm", "push"]
    async with ServerHarness(modules=modules, storage="lmdb") as h:
        a = await login(h, A, "a")
        steps = [(vcard_set(photo()), "set"),
                 (("<iq type='set' id='block'><block xmlns='urn:xmpp:blocking'>"
                   "<item jid='spam@example.net'/></block></iq>"), "block"),
                 ("<iq type='set' id='never'><prefs xmlns='urn:xmpp:mam:2' default='never'/></iq>", "never"),
                 (publish("urn:xmpp:tune", "<tune xmlns='http://jabber.org/protocol/tune'/>"), "pub")]
        for xml, iq_id in steps:
            h.send(a, xml)
            assert (await a.expect(reply(iq_id))).get("type") == "result"
        m = h.server.module
        assert m("vcard").hash_of(A) and m("blocking").blocklist(A)
        assert m("mam").prefs.get(A).default == "never" and m("pep").node(A, "urn:xmpp:tune") is not None

        h.server.end_sessions(A, StreamError("not-authorized"))
        await h.server.accounts.delete(A)
        await h.create_user(A)  # ACCOUNT_CREATED: a new account of the same name
        assert m("vcard").hash_of(A) is None
        assert m("blocking").blocklist(A) == frozenset()
        assert m("mam").prefs.get(A).default == "always"
        assert m("pep").node(A, "urn:xmpp:tune") is None
        assert h.server.storage.keyval("accounts").get(A) is not None
