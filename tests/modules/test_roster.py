"""Roster management (RFC 6121 §2) and versioning (XEP-0237), through the in-process server."""

from __future__ import annotations

import pytest

from mbxmpp.xml.ns import NS_PRE_APPROVAL, NS_ROSTER, NS_ROSTER_VER, NS_STANZAS
from tests.harness import ServerHarness

MODULES = ["roster", "presence"]
A = "alice@localhost"
B = "bob@localhost"


def reply_to(id_: str):
    return lambda s: s.tag == "iq" and s.get("id") == id_ and s.get("type") in ("result", "error")


def is_push(s) -> bool:
    return s.tag == "iq" and s.get("type") == "set" and s.find("query", NS_ROSTER) is not None


def push_item(s):
    return s.find("query", NS_ROSTER).find("item", NS_ROSTER)


def error_condition(s) -> str | None:
    err = s.find("error")
    if err is None:
        return None
    for c in err.elements():
        if c.ns == NS_STANZAS and c.tag != "text":
            return c.tag
    return None


async def roster_get(h, client, ver: str | None = None, id_: str = "get1"):
    v = "" if ver is None else f" ver='{ver}'"
    h.send(client, f"<iq type='get' id='{id_}'><query xmlns='jabber:iq:roster'{v}/></iq>")
    return await client.expect(reply_to(id_))


async def roster_set(h, client, item_xml: str, id_: str = "set1"):
    h.send(client, f"<iq type='set' id='{id_}'><query xmlns='jabber:iq:roster'>{item_xml}</query></iq>")
    return await client.expect(reply_to(id_))


async def test_empty_roster_and_interest():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        assert not a.session.interested
        r = await roster_get(h, a, ver="")
        assert r.get("type") == "result"
        q = r.find("query", NS_ROSTER)
        assert q is not None and list(q.elements()) == []
        assert q.get("ver")
        assert a.session.interested
        # Without 'ver' in the request, none in the result.
        r = await roster_get(h, a, id_="g2")
        assert r.find("query", NS_ROSTER).get("ver") is None


async def test_set_push_get_remove():
    async with ServerHarness(modules=MODULES) as h:
        a1 = await h.login(A, "r1")
        a2 = await h.login(A, "r2")
        a3 = await h.login(A, "r3")  # never asks for the roster: gets no pushes
        await roster_get(h, a1)
        await roster_get(h, a2)
        r = await roster_set(h, a1, "<item jid='bob@localhost' name='Bob'><group>Friends</group>"
                                    "<group>Work</group></item>")
        assert r.get("type") == "result", r
        for c in (a1, a2):
            p = await c.expect(is_push)
            it = push_item(p)
            assert it.get("jid") == B and it.get("name") == "Bob"
            assert it.get("subscription") == "none" and it.get("ask") is None
            assert [g.text for g in it.findall("group")] == ["Friends", "Work"]
            assert p.find("query", NS_ROSTER).get("ver")
            assert p.get("to") == c.session.full
        assert [s for s in await a3.settle() if is_push(s)] == []

        r = await roster_get(h, a1, id_="g2")
        items = r.find("query", NS_ROSTER).findall("item")
        assert [(i.get("jid"), i.get("name")) for i in items] == [(B, "Bob")]

        # Update: rename, drop a group.
        r = await roster_set(h, a2, "<item jid='bob@localhost' name='Robert'><group>Work</group></item>", "s2")
        assert r.get("type") == "result"
        it = push_item(await a1.expect(is_push))
        assert it.get("name") == "Robert" and [g.text for g in it.findall("group")] == ["Work"]
        await a2.expect(is_push)

        # Remove.
        r = await roster_set(h, a1, "<item jid='bob@localhost' subscription='remove'/>", "s3")
        assert r.get("type") == "result"
        for c in (a1, a2):
            it = push_item(await c.expect(is_push))
            assert it.get("jid") == B and it.get("subscription") == "remove"
        r = await roster_get(h, a1, id_="g3")
        assert r.find("query", NS_ROSTER).findall("item") == []
        # Removing what is not there.
        r = await roster_set(h, a1, "<item jid='bob@localhost' subscription='remove'/>", "s4")
        assert r.get("type") == "error" and error_condition(r) == "item-not-found"


