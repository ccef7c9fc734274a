"""PEP (XEP-0163) over the wire with slixmpp's pubsub, PEP, publish-options and caps plugins, the
way OMEMO clients use it: a devicelist with +notify delivery through XEP-0115 caps, open bundle
nodes fetched by contacts, publish-options preconditions, and the presence access model."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from tests.realclient.conftest import connect, subscribe_both
from tests.realclient.conftest import next_match as _next

pytestmark = pytest.mark.realclient

PLUGINS = ("xep_0030", "xep_0004", "xep_0060", "xep_0163", "xep_0223", "xep_0115")
NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_LEGACY_OMEMO = "eu.siacs.conversations.axolotl"
DEVICELIST = NS_LEGACY_OMEMO + ".devicelist"
BUNDLE = NS_LEGACY_OMEMO + ".bundles:1234"
OMEMO2_DEVICES = "urn:xmpp:omemo:2:devices"
ALICE, BOB, CAROL = "alice@localhost", "bob@localhost", "carol@localhost"


async def close(*clients) -> None:  # type: ignore[no-untyped-def]
    """Close the streams and wait for the server's </stream:stream> (conftest.disconnect awaits
    ``c.disconnected`` late, after slixmpp may have replaced that future, and then times out)."""
    await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients),
                                          return_exceptions=True), 10)


def publish_options(**fields: str):  # type: ignore[no-untyped-def]
    from slixmpp.plugins.xep_0004.stanza import Form
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/pubsub#publish-options")
    for var, value in fields.items():
        form.add_field(var="pubsub#" + var, value=value)
    return form


def devicelist(*ids: int) -> ET.Element:
    el = ET.Element(f"{{{NS_LEGACY_OMEMO}}}list")
    for i in ids:
        ET.SubElement(el, f"{{{NS_LEGACY_OMEMO}}}device", {"id": str(i)})
    return el


def bundle(prekey: str) -> ET.Element:
    el = ET.Element(f"{{{NS_LEGACY_OMEMO}}}bundle")
    spk = ET.SubElement(el, f"{{{NS_LEGACY_OMEMO}}}signedPreKeyPublic", {"signedPreKeyId": "1"})
    spk.text = "BSPK"
    ET.SubElement(el, f"{{{NS_LEGACY_OMEMO}}}identityKey").text = "BIK"
    pks = ET.SubElement(el, f"{{{NS_LEGACY_OMEMO}}}prekeys")
    ET.SubElement(pks, f"{{{NS_LEGACY_OMEMO}}}preKeyPublic", {"preKeyId": "1"}).text = prekey
    return el


def app_condition(e: IqError) -> str | None:
    err = e.iq.xml.find("{jabber:client}error")
    assert err is not None, e.iq
    for c in err:
        if c.tag.startswith("{" + NS_PUBSUB_ERRORS + "}"):
            return c.tag.split("}", 1)[1]
    return None


def event_items(msg) -> ET.Element | None:  # type: ignore[no-untyped-def]
    ev = msg.xml.find(f"{{{NS_PUBSUB_EVENT}}}event")
    return None if ev is None else ev.find(f"{{{NS_PUBSUB_EVENT}}}items")


def watch_events(c) -> asyncio.Queue:  # type: ignore[no-untyped-def]
    """Every pubsub event message ``c`` receives (slixmpp's "message" event is for bodies only)."""
    q: asyncio.Queue = asyncio.Queue()

    def seen(stanza):  # type: ignore[no-untyped-def]
        if stanza.name == "message" and stanza.xml.find(f"{{{NS_PUBSUB_EVENT}}}event") is not None:
            q.put_nowait(stanza)
        return stanza
    c.add_filter("in", seen)
    return q


async def barrier(c) -> None:  # type: ignore[no-untyped-def]
    """A round trip through the server on ``c``'s stream: whatever the server routed to ``c``
    before answering has been read once this returns (one stream, in order)."""
    await c.plugin["xep_0030"].get_info(jid=c.boundjid.domain, timeout=5)


async def test_omemo_devicelist_bundles_and_access(daemon):
    a = await connect(daemon, ALICE + "/phone", plugins=PLUGINS)
    # Bob announces interest in the device lists (both OMEMO generations) through caps before
    # his first presence: the server learns "+notify" from disco#info on node#ver.
    b = await connect(daemon, BOB + "/omemo", plugins=PLUGINS, send_presence=False)
    for feature in (DEVICELIST + "+notify", OMEMO2_DEVICES + "+notify"):
        b.plugin["xep_0030"].add_feature(feature)
    await b.plugin["xep_0115"].update_caps(broadcast=False)
    b_events = watch_events(b)
    b.send_presence()
    # Carol is nobody's contact; she announces the same interest, so only the missing
    # subscription keeps the notifications from her.
    c = await connect(daemon, CAROL + "/omemo", plugins=PLUGINS, send_presence=False)
    for feature in (DEVICELIST + "+notify", OMEMO2_DEVICES + "+notify"):
        c.plugin["xep_0030"].add_feature(feature)
    await c.plugin["xep_0115"].update_caps(broadcast=False)
    c_events = watch_events(c)
    c.send_presence()

    await subscribe_both(a, b)
    # Bob's presence reaches Alice with his caps.
    p = await _next(a.presences, lambda p: p["from"].bare == BOB and p["type"] == "available"
                    and p["caps"]["ver"])
    assert p["caps"]["hash"] == "sha-1" and p["caps"]["node"]
    bob_ver = await b.plugin["xep_0115"].get_verstring(b.boundjid)
    assert p["caps"]["ver"] == bob_ver

    # Alice publishes her device list, open to everyone (what Conversations does).
    res = await a.plugin["xep_0060"].publish(
        None, DEVICELIST, id="current", payload=devicelist(1234, 5678),
        options=publish_options(access_model="open"))
    assert res["pubsub"]["publish"]["item"]["id"] == "current"
    m = await _next(b_events, lambda m: event_items(m) is not None, timeout=10)
    assert m["type"] == "headline" and m["from"].full == ALICE
    items = event_items(m)
    assert items.get("node") == DEVICELIST
    item = items.find(f"{{{NS_PUBSUB_EVENT}}}item")
    assert item is not None and item.get("id") == "current"
    lst = item.find(f"{{{NS_LEGACY_OMEMO}}}list")
    assert lst is not None
    assert sorted(d.get("id") for d in lst) == ["1234", "5678"]
    # The same broadcast would have reached Carol: after a round trip on her stream, nothing.
    await barrier(c)
    assert c_events.empty(), c_events.get_nowait()

    # The node kept the configuration from the publish-options.
    cfg = await a.plugin["xep_0060"].get_node_config(None, DEVICELIST)
    fields = cfg["pubsub_owner"]["configure"]["form"].get_fields()
    assert fields["pubsub#access_model"]["value"] == "open"

    # A bundle node, open: Bob (and even Carol, open access) fetch it with an items get.
    await a.plugin["xep_0060"].publish(None, BUNDLE, id="current", payload=bundle("PK1"),
                                       options=publish_options(access_model="open"))
    for who in (b, c):
        got = await who.plugin["xep_0060"].get_items(JID(ALICE), BUNDLE, timeout=5)
        its = list(got["pubsub"]["items"])
        assert [i["id"] for i in its] == ["current"]
        bx = its[0].xml.find(f"{{{NS_LEGACY_OMEMO}}}bundle")
        assert bx is not None
        assert bx.find(f"{{{NS_LEGACY_OMEMO}}}prekeys/{{{NS_LEGACY_OMEMO}}}preKeyPublic").text == "PK1"

    # Publish-options that contradict the node's configuration: conflict/precondition-not-met,
    # and the item is not replaced.
    with pytest.raises(IqError) as ei:
        await a.plugin["xep_0060"].publish(None, DEVICELIST, id="current", payload=devicelist(9),
                                           options=publish_options(access_model="whitelist"))
    assert ei.value.iq["error"]["condition"] == "conflict"
    assert ei.value.iq["error"]["type"] == "cancel"
    assert app_condition(ei.value) == "precondition-not-met"
    got = await b.plugin["xep_0060"].get_items(JID(ALICE), DEVICELIST, timeout=5)
    lst = list(got["pubsub"]["items"])[0].xml.find(f"{{{NS_LEGACY_OMEMO}}}list")
    assert sorted(d.get("id") for d in lst) == ["1234", "5678"]
    # Matching publish-options are accepted (same config), through XEP-0223's helper too.
    await a.plugin["xep_0060"].publish(None, DEVICELIST, id="current", payload=devicelist(1234),
                                       options=publish_options(access_model="open"))
    m = await _next(b_events, lambda m: event_items(m) is not None, timeout=10)
    lst = event_items(m).find(f"{{{NS_PUBSUB_EVENT}}}item/{{{NS_LEGACY_OMEMO}}}list")
    assert [d.get("id") for d in lst] == ["1234"]

    # A node with the presence access model (the PEP default): Bob, a contact, may read it;
    # Carol may not.
    tune = ET.Element("{http://jabber.org/protocol/tune}tune")
    ET.SubElement(tune, "{http://jabber.org/protocol/tune}title").text = "Yesterday"
    await a.plugin["xep_0060"].publish(None, "http://jabber.org/protocol/tune", id="current",
                                       payload=tune, options=publish_options(access_model="presence"))
    got = await b.plugin["xep_0060"].get_items(JID(ALICE), "http://jabber.org/protocol/tune",
                                               timeout=5)
    assert [i["id"] for i in got["pubsub"]["items"]] == ["current"]
    with pytest.raises(IqError) as ei:
        await c.plugin["xep_0060"].get_items(JID(ALICE), "http://jabber.org/protocol/tune",
                                             timeout=5)
    assert ei.value.iq["error"]["condition"] == "not-authorized"
    assert ei.value.iq["error"]["type"] == "auth"
    assert app_condition(ei.value) == "presence-subscription-required"
    # ... and she was never notified of any of Alice's nodes.
    await barrier(c)
    assert c_events.empty(), c_events.get_nowait()
    await close(a, b, c)


async def test_last_item_on_presence_with_caps(daemon):
    """A fresh Bob resource advertising +notify gets the last devicelist item as it comes
    online (XEP-0163 §4.3.2: send_last_published_item on_sub_and_presence)."""
    a = await connect(daemon, ALICE + "/phone2", plugins=PLUGINS)
    b = await connect(daemon, BOB + "/first", plugins=PLUGINS, send_presence=False)
    b_events = watch_events(b)
    b.send_presence()
    if a.client_roster[BOB]["subscription"] != "both":
        await subscribe_both(a, b)
    await a.plugin["xep_0060"].publish(None, OMEMO2_DEVICES, id="current",
                                       payload=ET.Element("{urn:xmpp:omemo:2}devices"),
                                       options=publish_options(access_model="open"))
    b2 = await connect(daemon, BOB + "/second", plugins=PLUGINS, send_presence=False)
    b2.plugin["xep_0030"].add_feature(OMEMO2_DEVICES + "+notify")
    await b2.plugin["xep_0115"].update_caps(broadcast=False)
    b2_events = watch_events(b2)
    b2.send_presence()
    m = await _next(b2_events, lambda m: event_items(m) is not None
                    and event_items(m).get("node") == OMEMO2_DEVICES, timeout=10)
    assert m["from"].full == ALICE
    assert event_items(m).find(f"{{{NS_PUBSUB_EVENT}}}item").get("id") == "current"
    # The first Bob resource did not advertise +notify: it got nothing.
    await barrier(b)
    assert b_events.empty(), b_events.get_nowait()
    await close(a, b, b2)
