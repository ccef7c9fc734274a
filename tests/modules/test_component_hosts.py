"""Component hosts (core/hosts.py): a module answering for a whole domain of its own, listed in
its parent's disco#items, added and removed at run time."""

from __future__ import annotations

import pytest

from mbxmpp.core.hosts import ComponentHost, ComponentModule
from mbxmpp.core.modules import COMPONENT, COMPONENT_JID, iq_handler
from mbxmpp.errors import StanzaError
from mbxmpp.modules import REGISTRY
from mbxmpp.xml.element import Element
from tests.harness import ServerHarness

NS_ECHO = "urn:example:echo"


class Echo(ComponentModule):
    """A test component at proxy.<domain> (an existing component section)."""

    name = "echo"
    component_section = "proxy65"
    component_name = "Echo service"
    component_identities = [("proxy", "bytestreams", "Echo")]
    component_features = [NS_ECHO]

    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        super().__init__(server)
        self.added: list[str] = []
        self.removed: list[str] = []
        self.messages: list[tuple[str, str]] = []

    def host_added(self, host: ComponentHost) -> None:
        self.added.append(host.domain)

    def host_removed(self, host: ComponentHost) -> None:
        self.removed.append(host.domain)

    @iq_handler("get", NS_ECHO, "query", scope=COMPONENT)
    def domain_query(self, iq: Element, ctx) -> Element:  # type: ignore[no-untyped-def]
        assert ctx.host is not None
        return Element("query", NS_ECHO, attrs={"host": ctx.host.domain})

    @iq_handler("get", NS_ECHO, "query", scope=COMPONENT_JID)
    def jid_query(self, iq: Element, ctx) -> Element:  # type: ignore[no-untyped-def]
        if ctx.to.local == "missing":
            raise StanzaError("item-not-found")
        return Element("query", NS_ECHO, attrs={"jid": ctx.to.full})

    def component_message(self, host, stanza, frm, to) -> None:  # type: ignore[no-untyped-def]
        self.messages.append((to.full, frm.full))
        if to.local == "echo":
            reply = Element("message", attrs={"from": to.full, "to": frm.full, "type": "chat"})
            reply.add("body", text="echo")
            self.server.route(reply)
        else:
            super().component_message(host, stanza, frm, to)


@pytest.fixture
def echo_registered(monkeypatch):
    monkeypatch.setitem(REGISTRY, "echo", f"{__name__}:Echo")


async def test_component_served_listed_and_answering(echo_registered):
    async with ServerHarness(modules=["disco", "echo"], domains=("localhost", "example.org")) as h:
        mod = h.server.modules["echo"]
        assert sorted(mod.added) == ["proxy.example.org", "proxy.localhost"]
        alice = await h.login("alice@localhost", "r")

        h.send(alice, "<iq type='get' id='i1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        items = await alice.expect(lambda s: s.get("id") == "i1")
        jids = [(i.get("jid"), i.get("name")) for i in items.first_child().children]
        assert ("proxy.localhost", "Echo service") in jids
        assert all(j != "proxy.example.org" for j, _ in jids)  # another host's component

        h.send(alice, "<iq type='get' id='i2' to='proxy.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        info = await alice.expect(lambda s: s.get("id") == "i2")
        assert info.get("type") == "result" and info.get("from") == "proxy.localhost"
        q = info.first_child()
        feats = {f.get("var") for f in q.children if f.tag == "feature"}
        assert NS_ECHO in feats and "http://jabber.org/protocol/disco#info" in feats
        ident = [c for c in q.children if c.tag == "identity"][0]
        assert (ident.get("category"), ident.get("type")) == ("proxy", "bytestreams")

        h.send(alice, f"<iq type='get' id='i3' to='proxy.localhost'><query xmlns='{NS_ECHO}'/></iq>")
        r = await alice.expect(lambda s: s.get("id") == "i3")
        assert r.first_child().get("host") == "proxy.localhost"

        h.send(alice, f"<iq type='get' id='i4' to='room@proxy.localhost/nick'><query xmlns='{NS_ECHO}'/></iq>")
        r = await alice.expect(lambda s: s.get("id") == "i4")
        assert r.get("from") == "room@proxy.localhost/nick"
        assert r.first_child().get("jid") == "room@proxy.localhost/nick"

        h.send(alice, f"<iq type='get' id='i5' to='missing@proxy.localhost'><query xmlns='{NS_ECHO}'/></iq>")
        r = await alice.expect(lambda s: s.get("id") == "i5")
        assert r.get("type") == "error" and r.find("error").children[0].tag == "item-not-found"

        # No handler: service-unavailable, from the address the IQ went to.
        h.send(alice, "<iq type='get' id='i6' to='x@proxy.localhost'><query xmlns='urn:example:none'/></iq>")
        r = await alice.expect(lambda s: s.get("id") == "i6")
        assert r.get("type") == "error" and r.get("from") == "x@proxy.localhost"
        assert r.find("error").children[0].tag == "service-unavailable"

        h.send(alice, "<message to='echo@proxy.localhost' type='chat'><body>hi</body></message>")
        m = await alice.expect(lambda s: s.tag == "message")
        assert m.get("from") == "echo@proxy.localhost" and m.find("body").text == "echo"

        h.send(alice, "<message to='other@proxy.localhost' id='m2'><body>hi</body></message>")
        m = await alice.expect(lambda s: s.get("id") == "m2")
        assert m.get("type") == "error" and m.find("error").children[0].tag == "service-unavailable"


async def test_component_added_and_removed_at_run_time(echo_registered):
    async with ServerHarness(modules=["disco", "echo"]) as h:
        mod = h.server.modules["echo"]
        alice = await h.login("alice@localhost", "r")
        h.server.remove_component_host("proxy.localhost")
        assert mod.removed == ["proxy.localhost"]
        h.send(alice, "<message to='echo@proxy.localhost' id='gone'><body>hi</body></message>")
        m = await alice.expect(lambda s: s.get("id") == "gone")
        assert m.find("error").children[0].tag == "remote-server-not-found"
        h.send(alice, "<iq type='get' id='i1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        items = await alice.expect(lambda s: s.get("id") == "i1")
        assert all(i.get("jid") != "proxy.localhost" for i in items.first_child().children)

        h.server.add_component_host(mod, "localhost")
        h.send(alice, "<message to='echo@proxy.localhost' type='chat'><body>hi</body></message>")
        m = await alice.expect(lambda s: s.tag == "message")
        assert m.find("body").text == "echo"
        with pytest.raises(ValueError):
            h.server.add_component_host(mod, "localhost")


async def test_disabled_section_loads_no_component(echo_registered):
    import dataclasses

    from mbxmpp.config import Proxy65Config
    async with ServerHarness(modules=["disco", "echo"],
                             proxy65=dataclasses.replace(Proxy65Config(), enabled=False)) as h:
        assert "echo" not in h.server.modules and h.server.components == {}
