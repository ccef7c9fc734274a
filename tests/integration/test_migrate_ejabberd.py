"""Migration from a real ejabberd (Debian package): users registered with ejabberdctl (one host
storing SCRAM keys, one the plain password), data made over XMPP by slixmpp clients (roster with
subscriptions, groups and a pending request, vCard, private XML, an offline message), then
``ejabberdctl export_piefxis DIR`` and ``python -m mbxmpp import MAIN_FILE``; the users log in to
mbxmpp with their OLD passwords and find the same roster, vCard, private XML, offline message
and subscription request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from slixmpp import JID
from slixmpp.plugins.xep_0054.stanza import VCardTemp
from slixmpp.xmlstream import ET

from tests.daemon import Daemon
from tests.integration.migrate_peers import (
    EJ_HOST,
    EJ_PLAIN_HOST,
    Ejabberd,
    ejabberd_available,
)
from tests.realclient.conftest import connect, disconnect, subscribe_both

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not ejabberd_available(), reason="ejabberd is not installed")]

ALICE, BOB, CAROL = f"alice@{EJ_HOST}", f"bob@{EJ_HOST}", f"carol@{EJ_HOST}"
DAVE = f"dave@{EJ_PLAIN_HOST}"
PASSWORDS = {ALICE: "alice-ej-pw", BOB: "bob-ej-pw", CAROL: "carol-ej-pw", DAVE: "dave plain ej"}
PLUGINS = ("xep_0030", "xep_0054")
NS_PREFS = "example:prefs"


async def _make_data(ej: Ejabberd) -> None:
    a = await connect(ej, ALICE + "/laptop", PASSWORDS[ALICE], plugins=PLUGINS)
    b = await connect(ej, BOB + "/phone", PASSWORDS[BOB], plugins=PLUGINS)
    await subscribe_both(a, b)
    await a.update_roster(JID(CAROL), name="Carol C", groups=["Work", "Friends"])
    a.send_presence(pto=CAROL, ptype="subscribe")
    vcard = VCardTemp()
    vcard["FN"] = "Alice Ejabberd"
    await a.plugin["xep_0054"].publish_vcard(vcard)
    iq = a.make_iq_set()
    prefs = ET.SubElement(ET.SubElement(iq.xml, "{jabber:iq:private}query"),
                          f"{{{NS_PREFS}}}prefs")
    ET.SubElement(prefs, f"{{{NS_PREFS}}}theme").text = "dark"
    await iq.send(timeout=10)
    a.send_message(mto=CAROL, mbody="waiting for carol (ejabberd)", mtype="chat")
    await asyncio.sleep(0.5)
    await disconnect(a, b)


@pytest.fixture(scope="module")
def exported() -> Iterator[tuple[Ejabberd, str]]:
    ej = Ejabberd()
    try:
        ej.start()
        for jid, pw in PASSWORDS.items():
            local, host = jid.split("@")
            ej.ctl("register", local, host, pw)
        asyncio.run(_make_data(ej))
        main = ej.export_piefxis()
        ej.stop()
        yield ej, str(main)
    finally:
        ej.cleanup()


async def _check(d: Daemon) -> None:
    a = await connect(d, ALICE + "/new", PASSWORDS[ALICE], plugins=PLUGINS)
    roster = a.client_roster
    assert roster[BOB]["subscription"] == "both"
    assert roster[CAROL]["pending_out"] and roster[CAROL]["name"] == "Carol C"
    assert sorted(roster[CAROL]["groups"]) == ["Friends", "Work"]
    v = await a.plugin["xep_0054"].get_vcard(JID(ALICE), local=False, cached=False)
    assert v["vcard_temp"]["FN"] == "Alice Ejabberd"
    iq = a.make_iq_get(queryxmlns="jabber:iq:private")
    iq.xml.find("{jabber:iq:private}query").append(ET.Element(f"{{{NS_PREFS}}}prefs"))
    priv = await iq.send(timeout=10)
    assert priv.xml.find(f".//{{{NS_PREFS}}}theme").text == "dark"
    await disconnect(a)
    c = await connect(d, CAROL + "/new", PASSWORDS[CAROL], get_roster=False, send_presence=False)
    subs: asyncio.Queue = asyncio.Queue()
    c.add_event_handler("presence_subscribe", subs.put_nowait)
    c.send_presence()
    msg = await asyncio.wait_for(c.messages.get(), 10)
    assert msg["body"] == "waiting for carol (ejabberd)"
    req = await asyncio.wait_for(subs.get(), 10)
    assert req["from"].bare == ALICE
    await disconnect(c)
    for jid in (BOB, DAVE):
        await disconnect(await connect(d, jid + "/new", PASSWORDS[jid]))


def test_import_ejabberd_export_piefxis_then_login_with_old_passwords(
        exported: tuple[Ejabberd, str]) -> None:
    _ej, main = exported
    d = Daemon(domains=(EJ_HOST, EJ_PLAIN_HOST))
    try:
        r = d.cli("import", main, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "imported 4 accounts" in r.stdout
        d.start()
        asyncio.run(_check(d))
    finally:
        if d.proc is not None:
            d.finish()
        else:
            d.cleanup()
