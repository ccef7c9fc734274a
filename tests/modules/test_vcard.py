"""vCard-temp (XEP-0054) and the avatar hash in presence (XEP-0153)."""

from __future__ import annotations

import base64
import hashlib

from mbxmpp.modules.vcard import (MAX_VCARD, NS_AVATAR_DATA, NS_AVATAR_METADATA, NS_PEP_VCARD_CONVERSION,
                                  NS_VCARD_UPDATE)
from mbxmpp.xml.ns import NS_PUBSUB, NS_VCARD
from tests.harness import ServerHarness
from tests.modules.test_mam_support import ALL_MODULES, iq
from tests.modules.test_pep import A, B, error_of, items_request, mutual, publish, reply

MODULES = ["disco", "roster", "presence", "vcard"]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
PHOTO_B64 = base64.b64encode(PNG).decode()
PHOTO_SHA1 = hashlib.sha1(PNG).hexdigest()


def vcard_set(body: str, iq_id: str = "set", to: str | None = None) -> str:
    to_attr = f" to='{to}'" if to else ""
    return f"<iq type='set' id='{iq_id}'{to_attr}><vCard xmlns='vcard-temp'>{body}</vCard></iq>"


def vcard_get(iq_id: str = "get", to: str | None = None) -> str:
    to_attr = f" to='{to}'" if to else ""
    return f"<iq type='get' id='{iq_id}'{to_attr}><vCard xmlns='vcard-temp'/></iq>"


def photo(b64: str = PHOTO_B64) -> str:
    # base64 wrapped over lines, as clients send it
    wrapped = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    return f"<PHOTO><TYPE>image/png</TYPE><BINVAL>{wrapped}</BINVAL></PHOTO>"


async def test_get_set_own_and_others():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r")
        b = await h.login(B, "r")
        h.send(a, vcard_get())
        r = await a.expect(reply("get"))
        assert r.get("type") == "result"
        v = r.find("vCard", NS_VCARD)
        assert v is not None and list(v.elements()) == []
        h.send(b, vcard_get(to=A))
        assert error_of(await b.expect(reply("get")))[0] == "service-unavailable"  # XEP-0054 1.3
        h.send(a, vcard_set("<FN>Alice Liddell</FN><NICKNAME>al</NICKNAME>"))
        assert (await a.expect(reply("set"))).get("type") == "result"
        h.send(a, vcard_get())
        v = (await a.expect(reply("get"))).find("vCard", NS_VCARD)
        assert v.findtext("FN") == "Alice Liddell" and v.findtext("NICKNAME") == "al"
        h.send(a, vcard_get(to=A, iq_id="get2"))  # own bare JID as 'to' is the same
        assert (await a.expect(reply("get2"))).find("vCard", NS_VCARD).findtext("FN") == "Alice Liddell"
        h.send(b, vcard_get(to=A))
        r = await b.expect(reply("get"))
        assert r.get("from") == A
        assert r.find("vCard", NS_VCARD).findtext("FN") == "Alice Liddell"
        h.send(b, vcard_set("<FN>Mallory</FN>", to=A))
        assert error_of(await b.expect(reply("set")))[0] == "forbidden"


async def test_size_limit_and_bad_photo():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r")
        h.send(a, vcard_set(f"<DESC>{'x' * (MAX_VCARD + 1)}</DESC>"))
        assert error_of(await a.expect(reply("set")))[0] == "not-acceptable"
        h.send(a, vcard_set("<PHOTO><BINVAL>not base64!</BINVAL></PHOTO>", iq_id="bad"))
        assert error_of(await a.expect(reply("bad")))[0] == "bad-request"
        h.send(a, vcard_get())
        v = (await a.expect(reply("get"))).find("vCard", NS_VCARD)
        assert list(v.elements()) == []  # nothing was stored


def update_photo(p):
    x = p.find("x", NS_VCARD_UPDATE)
    return None if x is None else x.findtext("photo", NS_VCARD_UPDATE)


def presence_from(jid):
    return lambda s: s.tag == "presence" and s.get("from") == jid and s.get("type") is None


