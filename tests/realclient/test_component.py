"""A real slixmpp ComponentXMPP (XEP-0114) against the daemon, with real slixmpp clients:
slixmpp's own itest (itests/test_component.py: a ping to the server from whatever@component,
answered to that JID), messages and IQs both ways, a bounce while the component is away, and a
reconnection."""

from __future__ import annotations

import asyncio
from typing import Iterator

import pytest
from slixmpp import JID
from slixmpp.componentxmpp import ComponentXMPP

from tests.daemon import Daemon
from tests.integration.test_components import BRIDGE, SECRET, component_daemon
from tests.realclient.conftest import PASSWORD, connect, disconnect

pytestmark = pytest.mark.realclient


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    yield from component_daemon(PASSWORD)


class EchoComponent(ComponentXMPP):
    """Echoes every chat message back, from the address it was sent to."""

    def __init__(self, secret: str = SECRET) -> None:
        super().__init__(BRIDGE, secret)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.received: asyncio.Queue = asyncio.Queue()
        self.add_event_handler("message", self._message)

    def _message(self, msg) -> None:  # type: ignore[no-untyped-def]
        self.received.put_nowait(msg)
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.send_message(mto=msg["from"], mfrom=msg["to"], mbody="echo: " + msg["body"], mtype="chat")


async def start_component(daemon: Daemon, comp: ComponentXMPP | None = None) -> ComponentXMPP:
    comp = comp or EchoComponent()
    await comp.connect("127.0.0.1", daemon.component_port)  # type: ignore[attr-defined]
    await comp.wait_until("session_start", 10)
    return comp


async def stop_component(comp: ComponentXMPP) -> None:
    try:
        await asyncio.wait_for(comp.disconnect(), 5)
    except asyncio.TimeoutError:
        comp.abort()


async def message(c, pred=lambda m: True, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    while True:
        m = await asyncio.wait_for(c.messages.get(), timeout)
        if pred(m):
            return m


async def test_slixmpp_itest_component_ping(daemon: Daemon) -> None:
    """slixmpp-1.17.0/itests/test_component.py, against this server."""
    component = ComponentXMPP(BRIDGE, SECRET, "127.0.0.1", daemon.component_port)  # type: ignore[attr-defined]
    component.register_plugin("xep_0199")
    await component.connect()
    await component.wait_until("session_start", 10)
    try:
        jid = JID(f"whatever@{BRIDGE}")
        iq_pong = await component.plugin["xep_0199"].send_ping(JID("localhost"), ifrom=jid)
        assert iq_pong["type"] == "result"
        assert iq_pong.get_to() == jid
    finally:
        component.abort()


async def test_messages_and_iqs_between_client_and_component(daemon: Daemon) -> None:
    comp = await start_component(daemon)
    alice = await connect(daemon, "alice@localhost/desk", plugins=("xep_0199", "xep_0030"))
    # a message to a JID at the component, echoed back from it
    alice.send_message(mto=f"irc-nick@{BRIDGE}", mbody="hello", mtype="chat")
    got = await asyncio.wait_for(comp.received.get(), 5)
    assert got["from"] == alice.boundjid and got["body"] == "hello"
    echo = await message(alice, lambda m: m["body"] == "echo: hello")
    assert echo["from"] == JID(f"irc-nick@{BRIDGE}")
    # the client's IQs to the component (answered by slixmpp's plugins there)
    rtt = await alice.plugin["xep_0199"].ping(JID(BRIDGE), timeout=5)
    assert rtt is not None
    info = await alice.plugin["xep_0030"].get_info(jid=BRIDGE, timeout=5)
    assert "urn:xmpp:ping" in info["disco_info"]["features"]
    # the component's IQ to the client (answered by the client's ping plugin)
    pong = await comp.plugin["xep_0199"].send_ping(alice.boundjid, ifrom=JID(f"bot@{BRIDGE}"), timeout=5)
    assert pong["type"] == "result" and pong["from"] == alice.boundjid
    await disconnect(alice)
    await stop_component(comp)


async def test_bounce_while_away_then_reconnect(daemon: Daemon) -> None:
    comp = await start_component(daemon)
    await stop_component(comp)
    bob = await connect(daemon, "bob@localhost/away", plugins=("xep_0199",))
    errors: asyncio.Queue = asyncio.Queue()
    bob.add_event_handler("message_error", errors.put_nowait)
    bob.send_message(mto=f"someone@{BRIDGE}", mbody="anyone there?", mtype="chat")
    err = await asyncio.wait_for(errors.get(), 5)
    assert err["from"] == JID(f"someone@{BRIDGE}")
    assert err["error"]["condition"] == "service-unavailable" and err["error"]["type"] == "wait"
    # the component comes back: messages reach it again
    comp = await start_component(daemon)
    bob.send_message(mto=f"someone@{BRIDGE}", mbody="back?", mtype="chat")
    echo = await message(bob, lambda m: m["body"] == "echo: back?")
    assert echo["from"] == JID(f"someone@{BRIDGE}")
    await disconnect(bob)
    await stop_component(comp)


async def test_wrong_secret_does_not_start_a_session(daemon: Daemon) -> None:
    comp = EchoComponent(secret="not the secret")
    ended = asyncio.Event()
    comp.add_event_handler("disconnected", lambda _e: ended.set())
    errors: list[str] = []
    comp.add_event_handler("stream_error", lambda e: errors.append(e["condition"]))
    await comp.connect("127.0.0.1", daemon.component_port)  # type: ignore[attr-defined]
    await asyncio.wait_for(ended.wait(), 10)
    assert errors == ["not-authorized"]
    assert not comp.sessionstarted
