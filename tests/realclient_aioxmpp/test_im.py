"""Instant messaging with aioxmpp's own services: roster and presence subscription between two
accounts, chat messages both ways, Message Carbons (XEP-0280) to a second resource."""

from __future__ import annotations

import asyncio

import aioxmpp
import aioxmpp.carbons
import aioxmpp.roster
import pytest

from tests.realclient_aioxmpp.conftest import body, chat, inbox, make_client, next_match, online

pytestmark = pytest.mark.realclient

ALICE = aioxmpp.JID.fromstr("alice@localhost")
BOB = aioxmpp.JID.fromstr("bob@localhost")
ROSTER = (aioxmpp.RosterClient, aioxmpp.PresenceClient)


async def _until(cond, event: asyncio.Event, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        event.clear()
        await asyncio.wait_for(event.wait(), max(0.01, end - loop.time()))


async def test_mutual_subscription_roster_and_presence(daemon):
    async with online(daemon, "alice@localhost/desk", services=ROSTER) as a, \
            online(daemon, "bob@localhost/desk", services=ROSTER) as b:
        ra, rb = a.summon(aioxmpp.RosterClient), b.summon(aioxmpp.RosterClient)
        changed = asyncio.Event()
        for roster in (ra, rb):
            roster.on_entry_added.connect(lambda _item: changed.set())
            roster.on_entry_subscription_state_changed.connect(lambda _item: changed.set())
        # The usual client behaviour: approve a request and ask back.
        rb.on_subscribe.connect(lambda st: (rb.approve(st.from_), rb.subscribe(st.from_)))
        ra.on_subscribe.connect(lambda st: ra.approve(st.from_))
        bob_online = asyncio.Event()
        a.summon(aioxmpp.PresenceClient).on_bare_available.connect(
            lambda st: bob_online.set() if st.from_.bare() == BOB else None)

        await ra.set_entry(BOB, name="Bob", add_to_groups={"Friends"})
        ra.subscribe(BOB)

        def both() -> bool:
            return (BOB in ra.items and ra.items[BOB].subscription == "both"
                    and ALICE in rb.items and rb.items[ALICE].subscription == "both")
        await _until(both, changed)
        assert ra.items[BOB].name == "Bob" and ra.items[BOB].groups == {"Friends"}
        await asyncio.wait_for(bob_online.wait(), 10)

        # A second resource of alice gets the whole roster on login, and bob's presence (the
        # server probes for it, RFC 6121 §4.3); bob sees it come and go.
        seen = a.summon(aioxmpp.PresenceClient)
        came, went = asyncio.Event(), asyncio.Event()
        b.summon(aioxmpp.PresenceClient).on_available.connect(
            lambda full, st: came.set() if full.resource == "phone" else None)
        b.summon(aioxmpp.PresenceClient).on_unavailable.connect(
            lambda full, st: went.set() if full.resource == "phone" else None)
        async with online(daemon, "alice@localhost/phone", services=ROSTER) as a2:
            r2 = a2.summon(aioxmpp.RosterClient)
            assert r2.items[BOB].subscription == "both" and r2.items[BOB].name == "Bob"
            probed = asyncio.Event()
            p2 = a2.summon(aioxmpp.PresenceClient)
            if p2.get_most_available_stanza(BOB) is None:
                p2.on_bare_available.connect(lambda st: probed.set())
                await asyncio.wait_for(probed.wait(), 10)
            assert p2.get_peer_resources(BOB).keys() == {"desk"}
            await asyncio.wait_for(came.wait(), 10)
        await asyncio.wait_for(went.wait(), 10)
        assert seen.get_peer_resources(BOB).keys() == {"desk"}

        await ra.remove_entry(BOB)
        await _until(lambda: BOB not in ra.items, changed)
        await _until(lambda: ALICE not in rb.items or rb.items[ALICE].subscription == "none",
                     changed)


async def test_messages_both_ways(daemon):
    async with online(daemon, "alice@localhost/m") as a, online(daemon, "bob@localhost/m") as b:
        a_in, b_in = inbox(a), inbox(b)
        await a.send(chat("bob@localhost/m", "hello bob"))
        m = await next_match(b_in, lambda m: body(m) == "hello bob")
        assert m.from_ == a.local_jid and m.type_ == aioxmpp.MessageType.CHAT
        await b.send(chat("alice@localhost", "hello alice, bare"))
        m = await next_match(a_in, lambda m: body(m) == "hello alice, bare")
        assert m.from_ == b.local_jid


async def test_carbons_to_second_resource(daemon):
    async with online(daemon, "alice@localhost/c1") as a1, \
            online(daemon, "alice@localhost/c2") as a2, online(daemon, "bob@localhost/cb") as b:
        for c in (a1, a2):
            await c.summon(aioxmpp.carbons.CarbonsClient).enable()
        copies = inbox(a2)
        await a1.send(chat("bob@localhost/cb", "sent from c1"))
        m = await next_match(copies, lambda m: m.xep0280_sent is not None)
        assert m.from_ == ALICE  # a carbon comes from the bare JID (XEP-0280 §11)
        inner = m.xep0280_sent.stanza
        assert body(inner) == "sent from c1" and inner.from_ == a1.local_jid

        await b.send(chat("alice@localhost/c1", "to c1 only"))
        m = await next_match(copies, lambda m: m.xep0280_received is not None)
        inner = m.xep0280_received.stanza
        assert body(inner) == "to c1 only" and inner.from_ == b.local_jid

        await a2.summon(aioxmpp.carbons.CarbonsClient).disable()
        await b.send(chat("alice@localhost/c1", "after disable"))
        await b.send(chat("alice@localhost/c2", "marker"))
        m = await next_match(copies, lambda m: m.xep0280_received is not None or body(m) == "marker")
        assert body(m) == "marker", "no carbon after disable"


async def test_roster_versioning_across_sessions(daemon):
    """RFC 6121 §2.6: a client that kept its roster and version gets only what changed."""
    carol = aioxmpp.JID.fromstr("carol@localhost")
    dave = aioxmpp.JID.fromstr("dave@localhost")
    async with online(daemon, "bob@localhost/ver", services=ROSTER) as b:
        roster = b.summon(aioxmpp.RosterClient)
        assert b.stream_features.has_feature(aioxmpp.roster.xso.RosterVersioningFeature)
        await roster.set_entry(carol, name="Carol")
        await _until(lambda: carol in roster.items, asyncio.Event())
        saved = roster.export_as_json()
    assert saved["ver"], "the roster result carries a version"

    # Unchanged: the same version comes back as an empty result and the kept roster stands.
    client = make_client(daemon, "bob@localhost/ver")
    client.summon(aioxmpp.RosterClient).import_from_json(saved)
    async with client.connected():
        kept = client.summon(aioxmpp.RosterClient)
        assert {str(j) for j in kept.items} == set(saved["items"])
        assert kept.items[carol].name == "Carol"

    async with online(daemon, "bob@localhost/other", services=ROSTER) as other:
        await other.summon(aioxmpp.RosterClient).set_entry(dave, name="Dave")

    # Changed meanwhile: the new item arrives (as a push or a full roster) and the version moves.
    client = make_client(daemon, "bob@localhost/ver")
    client.summon(aioxmpp.RosterClient).import_from_json(saved)
    changed = asyncio.Event()
    client.summon(aioxmpp.RosterClient).on_entry_added.connect(lambda _item: changed.set())
    async with client.connected():
        roster = client.summon(aioxmpp.RosterClient)
        await _until(lambda: dave in roster.items, changed)
        assert roster.items[dave].name == "Dave" and carol in roster.items
        assert roster.version != saved["ver"]
