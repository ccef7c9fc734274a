"""Blocking Command (XEP-0191): blocklist get/block/unblock, pushes, malformed requests, JID
matching, inbound and outbound enforcement, presence on block/unblock, persistence."""

from __future__ import annotations

import pytest

from mbxmpp.jid import JID
from mbxmpp.modules.blocking import Blocking, matches
from mbxmpp.modules.roster import RosterItem
from mbxmpp.xml.ns import NS_BLOCKING, NS_BLOCKING_ERRORS, NS_CLIENT, NS_STANZAS
from tests.harness import ServerHarness, parse_stanza
from tests.modules.test_mam_support import ALL_MODULES, chat
from tests.modules.test_pep import error_of

MODULES = ["roster", "presence", "carbons", "blocking"]
A = "alice@localhost"
B = "bob@localhost"
C = "carol@localhost"
BL = "xmlns='urn:xmpp:blocking'"


def reply_to(id_):
    return lambda s: s.get("id") == id_ and s.tag == "iq" and s.get("type") in ("result", "error")


def error_condition(s):
    err = s.find("error", NS_CLIENT)
    if err is None:
        return None
    for c in err.elements():
        if c.ns == NS_STANZAS and c.tag != "text":
            return c.tag
    return None


def is_push(action=None):
    def pred(s):
        if s.tag != "iq" or s.get("type") != "set":
            return False
        c = s.first_child()
        return c is not None and c.ns == NS_BLOCKING and (action is None or c.tag == action)
    return pred


def items(el):
    return [i.get("jid") for i in el.findall("item", NS_BLOCKING)]


async def iq(h, c, payload: str, id_: str, type_: str = "set"):
    h.send(c, f"<iq type='{type_}' id='{id_}'>{payload}</iq>")
    return await c.expect(reply_to(id_))


async def get_list(h, c, id_="g"):
    r = await iq(h, c, f"<blocklist {BL}/>", id_, "get")
    assert r.get("type") == "result", r
    bl = r.find("blocklist", NS_BLOCKING)
    assert bl is not None
    return items(bl)


async def block(h, c, *jids, id_="b"):
    its = "".join(f"<item jid='{j}'/>" for j in jids)
    return await iq(h, c, f"<block {BL}>{its}</block>", id_)


async def unblock(h, c, *jids, id_="u"):
    its = "".join(f"<item jid='{j}'/>" for j in jids)
    return await iq(h, c, f"<unblock {BL}>{its}</unblock>", id_)


async def login(h, bare, res, *, presence=True):
    c = await h.login(bare, res)
    if presence:
        h.send(c, "<presence/>")
    await c.settle()
    return c


async def quiet(*clients, pred=lambda s: True):
    for c in clients:
        got = [s for s in await c.settle() if pred(s)]
        assert got == [], (c.jid, got)


def inject(h, xml):
    h.server.route(parse_stanza(xml))


async def mutual(h, x, y):
    roster = h.server.module("roster")
    await roster.set_item(x, y, RosterItem(subscription="both"), push=False)
    await roster.set_item(y, x, RosterItem(subscription="both"), push=False)


# -- the IQ protocol ----------------------------------------------------------------------------

async def test_empty_blocklist_and_metadata():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "a1")
        assert await get_list(h, a) == []
        assert a.session.mod.get(Blocking) is True
        assert Blocking.features == [NS_BLOCKING, "urn:xmpp:reporting:1"]
        assert Blocking.xeps == {"0191": "1.3", "0377": "0.3"}


async def test_block_result_pushes_and_list():
    async with ServerHarness(modules=MODULES) as h:
        a1 = await login(h, A, "a1")
        a2 = await login(h, A, "a2")
        a3 = await login(h, A, "a3")   # never asks for the blocklist: no pushes
        await get_list(h, a1)
        await get_list(h, a2)
        h.send(a1, f"<iq type='set' id='b1'><block {BL}><item jid='Romeo@Montague.example'/>"
                   f"<item jid='tybalt@capulet.example/x'/><item jid='romeo@montague.example'/>"
                   f"</block></iq>")
        got = [s for s in await a1.settle() if s.tag == "iq"]
        # the result first, then the push (§3.3: to every resource that asked, the sender too)
        assert got[0].get("id") == "b1" and got[0].get("type") == "result"
        assert is_push("block")(got[1]) and items(got[1].first_child()) == [
            "romeo@montague.example", "tybalt@capulet.example/x"]
        assert got[1].get("to") == a1.jid
        p2 = await a2.expect(is_push("block"))
        assert p2.get("to") == a2.jid and p2.get("from") in (None, A)
        assert items(p2.first_child()) == ["romeo@montague.example", "tybalt@capulet.example/x"]
        await quiet(a2, a3, pred=lambda s: s.tag == "iq")
        assert await get_list(h, a1, "g2") == ["romeo@montague.example", "tybalt@capulet.example/x"]
        # blocking again is not an error
        assert (await block(h, a1, "romeo@montague.example", id_="b2")).get("type") == "result"


