"""What the server acknowledged survives `kill -9`: an offline message acked through Stream
Management is delivered after a hard kill and restart."""

from __future__ import annotations


from tests.daemon import Daemon
from tests.rawclient import RawClient

PW = "durable"
NS_SM = "urn:xmpp:sm:3"


async def test_acked_offline_message_survives_kill9():
    d = Daemon()
    try:
        for u in ("alice", "bob"):
            d.add_user(f"{u}@localhost", PW)
        d.start()
        bob = await RawClient.connect(d.c2s)
        await bob.login("bob", PW, resource="b")
        await bob.send(f"<enable xmlns='{NS_SM}'/>")
        assert (await bob.element()).tag == "enabled"
        for i in range(20):
            await bob.send(f"<message to='alice@localhost' type='chat' id='k{i}'><body>keep {i}</body></message>")
        await bob.send(f"<r xmlns='{NS_SM}'/>")
        while True:
            a = await bob.element()
            if a.tag == "a":
                break
        assert a.get("h") == "20"
        d.kill9()  # no shutdown, no flush: only what was committed before the ack may survive
        await bob.close()
        d.start()
        alice = await RawClient.connect(d.c2s)
        await alice.login("alice", PW, resource="a")
        await alice.send("<presence/>")
        bodies = []
        while len(bodies) < 20:
            el = await alice.element()
            if el.tag == "message":
                bodies.append(el.findtext("body"))
        assert bodies == [f"keep {i}" for i in range(20)]
        await alice.close()
    finally:
        d.cleanup()
