"""Offline messages (XEP-0160) with XEP-0203 delay stamps and a per-user cap."""

from __future__ import annotations

import datetime

import pytest

from mbxmpp.config import OfflineConfig
from mbxmpp.xml.ns import NS_DELAY, NS_STANZAS
from tests.harness import ServerHarness

MODULES = ["roster", "presence", "offline"]
A = "alice@localhost"
B = "bob@localhost"


def msg(id_: str):
    return lambda s: s.tag == "message" and s.get("id") == id_


def error_condition(s) -> str | None:
    err = s.find("error")
    if err is None:
        return None
    for c in err.elements():
        if c.ns == NS_STANZAS and c.tag != "text":
            return c.tag
    return None


@pytest.mark.parametrize("storage", ["memory", "lmdb"])
async def test_stored_and_delivered_in_order_with_delay(storage):
    async with ServerHarness(modules=MODULES, storage=storage) as h:
        await h.create_user(B)
        a = await h.login(A, "r1", presence=True)
        before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        for i in range(3):
            h.send(a, f"<message to='bob@localhost' type='chat' id='m{i}'><body>hello {i}</body></message>")
        h.send(a, "<message to='bob@localhost/gone' id='m3'><body>to a gone resource</body></message>")
        assert [s for s in await a.settle() if s.tag == "message"] == []  # no bounce
        offline = h.server.module("offline")
        assert offline.count(B) == 4
        await h.server.storage.flush()
        assert offline.store.count(B) == 4
        b = await h.login(B, "r1", presence=False)
        h.send(b, "<presence/>")
        got = [s for s in await b.settle() if s.tag == "message"]
        assert [s.get("id") for s in got] == ["m0", "m1", "m2", "m3"]
        for i, s in enumerate(got[:3]):
            assert s.findtext("body") == f"hello {i}"
            assert s.get("from") == A + "/r1" and s.get("type") == "chat"
            d = s.find("delay", NS_DELAY)
            assert d is not None and d.get("from") == "localhost"
            stamp = datetime.datetime.strptime(d.get("stamp"), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc)
            assert before <= stamp <= datetime.datetime.now(datetime.timezone.utc)
        # Delivered once: gone from storage, nothing at the next login.
        await h.server.storage.flush()
        assert offline.store.count(B) == 0 and offline.count(B) == 0
        b2 = await h.login(B, "r2", presence=True)
        assert [s for s in b2.received if s.tag == "message"] == []


async def test_cap_bounces_with_error():
    async with ServerHarness(modules=MODULES, offline=OfflineConfig(max_messages=2)) as h:
        await h.create_user(B)
        a = await h.login(A, "r1", presence=True)
        for i in range(3):
            h.send(a, f"<message to='bob@localhost' type='chat' id='m{i}'><body>{i}</body></message>")
        err = await a.expect(msg("m2"))
        assert err.get("type") == "error" and error_condition(err) == "service-unavailable"
        assert err.get("from") == B
        assert err.find("error").findtext("text", NS_STANZAS)
        await a.settle()
        assert h.server.module("offline").store.count(B) == 2


@pytest.mark.parametrize("storage", ["memory", "lmdb"])
async def test_login_right_after_storing(storage):
    """A message stored moments before the recipient logs in (its write not yet committed)
    is delivered all the same, once, and the cap counts it."""
    async with ServerHarness(modules=MODULES, storage=storage,
                             offline=OfflineConfig(max_messages=2)) as h:
        await h.create_user(B)
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1")
        for i in range(3):
            h.send(a, f"<message to='bob@localhost' type='chat' id='m{i}'><body>{i}</body></message>")
        h.send(b, "<presence/>")  # same loop tick: nothing is committed yet
        await b.expect(msg("m0"))
        await b.expect(msg("m1"))
        err = await a.expect(msg("m2"))
        assert error_condition(err) == "service-unavailable"
        await h.server.storage.flush()
        await a.settle()
        offline = h.server.module("offline")
        assert offline.count(B) == 0 and offline.store.count(B) == 0
        b2 = await h.login(B, "r2", presence=True)
        assert [s for s in b2.received if s.tag == "message"] == []


async def test_chat_state_only_not_stored_nor_bounced():
    async with ServerHarness(modules=MODULES) as h:
        await h.create_user(B)
        a = await h.login(A, "r1", presence=True)
        h.send(a, "<message to='bob@localhost' type='chat' id='cs'>"
                  "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        h.send(a, "<message to='bob@localhost' type='chat' id='cs2'>"
                  "<active xmlns='http://jabber.org/protocol/chatstates'/>"
                  "<no-store xmlns='urn:xmpp:hints'/></message>")
        assert [s for s in await a.settle() if s.tag == "message"] == []
        assert h.server.module("offline").store.count(B) == 0


async def test_hints():
    async with ServerHarness(modules=MODULES) as h:
        await h.create_user(B)
        a = await h.login(A, "r1", presence=True)
        # no-store: not kept, so the sender learns it was not delivered
        h.send(a, "<message to='bob@localhost' type='chat' id='ns'><body>x</body>"
                  "<no-store xmlns='urn:xmpp:hints'/></message>")
        err = await a.expect(msg("ns"))
        assert error_condition(err) == "service-unavailable"
        # store: kept even without a body
        h.send(a, "<message to='bob@localhost' type='chat' id='st'>"
                  "<paused xmlns='http://jabber.org/protocol/chatstates'/>"
                  "<store xmlns='urn:xmpp:hints'/></message>")
        # other content than a body is kept too (a receipt)
        h.send(a, "<message to='bob@localhost' id='rc'><received xmlns='urn:xmpp:receipts' id='x'/></message>")
        await a.settle()
        assert h.server.module("offline").store.count(B) == 2


async def test_headline_and_groupchat_not_stored():
    async with ServerHarness(modules=MODULES) as h:
        await h.create_user(B)
        a = await h.login(A, "r1", presence=True)
        h.send(a, "<message to='bob@localhost' type='headline' id='h'><body>x</body></message>")
        h.send(a, "<message to='bob@localhost' type='groupchat' id='g'><body>x</body></message>")
        got = await a.settle()
        assert [s.get("id") for s in got if s.tag == "message"] == ["g"]  # groupchat bounced
        assert h.server.module("offline").store.count(B) == 0


async def test_not_delivered_to_negative_priority():
    async with ServerHarness(modules=MODULES) as h:
        await h.create_user(B)
        a = await h.login(A, "r1", presence=True)
        h.send(a, "<message to='bob@localhost' type='chat' id='m'><body>x</body></message>")
        b = await h.login(B, "r1")
        h.send(b, "<presence><priority>-5</priority></presence>")
        assert [s for s in await b.settle() if s.tag == "message"] == []
        assert h.server.module("offline").store.count(B) == 1
        b2 = await h.login(B, "r2")
        h.send(b2, "<presence><priority>2</priority></presence>")
        await b2.expect(msg("m"))
        assert h.server.module("offline").store.count(B) == 0
