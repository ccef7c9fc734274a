"""vCard-temp (XEP-0054) and vCard-based avatars (XEP-0153) over the wire with slixmpp: an
avatar set through xep_0153 reaches a contact as the photo hash in presence, the server adds the
hash for a resource that does not (XEP-0153 §4.3), and contacts fetch the vCard."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0054.stanza import VCardTemp

from tests.realclient.conftest import connect, subscribe_both
from tests.realclient.conftest import next_match as _next

pytestmark = pytest.mark.realclient

NS_UPDATE = "vcard-temp:x:update"
ALICE, BOB, CAROL = "alice@localhost", "bob@localhost", "carol@localhost"
# A deterministic "image": long enough that its base64 is several lines in some clients.
PHOTO = b"\x89PNG\r\n\x1a\n" + bytes((i * 37 + 11) % 256 for i in range(3000))
PHOTO_SHA1 = hashlib.sha1(PHOTO).hexdigest()


async def close(*clients: Any) -> None:
    await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients),
                                          return_exceptions=True), 10)


def photo_of(p: Any) -> str | None:
    """The vcard-temp:x:update photo hash of a presence (None without one)."""
    x = p.xml.find(f"{{{NS_UPDATE}}}x")
    if x is None:
        return None
    photo = x.find(f"{{{NS_UPDATE}}}photo")
    return None if photo is None else (photo.text or "")


async def test_vcard_avatar_hash_and_fetch(daemon):
    a = await connect(daemon, ALICE + "/desk", plugins=("xep_0054", "xep_0153"))
    b = await connect(daemon, BOB + "/desk", plugins=("xep_0054", "xep_0153"))
    avatar_updates: asyncio.Queue = asyncio.Queue()
    b.add_event_handler("vcard_avatar_update", avatar_updates.put_nowait)
    await subscribe_both(a, b)

    # Alice's profile, then her avatar through XEP-0153 (which re-sends her presence).
    vcard = VCardTemp()
    vcard["FN"] = "Alice Liddell"
    vcard["NICKNAME"] = "alice"
    await a.plugin["xep_0054"].publish_vcard(vcard, timeout=5)
    await a.plugin["xep_0153"].set_avatar(avatar=PHOTO, mtype="image/png", timeout=5)

    # Bob sees the hash in Alice's presence (slixmpp's xep_0153 event too).
    p = await _next(b.presences, lambda p: p["from"].full == ALICE + "/desk"
                    and photo_of(p) == PHOTO_SHA1)
    assert p["type"] == "available"
    upd = await _next(avatar_updates, lambda p: p["from"].full == ALICE + "/desk"
                      and p["vcard_temp_update"]["photo"] == PHOTO_SHA1)
    assert upd is not None

    # A second Alice client that knows nothing of avatars: the server adds the hash of the
    # stored photo to its presence (XEP-0153 §4.3).
    a2 = await connect(daemon, ALICE + "/plain", plugins=("xep_0054",), send_presence=False)
    own: asyncio.Queue = asyncio.Queue()
    a2.add_filter("out", lambda s: (own.put_nowait(s) if s.name == "presence" else None, s)[1])
    a2.send_presence(pstatus="no avatars here")
    sent = await _next(own, lambda s: True)
    assert photo_of(sent) is None  # the client did not add it ...
    p = await _next(b.presences, lambda p: p["from"].full == ALICE + "/plain")
    assert p["status"] == "no avatars here"
    assert photo_of(p) == PHOTO_SHA1  # ... the server did

    # Bob fetches Alice's vCard: the name and the very photo.
    res = await b.plugin["xep_0054"].get_vcard(JID(ALICE), timeout=5)
    got = res["vcard_temp"]
    assert got["FN"] == "Alice Liddell"
    assert got.xml.findtext("{vcard-temp}NICKNAME") == "alice"
    assert got["PHOTO"]["TYPE"] == "image/png"
    assert got["PHOTO"]["BINVAL"] == PHOTO
    assert hashlib.sha1(got["PHOTO"]["BINVAL"]).hexdigest() == PHOTO_SHA1

    # Carol: Bob has no vCard (service-unavailable, XEP-0054 1.3); Alice's is not hers to
    # change (forbidden).
    c = await connect(daemon, CAROL + "/desk", plugins=("xep_0054",))
    with pytest.raises(IqError) as ei:
        await c.plugin["xep_0054"].get_vcard(JID(BOB), timeout=5)
    assert ei.value.iq["error"]["condition"] == "service-unavailable"
    evil = VCardTemp()
    evil["FN"] = "Mallory"
    with pytest.raises(IqError) as ei:
        await c.plugin["xep_0054"].publish_vcard(evil, jid=JID(ALICE), timeout=5)
    assert ei.value.iq["error"]["condition"] == "forbidden"
    res = await b.plugin["xep_0054"].get_vcard(JID(ALICE), timeout=5)
    assert res["vcard_temp"]["FN"] == "Alice Liddell"
    await close(a, a2, b, c)
