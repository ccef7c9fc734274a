"""The roster snapshot cache (roster gets, presence broadcasts) and the serializer's reuse of cached
child bytes: what goes over the wire is byte for byte what is built from storage without caches."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbxmpp.modules.roster import VER_KEY, RosterItem, _SnapshotCache
from mbxmpp.xml import c_serialize
from mbxmpp.xml.element import Element, py_serialize
from mbxmpp.xml.ns import NS_CLIENT, NS_ROSTER
from tests.harness import FakeClient, ServerHarness

A = "alice@localhost"
FROM_SUBS = ("from", "both")
TO_SUBS = ("to", "both")


class RawClient(FakeClient):
    """A FakeClient that also keeps the exact bytes the server wrote."""

    def __init__(self, harness: ServerHarness, jid: str) -> None:
        super().__init__(harness, jid)
        self.raw: list[bytes] = []

    def send_stanza(self, stanza: Element) -> None:
        self.raw.append(stanza.to_bytes())
        super().send_stanza(stanza)


async def raw_login(h: ServerHarness, bare: str, resource: str) -> RawClient:
    from mbxmpp.jid import JID
    if not h.server.accounts.exists(bare):
        await h.create_user(bare)
    c = RawClient(h, bare)
    c.session = h.server.bind(c, JID.parse(bare), resource)  # type: ignore[arg-type]
    c.jid = c.session.full
    return c


def reference_query(roster, owner: str, ver_attr: bool) -> bytes:
    """The <query/> as built before the cache: from storage, serialised without any cache."""
    q = Element("query", NS_ROSTER)
    if ver_attr:
        q.set("ver", roster.version(owner))
    for contact, rec in roster.store.get_all(owner).items():
        if contact != VER_KEY:
            q.append(RosterItem.from_record(rec).element(contact))
    return py_serialize(q, NS_CLIENT)


def random_item(rng: random.Random) -> RosterItem:
    return RosterItem(
        name=rng.choice([None, "", "Bob", "a'b<&>\"", "\u00e9\u4f60"]),
        subscription=rng.choice(["none", "to", "from", "both"]),
        ask=rng.choice([None, None, "subscribe"]),
        groups=rng.sample(["G1", "G2", "<g>", "\U0001F600"], rng.randint(0, 3)),
        approved=rng.random() < 0.2)


async def fetch(h: ServerHarness, c: RawClient, id_: str, ver: str | None) -> bytes | None:
    v = "" if ver is None else f" ver='{ver}'"
    c.raw.clear()
    h.send(c, f"<iq type='get' id='{id_}'><query xmlns='jabber:iq:roster'{v}/></iq>")
    await c.expect(lambda s: s.get("id") == id_)
    replies = [b for b in c.raw if f"id='{id_}'".encode() in b]
    assert len(replies) == 1, c.raw
    return replies[0]


@pytest.mark.parametrize("storage", ["memory", "lmdb"])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("small_cache", [False, True])
async def test_random_changes_match_storage(storage, seed, small_cache):
    rng = random.Random(seed)
    async with ServerHarness(modules=["roster", "presence"], storage=storage) as h:
        roster = h.server.module("roster")
        if small_cache:
            roster._cache = _SnapshotCache(2, 12)
        owners = [A, "bob@localhost", "carol@localhost"]
        clients = {o: await raw_login(h, o, "r") for o in owners}
        contacts = [f"c{i}@localhost" for i in range(8)]
        for step in range(120):
            owner = rng.choice(owners)
            op = rng.random()
            if op < 0.35:
                await roster.set_item(owner, rng.choice(contacts), random_item(rng),
                                      push=rng.random() < 0.5)
            elif op < 0.45:
                await roster.remove_item(owner, rng.choice(contacts), push=False)
            elif op < 0.5:
                c = rng.choice(contacts)
                h.send(clients[owner], f"<iq type='set' id='s{step}'><query xmlns='jabber:iq:roster'>"
                                       f"<item jid='{c}' name='n{step}'><group>x</group></item>"
                                       "</query></iq>")
                await clients[owner].expect(lambda s, i=f"s{step}": s.get("id") == i)
            elif op < 0.53:
                await h.server.accounts.delete(owner)
                await h.create_user(owner)
            elif op < 0.6:
                # items() hands out copies: changing them changes nothing stored or cached
                for it in roster.items(owner).values():
                    it.subscription = "both"
                    it.groups.append("changed")
            # every step: the API and a roster get agree with storage
            stored = {k: v for k, v in roster.store.get_all(owner).items() if k != VER_KEY}
            assert roster.items(owner) == {k: RosterItem.from_record(v) for k, v in stored.items()}
            assert list(roster.items(owner)) == list(stored)
            for subs in (FROM_SUBS, TO_SUBS):
                assert roster.contacts(owner, subs) == tuple(
                    k for k, v in stored.items() if v[1] in subs)
            c = clients[owner]
            mode = rng.choice(["none", "empty", "current", "old"])
            ver = {"none": None, "empty": "", "current": roster.version(owner), "old": "1-1"}[mode]
            if mode == "current":
                c.raw.clear()
                h.send(c, f"<iq type='get' id='g{step}'><query xmlns='jabber:iq:roster' ver='{ver}'/></iq>")
                r = await c.expect(lambda s, i=f"g{step}": s.get("id") == i)
                assert r.get("type") == "result" and r.first_child() is None
                continue
            raw = await fetch(h, c, f"g{step}", ver)
            want = (f"<iq type='result' id='g{step}' to='{c.jid}' from='{owner}'>".encode()
                    + reference_query(roster, owner, ver is not None) + b"</iq>")
            assert raw == want


async def test_reply_tree_is_complete_and_fresh():
    """The reply is a real element tree (not only cached bytes), and each reply has its own
    <query/> (attributes and child list)."""
    async with ServerHarness(modules=["roster"], storage="lmdb") as h:
        roster = h.server.module("roster")
        for i in range(5):
            await roster.set_item(A, f"c{i}@localhost", RosterItem(f"n{i}", groups=["g"]), push=False)
        from mbxmpp.core.iq import IQContext
        from mbxmpp.jid import JID
        from tests.harness import parse_stanza
        iq = parse_stanza("<iq type='get' id='x'><query xmlns='jabber:iq:roster' ver=''/></iq>")
        ctx = IQContext(JID.parse(A + "/r"), JID.parse(A), None, "self")
        q1 = roster.roster_get(iq, ctx)
        q2 = roster.roster_get(iq, ctx)
        assert q1 is not q2 and q1.attrs is not q2.attrs and q1.children is not q2.children
        assert q1 == q2 and q1.get("ver") == roster.version(A)
        assert [c.get("jid") for c in q1.elements()] == [f"c{i}@localhost" for i in range(5)]
        assert q1.to_bytes() == py_serialize(Element(q1.tag, q1.ns, dict(q1.attrs), [
            RosterItem.from_record(roster.store.get(A, f"c{i}@localhost")).element(f"c{i}@localhost")
            for i in range(5)]))
        # a change: the next reply has it
        await roster.set_item(A, "c2@localhost", RosterItem("renamed"), push=False)
        q3 = roster.roster_get(iq, ctx)
        assert q3.get("ver") == roster.version(A) != q1.get("ver")
        assert b"name='renamed'" in q3.to_bytes() and b"name='n2'" not in q3.to_bytes()
        assert q3.find("item", NS_ROSTER) is not None


async def test_cache_bounds():
    cache = _SnapshotCache(2, 10)
    from mbxmpp.modules.roster import _Snapshot
    cache.put("a", _Snapshot([1, 1], {f"x{i}": [None, "none", None, [], False] for i in range(3)}))
    cache.put("b", _Snapshot([1, 1], {}))
    assert len(cache) == 2 and cache.items == 5
    cache.get("a")
    cache.put("c", _Snapshot([1, 1], {}))  # over 2 owners: the least recently used (b) goes
    assert cache.get("b") is None and cache.get("a") is not None and cache.items == 5
    cache.put("d", _Snapshot([1, 1], {f"x{i}": [None, "none", None, [], False] for i in range(6)}))
    assert cache.items <= 10 and cache.get("d") is not None
    cache.put("e", _Snapshot([1, 1], {f"x{i}": [None, "none", None, [], False] for i in range(20)}))
    assert cache.get("e") is None  # larger than the whole budget: not kept
    for o in "acd":
        cache.pop(o)
    assert len(cache) == 0 and cache.items == 0


async def test_presence_broadcast_bytes():
    """Each contact gets exactly what a per-contact copy of the presence serialises to, also when
    presences with different children follow each other."""
    async with ServerHarness(modules=["roster", "presence", "offline"]) as h:
        roster = h.server.module("roster")
        contacts = ["bob@localhost", "carol@localhost", "dave@localhost"]
        for c in contacts:
            await h.create_user(c)
            await roster.set_item(A, c, RosterItem(subscription="both"), push=False)
            await roster.set_item(c, A, RosterItem(subscription="both"), push=False)
        await roster.set_item(A, "eve@localhost", RosterItem(subscription="to"), push=False)
        cl = {}
        for c in contacts:
            cl[c] = await raw_login(h, c, "r")
            h.send(cl[c], "<presence/>")
        a = await raw_login(h, A, "r1")
        a2 = await raw_login(h, A, "r2")
        h.send(a2, "<presence/>")
        h.send(a, "<presence/>")
        for x in (*cl.values(), a, a2):
            await x.settle()
            x.raw.clear()
        bodies = [
            "<show>away</show><status>one &amp; two</status>"
            "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v='/>",
            "<status>three</status><x xmlns='urn:x'><y xmlns='jabber:client'>z</y><w/></x>",
            "<priority>1</priority>",
            "",
        ]
        for i, body in enumerate(bodies):
            h.send(a, f"<presence id='p{i}'>{body}</presence>" if body else f"<presence id='p{i}'/>")
            end = f">{body}</presence>".encode() if body else b"/>"
            for c in contacts:
                await cl[c].settle()
                assert cl[c].raw == [f"<presence id='p{i}' from='{A}/r1' to='{c}'".encode() + end]
                cl[c].raw.clear()
            await a2.settle()
            assert a2.raw == [f"<presence id='p{i}' from='{A}/r1' to='{A}/r2'".encode() + end]
            a2.raw.clear()
        # going away: unavailable to every contact, then nothing more
        h.send(a, "<presence type='unavailable'><status>bye</status></presence>")
        for c in contacts:
            await cl[c].settle()
            assert cl[c].raw == [f"<presence type='unavailable' from='{A}/r1' to='{c}'>"
                                 "<status>bye</status></presence>".encode()]


# -- the serializer's reuse of cached child bytes -------------------------------------------------
_chars = st.characters(blacklist_categories=("Cs",))
_names = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Lo")), min_size=1, max_size=6)
_nss = st.sampled_from([NS_CLIENT, NS_CLIENT, "urn:x", "urn:x", "", "urn:'&<"]) | st.text(
    _chars, max_size=6)
_keys = _names | st.sampled_from(["xml:lang", "{urn:q}k"])


def _tree(children):
    return st.builds(lambda t, n, a, c: Element(t, n, a, c), _names, _nss,
                     st.dictionaries(_keys, st.text(_chars, max_size=8), max_size=3), children)


_elements = st.recursive(
    _tree(st.just([])),
    lambda inner: _tree(st.lists(inner | st.text(_chars, max_size=10), max_size=4)),
    max_leaves=20)


def _descendants(el):
    for c in el.children:
        if c.__class__ is not str:
            yield c
            yield from _descendants(c)


def _uncached(el):
    return Element(el.tag, el.ns, dict(el.attrs),
                   [c if c.__class__ is str else _uncached(c) for c in el.children])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_elements, _nss, st.randoms(use_true_random=False))
def test_cached_children_serialise_the_same(el, parent_ns, rnd):
    want = py_serialize(_uncached(el), parent_ns)
    for d in _descendants(el):
        if rnd.random() < 0.5:
            d.to_bytes()  # a valid cache: the serialisation under a jabber:client parent
    assert py_serialize(el, parent_ns) == want
    if c_serialize is not None:
        assert c_serialize(el, parent_ns) == want
    # the cache of the top element too (what Element.to_bytes keeps)
    assert el.to_bytes(parent_ns) == want


@settings(max_examples=100, deadline=None)
@given(_elements, _nss, st.randoms(use_true_random=False))
def test_stale_caches_used_alike(el, parent_ns, rnd):
    """Both serializers use a cache under the same conditions (even a stale one)."""
    for d in _descendants(el):
        if rnd.random() < 0.5:
            d._bytes = b"<stale\xc3\xa9/>"
    want = py_serialize(el, parent_ns)
    if c_serialize is not None:
        assert c_serialize(el, parent_ns) == want


def test_cached_child_rules():
    x = Element("x", "urn:x", {}, [Element("y", "urn:x")])
    child = Element("c", "urn:x", {"a": "1"}, [x])
    child.to_bytes()
    assert child._bytes == b"<c xmlns='urn:x' a='1'><x><y/></x></c>"
    for parent_ns, want in [
        (NS_CLIENT, b"<p><c xmlns='urn:x' a='1'><x><y/></x></c></p>"),   # reused
        ("urn:o", b"<p xmlns='urn:o'><c xmlns='urn:x' a='1'><x><y/></x></c></p>"),  # reused
        ("urn:x", b"<p xmlns='urn:x'><c a='1'><x><y/></x></c></p>"),   # not: no xmlns here
    ]:
        p = Element("p", parent_ns, {}, [child])
        assert py_serialize(p) == want
        if c_serialize is not None:
            assert c_serialize(p) == want
    client_child = Element("c", NS_CLIENT, {}, ["t"])
    client_child.to_bytes()
    p = Element("p", "urn:o", {}, [client_child])
    assert py_serialize(p) == b"<p xmlns='urn:o'><c xmlns='jabber:client'>t</c></p>"
    if c_serialize is not None:
        assert c_serialize(p) == py_serialize(p)
