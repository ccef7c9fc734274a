"""A SOCKS5 CONNECT (RFC 1928) by host name, for s2s through Tor's SocksPort: the proxy resolves
the name, so a ``.onion`` domain never reaches DNS."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct


class SocksError(OSError):
    pass


REPLIES = {1: "general failure", 2: "not allowed by ruleset", 3: "network unreachable",
           4: "host unreachable", 5: "connection refused", 6: "TTL expired",
           7: "command not supported", 8: "address type not supported"}


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = await loop.sock_recv(sock, n - len(out))
        if not chunk:
            raise SocksError("the SOCKS proxy closed the connection")
        out += chunk
    return out


async def socks5_connect(proxy: tuple[str, int], host: str, port: int) -> socket.socket:
    """A connected socket to ``host:port`` through the SOCKS5 proxy (no authentication)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(proxy[0], proxy[1], type=socket.SOCK_STREAM)
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_, proto)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, addr)
        await loop.sock_sendall(sock, b"\x05\x01\x00")           # version 5, one method: none
        ver, method = await _recv_exactly(loop, sock, 2)
        if ver != 5 or method != 0:
            raise SocksError("the SOCKS proxy wants an authentication we do not do")
        name = host.encode("idna")
        if len(name) > 255:
            raise SocksError("host name too long for SOCKS5")
        await loop.sock_sendall(sock, b"\x05\x01\x00\x03" + bytes([len(name)]) + name
                                + struct.pack("!H", port))
        ver, rep, _, atyp = await _recv_exactly(loop, sock, 4)
        if ver != 5 or rep != 0:
            raise SocksError(f"SOCKS5: {REPLIES.get(rep, f'error {rep}')}")
        if atyp == 1:
            await _recv_exactly(loop, sock, 4 + 2)
        elif atyp == 4:
            await _recv_exactly(loop, sock, 16 + 2)
        elif atyp == 3:
            (n,) = await _recv_exactly(loop, sock, 1)
            await _recv_exactly(loop, sock, n + 2)
        else:
            raise SocksError("SOCKS5: bad address type in the reply")
        return sock
    except BaseException:
        sock.close()
        raise


def parse_proxy(value: str) -> tuple[str, int]:
    """"127.0.0.1:9050" or "[::1]:9050" -> (host, port); ValueError otherwise."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 < int(port_s) < 65536 or not host:
        raise ValueError(f"expected host:port, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    return host, int(port_s)
