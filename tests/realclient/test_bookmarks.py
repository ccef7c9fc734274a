"""Bookmarks over the wire with slixmpp: legacy XEP-0048 bookmarks in private XML storage
(XEP-0049) and PEP Native Bookmarks (XEP-0402) are one list (XEP-0402 §5 #compat)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0048.stanza import Bookmarks
from slixmpp.plugins.xep_0402.stanza import Conference

from tests.realclient.conftest import connect

pytestmark = pytest.mark.realclient

NS_B2 = "urn:xmpp:bookmarks:1"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
PLUGINS = ("xep_0030", "xep_0004", "xep_0060", "xep_0163", "xep_0223", "xep_0115", "xep_0045",
           "xep_0049", "xep_0048", "xep_0402")
ALICE = "alice@localhost"
LOBBY = "lobby@conference.localhost"
DEV = "dev@conference.localhost"


async def close(*clients: Any) -> None:
    await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients),
                                          return_exceptions=True), 10)


def publish_options(**fields: str) -> Any:
    from slixmpp.plugins.xep_0004.stanza import Form
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/pubsub#publish-options")
    for var, value in fields.items():
        form.add_field(var="pubsub#" + var, value=value)
    return form


def watch_events(c: Any) -> asyncio.Queue:
    q: asyncio.Queue = asyncio.Queue()

    def seen(stanza: Any) -> Any:
        if stanza.name == "message" and stanza.xml.find(f"{{{NS_PUBSUB_EVENT}}}event") is not None:
            q.put_nowait(stanza)
        return stanza
    c.add_filter("in", seen)
    return q


def watch_caps_answer(c: Any) -> asyncio.Future:
    """Resolved when ``c`` answers the server's XEP-0115 disco#info query on node#ver."""
    fut: asyncio.Future = asyncio.get_running_loop().create_future()

    def out(stanza: Any) -> Any:
        if (stanza.name == "iq" and stanza["type"] == "result" and not fut.done()
                and stanza["to"].full == c.boundjid.domain):
            q = stanza.xml.find("{http://jabber.org/protocol/disco#info}query")
            if q is not None and "#" in (q.get("node") or ""):
                fut.set_result(stanza)
        return stanza
    c.add_filter("out", out)
    return fut


async def barrier(c: Any) -> None:
    await c.plugin["xep_0030"].get_info(jid=c.boundjid.domain, timeout=5)


def native_items(iq: Any) -> dict[str, Any]:
    return {i["id"]: i.xml.find(f"{{{NS_B2}}}conference") for i in iq["pubsub"]["items"]}