async def test_unblock_some_and_all():
    async with ServerHarness(modules=MODULES) as h:
        a1 = await login(h, A, "a1")
        a2 = await login(h, A, "a2")
        await get_list(h, a2)
        await block(h, a1, "x@remote.example", "y@remote.example", "remote2.example")
        await a2.expect(is_push("block"))
        r = await unblock(h, a1, "x@remote.example", "never@blocked.example")
        assert r.get("type") == "result"
        p = await a2.expect(is_push("unblock"))
        assert items(p.first_child()) == ["x@remote.example", "never@blocked.example"]
        assert await get_list(h, a1) == ["remote2.example", "y@remote.example"]
        # §3.5: an empty <unblock/> unblocks everyone; the push is an empty <unblock/> too
        r = await iq(h, a1, f"<unblock {BL}/>", "ua")
        assert r.get("type") == "result"
        p = await a2.expect(is_push("unblock"))
        assert items(p.first_child()) == []
        assert await get_list(h, a1, "g3") == []
        assert h.server.module("blocking").store.get_all(A) == {}


@pytest.mark.parametrize("payload,condition", [
    (f"<block {BL}/>", "bad-request"),                                  # no item
    (f"<block {BL}><foo/></block>", "bad-request"),                     # no <item/> either
    (f"<block {BL}><item/></block>", "bad-request"),                    # no jid
    (f"<block {BL}><item jid='ok@example.com'/><item/></block>", "bad-request"),
    (f"<block {BL}><item jid='@@'/></block>", "jid-malformed"),
    (f"<block {BL}><item jid='a@b@c'/></block>", "jid-malformed"),
    (f"<block {BL}><item jid='user@'/></block>", "jid-malformed"),
    (f"<block {BL}><item jid=''/></block>", "jid-malformed"),
    (f"<block {BL}><item jid='x@example.com/'/></block>", "jid-malformed"),
    (f"<block {BL}><item jid='ok@example.com'/><item jid='bad space@example.com'/></block>",
     "jid-malformed"),
    (f"<unblock {BL}><item jid='a@b@c'/></unblock>", "jid-malformed"),
    (f"<unblock {BL}><item/></unblock>", "bad-request"),
])
async def test_malformed_requests(payload, condition):
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "a1")
        await get_list(h, a)
        r = await iq(h, a, payload, "bad")
        assert r.get("type") == "error" and error_condition(r) == condition
        assert await get_list(h, a, "g2") == []   # nothing changed, nothing pushed
        await quiet(a)


async def test_wrong_types_and_other_accounts():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "a1")
        await login(h, B, "b1")
        # a blocklist is read with get and changed with set only (with and without 'to')
        h.send(a, f"<iq type='set' id='x1'><blocklist {BL}/></iq>")
        assert error_condition(await a.expect(reply_to("x1"))) == "service-unavailable"
        h.send(a, f"<iq type='get' id='x2' to='{A}'><block {BL}><item jid='x@y'/></block></iq>")
        assert error_condition(await a.expect(reply_to("x2"))) == "service-unavailable"
        # nobody reads or changes another account's blocklist
        h.send(a, f"<iq type='get' id='x3' to='{B}'><blocklist {BL}/></iq>")
        assert (await a.expect(reply_to("x3"))).get("type") == "error"
        h.send(a, f"<iq type='set' id='x4' to='{B}'><block {BL}><item jid='x@y'/></block></iq>")
        assert (await a.expect(reply_to("x4"))).get("type") == "error"
        assert h.server.module("blocking").blocklist(B) == frozenset()


