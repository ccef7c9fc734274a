"""In-Band Registration (XEP-0077) with slixmpp's xep_0077 plugin over the wire: a user changes
their password and deletes their account from the server, as clients' settings screens do."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest
from slixmpp.exceptions import IqError

from tests.daemon import Daemon
from tests.realclient.conftest import (PASSWORD, connect, disconnect, running_daemon,
                                       subscribe_both)

pytestmark = pytest.mark.realclient

PLUGINS = ("xep_0030", "xep_0004", "xep_0066", "xep_0077")
NS_REG = "jabber:iq:register"


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    yield from running_daemon(["alice@localhost", "bob@localhost", "carol@localhost"])


def disconnected(c: Any) -> asyncio.Event:
    ev = asyncio.Event()
    c.add_event_handler("disconnected", lambda _e: ev.set())
    return ev


def stream_errors(c: Any) -> list[str]:
    seen: list[str] = []
    c.add_event_handler("stream_error", lambda e: seen.append(e["condition"]))
    return seen


async def test_registration_is_discovered_and_read(daemon):
    c = await connect(daemon, "alice@localhost", plugins=PLUGINS)
    info = await c.plugin["xep_0030"].get_info("localhost", timeout=10)
    assert NS_REG in info["disco_info"]["features"]
    reg = await c.plugin["xep_0077"].get_registration(timeout=10)
    assert reg["register"]["registered"]
    assert reg["register"]["username"] == "alice"
    await disconnect(c)


async def test_password_change_then_only_the_new_password_logs_in(daemon):
    c = await connect(daemon, "bob@localhost", plugins=PLUGINS)
    other = await connect(daemon, "bob@localhost", plugins=PLUGINS)
    other_gone = disconnected(other)
    other_errors = stream_errors(other)
    other.auto_reconnect = False
    await c.plugin["xep_0077"].change_password("a new secret", timeout=10)
    await asyncio.wait_for(other_gone.wait(), 10)
    assert other_errors == ["reset"]  # the other client logs in again (as `user passwd`)
    # The asking client goes on.
    await c.plugin["xep_0030"].get_info("localhost", timeout=10)
    await disconnect(c)
    with pytest.raises(PermissionError):
        await connect(daemon, "bob@localhost", PASSWORD)
    again = await connect(daemon, "bob@localhost", "a new secret")
    await disconnect(again)


async def test_bad_password_change_is_refused(daemon):
    c = await connect(daemon, "alice@localhost", plugins=PLUGINS)
    with pytest.raises(IqError) as e:
        await c.plugin["xep_0077"].change_password("", timeout=10)  # §3.3: never an empty one
    assert e.value.iq["error"]["condition"] == "bad-request"
    with pytest.raises(IqError) as e:
        await c.plugin["xep_0077"].change_password("x", jid="bob@localhost", timeout=10)
    assert e.value.iq["error"]["condition"] == "forbidden"
    await disconnect(c)
    again = await connect(daemon, "alice@localhost", PASSWORD)
    await disconnect(again)


async def test_cancel_registration_deletes_the_account(daemon):
    c = await connect(daemon, "carol@localhost", plugins=PLUGINS)
    contact = await connect(daemon, "alice@localhost")
    await subscribe_both(c, contact)
    c.auto_reconnect = False
    gone = disconnected(c)
    errors = stream_errors(c)
    result = await c.plugin["xep_0077"].cancel_registration(timeout=10)
    assert result["type"] == "result"
    await asyncio.wait_for(gone.wait(), 10)
    assert errors == ["not-authorized"]  # §3.2
    # §3.2: its presence subscriptions are cancelled; the contact's roster says so.
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while contact.client_roster["carol@localhost"]["subscription"] != "none":
        assert loop.time() < end, contact.client_roster["carol@localhost"]["subscription"]
        await asyncio.sleep(0.05)
    await disconnect(contact)
    with pytest.raises(PermissionError):
        await connect(daemon, "carol@localhost", PASSWORD)
    assert "carol@localhost" not in daemon.cli("user", "list").stdout.split()