async def test_legacy_and_native_bookmarks_are_one_list(daemon):
    a = await connect(daemon, ALICE + "/legacy", plugins=PLUGINS)
    # A second, XEP-0402-aware resource that wants bookmark notifications (+notify in caps).
    a2 = await connect(daemon, ALICE + "/modern", plugins=PLUGINS, send_presence=False)
    a2.plugin["xep_0030"].add_feature(NS_B2 + "+notify")
    await a2.plugin["xep_0115"].update_caps(broadcast=False)
    a2_events = watch_events(a2)
    answered = watch_caps_answer(a2)
    a2.send_presence()
    await asyncio.wait_for(answered, 10)
    # Two round trips on that stream: the server has handled the caps answer (one stream, in
    # order) and the caps resolution that it woke up has run.
    await barrier(a2)
    await barrier(a2)

    # The account advertises the compatibility.
    info = await a.plugin["xep_0030"].get_info(jid=ALICE, timeout=5)
    feats = info["disco_info"]["features"]
    assert NS_B2 + "#compat" in feats
    assert "jabber:iq:private" in feats

    # 1. A legacy client stores bookmarks in private XML storage.
    storage = Bookmarks()
    storage.add_conference(LOBBY, "Alice", name="The Lobby", autojoin=True)
    storage.add_url("https://example.org/", name="Example")
    await a.plugin["xep_0048"].set_bookmarks(storage, method="xep_0049", timeout=5)

    # The XEP-0402 node has the conference: item id = room JID.
    got = await a.plugin["xep_0060"].get_items(JID(ALICE), NS_B2, timeout=5)
    items = native_items(got)
    assert list(items) == [LOBBY]
    conf = items[LOBBY]
    assert conf is not None
    assert conf.get("name") == "The Lobby"
    assert conf.get("autojoin") in ("true", "1")
    assert conf.findtext(f"{{{NS_B2}}}nick") == "Alice"
    # ... through slixmpp's xep_0402 stanza too.
    item = list(got["pubsub"]["items"])[0]
    assert item["conference"]["autojoin"] is True and item["conference"]["nick"] == "Alice"
    # The modern resource was notified of the new bookmark.
    m = await asyncio.wait_for(a2_events.get(), 5)
    ev_items = m.xml.find(f"{{{NS_PUBSUB_EVENT}}}event/{{{NS_PUBSUB_EVENT}}}items")
    assert ev_items.get("node") == NS_B2
    ev_item = ev_items.find(f"{{{NS_PUBSUB_EVENT}}}item")
    assert ev_item.get("id") == LOBBY
    assert ev_item.find(f"{{{NS_B2}}}conference").get("name") == "The Lobby"
    assert m["from"].full == ALICE

    # The node was created private: whitelist, so another account may not read it.
    cfg = await a.plugin["xep_0060"].get_node_config(None, NS_B2)
    fields = cfg["pubsub_owner"]["configure"]["form"].get_fields()
    assert fields["pubsub#access_model"]["value"] == "whitelist"
    assert fields["pubsub#send_last_published_item"]["value"] == "never"
    b = await connect(daemon, "bob@localhost/snoop", plugins=PLUGINS)
    with pytest.raises(IqError) as ei:
        await b.plugin["xep_0060"].get_items(JID(ALICE), NS_B2, timeout=5)
    assert ei.value.iq["error"]["condition"] == "not-allowed"
    assert ei.value.iq.xml.find(f"{{jabber:client}}error/{{{NS_PUBSUB_ERRORS}}}closed-node") is not None

    # 2. A modern client publishes a XEP-0402 bookmark with the §4 publish-options.
    conf2 = Conference()
    conf2["name"] = "Developers"
    conf2["autojoin"] = False
    conf2["nick"] = "alice-dev"
    res = await a2.plugin["xep_0060"].publish(
        None, NS_B2, id=DEV, payload=conf2.xml,
        options=publish_options(persist_items="true", access_model="whitelist", max_items="max",
                                send_last_published_item="never"), timeout=5)
    assert res["pubsub"]["publish"]["item"]["id"] == DEV

    # The legacy view returns both conferences (and keeps the URL).
    got = await a.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=5)
    legacy = got["private"]["bookmarks"]
    confs = {c["jid"].full if isinstance(c["jid"], JID) else c["jid"]: c
             for c in legacy["conferences"]}
    assert set(confs) == {LOBBY, DEV}
    assert confs[LOBBY]["name"] == "The Lobby" and confs[LOBBY]["autojoin"] is True
    assert confs[LOBBY]["nick"] == "Alice"
    assert confs[DEV]["name"] == "Developers" and confs[DEV]["autojoin"] is False
    assert confs[DEV]["nick"] == "alice-dev"
    assert [u["url"] for u in legacy["urls"]] == ["https://example.org/"]

    # 3. A legacy set without the lobby removes it from the native node (retract, notified).
    storage = Bookmarks()
    storage.add_conference(DEV, "alice-dev", name="Developers", autojoin=False)
    while not a2_events.empty():
        a2_events.get_nowait()
    await a.plugin["xep_0048"].set_bookmarks(storage, method="xep_0049", timeout=5)
    got = await a.plugin["xep_0060"].get_items(JID(ALICE), NS_B2, timeout=5)
    assert list(native_items(got)) == [DEV]
    m = await asyncio.wait_for(a2_events.get(), 5)
    retract = m.xml.find(f"{{{NS_PUBSUB_EVENT}}}event/{{{NS_PUBSUB_EVENT}}}items/"
                         f"{{{NS_PUBSUB_EVENT}}}retract")
    assert retract is not None and retract.get("id") == LOBBY
    await close(a, a2, b)