async def test_too_many_items():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "a1")
        h.server.module("blocking").max_items = 2
        assert (await block(h, a, "x1@y", "x2@y", id_="b1")).get("type") == "result"
        r = await block(h, a, "x3@y", id_="b2")
        assert error_condition(r) == "policy-violation"
        r = await block(h, a, "x1@y", id_="b3")    # already there: fine
        assert r.get("type") == "result"


async def test_jid_too_long_for_storage():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "a1")
        r = await block(h, a, "x@example.com/" + "r" * 900)
        assert r.get("type") == "error" and error_condition(r) == "not-acceptable"
        assert await get_list(h, a) == []


# -- matching (§6 / XEP-0016) -----------------------------------------------------------------

@pytest.mark.parametrize("item,jid,hit", [
    ("u@d.example/r", "u@d.example/r", True),
    ("u@d.example/r", "u@d.example/other", False),
    ("u@d.example/r", "u@d.example", False),
    ("u@d.example", "u@d.example", True),
    ("u@d.example", "u@d.example/any", True),
    ("u@d.example", "v@d.example", False),
    ("d.example/r", "d.example/r", True),
    ("d.example/r", "d.example", False),
    ("d.example/r", "u@d.example/r", False),
    ("d.example", "d.example", True),
    ("d.example", "u@d.example/r", True),
    ("d.example", "d.example/r", True),
    ("d.example", "sub.d.example", False),
    ("d.example", "u@other.example", False),
])
def test_matches(item, jid, hit):
    assert matches(item, JID.parse(jid)) is hit


async def test_is_blocked_uses_all_rules_and_never_own_account():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "a1")
        await block(h, a, "u@d.example", "d2.example", "v@d3.example/r", "d4.example/r",
                    "alice@localhost", "localhost")
        mod = h.server.module("blocking")
        hit = ["u@d.example/x", "u@d.example", "x@d2.example/y", "d2.example", "v@d3.example/r",
               "d4.example/r", "bob@localhost", "localhost"]
        miss = ["w@d.example", "v@d3.example", "v@d3.example/q", "d4.example", "x@d4.example/r",
                "alice@localhost", "alice@localhost/a2"]
        assert [j for j in hit if not mod.is_blocked(A, JID.parse(j))] == []
        assert [j for j in miss if mod.is_blocked(A, JID.parse(j))] == []


# -- enforcement ---------------------------------------------------------------------------------

async def test_inbound_from_blocked_local_user():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "a1")
        b = await login(h, B, "b1")
        await block(h, a, B)
        await a.settle()
        # message: service-unavailable to the sender
        h.send(b, f"<message to='{A}' type='chat' id='m1'><body>hi</body></message>")
        err = await b.expect(lambda s: s.get("id") == "m1")
        assert err.get("type") == "error" and error_condition(err) == "service-unavailable"
        assert err.find("error", NS_CLIENT).find("blocked", NS_BLOCKING_ERRORS) is None
        h.send(b, f"<message to='{A}/a1' type='chat' id='m2'><body>hi</body></message>")
        assert error_condition(await b.expect(lambda s: s.get("id") == "m2")) == "service-unavailable"
        # IQ get/set: service-unavailable, to the full JID and to the bare JID
        h.send(b, f"<iq to='{A}/a1' type='get' id='i1'><query xmlns='jabber:iq:version'/></iq>")
        assert error_condition(await b.expect(reply_to("i1"))) == "service-unavailable"
        h.send(b, f"<iq to='{A}' type='get' id='i2'><query xmlns='jabber:iq:roster'/></iq>")
        assert error_condition(await b.expect(reply_to("i2"))) == "service-unavailable"
        # IQ result/error and presence of any kind: dropped without a word
        h.send(b, f"<iq to='{A}/a1' type='result' id='i3'/>")
        h.send(b, f"<iq to='{A}' type='result' id='i4'/>")
        h.send(b, f"<presence to='{A}/a1'/>")
        h.send(b, f"<presence to='{A}' type='subscribe'/>")
        h.send(b, f"<presence to='{A}' type='probe'/>")
        h.send(b, f"<message to='{A}' type='error' id='m3'/>")
        await quiet(a, b)
        assert not h.server.module("roster").is_pending_in(A, B)


