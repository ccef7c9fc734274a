"""XEP-0227 through the CLI: a file with every kind of data imported, exported, imported into a
fresh server and exported again gives identical data; a user logs in with the file's password;
ejabberd's XInclude layout with its ``scram:`` passwords; malformed files are refused with the
line and nothing of the bad account written."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
from slixmpp import JID

from mbxmpp.migrate.account import Stores
from mbxmpp.storage import open_storage
from mbxmpp.stream.scram import derive
from tests.daemon import Daemon
from tests.rawclient import RawClient
from tests.realclient.conftest import connect, disconnect

D = "example.test"
MAM_PLUGINS = ("xep_0030", "xep_0059", "xep_0297", "xep_0313")
PHOTO = base64.b64encode(b"\x89PNG" + bytes(range(200))).decode()

FULL = f"""<?xml version='1.0' encoding='UTF-8'?>
<server-data xmlns='urn:xmpp:pie:0'>
  <host jid='{D}'>
    <user name='juliet' password='balcony pw'>
      <query xmlns='jabber:iq:roster'>
        <item jid='romeo@montague.net' name='Romeo' subscription='both'><group>Friends</group></item>
        <item jid='nurse@{D}' subscription='none' ask='subscribe'/>
        <item jid='tybalt@{D}' subscription='from' approved='true'/>
      </query>
      <presence xmlns='jabber:client' type='subscribe' from='mercutio@montague.net'>
        <nick xmlns='http://jabber.org/protocol/nick'>Mercutio</nick></presence>
      <vCard xmlns='vcard-temp'><FN>Juliet Capulet</FN><PHOTO><TYPE>image/png</TYPE>
        <BINVAL>{PHOTO}</BINVAL></PHOTO></vCard>
      <query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'><defaultnick>Jule</defaultnick></exodus></query>
      <pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>
        <configure node='http://jabber.org/protocol/nick'>
          <x xmlns='jabber:x:data' type='submit'>
            <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>
            <field var='pubsub#access_model'><value>open</value></field>
            <field var='pubsub#frobnicate'><value>1</value></field>
          </x>
        </configure>
        <configure node='eu.siacs.conversations.axolotl.devicelist'>
          <x xmlns='jabber:x:data' type='submit'><field var='pubsub#max_items'><value>max</value></field></x>
        </configure>
        <affiliations node='eu.siacs.conversations.axolotl.devicelist'>
          <affiliation jid='romeo@montague.net' affiliation='member'/></affiliations>
      </pubsub>
      <pubsub xmlns='http://jabber.org/protocol/pubsub'>
        <items node='http://jabber.org/protocol/nick'>
          <item id='current'><nick xmlns='http://jabber.org/protocol/nick'>Jules</nick></item></items>
        <items node='eu.siacs.conversations.axolotl.devicelist'>
          <item id='current'><list xmlns='eu.siacs.conversations.axolotl'><device id='42'/></list></item></items>
      </pubsub>
      <offline-messages>
        <message xmlns='jabber:client' from='romeo@montague.net/orchard' to='juliet@{D}/balcony' type='chat'>
          <body>Neither, fair saint, if either thee dislike.</body>
          <delay xmlns='urn:xmpp:delay' from='{D}' stamp='2020-07-21T00:32:29Z'>Offline Storage</delay>
        </message>
      </offline-messages>
      <archive xmlns='urn:xmpp:pie:0#mam'>
        <result xmlns='urn:xmpp:mam:2' id='28482-98726-73623'>
          <forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2010-07-10T23:08:25Z'/>
            <message xmlns='jabber:client' to='juliet@{D}/balcony' from='romeo@montague.net/orchard' type='chat'>
              <body>Call me but love, and I'll be new baptized.</body></message></forwarded></result>
        <result xmlns='urn:xmpp:mam:2' id='5d398-28273-f7382'>
          <forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2010-07-10T23:09:32.250Z'/>
            <message xmlns='jabber:client' from='juliet@{D}/balcony' to='romeo@montague.net/orchard'
                     type='chat' id='8a54s'>
              <body>What man art thou?</body></message></forwarded></result>
      </archive>
      <query xmlns='jabber:iq:privacy'><list name='public'/></query>
    </user>
    <user name='nurse'>
      <scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>
        <iter-count>4096</iter-count><salt>{{salt}}</salt>
        <server-key>{{server}}</server-key><stored-key>{{stored}}</stored-key>
      </scram-credentials>
    </user>
  </host>
