"""The module contract (issue 12, item 4): modules get the narrow ``ModuleServer``, reach other
modules only through declared, typed dependencies, and influence each other through hooks."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys

import pytest

from mbxmpp.config import Config, MUCConfig, ServerConfig
from mbxmpp.core import events as ev
from mbxmpp.core.api import ModuleServer
from mbxmpp.core.modules import Module, ModuleLoadError, order_by_dependencies
from mbxmpp.modules import REGISTRY
from mbxmpp.modules.bookmarks import Bookmarks
from mbxmpp.modules.carbons import Carbons
from mbxmpp.modules.mam import MAM
from mbxmpp.modules.muc import MUC
from mbxmpp.modules.offline import Offline
from mbxmpp.modules.pep import PEP
from mbxmpp.modules.presence import Presence
from mbxmpp.modules.private import Private
from mbxmpp.modules.roster import Roster
from mbxmpp.server import Server
from mbxmpp.xml.element import Element
from mbxmpp.xml.ns import NS_SM
from tests.harness import ServerHarness
from tests.modules.test_push import enable_sm, resume

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class NeedsMUC(Module):
    name = "needsmuc"
    depends = (MUC,)


class First(Module):
    name = "first"
    depends = ("second",)


class Second(Module):
    name = "second"
    depends = (First,)


async def test_modules_get_the_narrow_interface():
    async with ServerHarness(modules=["disco", "roster", "presence", "offline"]) as h:
        api = h.server.api
        assert isinstance(api, ModuleServer)
        assert all(m.server is api for m in h.server.modules.values())
        # The server's own objects, bound once: no wrapper call on the way.
        assert api.route == h.server.router.route and api.sessions is h.server.sessions
        for internal in ("tls", "listeners", "reload", "module", "modules", "connections", "s2s",
                         "set_domains", "bind"):
            assert not hasattr(api, internal), internal
        with pytest.raises(AttributeError):
            api.anything = 1  # type: ignore[attr-defined]
        # A reload replaces the server's configuration: modules see the new one.
        new = dataclasses.replace(h.server.config)
        h.server.config = new
        assert api.config is new
        assert api.is_local("localhost") and not api.is_local("example.net")
        assert ("server", "im", "mbxmpp") in api.advertised("identities")


async def test_required_and_optional_dependencies_are_typed_modules():
    async with ServerHarness(modules=["bookmarks", "presence", "offline", "carbons", "mam"]) as h:
        bookmarks = h.server.module("bookmarks")
        assert isinstance(bookmarks, Bookmarks)
        assert bookmarks.pep is h.server.module("pep") and isinstance(bookmarks.pep, PEP)
        assert isinstance(bookmarks.private, Private)
        presence = h.server.module("presence")
        assert isinstance(presence, Presence) and isinstance(presence.offline, Offline)
        carbons = h.server.module("carbons")
        assert isinstance(carbons, Carbons) and isinstance(carbons.mam, MAM)
        assert presence.require(Roster) is h.server.module("roster")
    # Optional ones that are not loaded are None; the module still works without them.
    async with ServerHarness(modules=["presence", "carbons"]) as h:
        presence = h.server.module("presence")
        carbons = h.server.module("carbons")
        assert isinstance(presence, Presence) and presence.offline is None
        assert isinstance(carbons, Carbons) and carbons.mam is None
        assert carbons.optional(MAM) is None


async def test_an_undeclared_dependency_is_refused():
    async with ServerHarness(modules=["roster", "mam"]) as h:
        roster = h.server.module("roster")
        assert isinstance(roster, Roster)
        with pytest.raises(TypeError, match="without declaring it in depends"):
            roster.require(MAM)
        with pytest.raises(TypeError, match="without declaring it in uses"):
            roster.optional(MAM)


def test_dependencies_are_loaded_first():
    order = order_by_dependencies(["bookmarks", "presence", "adhoc"], REGISTRY)
    assert set(order) == {"bookmarks", "pep", "disco", "roster", "private", "presence", "adhoc"}
    for before, after in (("pep", "bookmarks"), ("private", "bookmarks"), ("disco", "pep"),
                          ("roster", "pep"), ("roster", "presence"), ("disco", "adhoc")):
        assert order.index(before) < order.index(after), (before, after)
    # Optional dependencies do not reorder the configured list.
    assert order_by_dependencies(["carbons", "mam"], REGISTRY) == ["carbons", "mam"]


def test_a_dependency_cycle_is_named(monkeypatch):
    monkeypatch.setitem(REGISTRY, "first", f"{__name__}:First")
    monkeypatch.setitem(REGISTRY, "second", f"{__name__}:Second")
    with pytest.raises(ValueError, match="module dependency cycle: first -> second -> first"):
        order_by_dependencies(["first"], REGISTRY)


async def test_a_missing_required_module_is_a_clear_load_error(monkeypatch):
    monkeypatch.setitem(REGISTRY, "needsmuc", f"{__name__}:NeedsMUC")
    h = ServerHarness(modules=["needsmuc"], muc=MUCConfig(enabled=False))
    with pytest.raises(ModuleLoadError, match="'needsmuc' requires module 'muc', which is not loaded"):
        await h.__aenter__()
    await h.server.storage.close()
    h._tmp.cleanup()


async def test_resumption_is_an_event_that_csi_answers():
    """SM fires SESSION_RESUMED (no lookup of the CSI module): what CSI held while the client
    was inactive goes out after <resumed/>."""
    async with ServerHarness(modules=["disco", "roster", "presence", "sm", "csi"]) as h:
        a = await h.login("alice@localhost", "phone", presence=True)
        b = await h.login("bob@localhost", "desk", presence=True)
        sm_id = enable_sm(h, a)
        assert h.server.handle_nonza(a, Element("inactive", "urn:xmpp:csi:0"))
        seen = []

        def on_resumed(session):  # (after CSI's handler: registered later, same priority)
            stream = session.stream
            seen.append((session, b"".join(stream.written), [x.to_bytes() for x in stream.received]))
        h.server.hooks.add(ev.SESSION_RESUMED, on_resumed)
        h.send(b, "<message to='alice@localhost/phone' type='chat' id='cs1'>"
                  "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        await b.settle()
        assert not any(s.get("id") == "cs1" for s in a.received)  # held by CSI
        h.disconnect(a)
        c = resume(h, "alice@localhost", sm_id)
        [(session, written, received)] = seen
        assert session is a.session and session.stream is c
        # <resumed/> first, then what CSI held, handed over when the event fired.
        assert b"<resumed" in written and NS_SM.encode() in written
        assert len(received) == 1 and b"cs1" in received[0] and b"composing" in received[0]


def test_a_module_reaching_past_the_interface_fails_mypy(tmp_path):
    src = tmp_path / "rogue_module.py"
    src.write_text(
        "from mbxmpp.core.modules import Module\n"
        "from mbxmpp.xml.element import Element\n\n\n"
        "class Rogue(Module):\n"
        "    name = 'rogue'\n\n"
        "    def ok(self, st: Element) -> None:\n"
        "        self.server.route(st)\n\n"
        "    def rogue(self) -> None:\n"
        "        self.server.tls\n"
        "        self.server.module('roster')\n")
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", os.path.join(ROOT, "pyproject.toml"),
                        str(src)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr
    errors = [line for line in r.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, r.stdout
    assert '"ModuleServer" has no attribute "tls"' in errors[0]
    assert '"ModuleServer" has no attribute "module"' in errors[1]


def test_only_the_operators_tools_use_the_operator_view():
    """``operator`` (ending sessions, connections, s2s) is for the administration commands, the
    metrics and an account's own password change and removal (XEP-0077: the same steps as the
    operator's); the interface's private parts are for the dependency accessors only."""
    users: set[str] = set()
    private: list[str] = []
    base = os.path.join(ROOT, "mbxmpp", "modules")
    for folder, _dirs, files in os.walk(base):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            rel = os.path.relpath(path, base)
            if ".operator" in text:
                users.add(rel.split(os.sep)[0].removesuffix(".py"))
            private += [rel for p in ("server._server", "server._modules", "server._loaded") if p in text]
    assert users == {"adhoc", "metrics", "register"}
    assert private == []


def test_a_disabled_module_that_others_need_is_loaded_with_a_warning(caplog):
    cfg = dataclasses.replace(Config(), server=ServerConfig(disabled_modules=("private",)))
    with caplog.at_level(logging.WARNING, logger="mbxmpp.server"):
        names = Server(cfg).module_names()
    assert "private" in names and names.index("private") < names.index("bookmarks")
    assert "module private is in disabled_modules but loaded: bookmarks depends on it" in caplog.text
