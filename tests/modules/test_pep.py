"""PEP (XEP-0163) with XEP-0060/0223/0115: publish and notify, access models, publish-options,
retract/purge/delete, max_items, persistence, OMEMO and avatar flows.

The helpers at the top are shared with test_bookmarks/test_vcard/test_private.
"""

from __future__ import annotations

import base64
import hashlib

from mbxmpp.modules.pep.caps import Caps
from mbxmpp.modules.roster import RosterItem
from mbxmpp.xml import Element
from mbxmpp.xml.ns import (
    NS_CAPS,
    NS_CLIENT,
    NS_DATA,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_PUBSUB,
    NS_PUBSUB_ERRORS,
    NS_PUBSUB_EVENT,
    NS_PUBSUB_OWNER,
    NS_STANZAS,
)
from tests.harness import ServerHarness, parse_stanza
from tests.modules.test_mam_support import ALL_MODULES, iq

CAPS_NODE = "https://client.example/caps"
A = "alice@localhost"
B = "bob@localhost"
C = "carol@localhost"
D = "dave@localhost"


def ver_for(features: list[str]) -> str:
    """XEP-0115 §5.1 by hand (one identity, no forms): the oracle for the server's hashing."""
    s = "client/pc//Test<" + "".join(f + "<" for f in sorted(set(features)))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


async def relate(h, owner: str, contact: str, owner_side: str, contact_side: str) -> None:
    """Set both roster items directly: ``owner`` has ``contact`` with ``owner_side`` and back."""
    roster = h.server.module("roster")
    await roster.set_item(owner, contact, RosterItem(subscription=owner_side), push=False)
    await roster.set_item(contact, owner, RosterItem(subscription=contact_side), push=False)


async def mutual(h, a: str, b: str) -> None:
    await relate(h, a, b, "both", "both")


def disco_query(s) -> bool:
    return s.tag == "iq" and s.get("type") == "get" and s.find("query", NS_DISCO_INFO) is not None


async def answer_disco(h, client, features: list[str], timeout: float = 2.0) -> None:
    iq = await client.expect(disco_query, timeout)
    node = iq.find("query", NS_DISCO_INFO).get("node")
    body = "".join(f"<feature var='{f}'/>" for f in sorted(set(features)))
    h.send(client, f"<iq type='result' id='{iq.get('id')}' to='{iq.get('from')}'>"
                   f"<query xmlns='{NS_DISCO_INFO}' node='{node}'>"
                   f"<identity category='client' type='pc' name='Test'/>{body}</query></iq>")


def caps_presence(features: list[str], extra: str = "") -> str:
    return (f"<presence><c xmlns='{NS_CAPS}' hash='sha-1' node='{CAPS_NODE}' "
            f"ver='{ver_for(features)}'/>{extra}</presence>")


async def online(h, bare: str, res: str, notify: list[str] | None = None):
    """Log in and send initial presence with caps advertising ``node+notify`` for ``notify``
    (no caps at all when None); answers the server's disco#info query when it asks."""
    c = await h.login(bare, res)
    if notify is None:
        h.send(c, "<presence/>")
        await c.settle()
        return c
    features = [NS_DISCO_INFO] + [n + "+notify" for n in notify]
    pep = h.server.module("pep")
    known = pep.caps.lookup(Caps(CAPS_NODE, ver_for(features), "sha-1")) is not None
    h.send(c, caps_presence(features))
    if not known:
        await answer_disco(h, c, features)
    await c.settle()
    return c


def publish(node: str, payload: str, item_id: str | None = "current", options: dict | None = None,
            iq_id: str = "pub") -> str:
    item = f"<item id='{item_id}'>" if item_id is not None else "<item>"
    opts = ""
    if options:
        fields = "".join(f"<field var='pubsub#{k}'><value>{v}</value></field>"
                         for k, v in options.items())
        opts = ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
                "<field var='FORM_TYPE' type='hidden'>"
                "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
                f"{fields}</x></publish-options>")
    return (f"<iq type='set' id='{iq_id}'><pubsub xmlns='{NS_PUBSUB}'>"
            f"<publish node='{node}'>{item}{payload}</item></publish>{opts}</pubsub></iq>")


def items_request(node: str, to: str | None = None, iq_id: str = "items", extra: str = "",
                  inner: str = "") -> str:
    to_attr = f" to='{to}'" if to else ""
    return (f"<iq type='get' id='{iq_id}'{to_attr}><pubsub xmlns='{NS_PUBSUB}'>"
            f"<items node='{node}'{extra}>{inner}</items></pubsub></iq>")


def is_event(node: str | None = None):
    def pred(s) -> bool:
        if s.tag != "message":
            return False
        ev = s.find("event", NS_PUBSUB_EVENT)
        if ev is None:
            return False
        el = ev.first_child()
        return node is None or (el is not None and el.get("node") == node)
    return pred


def event_items(msg) -> list:
    return msg.find("event", NS_PUBSUB_EVENT).first_child().elements()


