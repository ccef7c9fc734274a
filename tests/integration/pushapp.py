"""A raw client playing an XMPP Push Service (XEP-0357 app server) for the over-the-wire tests."""

from __future__ import annotations

import asyncio
import contextlib

from mbxmpp.xml.element import Element
from tests.daemon import Daemon
from tests.rawclient import RawClient

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
APPF = "appserver@localhost/srv"


class AppServer:
    """A raw client acting as the XMPP Push Service: answers every publish with a result and
    queues it; anything else it gets is queued in ``other``."""

    def __init__(self, c: RawClient) -> None:
        self.c = c
        self.pushes: asyncio.Queue[Element] = asyncio.Queue()
        self.other: asyncio.Queue[Element] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._run())

    @classmethod
    async def start(cls, daemon: Daemon, password: str) -> AppServer:
        c = await RawClient.connect(daemon.c2s)
        assert await c.login("appserver", password, resource="srv") == APPF
        return cls(c)

    async def _run(self) -> None:
        while True:
            el = await self.c.element(timeout=3600)
            if el.tag == "iq" and el.get("type") == "set" and el.find("pubsub", NS_PUBSUB) is not None:
                await self.c.send(f"<iq type='result' to='{el.get('from')}' id='{el.get('id')}'/>")
                self.pushes.put_nowait(el)
            else:
                self.other.put_nowait(el)

    async def ping(self, id_: str) -> None:
        """A round trip through the server on the app server's stream."""
        await self.c.send(f"<iq type='get' id='{id_}' to='localhost'>"
                          "<ping xmlns='urn:xmpp:ping'/></iq>")
        while True:
            el = await asyncio.wait_for(self.other.get(), 5)
            if el.tag == "iq" and el.get("id") == id_:
                assert el.get("type") == "result", el
                return

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task
        await self.c.close()
