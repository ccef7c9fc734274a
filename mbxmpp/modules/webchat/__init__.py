"""The web chat: Converse.js served at /chat for every virtual host, configured for that host's
WebSocket endpoint with BOSH as fallback, under a Content-Security-Policy that allows only what
Converse.js needs. The assets come from `python -m mbxmpp webchat fetch` (assets.py)."""

from __future__ import annotations

import html
import json
import os
from typing import TYPE_CHECKING

from aiohttp import web

from ...core.modules import Module
from . import assets
from .options import WebChatConfig

if TYPE_CHECKING:
    from ...core.api import ModuleServer

# Converse.js loads its own chunks, emoji data and the OMEMO library (WebAssembly) from
# assets_path; lit and Bootstrap set inline style attributes; avatars come as data: URIs and
# shared files from our own upload service. Nothing from other origins (no third-party images:
# they would tell others who reads what), no inline script, no eval, no framing.
CSP = ("default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; media-src 'self' blob:; font-src 'self'; "
       "connect-src 'self' {ws}; worker-src 'self' blob:; manifest-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

INDEX = """<!DOCTYPE html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="/chat/dist/images/favicon.ico">
<link rel="stylesheet" href="/chat/dist/converse.min.css">
<script type="module" src="/chat/dist/converse.min.js"></script>
<script type="module" src="/chat/config.js"></script>
</head>
<body class="converse-fullscreen"></body>
</html>
"""

MISSING = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Web chat not installed</title></head>
<body><h1>The web chat is not installed</h1><p>{hint}</p></body>
</html>
"""


class WebChat(Module[WebChatConfig]):
    name = "webchat"
    description = "Converse.js web chat at /chat on the HTTP side"

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        cfg = self.options
        self.assets_dir = cfg.assets_dir or os.path.join(server.config.server.data_dir, "webchat")
        self.language = cfg.language

    async def start(self) -> None:
        http = self.server.http
        http.add_route("GET", "/chat", self.redirect)
        http.add_route("GET", "/chat/", self.index)
        http.add_route("GET", "/chat/config.js", self.config_js)
        http.add_route("GET", "/chat/dist/{path:.+}", self.asset)
        if not assets.installed(self.assets_dir):
            self.log.warning("%s", assets.install_hint(self.assets_dir))

    # -- handlers -----------------------------------------------------------------------------
    async def redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently("/chat/")

    async def index(self, request: web.Request) -> web.StreamResponse:
        if not assets.installed(self.assets_dir):
            hint = html.escape(assets.install_hint(self.assets_dir))
            return self._secure(web.Response(status=503, text=MISSING.format(hint=hint),
                                             content_type="text/html"), request)
        host = self._host(request)
        page = INDEX.format(lang=html.escape(self.language), title=html.escape(f"Chat – {host}"))
        resp = web.Response(text=page, content_type="text/html")
        resp.headers["Cache-Control"] = "no-cache"
        return self._secure(resp, request)

    async def config_js(self, request: web.Request) -> web.StreamResponse:
        host = self._host(request)
        ws, bosh = self._endpoints(request, host)
        settings = {
            "assets_path": "/chat/dist/",
            "authentication": "login",
            "allow_registration": False,
            "auto_reconnect": True,
            "websocket_url": ws,
            "bosh_service_url": bosh,   # Converse.js falls back to it when WebSocket fails
            "default_domain": host,
            "domain_placeholder": host,
            "i18n": self.language,
            "view_mode": "fullscreen",
            "discover_connection_methods": False,
            "loglevel": "warn",
            "muc_nickname_from_jid": True,   # a room nick from the mail address, no prompt
        }
        muc = self.server.components_of(host, "muc")
        if muc:
            settings["muc_domain"] = muc[0]
        # /chat/?transport=bosh: BOSH only (a network that breaks WebSocket; the browser test)
        body = (f"const settings = {json.dumps(settings, indent=1)};\n"
                "if (new URLSearchParams(location.search).get('transport') === 'bosh') "
                "delete settings.websocket_url;\n"
                "converse.initialize(settings);\n")
        resp = web.Response(text=body, content_type="application/javascript")
        resp.headers["Cache-Control"] = "no-cache"
        return self._secure(resp, request)

    async def asset(self, request: web.Request) -> web.StreamResponse:
        root = os.path.realpath(assets.release_dir(self.assets_dir))
        rel = request.match_info["path"]
        if "\0" in rel or rel.startswith("."):
            raise web.HTTPNotFound()
        path = os.path.realpath(os.path.join(root, rel))
        if not path.startswith(root + os.sep) or not os.path.isfile(path):
            raise web.HTTPNotFound()
        resp = web.FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})
        return self._secure(resp, request)

    # -- helpers ------------------------------------------------------------------------------
    def _host(self, request: web.Request) -> str:
        """The virtual host the page is for: the Host header's name if we serve it, else the
        first domain (the chat reached by address or through a proxy)."""
        name = (request.host or "").rsplit(":", 1)[0].strip("[]").lower()
        return name if name in self.server.hosts else self.server.config.server.domains[0]

    def _endpoints(self, request: web.Request, host: str) -> tuple[str, str]:
        if self.server.config.http.public_url is not None:
            base = self.server.http.public_url(host)
        else:  # where the page came from: the browser can reach it
            base = f"{request.scheme}://{request.host}"
        ws = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
        return ws + "/xmpp-websocket", base + "/http-bind"

    def _secure(self, resp: web.StreamResponse, request: web.Request) -> web.StreamResponse:
        ws, _ = self._endpoints(request, self._host(request))
        resp.headers["Content-Security-Policy"] = CSP.format(ws=ws.rsplit("/", 1)[0])
        resp.headers["X-Frame-Options"] = "DENY"
        return resp