def reply(iq_id: str):
    return lambda s: s.tag == "iq" and s.get("id") == iq_id


def error_of(stanza) -> tuple[str | None, str | None]:
    """(defined condition, pubsub#errors condition) of an error reply."""
    err = stanza.find("error")
    assert err is not None, stanza
    cond = app = None
    for c in err.elements():
        if c.ns == NS_STANZAS and c.tag != "text":
            cond = c.tag
        elif c.ns == NS_PUBSUB_ERRORS:
            app = c.tag
    return cond, app


async def events(client, pred=None) -> list:
    got = await client.settle()
    return [s for s in got if is_event()(s) and (pred is None or pred(s))]


# ==============================================================================================

MODULES = ["disco", "roster", "presence", "pep"]
TUNE = "http://jabber.org/protocol/tune"
TUNE_PAYLOAD = f"<tune xmlns='{TUNE}'><artist>Yes</artist><title>Heart of the Sunrise</title></tune>"


def tune(title: str) -> str:
    return f"<tune xmlns='{TUNE}'><title>{title}</title></tune>"


async def test_publish_notifies_owner_resources_and_subscribed_contacts():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        await relate(h, A, D, "to", "from")   # alice follows dave, not the other way
        a1 = await online(h, A, "desk")                  # no caps: filtered out
        a2 = await online(h, A, "phone", [TUNE])
        b = await online(h, B, "r", [TUNE])
        c = await online(h, C, "r", [TUNE])              # no subscription
        d = await online(h, D, "r", [TUNE])              # no subscription to alice
        h.send(a1, publish(TUNE, TUNE_PAYLOAD, item_id=None))
        res = await a1.expect(reply("pub"))
        assert res.get("type") == "result"
        item_id = res.find("pubsub", NS_PUBSUB).find("publish").find("item").get("id")
        assert item_id
        for client in (a2, b):
            msg = await client.expect(is_event(TUNE))
            assert msg.get("from") == A and msg.get("type") == "headline"
            assert msg.get("to") == client.jid
            (item,) = event_items(msg)
            assert item.get("id") == item_id
            assert item.find("tune", TUNE).findtext("title", TUNE) == "Heart of the Sunrise"
        assert await events(a1) == []
        assert await events(c) == []
        assert await events(d) == []


async def test_last_item_sent_on_initial_presence_only_once():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        a = await online(h, A, "r")
        h.send(a, publish(TUNE, tune("one")))
        await a.expect(reply("pub"))
        h.send(a, publish(TUNE, tune("two"), item_id="2"))
        await a.expect(reply("pub"))
        b = await h.login(B, "r")
        features = [NS_DISCO_INFO, TUNE + "+notify"]
        h.send(b, caps_presence(features))
        await answer_disco(h, b, features)   # unknown ver: the server asks, then sends
        msg = await b.expect(is_event(TUNE))
        assert [i.get("id") for i in event_items(msg)] == ["2"]
        h.send(b, caps_presence(features, "<show>away</show>"))  # not initial: nothing
        assert await events(b) == []
        # a second resource with the same (now verified) caps: no disco query, last item
        b2 = await h.login(B, "r2")
        h.send(b2, caps_presence(features))
        await b2.expect(is_event(TUNE))
        assert not [s for s in await b2.settle() if disco_query(s)]


async def test_new_notify_interest_gets_last_item():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        a = await online(h, A, "r")
        b = await online(h, B, "r", ["urn:xmpp:avatar:metadata"])
        h.send(a, publish(TUNE, tune("now")))
        await a.expect(reply("pub"))
        assert await events(b) == []
        features = [NS_DISCO_INFO, "urn:xmpp:avatar:metadata+notify", TUNE + "+notify"]
        h.send(b, caps_presence(features))  # the client enabled tune support
        await answer_disco(h, b, features)
        msg = await b.expect(is_event(TUNE))
        assert [i.get("id") for i in event_items(msg)] == ["current"]
        assert await events(b) == []


async def test_caps_hash_mismatch_not_cached_globally():
    async with ServerHarness(modules=MODULES) as h:
        pep = h.server.module("pep")
        await mutual(h, A, B)
        a = await online(h, A, "r")
        h.send(a, publish(TUNE, tune("x")))
        await a.expect(reply("pub"))
        b = await h.login(B, "r")
        claimed = [NS_DISCO_INFO]                   # the ver says: no +notify
        h.send(b, caps_presence(claimed))
        await answer_disco(h, b, [NS_DISCO_INFO, TUNE + "+notify"])  # ...but disco says more
        # the answer is used for this client, never cached for the (lying) ver
        assert pep.caps.lookup(Caps(CAPS_NODE, ver_for(claimed), "sha-1")) is None
        await b.expect(is_event(TUNE))


