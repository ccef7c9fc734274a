"""Over the wire, against the daemon: a retention is kept to the second by MAM queries (the sweep
only reclaims space); what others may put into an account's archive and offline storage is
bounded, with the XEP's errors; a bounced message is not in the recipient's archive; the
operator sees the bounds in `check-config` and `archive sizes`."""

from __future__ import annotations

import asyncio
import itertools
import os


from mbxmpp.xml import Element
from tests.daemon import Daemon
from tests.rawclient import RawClient


PW = "bounds-pw"
NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
_ids = itertools.count()


def start(extra: str, users: tuple[str, ...] = ("alice", "bob", "carol")) -> Daemon:
    d = Daemon(extra=extra)
    for u in users:
        d.add_user(f"{u}@localhost", PW)
    d.start()
    return d


async def login(d: Daemon, user: str, presence: bool = True) -> RawClient:
    c = await RawClient.connect(d.c2s)
    await c.login(user, PW, resource="w")
    if presence:
        await c.send("<presence/>")
    return c


def condition(st: Element) -> tuple[str, str | None, str | None]:
    """(condition, error type, text) of an error stanza."""
    err = st.find("error")
    assert err is not None, st
    cond = next(c.tag for c in err.elements() if c.ns == NS_STANZAS and c.tag != "text")
    return cond, err.get("type"), err.findtext("text", NS_STANZAS)


async def until(c: RawClient, pred, timeout: float = 10.0) -> Element:  # type: ignore[no-untyped-def]
    while True:
        el = await c.element(timeout)
        if pred(el):
            return el


async def collect(c: RawClient, n: int, pred) -> list[Element]:  # type: ignore[no-untyped-def]
    return [await until(c, pred) for _ in range(n)]


def is_error(st: Element) -> bool:
    return st.tag == "message" and st.get("type") == "error"


def is_chat(st: Element) -> bool:
    return st.tag == "message" and st.get("type") == "chat"


async def mam(c: RawClient, rsm: str = "") -> tuple[int, bool, int]:
    """(results, complete, RSM count) of a query on the client's own archive."""
    qid = f"q{next(_ids)}"
    await c.send(f"<iq type='set' id='{qid}'><query xmlns='{NS_MAM}' queryid='{qid}'>{rsm}"
                 "</query></iq>")
    results = 0
    while True:
        el = await c.element()
        if el.tag == "message" and el.find("result", NS_MAM) is not None:
            results += 1
        elif el.tag == "iq" and el.get("id") == qid:
            assert el.get("type") == "result", el
            fin = el.find("fin", NS_MAM)
            count = fin.find("set", NS_RSM).findtext("count", NS_RSM)
            return results, fin.get("complete") == "true", int(count)


async def test_retention_is_kept_by_queries_before_the_sweep():
    d = start('[mam]\nretention = "2s"\nsweep_interval = "1h"\n')
    try:
        alice, bob = await login(d, "alice"), await login(d, "bob")
        await alice.send("<message to='bob@localhost' type='chat' id='r1'><body>brief</body></message>")
        await until(bob, is_chat)
        assert await mam(bob) == (1, True, 1)
        assert await mam(bob, f"<set xmlns='{NS_RSM}'><max>0</max></set>") == (0, False, 1)
        await asyncio.sleep(3)  # past the 2 s retention; the sweep is an hour away
        assert await mam(bob) == (0, True, 0)
        assert await mam(bob, f"<set xmlns='{NS_RSM}'><max>0</max></set>") == (0, True, 0)
        assert await mam(alice) == (0, True, 0)
        await alice.send(f"<iq type='get' id='md'><metadata xmlns='{NS_MAM}'/></iq>")
        md = (await until(alice, lambda e: e.get("id") == "md")).find("metadata", NS_MAM)
        assert md is not None and list(md.elements()) == []
        await alice.close()
        await bob.close()
    finally:
        d.finish()


async def test_archive_quota_refuses_with_resource_constraint_and_stores_nothing():
    d = start('[mam]\nmax_messages_per_sender = 5\nmax_bytes_per_sender = "64KiB"\n')
    try:
        alice, bob, carol = await login(d, "alice"), await login(d, "bob"), await login(d, "carol")
        for i in range(6):
            await alice.send(f"<message to='bob@localhost' type='chat' id='q{i}'><body>{i}</body></message>")
        err = await until(alice, is_error)
        assert err.get("id") == "q5" and err.get("from") == "bob@localhost"
        cond, type_, text = condition(err)
        assert (cond, type_) == ("resource-constraint", "wait")
        assert text.startswith("the recipient's archive takes no more messages from you until ")
        got = await collect(bob, 5, is_chat)
        assert [m.get("id") for m in got] == [f"q{i}" for i in range(5)]
        # 200 KB in one message: over one sender's bytes for the day.
        await carol.send(f"<message to='bob@localhost' type='chat' id='big'><body>{'x' * 200_000}"
                         "</body></message>")
        err = await until(carol, is_error)
        assert err.get("id") == "big" and condition(err)[0] == "resource-constraint"
        await carol.send("<message to='bob@localhost' type='chat' id='small'><body>hi</body></message>")
        assert (await until(bob, is_chat)).get("id") == "small"
        assert await mam(bob) == (6, True, 6)      # five of alice's, carol's small one
        assert await mam(alice) == (5, True, 5)    # the refused one is not in hers either
        sizes = d.cli("archive", "sizes").stdout
        assert "bob@localhost" in sizes and "from one sender 5 messages / 64KiB" in sizes
        assert sizes.strip().splitlines()[-1].split()[:2] == ["total", "12"]  # 6 + 5 + 1, the last line
        for c in (alice, bob, carol):
            await c.close()
    finally:
        d.finish()