async def test_inbound_from_blocked_remote_domain():
    async with ServerHarness(modules=MODULES) as h:
        a1 = await login(h, A, "a1")
        a2 = await login(h, A, "a2")
        h.send(a2, "<iq type='set' id='cb'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        await a2.expect(reply_to("cb"))
        await block(h, a1, "spam.example")
        await a1.settle()
        spam = "x@spam.example/r"
        inject(h, f"<message from='{spam}' to='{A}/a1' type='chat' id='m'><body>buy</body></message>")
        inject(h, f"<message from='spam.example' to='{A}' type='normal' id='m2'><body>b</body></message>")
        inject(h, f"<presence from='{spam}' to='{A}/a1'/>")
        inject(h, f"<iq from='{spam}' to='{A}/a1' type='get' id='i'><ping xmlns='urn:xmpp:ping'/></iq>")
        await quiet(a1, a2)   # nothing, and no carbons either
        inject(h, f"<message from='x@fine.example/r' to='{A}/a1' type='chat' id='ok'>"
                  "<body>hi</body></message>")
        await a1.expect(lambda s: s.get("id") == "ok")


async def test_outbound_to_blocked():
    async with ServerHarness(modules=MODULES) as h:
        a1 = await login(h, A, "a1")
        a2 = await login(h, A, "a2")
        b = await login(h, B, "b1")
        h.send(a2, "<iq type='set' id='cb'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        await a2.expect(reply_to("cb"))
        await block(h, a1, B, "evil.example")
        await a1.settle()
        for id_, to in (("m1", B), ("m2", B + "/b1"), ("m3", "x@evil.example")):
            h.send(a1, f"<message to='{to}' type='chat' id='{id_}'><body>hi</body></message>")
            err = await a1.expect(lambda s, i=id_: s.get("id") == i)
            assert err.get("type") == "error" and error_condition(err) == "not-acceptable"
            assert err.find("error", NS_CLIENT).find("blocked", NS_BLOCKING_ERRORS) is not None
            assert err.get("from") == to
        h.send(a1, f"<iq to='{B}/b1' type='get' id='i1'><query xmlns='jabber:iq:version'/></iq>")
        err = await a1.expect(reply_to("i1"))
        assert error_condition(err) == "not-acceptable"
        assert err.find("error", NS_CLIENT).find("blocked", NS_BLOCKING_ERRORS) is not None
        # presence (directed, subscriptions) is refused like any outbound stanza (§3.3)
        for id_, type_ in (("p1", None), ("p2", "subscribe")):
            t = f" type='{type_}'" if type_ else ""
            h.send(a1, f"<presence to='{B}' id='{id_}'{t}/>")
            err = await a1.expect(lambda s, i=id_: s.get("id") == i)
            assert err.tag == "presence" and error_condition(err) == "not-acceptable"
            assert err.find("error", NS_CLIENT).find("blocked", NS_BLOCKING_ERRORS) is not None
        # IQ results and errors: dropped silently
        h.send(a1, f"<iq to='{B}/b1' type='result' id='i2'/>")
        h.send(a1, f"<message to='{B}' type='error' id='m4'/>")
        await quiet(a1, a2, b)    # no carbons of what was refused
        assert h.server.module("roster").get_item(A, B) is None
        assert B not in a1.session.directed
        # other contacts are fine; so are one's own resources
        h.send(a1, f"<message to='{A}/a2' type='chat' id='self'><body>x</body></message>")
        await a2.expect(lambda s: s.get("id") == "self")


async def test_block_takes_effect_for_the_next_stanza():
    """RFC 6120 §10.1: a stanza after the block IQ on the same stream already sees it."""
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "a1")
        b = await login(h, B, "b1")
        h.send(a, f"<iq type='set' id='b'><block {BL}><item jid='{B}'/></block></iq>")
        h.send(a, f"<message to='{B}' type='chat' id='m'><body>x</body></message>")
        err = await a.expect(lambda s: s.get("id") == "m")
        assert error_condition(err) == "not-acceptable"
        await quiet(b)


async def test_own_resources_never_blocked():
    async with ServerHarness(modules=MODULES) as h:
        a1 = await login(h, A, "a1")
        a2 = await login(h, A, "a2")
        b = await login(h, B, "b1")
        await block(h, a1, A, A + "/a2", "localhost")
        await a1.settle()
        h.send(a1, f"<message to='{A}/a2' type='chat' id='m1'><body>x</body></message>")
        await a2.expect(lambda s: s.get("id") == "m1")
        h.send(a2, f"<message to='{A}/a1' type='chat' id='m2'><body>x</body></message>")
        await a1.expect(lambda s: s.get("id") == "m2")
        # but the domain item does block the other users of it
        h.send(b, f"<message to='{A}' type='chat' id='m3'><body>x</body></message>")
        assert error_condition(await b.expect(lambda s: s.get("id") == "m3")) == "service-unavailable"


# -- presence on block / unblock (§3.3, §3.4) ---------------------------------------------------

async def test_block_sends_unavailable_and_hides_presence_then_unblock_restores():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        b = await login(h, B, "b1")
        a1 = await login(h, A, "a1")
        a2 = await login(h, A, "a2")
        await b.settle()
        await a1.settle()
        await block(h, a1, B)
        got = [s for s in await b.settle() if s.tag == "presence"]
        assert sorted((s.get("from"), s.get("type")) for s in got) == [
            (a1.jid, "unavailable"), (a2.jid, "unavailable")]
        # alice's later presence broadcasts do not reach bob; bob's do not reach alice
        h.send(a1, "<presence><show>away</show></presence>")
        h.send(b, "<presence><show>dnd</show></presence>")
        await quiet(b, pred=lambda s: s.tag == "presence" and s.get("from", "").startswith(A))
        await quiet(a1, a2, pred=lambda s: s.tag == "presence" and s.get("from", "").startswith(B))
        # a probe from bob is not answered
        h.send(b, f"<presence to='{A}' type='probe'/>")
        await quiet(b)
        await unblock(h, a1, B)
        got = [s for s in await b.settle() if s.tag == "presence"]
        assert sorted((s.get("from"), s.findtext("show")) for s in got) == [
            (a1.jid, "away"), (a2.jid, None)]


async def test_block_unsubscribed_gets_nothing_and_unblock_all_restores():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        b = await login(h, B, "b1")
        c = await login(h, C, "c1")
        a = await login(h, A, "a1")
        await b.settle()
        await c.settle()
        await block(h, a, B, C, "localhost")   # carol is not subscribed: no presence to her
        got = [s for s in await b.settle() if s.tag == "presence"]
        assert [(s.get("from"), s.get("type")) for s in got] == [(a.jid, "unavailable")]
        await quiet(c)
        h.send(a, f"<unblock {BL}/>".join(["<iq type='set' id='ua'>", "</iq>"]))
        await a.expect(reply_to("ua"))
        got = [s for s in await b.settle() if s.tag == "presence"]
        assert [(s.get("from"), s.get("type")) for s in got] == [(a.jid, None)]
        await quiet(c)


async def test_block_domain_reaches_subscribed_contacts_of_it():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        b = await login(h, B, "b1")
        a = await login(h, A, "a1")
        await b.settle()
        await block(h, a, "localhost")
        got = [s for s in await b.settle() if s.tag == "presence"]
        assert [(s.get("from"), s.get("type")) for s in got] == [(a.jid, "unavailable")]


async def test_block_ends_directed_presence():
    async with ServerHarness(modules=MODULES) as h:
        c = await login(h, C, "c1")
        a = await login(h, A, "a1")
        h.send(a, f"<presence to='{C}/c1'><show>chat</show></presence>")
        await c.expect(lambda s: s.tag == "presence" and s.get("from") == a.jid)
        assert C + "/c1" in a.session.directed
        await block(h, a, C)
        p = await c.expect(lambda s: s.tag == "presence")
        assert p.get("type") == "unavailable" and p.get("from") == a.jid and p.get("to") == C + "/c1"
        assert C + "/c1" not in a.session.directed
        await quiet(c)


async def test_offline_user_blocking_sends_no_presence():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        b = await login(h, B, "b1")
        a = await login(h, A, "a1", presence=False)
        await b.settle()
        await block(h, a, B)
        await quiet(b)


# -- persistence and cache ----------------------------------------------------------------------

@pytest.mark.parametrize("storage", ["memory", "lmdb"])
async def test_persistence_and_cache(storage):
    async with ServerHarness(modules=MODULES, storage=storage) as h:
        a = await login(h, A, "a1")
        b = await login(h, B, "b1")
        await block(h, a, B, "x.example")
        mod = h.server.module("blocking")
        assert set(mod.store.get_all(A)) == {B, "x.example"}
        mod._cache.clear()   # a cold cache reads the store
        assert mod.is_blocked(A, JID.parse(B + "/b1"))
        # a second module instance over the same storage sees the same list
        other = Blocking(h.server)
        assert other.blocklist(A) == frozenset({B, "x.example"})
        await unblock(h, a, B)
        h.send(b, f"<message to='{A}' type='chat' id='m'><body>x</body></message>")
        await a.expect(lambda s: s.get("id") == "m")
        assert Blocking(h.server).blocklist(A) == frozenset({"x.example"})


async def test_account_events_forget_the_cache():
    async with ServerHarness(modules=MODULES) as h:
        a = await login(h, A, "a1")
        await block(h, a, B)
        mod = h.server.module("blocking")
        assert A in mod._cache
        mod.forget(A)
        assert A not in mod._cache


async def test_block_one_resource_of_a_contact():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        b1 = await login(h, B, "b1")
        b2 = await login(h, B, "b2")
        a = await login(h, A, "a1")
        await b1.settle()
        await b2.settle()
        await block(h, a, B + "/b1")
        p = await b1.expect(lambda s: s.tag == "presence")
        assert p.get("type") == "unavailable" and p.get("to") == B + "/b1"
        await quiet(b1, b2)
        h.send(b2, f"<message to='{A}' type='chat' id='ok'><body>x</body></message>")
        await a.expect(lambda s: s.get("id") == "ok")
        h.send(b1, f"<message to='{A}' type='chat' id='no'><body>x</body></message>")
        assert error_condition(await b1.expect(lambda s: s.get("id") == "no")) == "service-unavailable"


async def test_reports_are_rate_limited_per_account_but_the_block_happens():
    from mbxmpp.config import LimitsConfig
    from mbxmpp.util.ratelimit import Rate
    limits = LimitsConfig(reports_per_account=Rate(1 / 86400, 2))
    async with ServerHarness(modules=MODULES, limits=limits) as h:
        a = await login(h, A, "a1")
        for i in range(3):
            h.send(a, f"<iq type='set' id='r{i}'><block {BL}><item jid='s{i}@spam.example'>"
                      "<report xmlns='urn:xmpp:reporting:1' reason='urn:xmpp:reporting:abuse'>"
                      f"<text>{'x' * 5000}</text></report></item></block></iq>")
            assert (await a.expect(reply_to(f"r{i}"))).get("type") == "result"
        assert await get_list(h, a) == [f"s{i}@spam.example" for i in range(3)]
        await h.server.storage.flush()
        rows = list(h.server.module("blocking").reports.all())  # type: ignore[union-attr]
        assert sorted(r[1] for r in rows) == ["s0@spam.example", "s1@spam.example"]
        assert {r[2] for r in rows} == {A} and all(len(r[3]["text"]) == 2000 for r in rows)


# -- XEP-0191 -------------------------------------------------------------------------------------

async def test_xep0191_blocked_error_is_cancel_with_app_condition():
    async with ServerHarness(modules=ALL_MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        await h.login(B, "r1", presence=True)
        r = await iq(h, a, f"<block xmlns='{NS_BLOCKING}'><item jid='{B}'/></block>", "block")
        assert r.get("type") == "result"
        await a.settle()
        h.send(a, chat(B, id_="x"))
        err = (await a.expect(lambda s: s.get("id") == "x")).find("error", NS_CLIENT)
        assert err.get("type") == "cancel"
        assert err.find("not-acceptable", NS_STANZAS) is not None
        assert err.find("blocked", NS_BLOCKING_ERRORS) is not None


async def test_xep0191_3_3_outbound_directed_presence_refused():
    async with ServerHarness(modules=ALL_MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        await iq(h, a, f"<block xmlns='{NS_BLOCKING}'><item jid='{B}'/></block>", "block")
        await a.settle()
        await b.settle()
        h.send(a, f"<presence to='{B}/r1' id='dp'><show>chat</show></presence>")
        err = await a.expect(lambda s: s.get("id") == "dp")
        assert err.get("type") == "error" and error_of(err)[0] == "not-acceptable"
        assert err.find("error", NS_CLIENT).find("blocked", NS_BLOCKING_ERRORS) is not None
        assert await b.settle() == []
