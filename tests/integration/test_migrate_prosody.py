"""Migration from a real Prosody (Debian package): users registered with prosodyctl (one host
storing SCRAM-SHA-1 keys, one the plain password), their data made over XMPP by slixmpp clients
(roster with subscriptions, groups and a pending request, vCard, PEP nick and avatar, private XML,
an archived chat, an offline message); then Prosody's data directory imported with
``import-prosody`` and Prosody's own XEP-0227 export (prosody-migrator) with ``import``; then the
users log in to mbxmpp with their OLD passwords and find the same roster, vCard, PEP data,
history and offline message."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slixmpp import JID

from mbxmpp.migrate.account import Stores
from mbxmpp.storage import open_storage
from mbxmpp.xml.fragment import parse_fragment
from tests.daemon import Daemon
from tests.integration.migrate_peers import (
    HOST,
    PLAIN_HOST,
    Prosody,
    available,
    check_common_data,
    check_offline_and_request,
    make_common_data,
)
from tests.realclient.conftest import connect, disconnect

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not available(), reason="prosody is not installed")]

ALICE, BOB, CAROL, DAVE = f"alice@{HOST}", f"bob@{HOST}", f"carol@{HOST}", f"dave@{PLAIN_HOST}"
PASSWORDS = {ALICE: "alice-old-pw", BOB: "bob-old-pw", CAROL: "carol-old-pw", DAVE: "dave plain"}
PLUGINS = ("xep_0030", "xep_0004", "xep_0049", "xep_0054", "xep_0059", "xep_0060", "xep_0163",
           "xep_0172", "xep_0084", "xep_0297", "xep_0313")
AVATAR = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
AVATAR_ID = hashlib.sha1(AVATAR).hexdigest()


async def _make_data(p: Prosody) -> None:
    a = await connect(p, ALICE + "/laptop", PASSWORDS[ALICE], plugins=PLUGINS)
    b = await connect(p, BOB + "/phone", PASSWORDS[BOB], plugins=PLUGINS)
    await make_common_data(a, b, CAROL, "Alice Liddell")
    await a.plugin["xep_0172"].publish_nick("Ally")
    await a.plugin["xep_0084"].publish_avatar(AVATAR)
    await a.plugin["xep_0084"].publish_avatar_metadata(
        [{"id": AVATAR_ID, "type": "image/png", "bytes": len(AVATAR)}])
    got = asyncio.get_running_loop().create_future()
    b.add_event_handler("message", lambda m: got.done() or got.set_result(m))
    a.send_message(mto=BOB, mbody="history from prosody", mtype="chat")
    await asyncio.wait_for(got, 10)
    a.send_message(mto=CAROL, mbody="waiting for carol", mtype="chat")
    d = await connect(p, DAVE + "/x", PASSWORDS[DAVE], plugins=PLUGINS)
    await disconnect(d)
    await asyncio.sleep(0.5)  # Prosody writes its files as it goes; let the last ones land
    await disconnect(a, b)


@pytest.fixture(scope="module")
def prosody() -> Iterator[Prosody]:
    p = Prosody()
    try:
        for jid, pw in PASSWORDS.items():
            local, host = jid.split("@")
            p.register(local, host, pw)
        p.start()
        asyncio.run(_make_data(p))
        p.stop()
        yield p
    finally:
        p.cleanup()


def _daemon() -> Daemon:
    return Daemon(domains=(HOST, PLAIN_HOST))


def _done(d: Daemon) -> None:
    """finish() (which also fails on a traceback in the log) once started, else clean up."""
    if d.proc is not None:
        d.finish()
    else:
        d.cleanup()


def _canon(v: Any) -> Any:
    """Stored XML with its attributes sorted (Prosody keeps attributes in Lua tables: their
    order is not kept), recursively through the comparable form of an account."""
    if isinstance(v, bytes) and v.startswith(b"<"):
        return _canon_el(parse_fragment(v))
    if isinstance(v, dict):
        return {k: _canon(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_canon(x) for x in v]
    if hasattr(v, "__dict__"):
        return _canon(dict(v.__dict__))
    return v


def _canon_el(el: Any) -> Any:
    return (el.tag, el.ns, sorted(el.attrs.items()),
            [c if isinstance(c, str) else _canon_el(c) for c in el.children])


def _accounts(d: Daemon) -> dict[str, Any]:
    storage = open_storage("lmdb", f"{d.dir}/data")
    try:
        stores = Stores(storage)
        return {o: stores.read(o) for o in sorted(stores.owners(None))}
    finally:
        storage.close_sync()


async def _check_in_mbxmpp(d: Daemon) -> None:
    a = await connect(d, ALICE + "/new", PASSWORDS[ALICE], plugins=PLUGINS)
    await check_common_data(a, BOB, CAROL, "Alice Liddell")
    history = [m async for m in a.plugin["xep_0313"].iterate(jid=JID(ALICE))]
    bodies = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in history]
    assert "history from prosody" in bodies
    b = await connect(d, BOB + "/new", PASSWORDS[BOB], plugins=PLUGINS)
    nick = await b.plugin["xep_0060"].get_item(JID(ALICE), "http://jabber.org/protocol/nick",
                                               "current")
    payload = nick["pubsub"]["items"]["item"]["payload"]
    assert (payload.tag, payload.text) == ("{http://jabber.org/protocol/nick}nick", "Ally")
    data = await b.plugin["xep_0060"].get_item(JID(ALICE), "urn:xmpp:avatar:data", AVATAR_ID)
    payload = data["pubsub"]["items"]["item"]["payload"]
    assert base64.b64decode(payload.text) == AVATAR
    bhist = [m async for m in b.plugin["xep_0313"].iterate(jid=JID(BOB))]
    assert "history from prosody" in [m["mam_result"]["forwarded"]["stanza"]["body"] for m in bhist]
    await disconnect(a, b)
    await check_offline_and_request(d, CAROL, PASSWORDS[CAROL], "waiting for carol", ALICE)
    dave = await connect(d, DAVE + "/new", PASSWORDS[DAVE])
    await disconnect(dave)
    with pytest.raises(PermissionError):
        await connect(d, ALICE + "/x", "not the password")


def test_import_prosody_data_dir_then_login_with_old_passwords(prosody: Prosody) -> None:
    d = _daemon()
    try:
        r = d.cli("import-prosody", str(prosody.data), check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "imported 4 accounts" in r.stdout
        d.start()
        asyncio.run(_check_in_mbxmpp(d))
    finally:
        _done(d)


def test_import_prosody_xep0227_export_matches_data_dir_import(prosody: Prosody) -> None:
    """Prosody's own XEP-0227 writer (prosody-migrator to mod_storage_xep0227) read by
    ``import``: the same accounts as the direct import (Prosody's XEP-0227 store has no offline
    messages, so those two are left out of the comparison), and the old passwords work."""
    out = Path(prosody.dir) / "xep0227"
    prosody.export_xep0227(out)
    assert sorted(f.name for f in out.iterdir()) == sorted(f"{j}.xml" for j in PASSWORDS)
    direct, via_xml = _daemon(), _daemon()
    try:
        r = direct.cli("import-prosody", str(prosody.data), check=False)
        assert r.returncode == 0, r.stderr
        r = via_xml.cli("import", str(out), check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "imported 4 accounts" in r.stdout
        a, b = _accounts(direct), _accounts(via_xml)
        assert sorted(a) == sorted(b) == sorted(PASSWORDS)
        for owner in a:
            x, y = _canon(a[owner].comparable()), _canon(b[owner].comparable())
            for rec in (*x["roster"].values(), *y["roster"].values()):
                rec[3] = sorted(rec[3])  # groups: a set in Prosody (Lua table order)
            for k in ("offline", "created", "pending"):
                x.pop(k), y.pop(k)
            if owner == DAVE:  # a plain password: keys derived here, each with a fresh salt
                assert sorted(x.pop("scram")) == sorted(y.pop("scram")) == [
                    "SCRAM-SHA-1", "SCRAM-SHA-256"]
            for k in x:
                assert x[k] == y[k], (owner, k, x[k], y[k])
        assert len(b[ALICE].archive) >= 2 and b[ALICE].vcard is not None
        assert b[ALICE].pep["http://jabber.org/protocol/nick"].items
        via_xml.start()

        async def login() -> None:
            for jid in (ALICE, DAVE):
                c = await connect(via_xml, jid + "/r", PASSWORDS[jid])
                await disconnect(c)
        asyncio.run(login())
    finally:
        direct.cleanup()
        _done(via_xml)
