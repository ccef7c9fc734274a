"""Helpers for the MUC tests (no tests here): joining, configuring, reading status codes."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from mbxmpp.xml.element import Element
from mbxmpp.xml.ns import NS_DATA, NS_MUC_OWNER, NS_MUC_USER
from tests.harness import FakeClient, ServerHarness
from tests.modules.test_mam_support import error_condition as _condition

MODULES = ["disco", "roster", "presence", "offline", "mam", "muc"]
SERVICE = "conference.localhost"
ROOM = f"room@{SERVICE}"
A, B, C, D = "alice@localhost", "bob@localhost", "carol@localhost", "dave@localhost"


@pytest.fixture
async def h() -> AsyncIterator[ServerHarness]:
    """The in-process server with MUC (import it into a test module to use it)."""
    async with ServerHarness(modules=MODULES) as harness:
        yield harness


async def room_with(h: ServerHarness, *nicks: str) -> list[FakeClient]:
    """alice@ creates an instant room as "alice"; the next users (bob, carol, dave) join under
    the given nicks; everything received so far is cleared."""
    clients = [await h.login(j, "r1") for j in (A, B, C, D)[:1 + len(nicks)]]
    await create(h, clients[0], "alice")
    for c, nick in zip(clients[1:], nicks):
        await join(h, c, nick)
    for c in clients:
        await c.settle()
    return clients


def muc_x(history: str = "", password: str | None = None) -> str:
    pw = f"<password>{password}</password>" if password is not None else ""
    return f"<x xmlns='http://jabber.org/protocol/muc'>{history}{pw}</x>"


async def join(h: ServerHarness, c: FakeClient, nick: str, room: str = ROOM, *, history: str = "",
               password: str | None = None) -> list[Element]:
    h.send(c, f"<presence to='{room}/{nick}'>{muc_x(history, password)}</presence>")
    return await c.settle()


async def create(h: ServerHarness, c: FakeClient, nick: str, room: str = ROOM, **fields: str | list[str]) -> None:
    """Create a room and submit a configuration (empty: an instant room, §10.1.2)."""
    got = await join(h, c, nick, room)
    assert "201" in statuses(self_presence(got)), got
    await configure(h, c, room, **fields)


def form(**fields: str | list[str]) -> str:
    out = ["<x xmlns='jabber:x:data' type='submit'>"]
    if fields:
        out.append("<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>")
    for k, v in fields.items():
        var = k if k.startswith("muc#") else f"muc#roomconfig_{k}"
        vals = v if isinstance(v, list) else [v]
        out.append(f"<field var='{var}'>" + "".join(f"<value>{x}</value>" for x in vals) + "</field>")
    out.append("</x>")
    return "".join(out)


async def configure(h: ServerHarness, c: FakeClient, room: str = ROOM, **fields: str | list[str]) -> Element:
    h.send(c, f"<iq type='set' id='cfg' to='{room}'><query xmlns='{NS_MUC_OWNER}'>{form(**fields)}</query></iq>")
    return await c.expect(lambda s: s.tag == "iq" and s.get("id") == "cfg")


async def iq(h: ServerHarness, c: FakeClient, to: str, payload: str, type_: str = "get",
             id_: str = "q1") -> Element:
    h.send(c, f"<iq type='{type_}' id='{id_}' to='{to}'>{payload}</iq>")
    return await c.expect(lambda s: s.tag == "iq" and s.get("id") == id_)


def x_user(st: Element) -> Element | None:
    return st.find("x", NS_MUC_USER)


def statuses(st: Element) -> set[str]:
    x = x_user(st)
    return set() if x is None else {s.get("code") for s in x.findall("status", NS_MUC_USER)}  # type: ignore[misc]


def item(st: Element) -> Element:
    x = x_user(st)
    assert x is not None, st
    it = x.find("item", NS_MUC_USER)
    assert it is not None, st
    return it


def self_presence(got: list[Element]) -> Element:
    own = [s for s in got if s.tag == "presence" and "110" in statuses(s)]
    assert own, got
    return own[-1]


def presences_from(got: list[Element], frm: str) -> list[Element]:
    return [s for s in got if s.tag == "presence" and s.get("from") == frm]


def messages(got: list[Element]) -> list[Element]:
    return [s for s in got if s.tag == "message"]


def error_condition(st: Element) -> str | None:
    return _condition(st) if st.get("type") == "error" else None


def error_of(got: list[Element]) -> str | None:
    errs = [s for s in got if s.get("type") == "error"]
    assert errs, got
    return error_condition(errs[-1])


def form_values(x: Element) -> dict[str, list[str]]:
    return {f.get("var"): [v.text for v in f.findall("value", NS_DATA)]  # type: ignore[misc]
            for f in x.findall("field", NS_DATA) if f.get("var")}
