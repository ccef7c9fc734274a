"""XEP-0156 host-meta over the real HTTP side: the WebSocket and BOSH URLs of the host the
request names, XRD and JSON, 404 for a host we do not serve."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import aiohttp
import pytest

from tests.daemon import Daemon
from tests.rawclient import client_ssl

XRD = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"


@pytest.fixture(scope="module")
def daemon():
    d = Daemon(domains=("localhost", "example.test"))
    d.start()
    yield d
    d.finish()


async def _get(daemon, path, host):
    async with aiohttp.ClientSession() as s:
        async with s.get(f"https://127.0.0.1:{daemon.http}{path}", ssl=client_ssl(),
                         headers={"Host": host}) as r:
            return r.status, r.headers, await r.read()


@pytest.mark.parametrize("host", ["localhost", "example.test", "example.test:443", "EXAMPLE.test."])
async def test_xrd_names_the_hosts_endpoints(daemon, host):
    status, headers, body = await _get(daemon, "/.well-known/host-meta", host)
    assert status == 200 and headers["Content-Type"].startswith("application/xrd+xml")
    assert headers["Access-Control-Allow-Origin"] == "*"
    name = host.split(":")[0].lower().rstrip(".")
    links = {link.get("rel"): link.get("href") for link in ET.fromstring(body).iter(XRD + "Link")}
    assert links == {"urn:xmpp:alt-connections:websocket": f"wss://{name}:{daemon.http}/xmpp-websocket",
                     "urn:xmpp:alt-connections:xbosh": f"https://{name}:{daemon.http}/http-bind"}


async def test_json_names_the_hosts_endpoints(daemon):
    status, headers, body = await _get(daemon, "/.well-known/host-meta.json", "example.test")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    links = {link["rel"]: link["href"] for link in json.loads(body)["links"]}
    assert links["urn:xmpp:alt-connections:websocket"] == f"wss://example.test:{daemon.http}/xmpp-websocket"
    assert links["urn:xmpp:alt-connections:xbosh"] == f"https://example.test:{daemon.http}/http-bind"


@pytest.mark.parametrize("path", ["/.well-known/host-meta", "/.well-known/host-meta.json"])
@pytest.mark.parametrize("host", ["elsewhere.example", "127.0.0.1", "[::1]:5443", "conference.localhost"])
async def test_unknown_host_is_404(daemon, path, host):
    status, _, _ = await _get(daemon, path, host)
    assert status == 404


async def test_the_advertised_websocket_url_serves_xmpp(daemon):
    """What host-meta names is where a client connects (the path, with the xmpp sub-protocol)."""
    _, _, body = await _get(daemon, "/.well-known/host-meta.json", "localhost")
    url = {link["rel"]: link["href"] for link in json.loads(body)["links"]}["urn:xmpp:alt-connections:websocket"]
    path = url.split(str(daemon.http), 1)[1]
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"wss://127.0.0.1:{daemon.http}{path}", protocols=("xmpp",),
                                ssl=client_ssl()) as ws:
            await ws.send_str("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>")
            assert (await ws.receive_str()).startswith("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'")
