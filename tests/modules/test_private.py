"""Private XML storage (XEP-0049)."""

from __future__ import annotations

from mbxmpp.modules.private import MAX_FRAGMENT
from mbxmpp.xml.ns import NS_PRIVATE
from tests.harness import ServerHarness
from tests.modules.test_pep import A, B, error_of, reply

MODULES = ["disco", "private"]
PREFS = "<prefs xmlns='urn:example:prefs'><theme>dark</theme><n a='1'/></prefs>"


def q(body: str, type_: str = "get", iq_id: str = "p", to: str | None = None) -> str:
    to_attr = f" to='{to}'" if to else ""
    return f"<iq type='{type_}' id='{iq_id}'{to_attr}><query xmlns='jabber:iq:private'>{body}</query></iq>"


async def test_set_get_and_replace():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r")
        # nothing stored: the empty element comes back
        h.send(a, q("<prefs xmlns='urn:example:prefs'/>"))
        r = await a.expect(reply("p"))
        el = r.find("query", NS_PRIVATE).first_child()
        assert (el.ns, el.tag, list(el.elements())) == ("urn:example:prefs", "prefs", [])
        h.send(a, q(PREFS + "<other xmlns='urn:example:other'>x</other>", "set", "s"))
        assert (await a.expect(reply("s"))).get("type") == "result"
        h.send(a, q("<prefs xmlns='urn:example:prefs'/>", to=A))
        el = (await a.expect(reply("p"))).find("query", NS_PRIVATE).first_child()
        assert el.findtext("theme") == "dark" and el.find("n").get("a") == "1"
        h.send(a, q("<other xmlns='urn:example:other'/>", iq_id="o"))
        assert (await a.expect(reply("o"))).find("query", NS_PRIVATE).first_child().text == "x"
        # same name, other namespace: a separate fragment
        h.send(a, q("<prefs xmlns='urn:example:v2'/>", iq_id="v2"))
        el = (await a.expect(reply("v2"))).find("query", NS_PRIVATE).first_child()
        assert el.ns == "urn:example:v2" and list(el.elements()) == []
        # replace
        h.send(a, q("<prefs xmlns='urn:example:prefs'><theme>light</theme></prefs>", "set", "s2"))
        await a.expect(reply("s2"))
        h.send(a, q("<prefs xmlns='urn:example:prefs'/>"))
        el = (await a.expect(reply("p"))).find("query", NS_PRIVATE).first_child()
        assert el.findtext("theme") == "light" and el.find("n") is None


async def test_other_users_data_is_forbidden():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r")
        b = await h.login(B, "r")
        h.send(a, q(PREFS, "set", "s"))
        await a.expect(reply("s"))
        h.send(b, q("<prefs xmlns='urn:example:prefs'/>", to=A))
        assert error_of(await b.expect(reply("p")))[0] == "forbidden"
        h.send(b, q(PREFS, "set", "s", to=A))
        assert error_of(await b.expect(reply("s")))[0] == "forbidden"


async def test_bad_requests():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r")
        h.send(a, q(""))
        assert error_of(await a.expect(reply("p")))[0] == "not-acceptable"
        for i, body in enumerate(["<query xmlns='jabber:iq:private'/>", "<x xmlns='jabber:client'/>",
                                  "<y xmlns=''/>"]):
            h.send(a, q(body, "set", f"r{i}"))
            assert error_of(await a.expect(reply(f"r{i}")))[0] == "not-acceptable"
        h.send(a, q("<a xmlns='urn:a'/><b xmlns='urn:b'/>", iq_id="two"))
        assert error_of(await a.expect(reply("two")))[0] == "not-acceptable"
        big = "x" * (MAX_FRAGMENT + 1)
        h.send(a, q(f"<big xmlns='urn:big'>{big}</big>", "set", "big"))
        assert error_of(await a.expect(reply("big")))[0] == "not-acceptable"


async def test_deleted_with_the_account():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r")
        h.send(a, q(PREFS, "set", "s"))
        await a.expect(reply("s"))
        priv = h.server.module("private")
        assert priv.get(A, "urn:example:prefs", "prefs") is not None
        await h.server.storage.delete_owner(A)
        assert priv.get(A, "urn:example:prefs", "prefs") is None
