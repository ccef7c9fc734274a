"""Service Outage Status (XEP-0455): the server's disco#info names the address of a status
document, which clients read when they cannot connect or before a planned maintenance.

The HTTP side serves it at /outage.json from ``<data_dir>/outage.json``, written by the operator
(XEP-0455 §4: ``{"planned": true, "beginning": "...", "expected_end": "...", "message":
{"en": "..."}}``); without that file, or with one that is not a JSON object (at most 64 KiB,
UTF-8, no NaN), it is ``null``: no outage.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from typing import TYPE_CHECKING

from aiohttp import web

from ..core.modules import Module
from .disco import Disco
from ..xml.element import Element
from ..xml.ns import NS_DATA

if TYPE_CHECKING:
    from ..core.api import ModuleServer

log = logging.getLogger(__name__)

NS_SOS = "urn:xmpp:sos:0"
PATH = "/outage.json"
DOCUMENT = "outage.json"
MAX_DOCUMENT = 64 * 1024


def _read_regular_file(path: str, limit: int) -> bytes:
    """At most ``limit`` bytes of the file at ``path``; OSError if it is not a regular file (a
    named pipe would block the loop at open or read, a device never end)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _not_json(name: str) -> None:
    """NaN and Infinity: Python's json reads them, clients' JSON parsers do not (RFC 8259 §6)."""
    raise ValueError(f"{name} is not JSON")


class Outage(Module):
    name = "outage"
    description = "Service Outage Status: where clients read of planned and ongoing outages"
    xeps = {"0455": "0.2.0"}
    uses = (Disco,)  # the address is in the server's disco#info

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.document_path = os.path.join(server.data_dir, DOCUMENT)

    async def start(self) -> None:
        http = self.server.http
        if not http.enabled:
            return  # nothing to point at
        http.add_route("GET", PATH, self.document)
        disco = self.optional(Disco)
        if disco is not None:
            disco.extra_forms.append(self.form)

    def form(self, host: str) -> Element:
        """The server's extended disco#info (XEP-0128) naming the status address."""
        x = Element("x", NS_DATA, {"type": "result"})
        x.add("field", attrs={"var": "FORM_TYPE", "type": "hidden"}).add("value", text=NS_SOS)
        f = x.add("field", attrs={"var": "external-status-addresses", "type": "list-multi"})
        f.add("value", text=self.server.http.public_url(host) + PATH)
        return x

    async def document(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = _read_regular_file(self.document_path, MAX_DOCUMENT + 1)
            if len(raw) > MAX_DOCUMENT:
                raise ValueError(f"larger than {MAX_DOCUMENT} bytes")
            status = json.loads(raw.decode("utf-8"), parse_constant=_not_json)
            if not isinstance(status, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            status = None
        except (OSError, ValueError, RecursionError) as e:  # (RecursionError: nested too deep)
            log.warning("outage: %s is not a JSON status document (%s); serving null", self.document_path, e)
            status = None
        # Read by web clients on other origins too; never cached past a change of status.
        return web.json_response(status, headers={"Cache-Control": "no-cache",
                                                  "Access-Control-Allow-Origin": "*"})
