"""One aiohttp application on the daemon's loop, served on ``[http] listen`` with the daemon's
certificates (SNI per host). Modules register their routes before the listener starts."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

if TYPE_CHECKING:
    from ..config import Config
    from ..net.tls import TLSContexts

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Request line and header limits. aiohttp's parser answers 400 for anything over its own limits,
# so those are set higher and the middleware answers what RFC 9110 names below them: 414 for a
# long request target, 431 for oversized header fields.
MAX_TARGET_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADER_BYTES = 32768
PARSER_LIMIT = 65536
MAX_HEADERS = 100
# How long an idle keep-alive connection is kept: small, so idle browsers cannot pile them up.
KEEPALIVE_TIMEOUT = 75.0
# What aiohttp reads ahead per connection (it pauses the socket at twice this): 64 KiB, the
# upload handler's chunk, instead of 256 KiB, so parallel uploads do not each park half a MiB.
READ_BUFSIZE = 64 * 1024
# Bodies that a handler reads whole (await request.read()); streaming handlers read in chunks.
CLIENT_MAX_SIZE = 1024 * 1024


class HTTPService:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=[_request_limits])
        self.app.on_response_prepare.append(_security_headers)
        self._runner: web.AppRunner | None = None
        self.sites: list[web.BaseSite] = []

    @property
    def enabled(self) -> bool:
        return bool(self.config.http.listen)

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Register a route; only before the service starts (aiohttp freezes the router)."""
        self.app.router.add_route(method, path, handler)

    def public_url(self, host: str | None = None) -> str:
        """Base URL for links given to clients of ``host`` (no trailing slash)."""
        cfg = self.config
        if cfg.http.public_url is not None:
            if host is None or len(cfg.server.domains) == 1:
                return cfg.http.public_url
            # One public URL for several hosts: keep its scheme and port, swap the host name
            # only when the configured URL names one of our hosts.
            parts = urlsplit(cfg.http.public_url)
            if parts.hostname in cfg.server.domains and host in cfg.server.domains:
                netloc = host if parts.port is None else f"{host}:{parts.port}"
                return parts._replace(netloc=netloc).geturl()
            return cfg.http.public_url
        port = self.bound_port() or (cfg.http.listen[0][1] if cfg.http.listen else 5443)
        scheme = "https" if cfg.http.tls else "http"
        return f"{scheme}://{host or cfg.server.domains[0]}:{port}"

    def bound_port(self) -> int | None:
        for site in self.sites:
            server = getattr(site, "_server", None)
            for sock in getattr(server, "sockets", None) or ():
                return int(sock.getsockname()[1])
        return None

    async def start(self, tls: TLSContexts | None) -> None:
        if not self.enabled:
            return
        self._runner = web.AppRunner(self.app, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT,
                                     max_line_size=PARSER_LIMIT, max_field_size=PARSER_LIMIT,
                                     max_headers=MAX_HEADERS, handle_signals=False,
                                     read_bufsize=READ_BUFSIZE)
        await self._runner.setup()
        ssl_ctx = tls.context(alpn=["http/1.1"]) if (tls is not None and self.config.http.tls) else None
        for host, port in self.config.http.listen:
            site = web.TCPSite(self._runner, host, port, ssl_context=ssl_ctx, backlog=1024,
                               reuse_address=True)
            await site.start()
            self.sites.append(site)
            log.info("http%s listening on %s:%d", "s" if ssl_ctx else "", host, port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            self.sites.clear()


async def _security_headers(request: web.Request, resp: web.StreamResponse) -> None:
    # Every response, errors included: no MIME sniffing, no URL (upload secrets) in Referer.
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    resp.headers["Server"] = "mbxmpp"  # no library versions for scanners


@web.middleware
async def _request_limits(request: web.Request, handler: Handler) -> web.StreamResponse:
    if len(request.raw_path) > MAX_TARGET_SIZE:
        raise web.HTTPRequestURITooLong()
    total = 0
    for name, value in request.raw_headers:
        size = len(name) + len(value)
        total += size + 4
        if size > MAX_FIELD_SIZE or total > MAX_HEADER_BYTES:
            raise web.HTTPRequestHeaderFieldsTooLarge()
    return await handler(request)
