"""Over the wire, against the daemon: the [limits] token buckets never touch a normal user with
the shipped defaults, and limit the abusive version with the exact error (SASL
<temporary-auth-failure/>, presence <policy-violation/>, read back-pressure for stanzas); spam
reports (XEP-0377) inside a block are recorded for the operator (`reports list`)."""

from __future__ import annotations

import asyncio
import base64
import re


from mbxmpp.xml import Element
from tests.daemon import Daemon
from tests.integration.test_storage_bounds import condition, until
from tests.rawclient import RawClient


PW = "abuse-pw"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BLOCKING = "urn:xmpp:blocking"
NS_REPORTING = "urn:xmpp:reporting:1"
RETRY = re.compile(r"; try again in \d+ s$")


def start(extra: str = "", users: tuple[str, ...] = ("alice", "bob")) -> Daemon:
    d = Daemon(extra=extra)
    for u in users:
        d.add_user(f"{u}@localhost", PW)
    d.start()
    return d


async def connect(d: Daemon, source: str = "127.0.0.1") -> RawClient:
    """A client connection from ``source`` (any 127.x address reaches the daemon's 127.0.0.1)."""
    r, w = await asyncio.open_connection("127.0.0.1", d.c2s, local_addr=(source, 0))
    c = RawClient(r, w)
    await c.open()
    await c.starttls()
    await c.open()
    return c


async def sasl(c: RawClient, user: str, password: str) -> Element:
    """One SASL PLAIN attempt: <success/> or <failure/>."""
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    await c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
    return await c.element()


def failure(el: Element) -> tuple[str, str | None]:
    assert el.tag == "failure" and el.ns == NS_SASL, el
    cond = next(c.tag for c in el.elements() if c.tag != "text")
    return cond, el.findtext("text", NS_SASL)


async def logged_in(d: Daemon, user: str, source: str = "127.0.0.1") -> RawClient:
    c = await connect(d, source)
    assert (await sasl(c, user, PW)).tag == "success"
    await c.open()
    await c.bind("r")
    return c


# -- logins ---------------------------------------------------------------------------------------

async def test_a_burst_of_logins_from_one_address_all_succeed_with_the_defaults():
    # 100 logins from one address as fast as the pre-auth connection limit lets them in, each
    # user mistyping a password once: nobody is refused.
    users = tuple(f"u{i}" for i in range(10))
    d = start(users=users)
    try:
        gate = asyncio.Semaphore(8)  # [c2s] max_unauthenticated_per_ip is 10

        async def one(i: int) -> str:
            async with gate:
                c = await connect(d)
                try:
                    user = users[i % 10]
                    if i < 10:
                        assert failure(await sasl(c, user, "typo")) == ("not-authorized", None)
                    return (await sasl(c, user, PW)).tag
                finally:
                    await c.close()
        results = await asyncio.gather(*(one(i) for i in range(100)))
        assert results == ["success"] * 100
    finally:
        d.finish()


async def test_password_guessing_is_refused_per_account_and_address_with_the_defaults():
    d = start()
    try:
        # Wrong passwords for alice from one address (5 per connection: [c2s] max_auth_attempts)
        # until refused: after the burst of 30 (more if the bucket refilled meanwhile, 10/min).
        failures, refused = 0, None
        while refused is None and failures < 60:
            c = await connect(d)
            for _ in range(5):
                cond, text = failure(await sasl(c, "alice", "guess"))
                if cond == "temporary-auth-failure":
                    refused = text
                    break
                assert cond == "not-authorized"
                failures += 1
            else:
                await c.close()
        assert refused is not None and failures >= 30, failures
        assert refused.startswith("too many login attempts for this account"), refused
        assert RETRY.search(refused), refused
        # Over failed_logins_per_account: even the right password learns nothing now.
        cond, text = failure(await sasl(c, "alice", PW))
        assert cond == "temporary-auth-failure"
        assert text is not None and text.startswith("too many login attempts for this account")
        # Others from the same address, and alice from elsewhere, are not locked out.
        assert (await sasl(c, "bob", PW)).tag == "success"
        await c.close()
        c = await connect(d, source="127.0.0.2")
        assert (await sasl(c, "alice", PW)).tag == "success"
        await c.close()
    finally:
        d.finish()


