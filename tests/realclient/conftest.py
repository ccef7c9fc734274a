"""Fixtures for the real-client tier: a spawned daemon and slixmpp clients against it."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Callable, Iterator

import pytest
import slixmpp

from tests.daemon import Daemon

USERS = ["alice@localhost", "bob@localhost", "carol@localhost"]
PASSWORD = "correct horse"


def running_daemon(users: list[str], **kw: Any) -> Iterator[Daemon]:
    """A started daemon with ``users`` (password PASSWORD), finished afterwards: the body of
    the module-scoped ``daemon`` fixtures."""
    d = Daemon(**kw)
    for u in users:
        d.add_user(u, PASSWORD)
    d.start()
    yield d
    d.finish()


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    yield from running_daemon(USERS)


def insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that records what it receives."""

    def __init__(self, jid: str, password: str, **kw: object) -> None:
        super().__init__(jid, password, **kw)
        self.ssl_context = insecure_context()
        self.messages: asyncio.Queue = asyncio.Queue()
        self.presences: asyncio.Queue = asyncio.Queue()
        self.session_started = asyncio.Event()
        self.failed_auth = asyncio.Event()
        self.add_event_handler("session_start", self._started)
        self.add_event_handler("failed_all_auth", lambda _e: self.failed_auth.set())
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("presence", self.presences.put_nowait)

    async def _started(self, _event: object) -> None:
        self.session_started.set()


async def connect(daemon: Daemon, jid: str, password: str = PASSWORD, *, direct_tls: bool = False,
                  send_presence: bool = True, get_roster: bool = True, plugins: tuple[str, ...] = (),
                  timeout: float = 10.0, **kw: object) -> Client:
    c = Client(jid, password, **kw)
    for p in plugins:
        c.register_plugin(p)
    if direct_tls:
        c.enable_starttls = False
        c.enable_direct_tls = True
        c.enable_plaintext = False
    else:
        c.enable_direct_tls = False
        c.enable_plaintext = False
    c.connect("127.0.0.1", daemon.tls if direct_tls else daemon.c2s)
    await asyncio.wait_for(_wait_start(c), timeout)
    if get_roster:
        await c.get_roster()
    if send_presence:
        c.send_presence()
    return c


async def _wait_start(c: Client) -> None:
    start = asyncio.ensure_future(c.session_started.wait())
    failed = asyncio.ensure_future(c.failed_auth.wait())
    done, pending = await asyncio.wait({start, failed}, return_when=asyncio.FIRST_COMPLETED)
    for p in pending:
        p.cancel()
    if failed in done:
        raise PermissionError("authentication failed")


async def next_match(q: asyncio.Queue, pred: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    """The next item of ``q`` that satisfies ``pred`` (others are dropped)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        item = await asyncio.wait_for(q.get(), max(0.01, end - loop.time()))
        if pred(item):
            return item


async def disconnect(*clients: Client) -> None:
    # slixmpp replaces `disconnected` once a disconnect completes: wait on what disconnect() returns.
    try:
        await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients),
                                              return_exceptions=True), 10)
    except asyncio.TimeoutError:
        pass


async def subscribe_both(a, b, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Mutual presence subscription (slixmpp auto-authorizes and auto-subscribes back); returns
    once both rosters say 'both'."""
    changed = asyncio.Event()
    for c in (a, b):
        c.add_event_handler("roster_update", lambda _iq: changed.set())
        c.add_event_handler("roster_subscription_authorized", lambda _p: changed.set())
    a_bare, b_bare = a.boundjid.bare, b.boundjid.bare

    def done() -> bool:
        return (a.client_roster[b_bare]["subscription"] == "both"
                and b.client_roster[a_bare]["subscription"] == "both")

    a.send_presence(pto=b_bare, ptype="subscribe")
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not done():
        changed.clear()
        await asyncio.wait_for(changed.wait(), max(0.01, end - loop.time()))
