"""SOCKS5 Bytestreams proxy (XEP-0065) at proxy.<domain>: the streamhost query, activation, and
the SOCKS5 listener (relay.py) started with the module."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from typing import TYPE_CHECKING

from ...core.hosts import ComponentModule
from ...core.iq import IQContext
from ...core.modules import COMPONENT, iq_handler
from ...errors import StanzaError
from ...jid import JID, JIDError
from ...xml.element import Element
from ...xml.ns import NS_BYTESTREAMS
from .relay import Relay, SocksConnection
from .options import Proxy65Config

if TYPE_CHECKING:
    from ...core.api import ModuleServer


class Proxy65(ComponentModule[Proxy65Config]):
    name = "proxy65"
    description = "SOCKS5 Bytestreams proxy"
    xeps = {"0065": "1.8.2"}
    component_section = "proxy65"
    component_name = "SOCKS5 Bytestreams Proxy"
    component_identities = [("proxy", "bytestreams", "SOCKS5 Bytestreams Proxy")]
    component_features = [NS_BYTESTREAMS]

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.cfg = self.options
        self.relay = Relay(self.cfg)
        self.listeners: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for host, port in self.cfg.listen:
            srv = await loop.create_server(lambda: SocksConnection(self.relay), host, port,
                                           backlog=1024, reuse_address=True)
            self.listeners.append(srv)
            self.log.info("proxy65 (SOCKS5) listening on %s:%d", host, self.bound_port() or port)

    async def stop(self) -> None:
        for srv in self.listeners:
            srv.close()
        self.relay.close_all()
        for srv in self.listeners:
            await srv.wait_closed()
        self.listeners.clear()

    def bound_port(self) -> int | None:
        for srv in self.listeners:
            for sock in getattr(srv, "sockets", None) or ():
                return int(sock.getsockname()[1])
        return None

    def public_host(self, parent: str) -> str:
        if self.cfg.public_host:
            return self.cfg.public_host
        host = self.cfg.listen[0][0] if self.cfg.listen else parent
        try:
            if ipaddress.ip_address(host).is_unspecified:
                return parent  # listening everywhere: the domain's name is the best guess
        except ValueError:
            pass
        return host

    def _check_user(self, ctx: IQContext) -> None:
        if ctx.frm.local is None or not self.server.is_local(ctx.frm.domain):
            raise StanzaError("forbidden", "the proxy is for this server's users")

    @iq_handler("get", NS_BYTESTREAMS, "query", scope=COMPONENT)
    def streamhost(self, iq: Element, ctx: IQContext) -> Element:
        self._check_user(ctx)
        assert ctx.host is not None
        port = self.bound_port()
        if port is None:
            raise StanzaError("not-allowed", "the proxy is not listening")
        q = Element("query", NS_BYTESTREAMS)
        q.add("streamhost", attrs={"jid": ctx.host.domain, "host": self.public_host(ctx.host.parent),
                                   "port": str(port)})
        return q

    @iq_handler("set", NS_BYTESTREAMS, "query", scope=COMPONENT)
    def activate(self, iq: Element, ctx: IQContext) -> None:
        self._check_user(ctx)
        q = iq.first_child()
        assert q is not None
        sid = q.get("sid")
        target_text = q.findtext("activate")
        if not sid or not target_text:
            raise StanzaError("bad-request", "activation needs a sid and an <activate/> target")
        try:
            target = JID.parse(target_text.strip())
        except JIDError:
            raise StanzaError("jid-malformed", "the <activate/> target is not a JID") from None
        # The requester is the sender of this IQ: a third party's hash cannot match (§6.3.3).
        digest = hashlib.sha1((sid + ctx.frm.full + target.full).encode()).hexdigest()
        refused = self.relay.activate(digest, ctx.frm.bare)
        if refused is not None:
            raise StanzaError(refused[0], refused[1])
        return None