async def test_logins_per_address_over_the_burst_are_refused():
    d = start('[limits]\nlogins_per_address = "1/h"\nlogins_per_address_burst = 3\n')
    try:
        for _ in range(3):
            c = await connect(d)
            assert (await sasl(c, "alice", PW)).tag == "success"
            await c.close()
        c = await connect(d)
        cond, text = failure(await sasl(c, "bob", PW))
        assert cond == "temporary-auth-failure"
        assert text is not None and text.startswith("too many login attempts from your address")
        assert RETRY.search(text), text
        await c.close()
        c = await connect(d, source="127.0.0.3")  # another address has its own bucket
        assert (await sasl(c, "bob", PW)).tag == "success"
        await c.close()
        out = d.cli("check-config").stdout  # the operator sees the limits in force
        assert "logins_per_address 1/h, burst 3" in out and "stanzas_per_session 5000/s, burst 50000" in out
    finally:
        d.finish()


# -- stanzas per session --------------------------------------------------------------------------

async def test_two_thousand_stanzas_sent_quickly_are_all_answered_with_the_defaults():
    d = start()
    try:
        alice, bob = await logged_in(d, "alice"), await logged_in(d, "bob")
        await bob.send("<presence/>")
        await until(bob, lambda e: e.tag == "presence")  # his own, back: available now
        await alice.send("".join(f"<message to='bob@localhost' type='chat' id='m{i}'><body>{i}</body>"
                                 "</message>" for i in range(1000)))
        await alice.send("".join(f"<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>"
                                 for i in range(1000)))
        got = [await until(alice, lambda e: e.tag == "iq" or e.get("type") == "error", 30)
               for _ in range(1000)]
        assert [e.get("id") for e in got] == [f"p{i}" for i in range(1000)]
        assert all(e.get("type") == "result" for e in got)
        msgs = [await until(bob, lambda e: e.tag == "message", 30) for _ in range(1000)]
        assert [m.get("id") for m in msgs] == [f"m{i}" for i in range(1000)]
        await alice.close()
        await bob.close()
    finally:
        d.finish()


async def test_a_stanza_flood_is_slowed_down_not_refused():
    # 1 stanza a second, 5 at once: 15 in one write are all handled (the bucket goes 10 into
    # debt), then reading from that connection pauses for about 10 s. Other sessions go on.
    d = start('[limits]\nstanzas_per_session = "1/s"\nstanzas_per_session_burst = 5\n')
    try:
        alice, bob = await logged_in(d, "alice"), await logged_in(d, "bob")
        await alice.send("".join(f"<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>"
                                 for i in range(15)))
        got = [await until(alice, lambda e: e.tag == "iq") for _ in range(15)]
        assert [(e.get("id"), e.get("type")) for e in got] == [(f"p{i}", "result") for i in range(15)]
        await alice.send("<iq type='get' id='late'><ping xmlns='urn:xmpp:ping'/></iq>")
        await bob.send("<iq type='get' id='bob'><ping xmlns='urn:xmpp:ping'/></iq>")
        late = asyncio.ensure_future(until(alice, lambda e: e.tag == "iq", 60))
        answered = await until(bob, lambda e: e.tag == "iq")
        assert answered.get("id") == "bob" and not late.done()  # bob first: alice is held back
        el = await late  # held back, then answered: nothing refused, the stream stays up
        assert (el.get("id"), el.get("type")) == ("late", "result")
        await alice.close()
        await bob.close()
    finally:
        d.finish()


# -- subscription requests ------------------------------------------------------------------------