async def test_access_models():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        a = await online(h, A, "r")
        b = await online(h, B, "r", [])
        c = await online(h, C, "r", [])
        h.send(a, publish("presence-node", tune("p")))
        h.send(a, publish("open-node", tune("o"), options={"access_model": "open"}, iq_id="p2"))
        h.send(a, publish("wl-node", tune("w"), options={"access_model": "whitelist"}, iq_id="p3"))
        for i in ("pub", "p2", "p3"):
            assert (await a.expect(reply(i))).get("type") == "result"
        # presence: bob yes, carol no
        h.send(b, items_request("presence-node", to=A))
        assert (await b.expect(reply("items"))).get("type") == "result"
        h.send(c, items_request("presence-node", to=A))
        assert error_of(await c.expect(reply("items"))) == (
            "not-authorized", "presence-subscription-required")
        # open: carol yes
        h.send(c, items_request("open-node", to=A))
        r = await c.expect(reply("items"))
        assert r.get("type") == "result"
        assert r.find("pubsub", NS_PUBSUB).find("items").find("item").get("id") == "current"
        # whitelist: bob no, until affiliated; the owner always
        h.send(b, items_request("wl-node", to=A))
        assert error_of(await b.expect(reply("items"))) == ("not-allowed", "closed-node")
        h.send(a, items_request("wl-node"))
        assert (await a.expect(reply("items"))).get("type") == "result"
        h.send(a, f"<iq type='set' id='aff'><pubsub xmlns='{NS_PUBSUB_OWNER}'>"
                  f"<affiliations node='wl-node'><affiliation jid='{B}' affiliation='member'/>"
                  "</affiliations></pubsub></iq>")
        assert (await a.expect(reply("aff"))).get("type") == "result"
        h.send(b, items_request("wl-node", to=A))
        assert (await b.expect(reply("items"))).get("type") == "result"
        h.send(a, f"<iq type='get' id='affs'><pubsub xmlns='{NS_PUBSUB_OWNER}'>"
                  "<affiliations node='wl-node'/></pubsub></iq>")
        affs = (await a.expect(reply("affs"))).find("pubsub", NS_PUBSUB_OWNER).find("affiliations")
        assert {(x.get("jid"), x.get("affiliation")) for x in affs.elements()} == {
            (A, "owner"), (B, "member")}
        # non-owners cannot publish or configure
        h.send(b, publish("x", tune("evil")).replace("<iq ", f"<iq to='{A}' "))
        assert error_of(await b.expect(reply("pub")))[0] == "forbidden"
        h.send(b, f"<iq type='get' id='cfg' to='{A}'><pubsub xmlns='{NS_PUBSUB_OWNER}'>"
                  "<configure node='open-node'/></pubsub></iq>")
        assert error_of(await b.expect(reply("cfg")))[0] == "forbidden"
        # unknown node
        h.send(b, items_request("nope", to=A))
        assert error_of(await b.expect(reply("items")))[0] == "item-not-found"


async def test_whitelist_node_notifies_only_owner_and_members():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        node = "urn:xmpp:bookmarks:1"
        a = await online(h, A, "r", [node])
        b = await online(h, B, "r", [node])
        conf = "<conference xmlns='urn:xmpp:bookmarks:1' name='Room' autojoin='true'/>"
        h.send(a, publish(node, conf, item_id="room@muc.localhost",
                          options={"access_model": "whitelist", "persist_items": "true",
                                   "max_items": "max", "send_last_published_item": "never"}))
        assert (await a.expect(reply("pub"))).get("type") == "result"
        await a.expect(is_event(node))
        assert await events(b) == []


async def test_publish_options_preconditions():
    async with ServerHarness(modules=MODULES) as h:
        a = await online(h, A, "r")
        h.send(a, publish("n", tune("1"), options={"access_model": "open", "max_items": "5"}))
        assert (await a.expect(reply("pub"))).get("type") == "result"
        # the node was created with the options
        h.send(a, f"<iq type='get' id='cfg'><pubsub xmlns='{NS_PUBSUB_OWNER}'>"
                  "<configure node='n'/></pubsub></iq>")
        form = (await a.expect(reply("cfg"))).find("pubsub", NS_PUBSUB_OWNER).find(
            "configure").find("x", "jabber:x:data")
        values = {f.get("var"): f.findtext("value", "jabber:x:data")
                  for f in form.findall("field", "jabber:x:data")}
        assert values["pubsub#access_model"] == "open"
        assert values["pubsub#max_items"] == "5"
        # matching options (booleans/ints normalised) succeed
        h.send(a, publish("n", tune("2"), options={"access_model": "open", "max_items": "5",
                                                   "persist_items": "1"}, iq_id="ok"))
        assert (await a.expect(reply("ok"))).get("type") == "result"
        # a mismatch fails, and nothing is published
        h.send(a, publish("n", tune("3"), item_id="3", options={"access_model": "whitelist"},
                          iq_id="bad"))
        assert error_of(await a.expect(reply("bad"))) == ("conflict", "precondition-not-met")
        assert "3" not in h.server.module("pep").node(A, "n").items
        # unknown fields are rejected (XEP-0060 §7.1.5)
        h.send(a, publish("n", tune("4"), options={"frobnicate": "1"}, iq_id="unk"))
        assert error_of(await a.expect(reply("unk"))) == ("conflict", "precondition-not-met")


