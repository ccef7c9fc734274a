"""XEP-0156 discovery of the HTTP connection methods: ``/.well-known/host-meta`` (XRD, RFC 6415)
and ``/.well-known/host-meta.json`` (JRD), per virtual host by the request's Host header,
naming the WebSocket endpoint (RFC 7395 §4) and the BOSH one. A host we do not serve gets 404.

Served with ``Access-Control-Allow-Origin: *`` (XEP-0156 §3.2 and RFC 6415 §2: a web client on
another origin must be able to read it); it holds nothing but public URLs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aiohttp import web

from ..xml.element import _escape_attr
from ..xml.ns import NS_XRD, REL_BOSH, REL_WEBSOCKET

if TYPE_CHECKING:
    from ..server import Server

class HostMeta:
    def __init__(self, server: Server) -> None:
        self.server = server

    def links(self, host: str) -> list[tuple[str, str]]:
        base = self.server.http.public_url(host)
        ws = ("wss" + base[5:]) if base.startswith("https:") else ("ws" + base[4:])
        return [(REL_WEBSOCKET, ws + "/xmpp-websocket"), (REL_BOSH, base + "/http-bind")]

    def _host(self, request: web.Request) -> str:
        name = (request.host or "").lower()
        if name.startswith("["):  # an IPv6 literal, with or without a port
            name = name[:name.find("]") + 1]
        else:
            name = name.rsplit(":", 1)[0]
        name = name.rstrip(".")
        if name not in self.server.hosts:
            raise web.HTTPNotFound(text="no XMPP service for this host\n")
        return name

    async def xrd(self, request: web.Request) -> web.Response:
        links = "".join(f"<Link rel='{rel}' href='{_escape_attr(href)}'/>"
                        for rel, href in self.links(self._host(request)))
        body = f"<?xml version='1.0' encoding='utf-8'?><XRD xmlns='{NS_XRD}'>{links}</XRD>"
        return web.Response(text=body, content_type="application/xrd+xml", headers=_HEADERS)

    async def jrd(self, request: web.Request) -> web.Response:
        body = json.dumps({"links": [{"rel": rel, "href": href}
                                     for rel, href in self.links(self._host(request))]})
        return web.Response(text=body, content_type="application/json", headers=_HEADERS)


_HEADERS = {"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=3600"}


def register(server: Server) -> HostMeta:
    hm = HostMeta(server)
    server.http.add_route("GET", "/.well-known/host-meta", hm.xrd)
    server.http.add_route("GET", "/.well-known/host-meta.json", hm.jrd)
    return hm
