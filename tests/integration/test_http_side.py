"""The daemon's HTTP side over real sockets: HTTPS on [http] listen with the host's certificate
by SNI, and the HTTP errors for oversized request lines and headers."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.daemon import Daemon
from tests.rawclient import client_ssl


@pytest.fixture(scope="module")
def daemon():
    d = Daemon(domains=("localhost", "example.test"))
    d.start()
    yield d
    d.finish()



async def _raw(port: int, request: bytes, server_hostname: str = "localhost") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ssl(),
                                                   server_hostname=server_hostname)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    return data


async def test_https_served_with_tls_1_2_or_later(daemon):
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http, ssl=client_ssl(),
                                                   server_hostname="example.test")
    sslobj = writer.get_extra_info("ssl_object")
    assert sslobj.version() in ("TLSv1.2", "TLSv1.3")
    writer.close()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"https://127.0.0.1:{daemon.http}/no-such-path", ssl=client_ssl()) as r:
            assert r.status == 404
            assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_oversized_request_line_is_414(daemon):
    data = await _raw(daemon.http, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 414") or data.startswith(b"HTTP/1.0 414"), data[:100]


async def test_oversized_header_is_431(daemon):
    data = await _raw(daemon.http, b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n")
    assert b" 431 " in data.split(b"\r\n", 1)[0], data[:100]


async def test_garbage_is_400_and_the_server_goes_on(daemon):
    data = await _raw(daemon.http, b"\x00\x01 nonsense\r\n\r\n")
    assert b" 400 " in data.split(b"\r\n", 1)[0], data[:100]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"https://127.0.0.1:{daemon.http}/", ssl=client_ssl()) as r:
            assert r.status == 404
