"""Server services through aioxmpp's own clients: disco#info/#items of the server and its
components, ping, software version, blocking (XEP-0191), private XML (XEP-0049) with bookmarks,
vCard (XEP-0054), PEP (XEP-0163) publish, notify and retrieve."""

from __future__ import annotations

import asyncio

import aioxmpp
import aioxmpp.avatar
import aioxmpp.blocking
import aioxmpp.bookmarks
import aioxmpp.disco
import aioxmpp.pep
import aioxmpp.service
import aioxmpp.ping
import aioxmpp.private_xml
import aioxmpp.pubsub
import aioxmpp.vcard
import aioxmpp.vcard.xso
import aioxmpp.version
import aioxmpp.xso
import pytest

from tests.realclient_aioxmpp.conftest import body, chat, inbox, next_match, online

pytestmark = pytest.mark.realclient

SERVER = aioxmpp.JID.fromstr("localhost")
NOTES = "urn:example:aioxmpp-notes"


class Note(aioxmpp.xso.XSO):
    TAG = (NOTES, "note")
    text = aioxmpp.xso.Text(default=None)

    def __init__(self, text: str | None = None) -> None:
        super().__init__()
        self.text = text


aioxmpp.private_xml.Query.as_payload_class(Note)
aioxmpp.pubsub.xso.as_payload_class(Note)


async def test_disco_server_and_components(daemon):
    async with online(daemon, "alice@localhost/disco") as a:
        disco = a.summon(aioxmpp.DiscoClient)
        info = await disco.query_info(SERVER)
        assert ("server", "im") in {(i.category, i.type_) for i in info.identities}
        for ns in ("urn:xmpp:ping", "jabber:iq:version", "urn:xmpp:blocking", "urn:xmpp:carbons:2",
                   "http://jabber.org/protocol/disco#items"):
            assert ns in info.features, ns
        account = await disco.query_info(a.local_jid.bare())
        assert ("pubsub", "pep") in {(i.category, i.type_) for i in account.identities}
        for ns in ("jabber:iq:private", "vcard-temp", "urn:xmpp:mam:2"):
            assert ns in account.features, ns

        items = await disco.query_items(SERVER)
        components = {str(i.jid): i for i in items.items}
        assert "conference.localhost" in components
        kinds = set()
        for jid in components:
            cinfo = await disco.query_info(aioxmpp.JID.fromstr(jid))
            assert cinfo.identities, jid
            kinds |= {(i.category, i.type_) for i in cinfo.identities}
        assert ("conference", "text") in kinds
        assert ("store", "file") in kinds  # HTTP upload (XEP-0363)
        assert ("proxy", "bytestreams") in kinds  # SOCKS5 proxy (XEP-0065)

        with pytest.raises(aioxmpp.errors.XMPPError) as err:
            await disco.query_info(aioxmpp.JID.fromstr("nosuch.localhost"))
        # RFC 6120 §10.4.3 / §8.3.3.14: a domain nobody serves (and no federation to it).
        assert err.value.condition in (aioxmpp.ErrorCondition.REMOTE_SERVER_NOT_FOUND,
                                       aioxmpp.ErrorCondition.ITEM_NOT_FOUND,
                                       aioxmpp.ErrorCondition.SERVICE_UNAVAILABLE)


async def test_ping_and_version(daemon):
    async with online(daemon, "bob@localhost/pv") as b:
        await aioxmpp.ping.ping(b, SERVER)
        version = await aioxmpp.version.query_version(b, SERVER)
        assert version.name == "mbxmpp" and version.version
        # An offline user's bare JID: the server answers (RFC 6121 §8.5.1) with an error.
        with pytest.raises(aioxmpp.errors.XMPPError) as err:
            await aioxmpp.version.query_version(b, aioxmpp.JID.fromstr("dave@localhost/gone"))
        assert err.value.condition == aioxmpp.ErrorCondition.SERVICE_UNAVAILABLE


async def test_blocking(daemon):
    services = (aioxmpp.blocking.BlockingClient,)
    async with online(daemon, "alice@localhost/blk", services=services) as a, \
            online(daemon, "carol@localhost/blk") as c:
        blocking = a.summon(aioxmpp.blocking.BlockingClient)
        carol = aioxmpp.JID.fromstr("carol@localhost")
        pushed = asyncio.Event()
        blocking.on_jids_blocked.connect(lambda jids: pushed.set())
        await blocking.block_jids([carol])
        await asyncio.wait_for(pushed.wait(), 10)
        assert carol in blocking.blocklist

        c_in = inbox(c)
        await c.send(chat("alice@localhost/blk", "let me in"))
        err = await next_match(c_in, lambda m: m.type_ == aioxmpp.MessageType.ERROR)
        assert err.error.condition == aioxmpp.ErrorCondition.SERVICE_UNAVAILABLE

        unblocked = asyncio.Event()
        blocking.on_jids_unblocked.connect(lambda jids: unblocked.set())
        await blocking.unblock_jids([carol])
        await asyncio.wait_for(unblocked.wait(), 10)
        a_in = inbox(a)
        await c.send(chat("alice@localhost/blk", "hello again"))
        m = await next_match(a_in, lambda m: body(m) == "hello again")
        assert m.from_.bare() == carol