async def test_photo_hash_added_to_presence():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        a = await h.login(A, "r")
        b = await h.login(B, "r", presence=True)
        # no stored vCard: nothing added
        h.send(a, "<presence/>")
        p = await b.expect(presence_from(a.jid))
        assert p.find("x", NS_VCARD_UPDATE) is None
        h.send(a, vcard_set("<FN>Alice</FN>" + photo()))
        assert (await a.expect(reply("set"))).get("type") == "result"
        h.send(a, "<presence><show>away</show></presence>")
        p = await b.expect(presence_from(a.jid))
        assert update_photo(p) == PHOTO_SHA1
        assert p.findtext("show") == "away"
        # the client's own element is left alone
        h.send(a, f"<presence><x xmlns='{NS_VCARD_UPDATE}'><photo>abc</photo></x></presence>")
        p = await b.expect(presence_from(a.jid))
        assert update_photo(p) == "abc"
        assert len(p.findall("x", NS_VCARD_UPDATE)) == 1
        # photo removed: an empty <photo/> says "no avatar"
        h.send(a, vcard_set("<FN>Alice</FN>", iq_id="s2"))
        await a.expect(reply("s2"))
        h.send(a, "<presence/>")
        p = await b.expect(presence_from(a.jid))
        assert update_photo(p) == ""
        # unavailable presence is not touched
        h.send(a, "<presence type='unavailable'/>")
        p = await b.expect(lambda s: s.tag == "presence" and s.get("type") == "unavailable")
        assert p.find("x", NS_VCARD_UPDATE) is None


async def test_hash_survives_restart_of_cache():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r")
        h.send(a, vcard_set(photo()))
        await a.expect(reply("set"))
        vc = h.server.module("vcard")
        vc._hashes.clear()
        assert vc.hash_of(A) == PHOTO_SHA1
        assert vc.hash_of(B) is None


# -- XEP-0054 -------------------------------------------------------------------------------------

