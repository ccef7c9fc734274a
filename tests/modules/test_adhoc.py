"""Ad-hoc command sessions (XEP-0050) in process: expiry, the session cap, a server without roster."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import mbxmpp.modules.adhoc as adhoc
from mbxmpp.xml.element import Element
from mbxmpp.xml.ns import NS_ADMIN, NS_COMMANDS, NS_DATA, NS_DISCO_ITEMS, NS_STANZAS
from tests.harness import FakeClient, ServerHarness

ADMIN = "admin@localhost"
STATS = f"{NS_ADMIN}#user-stats"


async def harness(modules: list[str]) -> ServerHarness:
    h = ServerHarness(modules=modules)
    await h.__aenter__()
    h.server.config = dataclasses.replace(h.server.config, server=dataclasses.replace(
        h.server.config.server, admins=(ADMIN,)))
    return h


async def command(h: ServerHarness, c: FakeClient, node: str, action: str | None = None,
                  sessionid: str | None = None, form: str = "") -> Element:
    attrs = f"node='{node}'"
    if action:
        attrs += f" action='{action}'"
    if sessionid:
        attrs += f" sessionid='{sessionid}'"
    h.send(c, f"<iq type='set' id='c1' to='localhost'><command xmlns='{NS_COMMANDS}' {attrs}>"
              f"{form}</command></iq>")
    return await c.expect(lambda s: s.tag == "iq" and s.get("id") == "c1")


def stats_form(jid: str) -> str:
    return (f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE'><value>{NS_ADMIN}</value>"
            f"</field><field var='accountjid'><value>{jid}</value></field></x>")


def error(reply: Element) -> tuple[str, list[str]]:
    err = reply.find("error")
    assert reply.get("type") == "error" and err is not None
    conds = [e.tag for e in err.elements() if e.ns == NS_STANZAS and e.tag != "text"]
    return conds[0], [e.tag for e in err.elements() if e.ns == NS_COMMANDS]


@pytest.fixture
async def h() -> Any:
    hh = await harness(["disco", "adhoc"])
    yield hh
    await hh.__aexit__(None, None, None)


async def test_expired_session(h, monkeypatch):
    admin = await h.login(ADMIN, "r")
    sid = (await command(h, admin, STATS)).find("command", NS_COMMANDS).get("sessionid")  # type: ignore[union-attr]
    monkeypatch.setattr(adhoc, "SESSION_TTL", -1.0)
    sid2 = (await command(h, admin, STATS)).find("command", NS_COMMANDS).get("sessionid")  # type: ignore[union-attr]
    reply = await command(h, admin, STATS, "complete", sid2, stats_form(ADMIN))
    assert error(reply) == ("bad-request", ["session-expired"])
    # The session opened before still completes; without the roster module there is no roster size.
    reply = await command(h, admin, STATS, "complete", sid, stats_form(ADMIN))
    x = reply.find("command", NS_COMMANDS).find("x", NS_DATA)  # type: ignore[union-attr]
    assert {f.get("var") for f in x.findall("field", NS_DATA)} == {  # type: ignore[union-attr]
        "FORM_TYPE", "ipaddresses", "onlineresources"}


async def test_oldest_sessions_dropped_beyond_the_cap(h, monkeypatch):
    monkeypatch.setattr(adhoc, "MAX_SESSIONS", 2)
    admin = await h.login(ADMIN, "r")
    sids = [(await command(h, admin, STATS)).find("command", NS_COMMANDS).get("sessionid")  # type: ignore[union-attr]
            for _ in range(3)]
    assert error(await command(h, admin, STATS, "complete", sids[0], stats_form(ADMIN))) == (
        "bad-request", ["bad-sessionid"])
    for sid in sids[1:]:
        reply = await command(h, admin, STATS, "complete", sid, stats_form(ADMIN))
        assert reply.find("command", NS_COMMANDS).get("status") == "completed"  # type: ignore[union-attr]


async def test_errors_without_session(h):
    admin = await h.login(ADMIN, "r")
    # A session starts with execute: cancel or complete without one is refused.
    assert error(await command(h, admin, STATS, "cancel")) == ("bad-request", ["bad-sessionid"])
    assert error(await command(h, admin, STATS, "complete", None, stats_form(ADMIN))) == (
        "bad-request", ["bad-sessionid"])
    # Unknown node: item-not-found, for admins and others alike.
    user = await h.login("user@localhost", "r")
    for c in (admin, user):
        assert error(await command(h, c, f"{NS_ADMIN}#shutdown"))[0] == "item-not-found"
    assert error(await command(h, user, STATS)) == ("forbidden", [])


async def test_ping_is_public(h):
    """Every user may list and run the 'ping' command (as on Prosody and ejabberd); it
    completes at once with a note."""
    user = await h.login("user@localhost", "r")
    h.send(user, "<iq type='get' id='l1' to='localhost'><query "
                 f"xmlns='{NS_DISCO_ITEMS}' node='{NS_COMMANDS}'/></iq>")
    items = await user.expect(lambda s: s.get("id") == "l1")
    assert [i.get("node") for i in items.find("query", NS_DISCO_ITEMS).elements()] == ["ping"]  # type: ignore[union-attr]
    reply = await command(h, user, "ping")
    cmd = reply.find("command", NS_COMMANDS)
    assert reply.get("type") == "result" and cmd is not None
    assert cmd.get("status") == "completed" and cmd.findtext("note", NS_COMMANDS) == "Pong"
    admin = await h.login(ADMIN, "r")
    h.send(admin, "<iq type='get' id='l2' to='localhost'><query "
                  f"xmlns='{NS_DISCO_ITEMS}' node='{NS_COMMANDS}'/></iq>")
    items = await admin.expect(lambda s: s.get("id") == "l2")
    nodes = [i.get("node") for i in items.find("query", NS_DISCO_ITEMS).elements()]  # type: ignore[union-attr]
    assert "ping" in nodes and STATS in nodes