async def test_retract_purge_delete_notify():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        a = await online(h, A, "r")
        b = await online(h, B, "r", [TUNE])
        h.send(a, publish(TUNE, tune("1"), item_id="i1", options={"max_items": "10"}))
        h.send(a, publish(TUNE, tune("2"), item_id="i2", iq_id="p2"))
        await a.expect(reply("p2"))
        await b.settle()
        h.send(a, f"<iq type='set' id='ret'><pubsub xmlns='{NS_PUBSUB}'>"
                  f"<retract node='{TUNE}' notify='true'><item id='i1'/></retract></pubsub></iq>")
        assert (await a.expect(reply("ret"))).get("type") == "result"
        msg = await b.expect(is_event(TUNE))
        (r,) = event_items(msg)
        assert r.tag == "retract" and r.get("id") == "i1"
        h.send(a, f"<iq type='set' id='ret2'><pubsub xmlns='{NS_PUBSUB}'>"
                  f"<retract node='{TUNE}'><item id='nope'/></retract></pubsub></iq>")
        assert error_of(await a.expect(reply("ret2")))[0] == "item-not-found"
        h.send(a, f"<iq type='set' id='purge'><pubsub xmlns='{NS_PUBSUB_OWNER}'>"
                  f"<purge node='{TUNE}'/></pubsub></iq>")
        assert (await a.expect(reply("purge"))).get("type") == "result"
        ev = (await b.expect(is_event(TUNE))).find("event", NS_PUBSUB_EVENT)
        assert ev.first_child().tag == "purge"
        h.send(a, items_request(TUNE))
        items = (await a.expect(reply("items"))).find("pubsub", NS_PUBSUB).find("items")
        assert list(items.elements()) == []
        h.send(a, f"<iq type='set' id='del'><pubsub xmlns='{NS_PUBSUB_OWNER}'>"
                  f"<delete node='{TUNE}'/></pubsub></iq>")
        assert (await a.expect(reply("del"))).get("type") == "result"
        ev = (await b.expect(is_event(TUNE))).find("event", NS_PUBSUB_EVENT)
        assert ev.first_child().tag == "delete"
        h.send(a, items_request(TUNE))
        assert error_of(await a.expect(reply("items")))[0] == "item-not-found"


async def test_max_items_and_retrieval():
    async with ServerHarness(modules=MODULES) as h:
        a = await online(h, A, "r")
        for i in range(4):
            h.send(a, publish("n", tune(str(i)), item_id=f"i{i}", options={"max_items": "3"},
                              iq_id=f"p{i}"))
            assert (await a.expect(reply(f"p{i}"))).get("type") == "result"

        async def ids(extra="", inner=""):
            h.send(a, items_request("n", extra=extra, inner=inner))
            items = (await a.expect(reply("items"))).find("pubsub", NS_PUBSUB).find("items")
            return [i.get("id") for i in items.elements()]
        assert await ids() == ["i1", "i2", "i3"]           # oldest evicted, publication order
        assert await ids(" max_items='2'") == ["i2", "i3"]  # the most recent N
        assert await ids(inner="<item id='i2'/><item id='i0'/>") == ["i2"]
        # re-publishing an id makes it the newest
        h.send(a, publish("n", tune("again"), item_id="i1", options={"max_items": "3"}))
        await a.expect(reply("pub"))
        assert await ids() == ["i2", "i3", "i1"]
        # "max" and the server's cap
        h.send(a, publish("m", tune("x"), options={"max_items": "max"}, iq_id="pm"))
        assert (await a.expect(reply("pm"))).get("type") == "result"
        from mbxmpp.modules.pep.forms import MAX_ITEMS
        assert h.server.module("pep").node(A, "m").max_items == MAX_ITEMS


async def test_payload_limits_and_bad_requests():
    async with ServerHarness(modules=MODULES) as h:
        a = await online(h, A, "r")
        big = "x" * (130 * 1024)
        h.send(a, publish("n", f"<data xmlns='urn:x'>{big}</data>"))
        assert error_of(await a.expect(reply("pub"))) == ("not-acceptable", "payload-too-big")
        h.send(a, f"<iq type='set' id='two'><pubsub xmlns='{NS_PUBSUB}'><publish node='n'>"
                  "<item><a xmlns='urn:a'/><b xmlns='urn:b'/></item></publish></pubsub></iq>")
        assert error_of(await a.expect(reply("two"))) == ("bad-request", "invalid-payload")
        h.send(a, f"<iq type='set' id='none'><pubsub xmlns='{NS_PUBSUB}'><publish/></pubsub></iq>")
        assert error_of(await a.expect(reply("none"))) == ("bad-request", "nodeid-required")