async def test_subscription_requests_over_the_default_burst_get_policy_violation():
    d = start()
    try:
        alice = await logged_in(d, "alice")
        # A thousand at once (a contact list imported): all pass.
        await alice.send("".join(f"<presence to='c{i}@localhost' type='subscribe'/>"
                                 for i in range(1000)))
        await alice.send("<presence to='spam@localhost' type='subscribe' id='over'/>")
        await alice.send("<iq type='get' id='done'><ping xmlns='urn:xmpp:ping'/></iq>")
        errors = []
        while True:
            el = await alice.element(30)
            if el.get("id") == "done":
                break
            if el.tag == "presence" and el.get("type") == "error":
                errors.append(el)
        assert [e.get("id") for e in errors] == ["over"]
        cond, type_, text = condition(errors[0])
        assert (cond, type_) == ("policy-violation", "wait")
        assert text is not None and text.startswith("too many subscription requests")
        assert RETRY.search(text), text
        # Not put in her roster either: the refused request changed nothing.
        await alice.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
        roster = await until(alice, lambda e: e.get("id") == "r", 30)
        jids = {i.get("jid") for i in roster.find("query", "jabber:iq:roster").elements()}
        assert len(jids) == 1000 and "spam@localhost" not in jids
        await alice.close()
    finally:
        d.finish()


# -- spam reports (XEP-0377) ----------------------------------------------------------------------

async def test_a_report_in_a_block_is_recorded_for_the_operator():
    d = start(users=("alice", "bob", "mallory"))
    try:
        alice = await logged_in(d, "alice")
        await alice.send("<iq type='get' id='disco' to='localhost'>"
                         "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        info = await until(alice, lambda e: e.get("id") == "disco")
        feats = {f.get("var") for f in info.find("query", "http://jabber.org/protocol/disco#info").elements()
                 if f.tag == "feature"}
        assert NS_REPORTING in feats
        await alice.send(
            f"<iq type='set' id='b1'><block xmlns='{NS_BLOCKING}'><item jid='mallory@localhost'>"
            f"<report xmlns='{NS_REPORTING}' reason='urn:xmpp:reporting:spam'>"
            "<stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='abc-123'/>"
            "<body xmlns='jabber:client'>cheap pills</body>"
            "<text xml:lang='en'>Sends ads every hour.</text></report></item></block></iq>")
        assert (await until(alice, lambda e: e.get("id") == "b1")).get("type") == "result"
        # A report without a reason: <bad-request/>, and nothing blocked (XEP-0377 §4).
        await alice.send(
            f"<iq type='set' id='b2'><block xmlns='{NS_BLOCKING}'><item jid='bob@localhost'>"
            f"<report xmlns='{NS_REPORTING}'/></item></block></iq>")
        err = await until(alice, lambda e: e.get("id") == "b2")
        assert err.get("type") == "error"
        assert condition(err)[:2] == ("bad-request", "modify")
        await alice.send(f"<iq type='get' id='bl'><blocklist xmlns='{NS_BLOCKING}'/></iq>")
        bl = await until(alice, lambda e: e.get("id") == "bl")
        assert [i.get("jid") for i in bl.find("blocklist", NS_BLOCKING).elements()] == ["mallory@localhost"]
        await alice.close()
        out = d.cli("reports", "list").stdout
        assert "mallory@localhost  reported by alice@localhost  spam" in out, out
        assert "text: Sends ads every hour." in out and "message: abc-123" in out
        assert "body: cheap pills" in out and out.strip().endswith("1 reports")
        assert d.cli("reports", "list", "--jid", "bob@localhost").stdout.strip() == "no reports"
    finally:
        d.finish()


async def test_a_report_through_slixmpp():
    from tests.realclient.conftest import connect as slix_connect
    from tests.realclient.conftest import disconnect
    d = start(users=("alice", "mallory"))
    try:
        c = await slix_connect(d, "alice@localhost", PW, plugins=("xep_0030", "xep_0191", "xep_0377"))
        await c.plugin["xep_0377"].report("mallory@localhost", reason="abuse")
        blocked = await c.plugin["xep_0191"].get_blocked()
        assert {str(i["jid"]) for i in blocked["blocklist"]["items"]} == {"mallory@localhost"}
        await disconnect(c)
        out = d.cli("reports", "list").stdout
        assert "mallory@localhost  reported by alice@localhost  abuse" in out, out
    finally:
        d.finish()