async def test_versioning():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        r = await roster_get(h, a, ver="")
        v0 = r.find("query", NS_ROSTER).get("ver")
        # Unchanged: empty result.
        r = await roster_get(h, a, ver=v0, id_="g1")
        assert r.get("type") == "result" and r.first_child() is None
        await roster_set(h, a, "<item jid='bob@localhost'/>")
        p = await a.expect(is_push)
        v1 = p.find("query", NS_ROSTER).get("ver")
        assert v1 != v0
        # Stale version: the full roster with the new version.
        r = await roster_get(h, a, ver=v0, id_="g2")
        q = r.find("query", NS_ROSTER)
        assert q.get("ver") == v1 and [i.get("jid") for i in q.findall("item")] == [B]
        r = await roster_get(h, a, ver=v1, id_="g3")
        assert r.first_child() is None
        # A change that changes nothing does not bump the version.
        await roster_set(h, a, "<item jid='bob@localhost'/>", "s2")
        assert [s for s in await a.settle() if is_push(s)] == []
        r = await roster_get(h, a, ver=v1, id_="g4")
        assert r.first_child() is None
        # The version survives in storage: a new session sees the same one.
        a2 = await h.login(A, "r2")
        r = await roster_get(h, a2, ver=v1, id_="g5")
        assert r.first_child() is None


@pytest.mark.parametrize("item_xml,condition", [
    ("<item jid='bob@localhost'/><item jid='carol@localhost'/>", "bad-request"),
    ("<item jid='bob@localhost'><group>G</group><group>G</group></item>", "bad-request"),
    ("<item jid='bob@localhost'><group></group></item>", "not-acceptable"),
    ("<item jid='bob@localhost'><group>" + "g" * 2000 + "</group></item>", "not-acceptable"),
    ("<item jid='bob@localhost' name='" + "n" * 2000 + "'/>", "not-acceptable"),
    ("<item jid='alice@localhost'/>", "not-allowed"),
    ("<item/>", "bad-request"),
    ("<item jid='bob@localhost/res'/>", "bad-request"),
    ("<item jid='@@bad'/>", "jid-malformed"),
    ("", "bad-request"),
])
async def test_bad_roster_sets(item_xml, condition):
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        await roster_get(h, a)
        r = await roster_set(h, a, item_xml)
        assert r.get("type") == "error", r
        assert error_condition(r) == condition
        assert [s for s in await a.settle() if is_push(s)] == []
        r = await roster_get(h, a, id_="g2")
        assert r.find("query", NS_ROSTER).findall("item") == []


async def test_client_subscription_and_ask_ignored():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        await roster_get(h, a)
        r = await roster_set(h, a, "<item jid='bob@localhost' subscription='both' ask='subscribe' approved='true'/>")
        assert r.get("type") == "result"
        it = push_item(await a.expect(is_push))
        assert it.get("subscription") == "none"
        assert it.get("ask") is None and it.get("approved") is None
        roster = h.server.module("roster")
        assert roster.subscription(A, B) == "none"


async def test_other_users_roster_forbidden():
    async with ServerHarness(modules=MODULES) as h:
        await h.create_user(B)
        a = await h.login(A, "r1")
        h.send(a, "<iq type='get' id='x' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>")
        r = await a.expect(reply_to("x"))
        assert r.get("type") == "error" and error_condition(r) == "forbidden"
        h.send(a, "<iq type='set' id='y' to='bob@localhost'><query xmlns='jabber:iq:roster'>"
                  "<item jid='carol@localhost'/></query></iq>")
        r = await a.expect(reply_to("y"))
        assert error_condition(r) == "forbidden"
        # To one's own bare JID it is one's own roster.
        h.send(a, "<iq type='get' id='z' to='alice@localhost'><query xmlns='jabber:iq:roster'/></iq>")
        r = await a.expect(reply_to("z"))
        assert r.get("type") == "result"


async def test_stream_features_and_api():
    async with ServerHarness(modules=MODULES) as h:
        feats = h.server.post_auth_features(None)
        names = {(f.ns, f.tag) for f in feats}
        assert (NS_ROSTER_VER, "ver") in names and (NS_PRE_APPROVAL, "sub") in names

        from mbxmpp.modules.roster import RosterItem
        roster = h.server.module("roster")
        a = await h.login(A, "r1")
        await roster_get(h, a)
        v0 = roster.version(A)
        await roster.set_item(A, B, RosterItem("Bob", "both", None, ["G"]))
        it = push_item(await a.expect(is_push))
        assert it.get("subscription") == "both" and it.get("name") == "Bob"
        assert roster.subscription(A, B) == "both"
        assert roster.get_item(A, B) == RosterItem("Bob", "both", None, ["G"])
        assert list(roster.items(A)) == [B]
        assert roster.version(A) != v0
        assert roster.subscription(A, "nobody@localhost") == "none"
        await roster.remove_item(A, B)
        assert push_item(await a.expect(is_push)).get("subscription") == "remove"
        assert roster.get_item(A, B) is None and roster.items(A) == {}
