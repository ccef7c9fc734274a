"""In-process server for module tests (Prosody's scansion idea, without sockets).

    async with ServerHarness(modules=["roster", "presence"]) as h:
        alice = await h.login("alice@localhost", "res1")
        h.send(alice, "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        reply = await alice.expect(lambda s: s.get("id") == "r1")

Streams are fakes that record what the server writes; stanzas go through the real router,
hooks and modules, with the memory storage backend (or LMDB in a temp dir).
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from typing import Any, Callable

from mbxmpp.config import Config, ServerConfig
from mbxmpp.jid import JID
from mbxmpp.server import Server
from mbxmpp.xml import Element, PyXMLParser


def parse_stanza(xml: str) -> Element:
    p = PyXMLParser()
    p.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    events = p.feed(xml.encode())
    assert len(events) == 1, events
    return events[0]


class FakeClient:
    """Stands in for a C2SStream: records stanzas the server sends to this session."""

    def __init__(self, harness: ServerHarness, jid: str) -> None:
        self.harness = harness
        self.received: list[Element] = []
        self.session: Any = None
        self.jid = jid
        self._waiter: asyncio.Event = asyncio.Event()
        self.closed = False
        self.sm = None
        self.peer = "127.0.0.1:5222"

    # C2SStream's interface used by sessions
    def send_stanza(self, stanza: Element) -> None:
        # Keep what went over the wire, as the client would parse it.
        self.received.append(parse_stanza(stanza.to_bytes().decode()))
        self._waiter.set()

    def close(self, error: Any = None) -> None:
        self.closed = True

    def enable_sm(self, sm: Any, answer: Callable[[Any], None]) -> None:
        self.sm = sm

    async def expect(self, pred: Callable[[Element], bool] = lambda s: True,
                     timeout: float = 2.0) -> Element:
        """Wait for (and remove) the first received stanza matching ``pred``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, s in enumerate(self.received):
                if pred(s):
                    return self.received.pop(i)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.jid}: nothing matched; got {self.received!r}")
            self._waiter.clear()
            try:
                await asyncio.wait_for(self._waiter.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def settle(self) -> list[Element]:
        """Let pending work run, then return and clear everything received."""
        for _ in range(5):
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        out, self.received = self.received, []
        return out


class ServerHarness:
    def __init__(self, modules: list[str], domains: tuple[str, ...] = ("localhost",),
                 storage: str = "memory", **sections: Any) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        server_cfg = ServerConfig(domains=domains, data_dir=self._tmp.name, modules=tuple(modules))
        if "proxy65" not in sections:  # (its real port 5000 would clash with a daemon beside us)
            sections["proxy65"] = dataclasses.replace(Config().proxy65, listen=(("127.0.0.1", 0),))
        self.config = dataclasses.replace(Config(), server=server_cfg, **sections)
        self.storage_kind = storage
        self.server: Server = None  # type: ignore[assignment]

    async def __aenter__(self) -> ServerHarness:
        self.server = Server(self.config, storage_kind=self.storage_kind)
        await self.server.start_modules()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop_modules()
        await self.server.storage.close()
        self._tmp.cleanup()

    async def create_user(self, bare: str, password: str = "secret") -> None:
        await self.server.accounts.create(bare, password)

    async def login(self, bare: str, resource: str | None = None, *, create: bool = True,
                    presence: bool = False) -> FakeClient:
        if create and not self.server.accounts.exists(bare):
            await self.create_user(bare)
        client = FakeClient(self, bare)
        client.session = self.server.bind(client, JID.parse(bare), resource)  # type: ignore[arg-type]
        client.jid = client.session.full
        if presence:
            self.send(client, "<presence/>")
            await client.settle()
        return client

    def send(self, client: FakeClient, xml: str | Element) -> None:
        """As if the client wrote this stanza (from is stamped like the c2s stream does)."""
        st = parse_stanza(xml) if isinstance(xml, str) else xml
        st.attrs["from"] = client.session.full
        st.clear_cache()
        self.server.route_from_client(st, client.session)

    def disconnect(self, client: FakeClient) -> None:
        """The connection is gone, as the c2s stream reports it (Stream Management may keep it)."""
        client.closed = True
        self.server.stream_closed(client)  # type: ignore[arg-type]
