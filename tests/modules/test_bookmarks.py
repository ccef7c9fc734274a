"""Bookmarks 2 (XEP-0402) kept in step with XEP-0048 in private storage and in PEP."""

from __future__ import annotations

from mbxmpp.modules.bookmarks import NS_BOOKMARKS2, NS_BOOKMARKS_LEGACY, Bookmarks
from mbxmpp.xml.ns import NS_PRIVATE, NS_PUBSUB
from tests.harness import ServerHarness
from tests.modules.test_pep import A, B, event_items, events, is_event, items_request, mutual, online, publish, reply

MODULES = ["disco", "roster", "presence", "pep", "private", "bookmarks"]
ROOM1 = "council@conference.localhost"
ROOM2 = "orchard@conference.localhost"


def legacy_set(body: str, iq_id: str = "ls") -> str:
    return (f"<iq type='set' id='{iq_id}'><query xmlns='jabber:iq:private'>"
            f"<storage xmlns='storage:bookmarks'>{body}</storage></query></iq>")


LEGACY_GET = ("<iq type='get' id='lg'><query xmlns='jabber:iq:private'>"
              "<storage xmlns='storage:bookmarks'/></query></iq>")


async def legacy_get(h, c) -> dict:
    h.send(c, LEGACY_GET)
    st = (await c.expect(reply("lg"))).find("query", NS_PRIVATE).find("storage", NS_BOOKMARKS_LEGACY)
    return {conf.get("jid"): (conf.get("name"), conf.get("autojoin"), conf.findtext("nick"),
                              conf.findtext("password"))
            for conf in st.findall("conference")}, [u.get("url") for u in st.findall("url")]


async def native_items(h, c) -> dict:
    h.send(c, items_request(NS_BOOKMARKS2, iq_id="ni"))
    items = (await c.expect(reply("ni"))).find("pubsub", NS_PUBSUB).find("items")
    out = {}
    for it in items.elements():
        conf = it.find("conference", NS_BOOKMARKS2)
        out[it.get("id")] = (conf.get("name"), conf.get("autojoin"), conf.findtext("nick"))
    return out


async def test_legacy_private_set_updates_native_node():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        modern = await online(h, A, "modern", [NS_BOOKMARKS2])
        legacy = await online(h, A, "legacy")
        b = await online(h, B, "r", [NS_BOOKMARKS2])
        h.send(legacy, legacy_set(
            f"<conference jid='{ROOM1}' name='Council' autojoin='true'><nick>Puck</nick></conference>"
            f"<conference jid='{ROOM2}' name='Orchard'><nick>JC</nick><password>pw</password></conference>"
            "<url name='Example' url='https://example.org/'/>"))
        assert (await legacy.expect(reply("ls"))).get("type") == "result"
        got = await events(modern, is_event(NS_BOOKMARKS2))
        assert sorted(i.get("id") for m in got for i in event_items(m)) == [ROOM1, ROOM2]
        assert await events(b) == []  # whitelist node: never to contacts
        assert await native_items(h, modern) == {ROOM1: ("Council", "true", "Puck"),
                                                 ROOM2: ("Orchard", None, "JC")}
        node = h.server.module("pep").node(A, NS_BOOKMARKS2)
        assert node.config["access_model"] == "whitelist" and node.config["max_items"] > 100
        confs, urls = await legacy_get(h, legacy)
        assert confs == {ROOM1: ("Council", "true", "Puck", None),
                         ROOM2: ("Orchard", "false", "JC", "pw")}
        assert urls == ["https://example.org/"]
        # remove one, keep the other unchanged: one retraction, no republish
        h.send(legacy, legacy_set(
            f"<conference jid='{ROOM1}' name='Council' autojoin='1'><nick>Puck</nick></conference>",
            "ls2"))
        await legacy.expect(reply("ls2"))
        got = await events(modern, is_event(NS_BOOKMARKS2))
        assert [(i.tag, i.get("id")) for m in got for i in event_items(m)] == [("retract", ROOM2)]
        confs, urls = await legacy_get(h, legacy)
        assert list(confs) == [ROOM1] and urls == []


async def test_native_publish_seen_through_private_storage():
    async with ServerHarness(modules=MODULES) as h:
        modern = await online(h, A, "modern", [NS_BOOKMARKS2])
        legacy = await online(h, A, "legacy")
        conf = (f"<conference xmlns='{NS_BOOKMARKS2}' name='The Play' autojoin='true'>"
                "<nick>JC</nick><extensions><state xmlns='urn:example'/></extensions></conference>")
        h.send(modern, publish(NS_BOOKMARKS2, conf, item_id=ROOM1,
                               options={"access_model": "whitelist", "persist_items": "true",
                                        "max_items": "max", "send_last_published_item": "never"}))
        assert (await modern.expect(reply("pub"))).get("type") == "result"
        await modern.expect(is_event(NS_BOOKMARKS2))
        confs, _ = await legacy_get(h, legacy)
        assert confs == {ROOM1: ("The Play", "true", "JC", None)}
        # the legacy client writes back the same list: the native item (and its extensions)
        # is left alone
        h.send(legacy, legacy_set(
            f"<conference jid='{ROOM1}' name='The Play' autojoin='true'><nick>JC</nick></conference>"))
        await legacy.expect(reply("ls"))
        assert await events(modern, is_event(NS_BOOKMARKS2)) == []
        item = h.server.module("pep").node(A, NS_BOOKMARKS2).items[ROOM1]
        assert item.payload.find("extensions").find("state", "urn:example") is not None
        # retract natively: gone from the legacy view
        h.send(modern, f"<iq type='set' id='r'><pubsub xmlns='{NS_PUBSUB}'>"
                       f"<retract node='{NS_BOOKMARKS2}' notify='1'><item id='{ROOM1}'/></retract>"
                       "</pubsub></iq>")
        await modern.expect(reply("r"))
        confs, _ = await legacy_get(h, legacy)
        assert confs == {}


async def test_legacy_pep_node_compat():
    async with ServerHarness(modules=MODULES) as h:
        modern = await online(h, A, "modern", [NS_BOOKMARKS2, NS_BOOKMARKS_LEGACY])
        old = ("<storage xmlns='storage:bookmarks'>"
               f"<conference jid='{ROOM1}' name='Council' autojoin='true'><nick>Puck</nick></conference>"
               "</storage>")
        h.send(modern, publish(NS_BOOKMARKS_LEGACY, old, options={"access_model": "whitelist"}))
        assert (await modern.expect(reply("pub"))).get("type") == "result"
        await modern.settle()
        assert await native_items(h, modern) == {ROOM1: ("Council", "true", "Puck")}
        # a native publish republishes the legacy PEP node
        conf = f"<conference xmlns='{NS_BOOKMARKS2}' name='Orchard'><nick>JC</nick></conference>"
        h.send(modern, publish(NS_BOOKMARKS2, conf, item_id=ROOM2, iq_id="p2"))
        await modern.expect(reply("p2"))
        legacy_ev = await modern.expect(is_event(NS_BOOKMARKS_LEGACY))
        (item,) = event_items(legacy_ev)
        jids = {c.get("jid") for c in item.find("storage", NS_BOOKMARKS_LEGACY).findall("conference")}
        assert jids == {ROOM1, ROOM2}
        assert h.server.module("pep").node(A, NS_BOOKMARKS_LEGACY).config["access_model"] == "whitelist"


def test_compat_features_advertised():
    assert {NS_BOOKMARKS2 + "#compat", NS_BOOKMARKS2 + "#compat-pep"} <= set(
        Bookmarks.account_features)