async def test_bounced_messages_are_not_archived_and_offline_bytes_are_capped():
    d = start('[offline]\nmax_messages = 10\nmax_bytes = "40KiB"\n')
    try:
        alice = await login(d, "alice")
        for i in range(15):
            await alice.send(f"<message to='bob@localhost' type='chat' id='o{i}'><body>{i}</body></message>")
        errs = await collect(alice, 5, is_error)
        assert [e.get("id") for e in errs] == [f"o{i}" for i in range(10, 15)]
        assert {condition(e) for e in errs} == {
            ("service-unavailable", "cancel", "the recipient's offline storage is full")}
        # Bytes: 12 KB messages, three fit in 40 KiB.
        for i in range(5):
            await alice.send(f"<message to='carol@localhost' type='chat' id='b{i}'><body>{'y' * 12_000}"
                             "</body></message>")
        errs = await collect(alice, 2, is_error)
        assert [e.get("id") for e in errs] == ["b3", "b4"]
        assert condition(errs[0])[0] == "service-unavailable"

        bob = await login(d, "bob")
        got = await collect(bob, 10, is_chat)
        assert [m.get("id") for m in got] == [f"o{i}" for i in range(10)]
        assert await mam(bob) == (10, True, 10)  # not the 5 that bounced
        carol = await login(d, "carol")
        got = await collect(carol, 3, is_chat)
        assert [m.get("id") for m in got] == ["b0", "b1", "b2"]
        assert await mam(carol) == (3, True, 3)
        for c in (alice, bob, carol):
            await c.close()
        r = d.cli("check-config")
        assert r.returncode == 0
        assert "offline storage per account: 10 messages / 40KiB" in r.stdout
        assert "archive quotas per account and 1d" in r.stdout
        assert "from one sender 2000000 messages / 256MiB" in r.stdout
        assert "one sender into all others any number of messages / 1GiB" in r.stdout
    finally:
        d.finish()


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


async def test_one_account_cannot_fill_the_disk_through_others():
    # Issue 11's attack: 300 messages of 200 KB from one account. Spread over three recipients,
    # each pair stays far under its 256 MiB a day: one sender's total into all others' archives
    # (here 8 MiB instead of the shipped 1 GiB, to keep the test small) is what bounds it.
    d = start('[mam]\nmax_bytes_to_others = "8MiB"\n', users=("alice", "bob", "carol", "dave"))
    try:
        alice = await login(d, "alice")
        victims = [await login(d, u) for u in ("bob", "carol", "dave")]
        body = "z" * 200_000
        received: list[Element] = []

        async def read(c: RawClient) -> None:
            while True:
                el = await c.element(60)
                if is_chat(el):
                    received.append(el)
        readers = [asyncio.create_task(read(c)) for c in victims]
        names = ("bob", "carol", "dave")
        for i in range(300):
            await alice.send(f"<message to='{names[i % 3]}@localhost' type='chat' id='f{i}'>"
                             f"<body>{body}</body></message>")
        await alice.send("<iq type='get' id='done'><ping xmlns='urn:xmpp:ping'/></iq>")
        errors = []
        while True:  # the errors come back while each message is routed, before the ping's result
            el = await alice.element(60)
            if el.get("id") == "done":
                break
            if is_error(el):
                errors.append(el)
        refused = len(errors)
        accepted = 300 - refused
        assert {condition(e) for e in errors} == {("resource-constraint", "wait", errors[0].find(
            "error").findtext("text", NS_STANZAS))}
        assert condition(errors[0])[2].startswith(
            "the archives of others take no more messages from you until ")
        assert [e.get("id") for e in errors] == [f"f{i}" for i in range(accepted, 300)]

        async def all_received() -> None:
            while len(received) < accepted:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(all_received(), 60)
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        assert sorted(int(m.get("id")[1:]) for m in received) == list(range(accepted))
        assert 38 <= accepted <= 42  # 8 MiB of 200 KB messages
        grown = _dir_bytes(d.dir + "/data")
        assert grown < 24 * 1024 * 1024, grown  # both copies of what was accepted, not 120 MB
        # Others still write to the victims: the bound is alice's, not theirs.
        await victims[0].send("<message to='carol@localhost' type='chat' id='fine'><body>hi</body></message>")
        assert (await until(victims[1], is_chat)).get("id") == "fine"
        await alice.close()
        for c in victims:
            await c.close()
    finally:
        d.finish()


async def test_twenty_thousand_messages_between_one_pair_all_arrive_with_the_defaults():
    # A load test's pair at full speed: the shipped quotas and limits never refuse it.
    d = start("")
    try:
        alice, bob = await login(d, "alice"), await login(d, "bob")
        n, batch = 20_000, 500
        got = 0

        async def read_bob() -> None:
            nonlocal got
            while got < n:
                el = await bob.element(60)
                assert el.get("type") != "error", el
                if is_chat(el):
                    got += 1
        reader = asyncio.create_task(read_bob())
        for start_at in range(0, n, batch):
            await alice.send("".join(
                f"<message to='bob@localhost' type='chat' id='p{i}'><body>load {i}</body></message>"
                for i in range(start_at, start_at + batch)))
        await alice.send("<iq type='get' id='done'><ping xmlns='urn:xmpp:ping'/></iq>")
        el = await until(alice, lambda e: e.get("id") == "done" or is_error(e), 120)
        assert el.get("id") == "done", el  # no error came back before the ping's answer
        await asyncio.wait_for(reader, 120)
        assert got == n
        assert await mam(bob, f"<set xmlns='{NS_RSM}'><max>0</max></set>") == (0, False, n)
        await alice.close()
        await bob.close()
    finally:
        d.finish()
