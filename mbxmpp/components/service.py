"""External components on the wire: the listener, one connection per component, and the
router's route for each configured domain.

Every configured domain is routed here from the start, connected or not: while its component
is away, stanzas to it bounce with ``service-unavailable`` (type ``wait``, as Prosody does),
rather than going to federation and DNS. A component's stanzas enter the router as a remote
server's do (``from`` is checked by the stream): to local accounts, to the server, to other
components, and to other servers over s2s from the component's domain.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..core.admission import PreauthAdmission
from ..errors import StanzaError, StreamError
from ..jid import JID, JIDError
from ..net.connection import TCPStreamConnection
from ..xml.element import Element
from .stream import ComponentStream

if TYPE_CHECKING:
    from ..server import Server
    from .options import ComponentsConfig

log = logging.getLogger(__name__)

# Components are few and local: a small pre-auth budget is plenty.
MAX_UNAUTHENTICATED = 100


class ExternalComponent:
    """The router's route to one configured domain (core/router.py's ``Component``)."""

    __slots__ = ("domain", "name", "router", "stream")

    def __init__(self, domain: str, name: str | None, service: ComponentService) -> None:
        self.domain = domain
        self.name = name
        self.router = service.server.router
        self.stream: ComponentStream | None = None   # the connected component, if any

    def receive(self, stanza: Element, frm: JID, to: JID) -> None:
        stream = self.stream
        if stream is not None:
            stream.send_stanza(stanza)
        elif stanza.attrs.get("type") not in ("result", "unavailable"):
            # (errors are never answered either: router.bounce). Unavailable presence asks for
            # nothing; bouncing it would also reach presence.py's _go_away while it iterates
            # session.directed (a synchronous bounce removes the target: RuntimeError).
            self.router.bounce(stanza, StanzaError("service-unavailable", "the component is not connected",
                                                   type="wait"))


class ComponentService:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.config: ComponentsConfig = server.config.components
        self.routes = {domain: ExternalComponent(domain, host.name, self)
                       for domain, host in self.config.hosts.items()}
        self.admission = PreauthAdmission(max_total=MAX_UNAUTHENTICATED)
        self.listeners: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        router = self.server.router
        for domain, route in list(self.routes.items()):
            if domain in router.components or domain in self.server.hosts:
                # (a domain added at run time since: the host keeps it, no component may serve it)
                log.error("components.hosts: %s is already served here; no component for it", domain)
                del self.routes[domain]
                continue
            router.components[domain] = route
        disco = self.server.modules.get("disco")
        if disco is not None:
            disco.host_items.append(self._disco_items)  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        for host, port in self.config.listening:
            srv = await loop.create_server(lambda: ComponentConnection(self), host, port,
                                           backlog=128, reuse_address=True)
            self.listeners.append(srv)
            log.info("external components (XEP-0114) listening on %s:%d for %s", host, port,
                     ", ".join(sorted(self.routes)))

    def stop(self) -> None:
        """Close the listeners and the component streams; the domains are no longer routed."""
        for srv in self.listeners:
            srv.close()
        self.listeners.clear()
        for route in self.routes.values():
            if route.stream is not None:
                route.stream.fail(StreamError("system-shutdown"))
            if self.server.router.components.get(route.domain) is route:
                del self.server.router.components[route.domain]

    def _disco_items(self, parent: str) -> list[tuple[str, str | None, str | None]]:
        """The components whose domain is a subdomain of ``parent``, in its disco#items
        (connected or not, as Prosody lists them)."""
        return [(d, r.name, None) for d, r in sorted(self.routes.items()) if d.endswith("." + parent)]

    # -- what the streams call --------------------------------------------------------------
    def secret_of(self, domain: str) -> str | None:
        host = self.config.hosts.get(domain)
        return host.secret if host is not None and domain in self.routes else None

    def authenticated(self, stream: ComponentStream) -> StreamError | None:
        route = self.routes[stream.domain]
        if route.stream is not None:
            log.warning("component %s: %s is already connected (from %s); refused", stream.peer,
                        stream.domain, route.stream.peer)
            return StreamError("conflict", "a component is already connected for this domain")
        route.stream = stream
        log.info("component %s: %s connected", stream.peer, stream.domain)
        return None

    def stanza_from(self, stream: ComponentStream, stanza: Element) -> None:
        attrs = stanza.attrs
        frm = attrs.get("from")
        if frm is None:
            attrs["from"] = stream.domain  # COMPAT: as Prosody, the component's own domain
        else:
            try:
                domain = JID.parse(frm).domain
            except JIDError:
                domain = None
            if domain != stream.domain:
                raise StreamError("invalid-from", f"not an address at {stream.domain}")
        if "to" not in attrs:
            # As Prosody: refused, the stream stays (XEP-0114 §3: stanzas MUST have 'to').
            self.server.router.bounce(stanza, StanzaError("bad-request", "a stanza needs 'to'"))
            return
        self.server.router.route_from_peer(stanza)

    def stream_closed(self, stream: ComponentStream) -> None:
        route = self.routes.get(stream.domain)
        if route is not None and route.stream is stream:
            route.stream = None
            log.info("component %s: %s disconnected", stream.peer, stream.domain)


class ComponentConnection(TCPStreamConnection):
    """One component's TCP connection (plain: components connect over loopback)."""

    __slots__ = ()
    transport_name = "component"  # (the metrics' connections by transport)

    def __init__(self, service: ComponentService) -> None:
        cfg = service.config
        super().__init__(service.server, max_stanza_size=cfg.max_stanza_size,
                         auth_timeout=cfg.auth_timeout, admission=service.admission)
        # [limits] stanzas_per_session is one user's budget; a bridge speaks for many.
        self._throttle = None
        self._attach(ComponentStream(service, self._write, max_stanza_size=cfg.max_stanza_size))