async def test_persistence_lmdb(tmp_path):
    import dataclasses

    def harness():
        h = ServerHarness(modules=MODULES, storage="lmdb")
        h.config = dataclasses.replace(
            h.config, server=dataclasses.replace(h.config.server, data_dir=str(tmp_path)))
        return h
    async with harness() as h:
        a = await online(h, A, "r")
        h.send(a, publish("n", tune("kept"), item_id="k", options={"access_model": "open"}))
        assert (await a.expect(reply("pub"))).get("type") == "result"
        h.send(a, publish("t", tune("gone"), options={"persist_items": "false"}, iq_id="p2"))
        assert (await a.expect(reply("p2"))).get("type") == "result"
    async with harness() as h:
        a = await h.login(A, "r", create=False)
        h.send(a, items_request("n"))
        items = (await a.expect(reply("items"))).find("pubsub", NS_PUBSUB).find("items")
        (item,) = items.elements()
        assert item.get("id") == "k"
        assert item.find("tune", TUNE).findtext("title", TUNE) == "kept"
        node = h.server.module("pep").node(A, "n")
        assert node.config["access_model"] == "open"
        # the transient node exists, its items did not survive
        h.send(a, items_request("t"))
        items = (await a.expect(reply("items"))).find("pubsub", NS_PUBSUB).find("items")
        assert list(items.elements()) == []


async def test_omemo_devicelist_and_bundles():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        devicelist = "eu.siacs.conversations.axolotl.devicelist"
        bundle = "eu.siacs.conversations.axolotl.bundles:1234"
        a = await online(h, A, "phone", [devicelist])
        b = await online(h, B, "r", [devicelist])
        c = await online(h, C, "r")
        dl = ("<list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/></list>")
        # Conversations: first publish without options creates a presence-access node...
        h.send(a, publish(devicelist, dl, iq_id="d0"))
        assert (await a.expect(reply("d0"))).get("type") == "result"
        # ...then the publish with access_model=open fails, it reconfigures and retries
        h.send(a, publish(devicelist, dl, options={"access_model": "open"}, iq_id="d1"))
        assert error_of(await a.expect(reply("d1"))) == ("conflict", "precondition-not-met")
        h.send(a, f"<iq type='set' id='cfg'><pubsub xmlns='{NS_PUBSUB_OWNER}'>"
                  f"<configure node='{devicelist}'><x xmlns='jabber:x:data' type='submit'>"
                  "<field var='FORM_TYPE' type='hidden'>"
                  "<value>http://jabber.org/protocol/pubsub#node_config</value></field>"
                  "<field var='pubsub#access_model'><value>open</value></field>"
                  "</x></configure></pubsub></iq>")
        assert (await a.expect(reply("cfg"))).get("type") == "result"
        h.send(a, publish(devicelist, dl, options={"access_model": "open"}, iq_id="d2"))
        assert (await a.expect(reply("d2"))).get("type") == "result"
        bundle_xml = ("<bundle xmlns='eu.siacs.conversations.axolotl'>"
                      "<signedPreKeyPublic signedPreKeyId='1'>AAAA</signedPreKeyPublic>"
                      "<identityKey>BBBB</identityKey><prekeys>"
                      "<preKeyPublic preKeyId='1'>CCCC</preKeyPublic></prekeys></bundle>")
        h.send(a, publish(bundle, bundle_xml, options={"access_model": "open"}, iq_id="b1"))
        assert (await a.expect(reply("b1"))).get("type") == "result"
        # own other devices and contacts with +notify learn the device list
        assert (await b.expect(is_event(devicelist))).get("from") == A
        assert await events(c) == []
        # a stranger (carol, no subscription) can still fetch both to start a session
        h.send(c, items_request(devicelist, to=A))
        r = await c.expect(reply("items"))
        assert r.find("pubsub", NS_PUBSUB).find("items").find("item").find(
            "list", "eu.siacs.conversations.axolotl") is not None
        h.send(c, items_request(bundle, to=A, extra=" max_items='1'"))
        r = await c.expect(reply("items"))
        assert r.get("type") == "result"
        # OMEMO 2 style, created straight with the options
        h.send(a, publish("urn:xmpp:omemo:2:devices",
                          "<devices xmlns='urn:xmpp:omemo:2'><device id='1'/></devices>",
                          options={"access_model": "open", "max_items": "max"}, iq_id="o2"))
        assert (await a.expect(reply("o2"))).get("type") == "result"