async def test_private_xml_and_bookmarks(daemon):
    async with online(daemon, "bob@localhost/px") as b:
        private = b.summon(aioxmpp.private_xml.PrivateXMLService)
        empty = await private.get_private_xml(Note())  # XEP-0049 §2.3: nothing stored yet
        assert isinstance(empty.registered_payload, Note) and empty.registered_payload.text is None
        await private.set_private_xml(Note(text="remember the milk"))
        stored = await private.get_private_xml(Note())
        assert stored.registered_payload.text == "remember the milk"

        bookmarks = b.summon(aioxmpp.BookmarkClient)
        room = aioxmpp.bookmarks.Conference("Lobby", aioxmpp.JID.fromstr("lobby@conference.localhost"),
                                            autojoin=True, nick="Bob")
        await bookmarks.add_bookmark(room)
        assert room in await bookmarks.get_bookmarks()

    async with online(daemon, "bob@localhost/px2") as b2:  # stored, not per session
        assert room in await b2.summon(aioxmpp.BookmarkClient).get_bookmarks()
        # Another account's private storage is off limits (XEP-0049 §3: <forbidden/>).
        peek = aioxmpp.IQ(type_=aioxmpp.IQType.GET, to=aioxmpp.JID.fromstr("alice@localhost"),
                          payload=aioxmpp.private_xml.Query(Note()))
        with pytest.raises(aioxmpp.errors.XMPPError) as err:
            await b2.send(peek)
        assert err.value.condition == aioxmpp.ErrorCondition.FORBIDDEN


async def test_vcard_own_and_others(daemon):
    async with online(daemon, "carol@localhost/vc") as c, online(daemon, "dave@localhost/vc") as d:
        vcards = c.summon(aioxmpp.vcard.VCardService)
        card = aioxmpp.vcard.xso.VCard()
        card.set_photo_data("image/png", b"\x89PNG not really")
        await vcards.set_vcard(card)
        mine = await vcards.get_vcard()
        assert mine.get_photo_data() == b"\x89PNG not really"
        theirs = await d.summon(aioxmpp.vcard.VCardService).get_vcard(aioxmpp.JID.fromstr("carol@localhost"))
        assert theirs.get_photo_mime_type() == "image/png"
        # No vCard answers like no account (XEP-0054 1.3 §3.3, no directory harvesting);
        # aioxmpp maps only item-not-found to an empty vCard, so it raises here.
        with pytest.raises(aioxmpp.errors.XMPPCancelError) as err:
            await vcards.get_vcard(aioxmpp.JID.fromstr("dave@localhost"))
        assert err.value.condition == aioxmpp.ErrorCondition.SERVICE_UNAVAILABLE


async def test_pep_publish_notify_and_retrieve(daemon):
    async with online(daemon, "dave@localhost/pep", services=(aioxmpp.PEPClient,)) as d, \
            online(daemon, "alice@localhost/pep") as a:
        pep = d.summon(aioxmpp.PEPClient)
        await pep.publish(NOTES, Note(text="before +notify"), id_="current", access_model="open")
        # aioxmpp leaves re-announcing changed caps (now with NOTES+notify) to the application.
        ver_changed = asyncio.Event()
        d.summon(aioxmpp.EntityCapsService).on_ver_changed.connect(lambda: ver_changed.set())
        node = pep.claim_pep_node(NOTES, notify=True)
        items: asyncio.Queue = asyncio.Queue()
        node.on_item_publish.connect(lambda jid, node, item, **_kw: items.put_nowait((jid, item)))
        await asyncio.wait_for(ver_changed.wait(), 10)
        d.summon(aioxmpp.PresenceServer).resend_presence()
        # Caps that gain +notify bring the last published item (XEP-0163 §4.3.2, after the
        # server verified them with a disco#info query).
        jid, item = await asyncio.wait_for(items.get(), 10)
        assert jid == d.local_jid.bare() and item.registered_payload.text == "before +notify"

        await pep.publish(NOTES, Note(text="hello pep"), id_="current", access_model="open")
        jid, item = await asyncio.wait_for(items.get(), 10)
        assert item.registered_payload.text == "hello pep"

        got = await a.summon(aioxmpp.PubSubClient).get_items(d.local_jid.bare(), NOTES)
        assert [i.registered_payload.text for i in got.payload.items] == ["hello pep"]


