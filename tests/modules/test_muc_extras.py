"""MUC extras: nickname registration (§7.10, §7.12), room avatars (XEP-0486), IQs between
occupants (§7.7), unique room names (§10.1.4), service ping."""

from __future__ import annotations

import base64
import hashlib

from mbxmpp.xml.ns import NS_DATA, NS_DISCO_INFO, NS_MUC_UNIQUE, NS_PING, NS_REGISTER, NS_VCARD, NS_VERSION
from tests.modules import test_muc_support as support
from tests.modules.test_muc_support import (
    ROOM,
    SERVICE,
    A,
    B,
    C,
    create,
    error_condition,
    error_of,
    form_values,
    iq,
    join,
    messages,
    room_with,
    statuses,
)

h = support.h  # the fixture: the in-process server with MUC


def register_form(nick: str) -> str:
    return (f"<query xmlns='{NS_REGISTER}'><x xmlns='{NS_DATA}' type='submit'>"
            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field>"
            f"<field var='muc#register_roomnick'><value>{nick}</value></field></x></query>")


async def test_register_reserves_nick_and_grants_membership(h):
    a = await h.login(A, "r1")
    b = await h.login(B, "r1")
    c = await h.login(C, "r1")
    await create(h, a, "alice")
    r = await iq(h, b, ROOM, f"<query xmlns='{NS_REGISTER}'/>")
    x = r.find("query", NS_REGISTER).find("x", NS_DATA)  # type: ignore[union-attr]
    assert "muc#register_roomnick" in form_values(x)  # type: ignore[arg-type]
    assert error_condition(await iq(h, b, ROOM, register_form("Alice"), "set")) == "conflict"
    assert (await iq(h, b, ROOM, register_form("bobby"), "set")).get("type") == "result"
    r = await iq(h, b, ROOM, f"<query xmlns='{NS_REGISTER}'/>")
    q = r.find("query", NS_REGISTER)
    assert q.find("registered") is not None and q.findtext("username") == "bobby"  # type: ignore[union-attr]
    r = await iq(h, b, ROOM, f"<query xmlns='{NS_DISCO_INFO}' node='x-roomuser-item'/>")
    assert r.find("query", NS_DISCO_INFO).find("identity").get("name") == "bobby"  # type: ignore[union-attr]
    assert h.server.module("muc").services[SERVICE].rooms["room"].affiliation(B) == "member"  # type: ignore[union-attr]
    assert error_of(await join(h, c, "BOBBY")) == "conflict"
    r = await iq(h, b, ROOM, f"<query xmlns='{NS_REGISTER}'><remove/></query>", "set")
    assert r.get("type") == "result"
    assert "110" in statuses([s for s in await join(h, c, "bobby") if s.tag == "presence"][-1])