async def test_avatar_metadata_and_data():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        meta = "urn:xmpp:avatar:metadata"
        data = "urn:xmpp:avatar:data"
        a = await online(h, A, "r")
        b = await online(h, B, "r", [meta, "urn:xmpp:nick"])
        sha = "111f4b3c50d7b0df729d299bc6f8e9ef9066971f"
        h.send(a, publish(data, f"<data xmlns='{data}'>iVBORw0KGgo=</data>", item_id=sha))
        await a.expect(reply("pub"))
        h.send(a, publish(meta, f"<metadata xmlns='{meta}'><info bytes='8' id='{sha}' "
                                f"height='64' width='64' type='image/png'/></metadata>",
                          item_id=sha, iq_id="m"))
        await a.expect(reply("m"))
        h.send(a, publish("urn:xmpp:nick", "<nick xmlns='http://jabber.org/protocol/nick'>Al</nick>",
                          iq_id="n"))
        await a.expect(reply("n"))
        got = await events(b)
        assert sorted(m.find("event", NS_PUBSUB_EVENT).first_child().get("node") for m in got) == [
            meta, "urn:xmpp:nick"]
        h.send(b, items_request(data, to=A, inner=f"<item id='{sha}'/>"))
        r = await b.expect(reply("items"))
        assert r.find("pubsub", NS_PUBSUB).find("items").find("item").findtext(
            "data", data) == "iVBORw0KGgo="


async def test_disco_features_identity_and_items():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        a = await online(h, A, "r")
        c = await online(h, C, "r")
        h.send(a, publish("secret", tune("s")))
        h.send(a, publish("public", tune("p"), options={"access_model": "open"}, iq_id="p2"))
        await a.expect(reply("p2"))
        h.send(a, f"<iq type='get' id='its' to='{A}'><query xmlns='{NS_DISCO_ITEMS}'/></iq>")
        q = (await a.expect(reply("its"))).find("query", NS_DISCO_ITEMS)
        assert {i.get("node") for i in q.elements() if i.get("node")} == {"secret", "public"}
        h.send(c, f"<iq type='get' id='its' to='{A}'><query xmlns='{NS_DISCO_ITEMS}'/></iq>")
        q = (await c.expect(reply("its"))).find("query", NS_DISCO_ITEMS)
        assert {i.get("node") for i in q.elements() if i.get("node")} == {"public"}
        h.send(a, f"<iq type='get' id='info' to='{A}'><query xmlns='{NS_DISCO_INFO}'/></iq>")
        q = (await a.expect(reply("info"))).find("query", NS_DISCO_INFO)
        feats = {f.get("var") for f in q.findall("feature", NS_DISCO_INFO)}
        assert {NS_PUBSUB + "#publish", NS_PUBSUB + "#publish-options",
                NS_PUBSUB + "#auto-create", NS_PUBSUB + "#access-whitelist"} <= feats
        assert ("pubsub", "pep") in {(i.get("category"), i.get("type"))
                                     for i in q.findall("identity", NS_DISCO_INFO)}


async def test_explicit_subscription_on_open_node():
    async with ServerHarness(modules=MODULES) as h:
        a = await online(h, A, "r")
        c = await online(h, C, "r")
        h.send(a, publish("blog", tune("1"), options={"access_model": "open"}))
        await a.expect(reply("pub"))
        h.send(c, f"<iq type='set' id='sub' to='{A}'><pubsub xmlns='{NS_PUBSUB}'>"
                  f"<subscribe node='blog' jid='{c.jid}'/></pubsub></iq>")
        r = await c.expect(reply("sub"))
        assert r.find("pubsub", NS_PUBSUB).find("subscription").get("subscription") == "subscribed"
        await c.expect(is_event("blog"))  # the last item on subscription
        h.send(a, publish("blog", tune("2"), item_id="2", iq_id="p2"))
        await c.expect(is_event("blog"))
        h.send(c, f"<iq type='set' id='uns' to='{A}'><pubsub xmlns='{NS_PUBSUB}'>"
                  f"<unsubscribe node='blog' jid='{c.jid}'/></pubsub></iq>")
        assert (await c.expect(reply("uns"))).get("type") == "result"
        h.send(a, publish("blog", tune("3"), item_id="3", iq_id="p3"))
        await a.expect(reply("p3"))
        assert await events(c) == []
        # subscribing someone else is refused
        h.send(c, f"<iq type='set' id='sub2' to='{A}'><pubsub xmlns='{NS_PUBSUB}'>"
                  f"<subscribe node='blog' jid='{B}'/></pubsub></iq>")
        assert error_of(await c.expect(reply("sub2"))) == ("bad-request", "invalid-jid")


class FakeRemote:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, stanza, frm, to) -> None:
        self.sent.append(stanza)


