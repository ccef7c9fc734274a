"""The register module (XEP-0077) on the server's dispatch, without sockets: what the wire tests
cannot reach easily (an unencrypted stream, the events a removal fires)."""

from __future__ import annotations

from typing import Any

from mbxmpp.core import events as ev
from tests.harness import ServerHarness

NS_REG = "jabber:iq:register"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def condition(iq: Any) -> str:
    err = iq.find("error")
    return next(c.tag for c in err.elements() if c.ns == NS_STANZAS and c.tag != "text")


async def test_unencrypted_stream_may_not_change_the_password():
    async with ServerHarness(["register"]) as h:
        c = await h.login("alice@localhost")
        c.secure = False  # (a stream without TLS, where [c2s] require_encryption = false)
        h.send(c, f"<iq type='set' id='c1'><query xmlns='{NS_REG}'><username>alice</username>"
                  "<password>in clear</password></query></iq>")
        reply = await c.expect(lambda s: s.get("id") == "c1")
        assert reply.get("type") == "error" and condition(reply) == "not-authorized"
        assert reply.find("error").get("code") == "401"
        assert h.server.accounts.check_password("alice@localhost", "secret")


async def test_password_change_ends_only_the_other_sessions():
    async with ServerHarness(["register"]) as h:
        asking = await h.login("bob@localhost", "phone")
        other = await h.login("bob@localhost", "laptop")
        h.send(asking, f"<iq type='set' id='c1'><query xmlns='{NS_REG}'><username>bob</username>"
                       "<password>new one</password></query></iq>")
        reply = await asking.expect(lambda s: s.get("id") == "c1")
        assert reply.get("type") == "result", reply
        assert other.closed and not asking.closed
        assert [s.resource for s in h.server.sessions.resources("bob@localhost")] == ["phone"]
        assert h.server.accounts.check_password("bob@localhost", "new one")
        assert not h.server.accounts.check_password("bob@localhost", "secret")


async def test_removal_fires_account_deleted_after_the_result():
    async with ServerHarness(["register"]) as h:
        c = await h.login("carol@localhost")
        deleted: list[str] = []
        h.server.hooks.add(ev.ACCOUNT_DELETED, lambda e: deleted.append(e.bare))
        h.send(c, f"<iq type='set' id='u1'><query xmlns='{NS_REG}'><remove/></query></iq>")
        reply = await c.expect(lambda s: s.get("id") == "u1")
        await c.settle()
        assert reply.get("type") == "result"
        assert deleted == ["carol@localhost"] and c.closed
        assert h.server.accounts.get("carol@localhost") is None