async def test_room_avatar_vcard(h):
    a, b = await room_with(h, "bob")
    png = b"\x89PNG fake image"
    vcard = (f"<vCard xmlns='{NS_VCARD}'><PHOTO><TYPE>image/png</TYPE>"
             f"<BINVAL>{base64.b64encode(png).decode()}</BINVAL></PHOTO></vCard>")
    assert error_condition(await iq(h, b, ROOM, vcard, "set")) == "forbidden"
    assert (await iq(h, a, ROOM, vcard, "set")).get("type") == "result"
    assert "104" in statuses(messages(await b.settle())[-1])
    r = await iq(h, b, ROOM, f"<vCard xmlns='{NS_VCARD}'/>")
    assert r.find("vCard", NS_VCARD).find("PHOTO", NS_VCARD).findtext("TYPE", NS_VCARD) == "image/png"  # type: ignore[union-attr]
    r = await iq(h, b, ROOM, f"<query xmlns='{NS_DISCO_INFO}'/>")
    info = form_values(r.find("query", NS_DISCO_INFO).find("x", NS_DATA))  # type: ignore[union-attr, arg-type]
    assert info["muc#roominfo_avatarhash"] == [hashlib.sha1(png).hexdigest()]
    assert (await iq(h, a, ROOM, f"<vCard xmlns='{NS_VCARD}'/>", "set")).get("type") == "result"
    r = await iq(h, b, ROOM, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert "muc#roominfo_avatarhash" not in form_values(r.find("query", NS_DISCO_INFO).find("x", NS_DATA))  # type: ignore[union-attr, arg-type]


async def test_iq_between_occupants_is_relayed(h):
    a, b = await room_with(h, "bob")
    h.send(a, f"<iq type='get' id='v1' to='{ROOM}/bob'><query xmlns='{NS_VERSION}'/></iq>")
    fwd = await b.expect(lambda s: s.tag == "iq")
    assert fwd.get("from") == ROOM + "/alice" and fwd.get("to") == B + "/r1"
    h.send(b, f"<iq type='result' id='{fwd.get('id')}' to='{ROOM}/alice'>"
              f"<query xmlns='{NS_VERSION}'><name>bobclient</name></query></iq>")
    r = await a.expect(lambda s: s.tag == "iq" and s.get("id") == "v1")
    assert r.get("type") == "result" and r.get("from") == ROOM + "/bob"
    assert r.find("query", NS_VERSION).findtext("name") == "bobclient"  # type: ignore[union-attr]
    # An error answer comes back as the same error.
    h.send(a, f"<iq type='get' id='v2' to='{ROOM}/bob'><vCard xmlns='{NS_VCARD}'/></iq>")
    fwd = await b.expect(lambda s: s.tag == "iq")
    h.send(b, f"<iq type='error' id='{fwd.get('id')}' to='{ROOM}/alice'><vCard xmlns='{NS_VCARD}'/>"
              "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    r = await a.expect(lambda s: s.tag == "iq" and s.get("id") == "v2")
    assert error_condition(r) == "item-not-found"
    # Pinging another occupant goes through to it too; an unknown nick is item-not-found.
    r = await iq(h, a, ROOM + "/nobody", f"<ping xmlns='{NS_PING}'/>")
    assert error_condition(r) == "item-not-found"


async def test_unique_name_and_service_ping(h):
    a = await h.login(A, "r1")
    r = await iq(h, a, SERVICE, f"<unique xmlns='{NS_MUC_UNIQUE}'/>")
    name = r.find("unique", NS_MUC_UNIQUE).text  # type: ignore[union-attr]
    assert name and name not in h.server.module("muc").services[SERVICE].rooms  # type: ignore[union-attr]
    assert (await iq(h, a, SERVICE, f"<ping xmlns='{NS_PING}'/>")).get("type") == "result"
    # Messages to the service itself are not taken.
    h.send(a, f"<message to='{SERVICE}' id='m'><body>hello service</body></message>")
    assert error_of(await a.settle()) == "service-unavailable"


async def test_own_copy_of_a_presence_change_comes_last(h):
    """A nickname or status change reaches the other occupants before the changer's own copy
    (110): its client may take that copy as "everyone has been told" (slixmpp's set_self_nick
    does), as after a join (§7.2.3)."""
    a, b = await room_with(h, "bob")  # alice created it: first in the room's order
    order: list[tuple[str, str | None, str | None]] = []
    for who, c in (("alice", a), ("bob", b)):
        def record(st, who=who, forward=c.send_stanza):  # type: ignore[no-untyped-def]
            order.append((who, st.get("type"), st.get("from")))
            forward(st)
        c.send_stanza = record  # type: ignore[method-assign]
    h.send(a, f"<presence to='{ROOM}/alicia'/>")
    await a.settle()
    await b.settle()
    assert order == [("bob", "unavailable", f"{ROOM}/alice"), ("alice", "unavailable", f"{ROOM}/alice"),
                     ("bob", None, f"{ROOM}/alicia"), ("alice", None, f"{ROOM}/alicia")]
    order.clear()
    h.send(a, f"<presence to='{ROOM}/alicia'><show>away</show></presence>")
    await a.settle()
    await b.settle()
    assert order == [("bob", None, f"{ROOM}/alicia"), ("alice", None, f"{ROOM}/alicia")]
    order.clear()
    h.send(a, f"<presence type='unavailable' to='{ROOM}/alicia'><status>bye</status></presence>")
    await a.settle()
    await b.settle()
    assert order == [("bob", "unavailable", f"{ROOM}/alicia"), ("alice", "unavailable", f"{ROOM}/alicia")]