</server-data>
"""


def scram_fields(password: str) -> dict[str, str]:
    c = derive("SCRAM-SHA-1", password, b"0123456789abcdef", 4096)
    return {k: base64.b64encode(v).decode() for k, v in
            (("salt", c.salt), ("server", c.server_key), ("stored", c.stored_key))}


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon(domains=(D,))
    yield d
    end(d)


def end(d: Daemon) -> None:
    """Stop the daemon if it runs, and remove its directory."""
    if d.proc is not None:
        d.finish()
    else:
        d.cleanup()


def write(d: Daemon, name: str, text: str) -> str:
    path = os.path.join(d.dir, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def accounts(d: Daemon) -> dict[str, Any]:
    storage = open_storage("lmdb", f"{d.dir}/data")
    try:
        stores = Stores(storage)
        return {o: stores.read(o).comparable() for o in sorted(stores.owners(None))}
    finally:
        storage.close_sync()


def test_round_trip_is_identical_and_the_old_passwords_work(daemon: Daemon) -> None:
    src = write(daemon, "in.xml", FULL.replace("{{salt}}", "{salt}").replace(
        "{{server}}", "{server}").replace("{{stored}}", "{stored}").format(**scram_fields("nurse pw")))
    r = daemon.cli("import", src, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "imported 2 accounts, 3 archived and offline messages" in r.stdout
    # Told, not imported: the privacy list and the unknown node configuration field.
    assert "privacy lists" in r.stderr and "pubsub#frobnicate" in r.stderr
    first = accounts(daemon)
    j = first[f"juliet@{D}"]
    assert j["roster"]["romeo@montague.net"] == ["Romeo", "both", None, ["Friends"], False]
    assert j["roster"][f"nurse@{D}"][2] == "subscribe"
    assert j["roster"][f"tybalt@{D}"][4] is True
    assert list(j["pending"]) == ["mercutio@montague.net"]
    assert j["vcard"][1] == hashlib.sha1(base64.b64decode(PHOTO)).hexdigest()
    assert j["pep"]["http://jabber.org/protocol/nick"]["config"]["access_model"] == "open"
    assert j["pep"]["eu.siacs.conversations.axolotl.devicelist"]["aff"] == {
        "romeo@montague.net": "member"}
    assert [m.with_ for m in j["archive"]] == ["romeo@montague.net/orchard"] * 2
    assert j["archive"][1].when == 1278803372.25

    out1 = os.path.join(daemon.dir, "out1.xml")
    r = daemon.cli("export", out1)
    assert "exported 2 accounts" in r.stdout
    assert os.stat(out1).st_mode & 0o777 == 0o600  # credentials inside
    # The archive is from 2010: kept longer than the default retention.
    again = Daemon(domains=(D,), extra='[mam]\nretention = "36500d"\n')
    try:
        r = again.cli("import", out1, check=False)
        assert r.returncode == 0, r.stderr
        assert accounts(again) == first
        out2 = again.cli("export", "-").stdout
        with open(out1, encoding="utf-8") as f:
            assert f.read() == out2
        # Importing the same file again changes nothing (archive ids are stable).
        again.cli("import", out1)
        assert accounts(again) == first
        again.start()

        async def login() -> None:
            c = await connect(again, f"juliet@{D}/r", "balcony pw", plugins=MAM_PLUGINS)
            assert c.client_roster["romeo@montague.net"]["subscription"] == "both"
            hist = [m async for m in c.plugin["xep_0313"].iterate(jid=JID(f"juliet@{D}"))]
            assert [m["mam_result"]["forwarded"]["stanza"]["body"] for m in hist] == [
                "Call me but love, and I'll be new baptized.", "What man art thou?"]
            n = await connect(again, f"nurse@{D}/r", "nurse pw")
            await disconnect(c, n)
        asyncio.run(login())
    finally:
        end(again)


def test_archives_made_over_the_wire_survive_export_and_import(daemon: Daemon) -> None:
    """Messages archived by the running server, exported, imported into a fresh data directory:
    a MAM query there returns the same messages under the same archive ids (stanza-ids)."""
    daemon.add_user(f"romeo@{D}", "r pw")
    daemon.add_user(f"juliet@{D}", "j pw")
    daemon.start()
    bodies = ["But soft, what light", "through yonder window breaks?", "It is the east <&>"]

    async def chat() -> dict[str, str]:
        romeo = await RawClient.connect(daemon.c2s)
        await romeo.login("romeo", "r pw", to=D, resource="garden")
        juliet = await RawClient.connect(daemon.c2s)
        await juliet.login("juliet", "j pw", to=D, resource="balcony")
        ids = {}
        for b in bodies:
            text = b.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            await romeo.send(f"<message to='juliet@{D}/balcony' type='chat'><body>{text}</body></message>")
            m = await juliet.element()
            sid = m.find("stanza-id", "urn:xmpp:sid:0")
            assert m.findtext("body") == b and sid is not None and sid.get("by") == f"juliet@{D}", m
            ids[sid.get("id")] = b
        await romeo.close()
        await juliet.close()
        return ids
    ids = asyncio.run(chat())
    daemon.stop()  # a clean stop: every archive write is committed
    out = os.path.join(daemon.dir, "wire.xml")
    r = daemon.cli("export", out)
    assert "exported 2 accounts" in r.stdout
    fresh = Daemon(domains=(D,))
    try:
        r = fresh.cli("import", out, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"imported 2 accounts, {2 * len(bodies)} archived and offline messages" in r.stdout
        fresh.start()

        async def history() -> None:
            c = await connect(fresh, f"juliet@{D}/r", "j pw", plugins=MAM_PLUGINS)
            hist = [m async for m in c.plugin["xep_0313"].iterate(jid=JID(f"juliet@{D}"))]
            got = {m["mam_result"]["id"]: m["mam_result"]["forwarded"]["stanza"]["body"] for m in hist}
            assert got == ids
            romeo = await connect(fresh, f"romeo@{D}/r", "r pw", plugins=MAM_PLUGINS)
            sent = [m async for m in romeo.plugin["xep_0313"].iterate(jid=JID(f"romeo@{D}"))]
            assert [m["mam_result"]["forwarded"]["stanza"]["body"] for m in sent] == bodies
            await disconnect(c, romeo)
        asyncio.run(history())
    finally:
        end(fresh)


def test_ejabberd_xinclude_layout_with_scram_password(daemon: Daemon) -> None:
    """ejabberdctl export_piefxis DIR: a main file including one file per host, the old
    namespace, and a SCRAM-stored password written as ``scram:StoredKey,ServerKey,Salt,Iter``."""
    f = scram_fields("ej pw")
    write(daemon, "main.xml", "<?xml version='1.0' encoding='UTF-8'?><server-data "
          "xmlns='http://www.xmpp.org/extensions/xep-0227.html#ns' "
          f"xmlns:xi='http://www.w3.org/2001/XInclude'><xi:include href='{D}.xml'/></server-data>")
    write(daemon, f"{D}.xml", "<?xml version='1.0' encoding='UTF-8'?><host "
          "xmlns='http://www.xmpp.org/extensions/xep-0227.html#ns' "
          f"xmlns:xi='http://www.w3.org/2001/XInclude' jid='{D}'>"
          f"<user name='ejuser' password='scram:{f['stored']},{f['server']},{f['salt']},4096'>"
          "<query xmlns='jabber:iq:roster'><item jid='x@y.example' subscription='to'/></query>"
          "<offline-messages><message xmlns='jabber:client' from='x@y.example/r' type='chat'>"
          "<body>hi</body></message></offline-messages></user></host>")
    r = daemon.cli("import", os.path.join(daemon.dir, "main.xml"), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    a = accounts(daemon)[f"ejuser@{D}"]
    assert a["scram"]["SCRAM-SHA-1"][3] == base64.b64decode(f["stored"])
    assert a["roster"]["x@y.example"][1] == "to" and len(a["offline"]) == 1
    daemon.start()

    async def login() -> None:
        c = await connect(daemon, f"ejuser@{D}/r", "ej pw")
        await disconnect(c)
    asyncio.run(login())


GOOD_USER = "<user name='good' password='pw'/>"


def _doc(users: str, extra: str = "") -> str:
    return (f"<?xml version='1.0'?>{extra}<server-data xmlns='urn:xmpp:pie:0'><host jid='{D}'>"
            f"{users}</host></server-data>")


@pytest.mark.parametrize("bad,reason", [
    ("<user name='bad'><frobnicate/></user>", "unknown element <frobnicate"),
    (("<user name='bad'><query xmlns='jabber:iq:roster'><item jid='a@@b' subscription='both'/>"
      "</query></user>"), "roster item 'a@@b' is not a valid JID"),
    ("<user name='b&lt;ad'/>", "is not a valid JID"),
    (("<user name='bad'><query xmlns='jabber:iq:roster'><item jid='a@b' subscription='remove'/>"
      "</query></user>"), "subscription 'remove'"),
    ("<user name='bad'><vCard xmlns='vcard-temp'><FN>HUGE</FN></vCard></user>",
     "a text node over"),
    (("<user name='bad'><archive xmlns='urn:xmpp:pie:0#mam'><result xmlns='urn:xmpp:mam:2' id='1'>"
      "<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'/></forwarded></result>"
      "</archive></user>"), "no <forwarded> with a <delay>"),
    (("<user name='bad'><archive xmlns='urn:xmpp:pie:0#mam'><result xmlns='urn:xmpp:mam:2' id='1'>"
      "<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='yesterday'/>"
      "<message xmlns='jabber:client'/></forwarded></result></archive></user>"),
     "'yesterday' is not a XEP-0082 date-time"),
    (("<user name='bad'><archive xmlns='urn:xmpp:pie:0#mam'><result xmlns='urn:xmpp:mam:2' id='1'>"
      "<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2020-01-01T00:00:00Z'/>"
      "<message xmlns='jabber:client' from='a@@b'/></forwarded></result></archive></user>"),
     "archive result '1': a bad address"),
    (("<user name='bad'><archive xmlns='urn:xmpp:pie:0#mam'><message xmlns='jabber:client'/>"
      "</archive></user>"), "unknown element <message xmlns='jabber:client'> in the archive"),
], ids=["unknown-element", "bad-roster-jid", "bad-user-jid", "bad-subscription", "huge-text",
        "archive-without-delay", "archive-bad-stamp", "archive-bad-address", "archive-not-a-result"])
def test_a_bad_account_is_refused_whole_and_the_others_imported(daemon: Daemon, bad: str,
                                                                 reason: str) -> None:
    # The bad account comes with a roster item before its fault: none of it may be written.
    bad = bad.replace("<user name='bad'>", "<user name='bad' password='pw'><query "
                      "xmlns='jabber:iq:roster'><item jid='early@x.example'/></query>", 1)
    bad = bad.replace("HUGE", "x" * (4 * 1024 * 1024 + 10))
    path = write(daemon, "bad.xml", _doc(GOOD_USER + "\n" + bad + GOOD_USER.replace("good", "after")))
    r = daemon.cli("import", path, check=False)
    assert r.returncode == 1
    assert reason in r.stderr and "bad.xml:2: account " in r.stderr
    assert "imported 2 accounts" in r.stdout and "1 accounts rejected" in r.stdout
    assert sorted(accounts(daemon)) == [f"after@{D}", f"good@{D}"]


@pytest.mark.parametrize("text,reason", [
    (_doc(GOOD_USER + "<user name='x'><unclosed></user>"), "not well-formed XML (mismatched tag)"),
    (_doc(GOOD_USER, "<!DOCTYPE lol [<!ENTITY lol 'lol'>]>"), "a DTD (<!DOCTYPE>) is not allowed"),
    (_doc("<user name='x'>&lol;</user>"), "undefined entity"),
    ("<root/>", "where <server-data xmlns='urn:xmpp:pie:0'> was expected"),
    (_doc("<xi:include xmlns:xi='http://www.w3.org/2001/XInclude' href='../../etc/passwd'/>"),
     "leaves the folder"),
], ids=["mismatched-tag", "dtd", "undefined-entity", "wrong-root", "include-outside"])
def test_a_malformed_file_stops_with_the_line_and_a_nonzero_exit(daemon: Daemon, text: str,
                                                                 reason: str) -> None:
    path = write(daemon, "broken.xml", text)
    r = daemon.cli("import", path, check=False)
    assert r.returncode == 1
    assert reason in r.stderr and "broken.xml:1" in r.stderr
    # Nothing after the fault; no half account (a DTD is refused before any account is read).
    got = sorted(accounts(daemon))
    assert all(a == f"good@{D}" for a in got)
    assert f"imported {len(got)} accounts" in r.stdout


def test_dry_run_and_unknown_domain(daemon: Daemon) -> None:
    path = write(daemon, "other.xml", _doc(GOOD_USER).replace(D, "other.example"))
    r = daemon.cli("import", path, check=False)
    assert r.returncode == 1 and "not one of this server's domains" in r.stderr
    path = write(daemon, "ok.xml", _doc(GOOD_USER))
    r = daemon.cli("import", "--dry-run", path)
    assert "checked 1 accounts" in r.stdout and accounts(daemon) == {}
    with open(path, encoding="utf-8") as f:
        r = daemon.cli("import", "-", input=f.read())
    assert "imported 1 accounts" in r.stdout and list(accounts(daemon)) == [f"good@{D}"]