async def test_remote_contact_with_verified_caps():
    async with ServerHarness(modules=MODULES) as h:
        remote = FakeRemote()
        h.server.router.remote = remote
        r_bare, r_full = "romeo@remote.example", "romeo@remote.example/balcony"
        roster = h.server.module("roster")
        await roster.set_item(A, r_bare, RosterItem(subscription="both"), push=False)
        a = await online(h, A, "r")
        h.send(a, publish(TUNE, tune("hello")))
        await a.expect(reply("pub"))
        features = [NS_DISCO_INFO, TUNE + "+notify"]
        pres = parse_stanza(
            caps_presence(features).replace("<presence>", f"<presence from='{r_full}' to='{A}'>"))
        h.server.route(pres)
        await a.settle()
        # the server asks the remote client for its features, from alice's bare JID
        (q,) = [s for s in remote.sent if s.tag == "iq"]
        assert q.get("to") == r_full and q.get("from") == A
        node = q.find("query", NS_DISCO_INFO).get("node")
        ans = Element("iq", attrs={"type": "result", "id": q.get("id"), "from": r_full, "to": A})
        qq = ans.add("query", NS_DISCO_INFO, {"node": node})
        qq.add("identity", attrs={"category": "client", "type": "pc", "name": "Test"})
        for f in features:
            qq.add("feature", attrs={"var": f})
        h.server.route(ans)
        await a.settle()
        msgs = [s for s in remote.sent if is_event(TUNE)(s)]
        assert [m.get("to") for m in msgs] == [r_full]
        remote.sent.clear()
        h.send(a, publish(TUNE, tune("again"), iq_id="p2"))
        await a.expect(reply("p2"))
        assert [m.get("to") for m in remote.sent if is_event(TUNE)(m)] == [r_full]
        # unavailable: no more notifications
        h.server.route(Element("presence", attrs={"from": r_full, "to": A, "type": "unavailable"}))
        remote.sent.clear()
        h.send(a, publish(TUNE, tune("bye"), iq_id="p3"))
        await a.expect(reply("p3"))
        assert [m for m in remote.sent if is_event()(m)] == []


def test_verification_string_xep0115_example():
    """XEP-0115 §5.3 complex example (identities in two languages + an extended form)."""
    from mbxmpp.modules.pep.caps import compute_ver
    iq = parse_stanza(
        "<iq type='result'><query xmlns='http://jabber.org/protocol/disco#info' "
        "node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>"
        "<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
        "<identity xml:lang='el' category='client' name='&#936; 0.11' type='pc'/>"
        "<feature var='http://jabber.org/protocol/caps'/>"
        "<feature var='http://jabber.org/protocol/disco#info'/>"
        "<feature var='http://jabber.org/protocol/disco#items'/>"
        "<feature var='http://jabber.org/protocol/muc'/>"
        "<x xmlns='jabber:x:data' type='result'>"
        "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>"
        "<field var='ip_version'><value>ipv4</value><value>ipv6</value></field>"
        "<field var='os'><value>Mac</value></field>"
        "<field var='os_version'><value>10.5.1</value></field>"
        "<field var='software'><value>Psi</value></field>"
        "<field var='software_version'><value>0.11</value></field>"
        "</x></query></iq>")
    assert compute_ver(iq.first_child()) == "q07IKJEyjvHSyhy//CH0CxmKi8w="


# -- XEP-0060 / XEP-0163 / XEP-0223 ---------------------------------------------------------------

NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"


def unsupported_feature(s: Element) -> str | None:
    err = s.find("error", NS_CLIENT)
    u = None if err is None else err.find("unsupported", NS_PUBSUB_ERRORS)
    return None if u is None else u.get("feature")



def ps(xml: str, owner: bool = False) -> str:
    return f"<pubsub xmlns='{NS_PUBSUB_OWNER if owner else NS_PUBSUB}'>{xml}</pubsub>"


def config_form(**fields: str) -> str:
    out = (f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
           f"<value>{NODE_CONFIG}</value></field>")
    for k, v in fields.items():
        out += f"<field var='pubsub#{k}'><value>{v}</value></field>"
    return out + "</x>"