async def _mutual_subscription(a: aioxmpp.Client, b: aioxmpp.Client) -> None:
    ra, rb = a.summon(aioxmpp.RosterClient), b.summon(aioxmpp.RosterClient)
    changed = asyncio.Event()
    for roster in (ra, rb):
        roster.on_entry_added.connect(lambda _item: changed.set())
        roster.on_entry_subscription_state_changed.connect(lambda _item: changed.set())
    ja, jb = a.local_jid.bare(), b.local_jid.bare()
    rb.on_subscribe.connect(lambda st: (rb.approve(st.from_), rb.subscribe(st.from_)))
    ra.on_subscribe.connect(lambda st: ra.approve(st.from_))
    ra.subscribe(jb)
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while not (jb in ra.items and ra.items[jb].subscription == "both"
               and ja in rb.items and rb.items[ja].subscription == "both"):
        changed.clear()
        await asyncio.wait_for(changed.wait(), max(0.01, end - loop.time()))


async def test_avatar_published_to_a_contact(daemon):
    """XEP-0084 user avatar (PEP data + metadata) with aioxmpp.avatar, seen by a contact."""
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    services = (aioxmpp.RosterClient, aioxmpp.avatar.AvatarService)
    async with online(daemon, "alice@localhost/av", services=services) as a, \
            online(daemon, "carol@localhost/av", services=services) as c:
        await _mutual_subscription(a, c)
        avatar_set = aioxmpp.avatar.AvatarSet()
        avatar_set.add_avatar_image("image/png", image_bytes=png, width=8, height=8)
        await a.summon(aioxmpp.avatar.AvatarService).publish_avatar_set(avatar_set)

        metadata = await c.summon(aioxmpp.avatar.AvatarService).get_avatar_metadata(
            a.local_jid.bare(), require_fresh=True)
        assert [m.mime_type for m in metadata] == ["image/png"]
        assert metadata[0].normalized_id == avatar_set.png_id
        assert await metadata[0].get_image_bytes() == png


class NotesService(aioxmpp.service.Service):
    """How an aioxmpp application declares PEP interest: +notify is in the caps from the first
    presence on."""
    ORDER_AFTER = [aioxmpp.PEPClient]
    notes = aioxmpp.pep.register_pep_node(NOTES, notify=True)


async def test_pep_publish_right_after_login_still_notifies(daemon):
    """The first publish can race the server's disco#info check of the new caps; the item still
    reaches the +notify resource (as the last published item once the caps are known)."""
    async with online(daemon, "bob@localhost/pep2", services=(NotesService,)) as b:
        items: asyncio.Queue = asyncio.Queue()
        b.summon(NotesService).notes.on_item_publish.connect(
            lambda jid, node, item, **_kw: items.put_nowait(item.registered_payload.text))
        await b.summon(aioxmpp.PEPClient).publish(NOTES, Note(text="at once"), id_="current")
        assert await asyncio.wait_for(items.get(), 10) == "at once"


async def test_blocking_a_contact_hides_presence(daemon):
    """XEP-0191 §3.3: blocking sends the contact unavailable presence from every resource, and
    §3.4 unblocking makes the user visible again."""
    services = (aioxmpp.RosterClient, aioxmpp.PresenceClient, aioxmpp.blocking.BlockingClient)
    async with online(daemon, "dave@localhost/hide", services=services) as d, \
            online(daemon, "bob@localhost/hide", services=services) as b:
        await _mutual_subscription(d, b)
        presence = b.summon(aioxmpp.PresenceClient)
        dave = d.local_jid.bare()
        available, gone = asyncio.Event(), asyncio.Event()
        presence.on_bare_available.connect(lambda st: available.set() if st.from_.bare() == dave
                                           else None)
        presence.on_bare_unavailable.connect(lambda st: gone.set() if st.from_.bare() == dave
                                             else None)
        d.summon(aioxmpp.PresenceServer).resend_presence()
        await asyncio.wait_for(available.wait(), 10)

        blocking = d.summon(aioxmpp.blocking.BlockingClient)
        await blocking.block_jids([b.local_jid.bare()])
        await asyncio.wait_for(gone.wait(), 10)
        assert presence.get_most_available_stanza(dave) is None

        available.clear()
        await blocking.unblock_jids([b.local_jid.bare()])
        await asyncio.wait_for(available.wait(), 10)