async def test_xep0054_3_3_no_vcard_is_service_unavailable_like_no_user():
    async with ServerHarness(modules=ALL_MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        await h.login(B, "r1", presence=True)
        conds = []
        for to in (B, "nobody@localhost"):
            r = await iq(h, a, f"<vCard xmlns='{NS_VCARD}'/>", to=to)
            conds.append(error_of(r)[0])
        assert conds == ["service-unavailable", "service-unavailable"]


# -- XEP-0398: the vCard's photo and the PEP avatar are one ------------------------------------

CONV_MODULES = ["disco", "roster", "presence", "pep", "vcard"]


async def avatar_items(h: ServerHarness, c, node: str) -> list:  # type: ignore[no-untyped-def]
    h.send(c, items_request(node, to=A, iq_id="av"))
    r = await c.expect(reply("av"))
    if r.get("type") == "error":
        return []
    return list(r.find("pubsub", NS_PUBSUB).first_child().elements())  # type: ignore[union-attr]


async def stored_photo(h: ServerHarness, c) -> tuple[str | None, str | None]:  # type: ignore[no-untyped-def]
    h.send(c, vcard_get("vg"))
    v = (await c.expect(reply("vg"))).find("vCard", NS_VCARD)
    p = v.find("PHOTO", NS_VCARD) if v is not None else None
    if p is None:
        return None, None
    return p.findtext("TYPE", NS_VCARD), "".join((p.findtext("BINVAL", NS_VCARD) or "").split())


async def settled(h: ServerHarness) -> None:
    """The PEP -> vCard copy runs after the publish's reply."""
    for t in list(h.server.module("vcard")._tasks):  # type: ignore[union-attr]
        await t


async def test_xep0398_feature_only_with_pep():
    for modules, expected in ((CONV_MODULES, True), (MODULES, False)):
        async with ServerHarness(modules=modules) as h:
            a = await h.login(A, "r")
            r = await iq(h, a, "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=A)
            feats = {f.get("var") for f in r.first_child().elements() if f.tag == "feature"}  # type: ignore[union-attr]
            assert (NS_PEP_VCARD_CONVERSION in feats) is expected
            assert NS_VCARD in feats


async def test_xep0398_vcard_photo_becomes_the_pep_avatar():
    async with ServerHarness(modules=CONV_MODULES) as h:
        a = await h.login(A, "r")
        h.send(a, vcard_set("<FN>Alice</FN>"))
        await a.expect(reply("set"))
        assert await avatar_items(h, a, NS_AVATAR_METADATA) == []  # no photo: nothing published
        h.send(a, vcard_set("<FN>Alice</FN>" + photo()))
        assert (await a.expect(reply("set"))).get("type") == "result"
        data = await avatar_items(h, a, NS_AVATAR_DATA)
        assert [i.get("id") for i in data] == [PHOTO_SHA1]
        assert base64.b64decode(data[0].first_child().text) == PNG
        meta = await avatar_items(h, a, NS_AVATAR_METADATA)
        info = meta[0].first_child().first_child()
        assert meta[0].get("id") == PHOTO_SHA1
        assert (info.get("id"), info.get("bytes"), info.get("type")) == (PHOTO_SHA1, str(len(PNG)), "image/png")
        node = h.server.module("pep").node(A, NS_AVATAR_DATA)  # type: ignore[union-attr]
        assert node.config["access_model"] == "open"
        # The photo removed: the avatar is disabled by empty metadata (XEP-0084 §4.2).
        h.send(a, vcard_set("<FN>Alice</FN>"))
        await a.expect(reply("set"))
        meta = await avatar_items(h, a, NS_AVATAR_METADATA)
        assert [list(m.first_child().elements()) for m in meta] == [[]]
        # A corrupt photo is refused and publishes nothing.
        h.send(a, vcard_set("<PHOTO><TYPE>image/png</TYPE><BINVAL>!!!</BINVAL></PHOTO>"))
        assert error_of(await a.expect(reply("set")))[0] == "bad-request"
        meta = await avatar_items(h, a, NS_AVATAR_METADATA)
        assert [list(m.first_child().elements()) for m in meta] == [[]]


async def test_xep0398_pep_avatar_becomes_the_vcard_photo():
    async with ServerHarness(modules=CONV_MODULES) as h:
        a = await h.login(A, "r")
        h.send(a, vcard_set("<FN>Alice</FN>"))
        await a.expect(reply("set"))
        # Metadata naming data that was never published, or hosted elsewhere: nothing to copy.
        for info in (f"<info id='{PHOTO_SHA1}' bytes='{len(PNG)}' type='image/png'/>",
                     f"<info id='{PHOTO_SHA1}' bytes='{len(PNG)}' type='image/png' url='https://x.example/a.png'/>"):
            h.send(a, publish(NS_AVATAR_METADATA, f"<metadata xmlns='{NS_AVATAR_METADATA}'>{info}</metadata>",
                              PHOTO_SHA1, iq_id="m0"))
            assert (await a.expect(reply("m0"))).get("type") == "result"
            await settled(h)
            assert await stored_photo(h, a) == (None, None)
        h.send(a, publish(NS_AVATAR_DATA, f"<data xmlns='{NS_AVATAR_DATA}'>{PHOTO_B64}</data>", PHOTO_SHA1, iq_id="d"))
        await a.expect(reply("d"))
        h.send(a, publish(NS_AVATAR_METADATA, f"<metadata xmlns='{NS_AVATAR_METADATA}'><info id='{PHOTO_SHA1}' "
                          f"bytes='{len(PNG)}' type='image/jpeg'/></metadata>", PHOTO_SHA1, iq_id="m"))
        await a.expect(reply("m"))
        await settled(h)
        assert await stored_photo(h, a) == ("image/jpeg", PHOTO_B64)
        assert h.server.module("vcard").hash_of(A) == PHOTO_SHA1  # type: ignore[union-attr]
        h.send(a, vcard_get("fn"))
        assert (await a.expect(reply("fn"))).find("vCard", NS_VCARD).findtext("FN", NS_VCARD) == "Alice"  # type: ignore[union-attr]
        # Empty metadata: the avatar is gone, and so is the PHOTO.
        h.send(a, publish(NS_AVATAR_METADATA, f"<metadata xmlns='{NS_AVATAR_METADATA}'/>", "off", iq_id="m2"))
        await a.expect(reply("m2"))
        await settled(h)
        assert await stored_photo(h, a) == (None, None)
        assert h.server.module("vcard").hash_of(A) == ""  # type: ignore[union-attr]