async def test_xep0060_6_4_default_subscription_options_unsupported():
    """<default/> in the pubsub namespace asks for subscription options, not node config."""
    async with ServerHarness(modules=ALL_MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        for xml in ("<default/>", "<default node='n'/>"):
            r = await iq(h, a, ps(xml), "get")
            assert error_of(r) == ("feature-not-implemented", "unsupported")
            assert unsupported_feature(r) == "subscription-options"
        # the node configuration defaults stay in the #owner namespace
        r = await iq(h, a, ps("<default/>", owner=True), "get")
        assert r.get("type") == "result"
        x = r.find("pubsub", NS_PUBSUB_OWNER).find("default").find("x", NS_DATA)
        assert x.find("field", NS_DATA).findtext("value", NS_DATA) == NODE_CONFIG


async def test_xep0060_6_3_subscription_options_unsupported():
    async with ServerHarness(modules=ALL_MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        h.send(a, publish("n", "<x xmlns='urn:x'/>"))
        await a.expect(lambda s: s.get("id") == "pub")
        for t in ("get", "set"):
            r = await iq(h, a, ps(f"<options node='n' jid='{A}'/>"), t)
            assert error_of(r) == ("feature-not-implemented", "unsupported")
            assert unsupported_feature(r) == "subscription-options"


async def test_xep0060_unknown_owner_action_unsupported():
    async with ServerHarness(modules=ALL_MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        r = await iq(h, a, ps("<frobnicate node='n'/>", owner=True), "set")
        assert error_of(r) == ("feature-not-implemented", "unsupported")
        assert unsupported_feature(r) == "frobnicate"


async def test_xep0060_8_1_create_without_node_not_acceptable():
    async with ServerHarness(modules=ALL_MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        r = await iq(h, a, ps("<create/>"), "set")
        assert error_of(r) == ("not-acceptable", "nodeid-required")


async def test_xep0060_8_1_3_configure_of_create_takes_no_node():
    async with ServerHarness(modules=ALL_MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        r = await iq(h, a, ps(f"<create node='n'/><configure node='n'>{config_form()}</configure>"),
                     "set")
        assert error_of(r)[0] == "bad-request"
        r = await iq(h, a, ps(f"<create node='n'/><configure>{config_form(max_items='5')}"
                              "</configure>"), "set")
        assert r.get("type") == "result", r


async def test_xep0060_unsupported_access_model_and_unknown_config_fields():
    async with ServerHarness(modules=ALL_MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        form = config_form(access_model="authorize")
        r = await iq(h, a, ps(f"<create node='n'/><configure>{form}</configure>"), "set")
        assert error_of(r) == ("not-acceptable", "unsupported-access-model")
        r = await iq(h, a, ps("<create node='n'/>"), "set")
        assert r.get("type") == "result"
        # §8.2.5.2 / XEP-0004 §3.5: a field the service does not implement is not silently dropped
        r = await iq(h, a, ps(f"<configure node='n'>{config_form(bogus_field='1', max_items='3')}"
                              "</configure>", owner=True), "set")
        assert error_of(r)[0] == "not-acceptable"
        r = await iq(h, a, ps("<configure node='n'/>", owner=True), "get")
        x = r.find("pubsub", NS_PUBSUB_OWNER).find("configure").find("x", NS_DATA)
        mi = [f for f in x.findall("field", NS_DATA) if f.get("var") == "pubsub#max_items"][0]
        assert mi.findtext("value", NS_DATA) == "1"  # nothing of the refused form applied
        r = await iq(h, a, ps(f"<configure node='n'>{config_form(access_model='roster')}"
                              "</configure>", owner=True), "set")
        assert error_of(r) == ("not-acceptable", "unsupported-access-model")


async def test_xep0060_5_3_node_disco_info_and_5_5_items():
    async with ServerHarness(modules=ALL_MODULES) as h:
        await mutual(h, A, B)
        a = await h.login(A, "r1", presence=True)
        c = await h.login(C, "r1", presence=True)
        h.send(a, publish("n", "<x xmlns='urn:x'/>", item_id="i1"))
        await a.expect(lambda s: s.get("id") == "pub")
        r = await iq(h, a, f"<query xmlns='{NS_DISCO_INFO}' node='n'/>", to=A)
        q = r.find("query", NS_DISCO_INFO)
        assert q is not None and q.get("node") == "n"
        assert ("pubsub", "leaf") in {(i.get("category"), i.get("type"))
                                      for i in q.findall("identity", NS_DISCO_INFO)}
        assert NS_PUBSUB in {f.get("var") for f in q.findall("feature", NS_DISCO_INFO)}
        r = await iq(h, a, f"<query xmlns='{NS_DISCO_ITEMS}' node='n'/>", to=A)
        assert [i.get("name") for i in r.find("query", NS_DISCO_ITEMS).elements()] == ["i1"]
        # unknown node, and a node carol may not see (presence access): item-not-found
        for who, node in ((a, "nope"), (c, "n")):
            for ns in (NS_DISCO_INFO, NS_DISCO_ITEMS):
                r = await iq(h, who, f"<query xmlns='{ns}' node='{node}'/>", to=A)
                assert error_of(r)[0] == "item-not-found", (ns, node, r)


async def test_xep0223_server_disco_has_pep_identity_and_publish_options():
    async with ServerHarness(modules=ALL_MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        r = await iq(h, a, f"<query xmlns='{NS_DISCO_INFO}'/>", to="localhost")
        q = r.find("query", NS_DISCO_INFO)
        assert ("pubsub", "pep") in {(i.get("category"), i.get("type"))
                                     for i in q.findall("identity", NS_DISCO_INFO)}
        assert NS_PUBSUB + "#publish-options" in {f.get("var")
                                                  for f in q.findall("feature", NS_DISCO_INFO)}


async def test_xep0060_7_1_3_5_payload_must_match_node_type():
    async with ServerHarness(modules=ALL_MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        r = await iq(h, a, ps(f"<create node='typed'/><configure>{config_form(type='urn:y')}"
                              "</configure>"), "set")
        assert r.get("type") == "result", r
        h.send(a, publish("typed", "<x xmlns='urn:x'/>", iq_id="bad"))
        assert error_of(await a.expect(lambda s: s.get("id") == "bad")) == (
            "bad-request", "invalid-payload")
        h.send(a, publish("typed", "<x xmlns='urn:y'/>", iq_id="good"))
        assert (await a.expect(lambda s: s.get("id") == "good")).get("type") == "result"
