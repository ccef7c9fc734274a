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

from tests.daemon import Daemon
from tests.integration.migrate_peers import (
    EJ_HOST,
    EJ_PLAIN_HOST,
    Ejabberd,
    check_common_data,
    check_offline_and_request,
    ejabberd_available,
    make_common_data,
)
from tests.realclient.conftest import connect, disconnect

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not ejabberd_available(), reason="ejabberd is not installed")]

ALICE, BOB, CAROL = f"alice@{EJ_HOST}", f"bob@{EJ_HOST}", f"carol@{EJ_HOST}"
DAVE = f"dave@{EJ_PLAIN_HOST}"
PASSWORDS = {ALICE: "alice-ej-pw", BOB: "bob-ej-pw", CAROL: "carol-ej-pw", DAVE: "dave plain ej"}
PLUGINS = ("xep_0030", "xep_0054")


async def _make_data(ej: Ejabberd) -> None:
    a = await connect(ej, ALICE + "/laptop", PASSWORDS[ALICE], plugins=PLUGINS)
    b = await connect(ej, BOB + "/phone", PASSWORDS[BOB], plugins=PLUGINS)
    await make_common_data(a, b, CAROL, "Alice Ejabberd")
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
    await check_common_data(a, BOB, CAROL, "Alice Ejabberd")
    await disconnect(a)
    await check_offline_and_request(d, CAROL, PASSWORDS[CAROL], "waiting for carol (ejabberd)",
                                    ALICE)
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
