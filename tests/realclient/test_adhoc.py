"""Administration by ad-hoc commands (XEP-0050, XEP-0133) with slixmpp's xep_0050 over the wire."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest
from slixmpp.exceptions import IqError

from tests.daemon import Daemon
from tests.realclient.conftest import PASSWORD, connect, disconnect, subscribe_both

pytestmark = pytest.mark.realclient

ADMIN = "admin@localhost"
NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_ADMIN = "http://jabber.org/protocol/admin"
PLUGINS = ("xep_0030", "xep_0004", "xep_0050")


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(server_extra=f'admins = ["{ADMIN}"]')
    for u in (ADMIN, "alice@localhost", "bob@localhost", "carol@localhost", "dave@localhost"):
        d.add_user(u, PASSWORD)
    d.start()
    yield d
    d.finish()


async def admin_client(daemon: Daemon, jid: str = ADMIN) -> Any:
    return await connect(daemon, jid, plugins=PLUGINS)


def node(action: str) -> str:
    return f"{NS_ADMIN}#{action}"


async def execute(c: Any, action: str) -> Any:
    return await c.plugin["xep_0050"].send_command("localhost", node(action), timeout=10)


async def submit(c: Any, action: str, fields: dict[str, Any], *, form_type: str = NS_ADMIN,
                 sessionid: str | None = None) -> Any:
    """Execute the command, then submit its form with ``fields`` (values or lists of values)."""
    if sessionid is None:
        first = await execute(c, action)
        assert first["command"]["status"] == "executing"
        assert first["command"]["form"]["type"] == "form"
        sessionid = first["command"]["sessionid"]
    form = c.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
    for var, value in fields.items():
        form.add_field(var=var, ftype="jid-multi" if isinstance(value, list) else "text-single",
                       value=value)
    return await c.plugin["xep_0050"].send_command("localhost", node(action), action="complete",
                                                   sessionid=sessionid, payload=form, timeout=10)


def values(result: Any) -> dict[str, Any]:
    return result["command"]["form"].get_values()


def note(result: Any) -> str:
    return " ".join(text for _type, text in result["command"]["notes"])


def error_of(e: IqError) -> tuple[str, str | None]:
    """(condition, XEP-0050 application condition or None)."""
    err = e.iq.xml.find("{jabber:client}error")
    app = [c.tag.split("}")[1] for c in err if c.tag.startswith("{" + NS_COMMANDS + "}")]
    return e.iq["error"]["condition"], (app[0] if app else None)


def disconnected(c: Any) -> asyncio.Event:
    ev = asyncio.Event()
    c.add_event_handler("disconnected", lambda _e: ev.set())
    return ev


async def test_admin_discovers_commands_and_others_do_not(daemon):
    admin = await admin_client(daemon)
    alice = await admin_client(daemon, "alice@localhost")
    info = await admin.plugin["xep_0030"].get_info("localhost", timeout=10)
    assert NS_COMMANDS in info["disco_info"]["features"]
    items = await admin.plugin["xep_0050"].get_commands("localhost", timeout=10)
    nodes = {node_ for _jid, node_, _name in items["disco_items"]["items"]}
    for action in ("add-user", "delete-user", "disable-user", "reenable-user", "end-user-session",
                   "change-user-password", "user-stats", "get-online-users-list",
                   "get-online-users-num", "get-registered-users-num", "announce"):
        assert node(action) in nodes
    assert not any("get-user-password" in n for n in nodes)  # retracted: no password is stored
    cmd_info = await admin.plugin["xep_0030"].get_info("localhost", node=node("add-user"), timeout=10)
    assert ("automation", "command-node") in {i[:2] for i in cmd_info["disco_info"]["identities"]}
    # A non-admin sees only the public ping, and may not run or inspect an admin command.
    items = await alice.plugin["xep_0050"].get_commands("localhost", timeout=10)
    assert [n for _jid, n, _name in items["disco_items"]["items"]] == ["ping"]
    with pytest.raises(IqError) as e:
        await execute(alice, "get-registered-users-num")
    assert error_of(e.value) == ("forbidden", None)
    with pytest.raises(IqError) as e:
        await submit(alice, "add-user", {"accountjid": "mallory@localhost", "password": "x",
                                         "password-verify": "x"}, sessionid="guessed")
    assert error_of(e.value) == ("forbidden", None)
    with pytest.raises(IqError) as e:
        await alice.plugin["xep_0030"].get_info("localhost", node=node("add-user"), timeout=10)
    assert e.value.iq["error"]["condition"] == "forbidden"
    await disconnect(admin, alice)
    with pytest.raises(PermissionError):
        await connect(daemon, "mallory@localhost", "x")


async def test_add_user_then_log_in(daemon):
    admin = await admin_client(daemon)
    before = values(await execute(admin, "get-registered-users-num"))["registeredusersnum"]
    r = await submit(admin, "add-user", {"accountjid": "erin@localhost", "password": "new pass",
                                         "password-verify": "new pass"})
    assert r["command"]["status"] == "completed"
    assert "erin@localhost" in note(r)
    after = values(await execute(admin, "get-registered-users-num"))["registeredusersnum"]
    assert int(after) == int(before) + 1
    erin = await connect(daemon, "erin@localhost", "new pass")
    assert erin.boundjid.bare == "erin@localhost"
    with pytest.raises(IqError) as e:  # it exists now
        await submit(admin, "add-user", {"accountjid": "erin@localhost", "password": "other",
                                         "password-verify": "other"})
    assert error_of(e.value) == ("conflict", None)
    await disconnect(admin, erin)


async def test_change_password_ends_sessions_and_old_password_fails(daemon):
    admin = await admin_client(daemon)
    carol = await connect(daemon, "carol@localhost")
    gone = disconnected(carol)
    r = await submit(admin, "change-user-password", {"accountjid": "carol@localhost",
                                                     "password": "changed"})
    assert r["command"]["status"] == "completed"
    await asyncio.wait_for(gone.wait(), 10)
    with pytest.raises(PermissionError):
        await connect(daemon, "carol@localhost", PASSWORD)
    carol = await connect(daemon, "carol@localhost", "changed")
    await disconnect(admin, carol)


async def test_disable_and_reenable(daemon):
    admin = await admin_client(daemon)
    dave = await connect(daemon, "dave@localhost")
    gone = disconnected(dave)
    r = await submit(admin, "disable-user", {"accountjids": ["dave@localhost"]})
    assert "1 session(s) ended" in note(r)
    await asyncio.wait_for(gone.wait(), 10)
    with pytest.raises(PermissionError):
        await connect(daemon, "dave@localhost")
    r = await execute(admin, "get-disabled-users-num")
    assert values(r)["disabledusersnum"] == "1"
    r = await submit(admin, "get-disabled-users-list", {})
    assert values(r)["disableduserjids"] == ["dave@localhost"]
    await submit(admin, "reenable-user", {"accountjids": ["dave@localhost"]})
    dave = await connect(daemon, "dave@localhost")
    await disconnect(admin, dave)


async def test_end_user_session_disconnects_the_client(daemon):
    admin = await admin_client(daemon)
    bob1 = await connect(daemon, "bob@localhost/one")
    bob2 = await connect(daemon, "bob@localhost/two")
    gone1, gone2 = disconnected(bob1), disconnected(bob2)
    # A full JID ends that session only.
    r = await submit(admin, "end-user-session", {"accountjids": ["bob@localhost/one"]})
    assert "Ended 1 session(s)" in note(r)
    await asyncio.wait_for(gone1.wait(), 10)
    assert not gone2.is_set()
    # A bare JID ends them all.
    await submit(admin, "end-user-session", {"accountjids": ["bob@localhost"]})
    await asyncio.wait_for(gone2.wait(), 10)
    r = await submit(admin, "end-user-session", {"accountjids": ["bob@localhost"]})
    assert r["command"]["notes"][0][0] == "warn"  # nothing left to end
    await disconnect(admin)


async def test_online_users_and_announce(daemon):
    admin = await admin_client(daemon)
    alice = await connect(daemon, "alice@localhost")
    bob = await connect(daemon, "bob@localhost")
    r = await submit(admin, "get-online-users-list", {"max_items": "none"})
    online = values(r)["onlineuserjids"]
    assert {ADMIN, "alice@localhost", "bob@localhost"} <= set(online)
    r = await execute(admin, "get-online-users-num")
    assert int(values(r)["onlineusersnum"]) == len(online)
    r = await submit(admin, "get-online-users-list", {"max_items": "1"})
    assert len(values(r)["onlineuserjids"]) == 1
    r = await submit(admin, "get-registered-users-list", {})
    assert {"alice@localhost", "bob@localhost", ADMIN} <= set(values(r)["registereduserjids"])

    form_sid = (await execute(admin, "announce"))["command"]["sessionid"]
    form = admin.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=NS_ADMIN)
    form.add_field(var="announcement", ftype="text-multi", value="Maintenance at 22:00\nBack soon")
    r = await admin.plugin["xep_0050"].send_command("localhost", node("announce"), action="complete",
                                                    sessionid=form_sid, payload=form, timeout=10)
    assert r["command"]["status"] == "completed"
    for c in (alice, bob):
        while True:
            msg = await asyncio.wait_for(c.messages.get(), 10)
            if msg["body"]:
                break
        assert msg["from"].full == "localhost"
        assert msg["type"] == "headline"
        assert msg["body"] == "Maintenance at 22:00\nBack soon"
    await disconnect(admin, alice, bob)


async def test_user_statistics(daemon):
    admin = await admin_client(daemon)
    alice = await connect(daemon, "alice@localhost/desk")
    bob = await connect(daemon, "bob@localhost")
    await subscribe_both(alice, bob)
    r = await submit(admin, "user-stats", {"accountjid": "alice@localhost"})
    stats = values(r)
    assert stats["rostersize"] == "1"
    assert stats["ipaddresses"] == ["127.0.0.1"]
    assert stats["onlineresources"] == ["desk"]
    with pytest.raises(IqError) as e:
        await submit(admin, "user-stats", {"accountjid": "nobody@localhost"})
    assert error_of(e.value) == ("item-not-found", None)
    await disconnect(admin, alice, bob)


async def test_bad_submissions(daemon):
    admin = await admin_client(daemon)
    cmd = admin.plugin["xep_0050"]

    async def fails(coro: Any) -> tuple[str, str | None]:
        with pytest.raises(IqError) as e:
            await coro
        return error_of(e.value)

    # A required field missing, a foreign FORM_TYPE, a malformed JID, a foreign domain,
    # passwords that differ, max_items that is no number: bad-request with <bad-payload/>.
    bad = ("bad-request", "bad-payload")
    assert await fails(submit(admin, "user-stats", {})) == bad
    assert await fails(submit(admin, "user-stats", {"accountjid": "alice@localhost"},
                              form_type="urn:example:other")) == bad
    assert await fails(submit(admin, "delete-user", {"accountjids": ["@@bad"]})) == bad
    assert await fails(submit(admin, "delete-user", {"accountjids": ["x@elsewhere.example"]})) == bad
    assert await fails(submit(admin, "add-user", {"accountjid": "frank@localhost", "password": "a",
                                                  "password-verify": "b"})) == bad
    assert await fails(submit(admin, "get-online-users-list", {"max_items": "lots"})) == bad
    # The session survives a bad submission: the corrected form completes it.
    sid = (await execute(admin, "user-stats"))["command"]["sessionid"]
    assert await fails(submit(admin, "user-stats", {}, sessionid=sid)) == bad
    r = await submit(admin, "user-stats", {"accountjid": "alice@localhost"}, sessionid=sid)
    assert r["command"]["status"] == "completed"
    done = sid
    # Completing without a form.
    sid = (await execute(admin, "user-stats"))["command"]["sessionid"]
    assert await fails(cmd.send_command("localhost", node("user-stats"), action="complete",
                                        sessionid=sid, timeout=10)) == bad
    # Unknown and finished sessions, a wrong action, a stage that does not exist, no such node.
    assert await fails(submit(admin, "user-stats", {"accountjid": "alice@localhost"},
                              sessionid="no-such-session")) == ("bad-request", "bad-sessionid")
    assert await fails(submit(admin, "user-stats", {"accountjid": "alice@localhost"},
                              sessionid=done)) == ("bad-request", "bad-sessionid")
    assert await fails(cmd.send_command("localhost", node("user-stats"), action="next",
                                        sessionid=sid, timeout=10)) == ("bad-request", "bad-action")
    assert await fails(cmd.send_command("localhost", node("user-stats"), action="jump",
                                        sessionid=sid, timeout=10)) == ("bad-request", "malformed-action")
    assert await fails(cmd.send_command("localhost", node("get-user-password"),
                                        timeout=10)) == ("item-not-found", None)
    # Cancel ends the session.
    r = await cmd.send_command("localhost", node("user-stats"), action="cancel", sessionid=sid,
                               timeout=10)
    assert r["command"]["status"] == "canceled"
    assert await fails(submit(admin, "user-stats", {"accountjid": "alice@localhost"},
                              sessionid=sid)) == ("bad-request", "bad-sessionid")
    # Another admin resource cannot continue this one's session.
    sid = (await execute(admin, "user-stats"))["command"]["sessionid"]
    other = await admin_client(daemon, ADMIN + "/other")
    assert await fails(submit(other, "user-stats", {"accountjid": "alice@localhost"},
                              sessionid=sid)) == ("bad-request", "bad-sessionid")
    await disconnect(admin, other)


async def test_delete_user(daemon):
    admin = await admin_client(daemon)
    await submit(admin, "add-user", {"accountjid": "gina@localhost", "password": "pw gina",
                                     "password-verify": "pw gina"})
    gina = await connect(daemon, "gina@localhost", "pw gina")
    gone = disconnected(gina)
    with pytest.raises(IqError) as e:  # nothing is deleted when one of the JIDs is unknown
        await submit(admin, "delete-user", {"accountjids": ["gina@localhost", "nobody@localhost"]})
    assert error_of(e.value) == ("item-not-found", None)
    assert not gone.is_set()
    r = await submit(admin, "delete-user", {"accountjids": ["gina@localhost"]})
    assert "gina@localhost" in note(r)
    await asyncio.wait_for(gone.wait(), 10)
    with pytest.raises(PermissionError):
        await connect(daemon, "gina@localhost", "pw gina")
    r = await submit(admin, "get-registered-users-list", {})
    assert "gina@localhost" not in values(r)["registereduserjids"]
    await disconnect(admin)
