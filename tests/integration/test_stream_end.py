"""The ends of a stream over real sockets, with the default configuration (issue 11 items 2
and 4): nothing is read after our closing tag, and the stream header's version is checked
(RFC 6120 §4.7.5, §4.9.3.25)."""

from __future__ import annotations

import base64
import socket
import ssl
import time

import pytest

from mbxmpp.xml import StreamHeader
from tests.integration.conftest import PASSWORD
from tests.rawclient import RawClient, client_ssl


# Before the fix the daemon read (and discarded) what followed a stream error until the close
# timeout: here 4 MB in plaintext, 450 MB over TLS. Now it reads nothing: the peer can only
# fill the socket buffers (ours is made small; the daemon's receive buffer starts at 128 KiB and
# grows only when it reads: about 0.2 MB in all) and, over TLS, the TLS layer's incoming buffer
# (about 1 MB more, measured).
MAX_ACCEPTED = {False: 1024 * 1024, True: 3 * 1024 * 1024}


def _header(version: str | None = "1.0") -> bytes:
    v = f" version='{version}'" if version is not None else ""
    return (f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            f"xmlns:stream='http://etherx.jabber.org/streams' to='localhost'{v}>").encode()


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def blocking_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
    sock.settimeout(5)
    return sock


def blast_until_reset(sock: socket.socket | ssl.SSLSocket) -> tuple[int, bool]:
    """Send an endless stanza; return how many bytes were accepted and whether the daemon
    ended the connection (a reset) within a generous deadline."""
    sock.settimeout(0.5)
    chunk = b"<message to='bob@localhost'><body>" + b"a" * 65536
    accepted = 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            accepted += sock.send(chunk)
            chunk = b"a" * 65536
        except (TimeoutError, ssl.SSLWantWriteError):
            continue  # not taken: the daemon does not read
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return accepted, True
    return accepted, False


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "starttls"])
def test_nothing_is_read_after_a_stream_error(daemon, tls):
    raw = blocking_socket()
    raw.connect(("127.0.0.1", daemon.c2s))
    sock: socket.socket | ssl.SSLSocket = raw
    sock.sendall(_header())
    read_until(sock, b"</stream:features>")
    if tls:
        sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        read_until(sock, b"<proceed")
        sock = client_ssl().wrap_socket(raw, server_hostname="localhost")
        sock.sendall(_header())
        read_until(sock, b"</stream:features>")
    # Before authentication only TLS and SASL may be sent (RFC 6120 §4.9.3.12).
    sock.sendall(b"<foo xmlns='urn:unknown'/>")
    reply = read_until(sock, b"</stream:stream>")
    assert b"<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in reply
    accepted, reset = blast_until_reset(sock)
    assert reset, f"still open after {accepted} bytes"
    assert accepted < MAX_ACCEPTED[tls], f"{accepted} bytes were taken after the stream error"
    sock.close()


async def test_stream_error_then_endless_stanza_leaves_others_served(daemon):
    c = await RawClient.connect(daemon.c2s)
    await c.login("alice", PASSWORD, resource="after-blast")
    await c.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await c.element()).get("type") == "result"
    await c.close()


# -- the stream header's version ------------------------------------------------------------

class VersionedClient(RawClient):
    """Sends every stream header with the given version attribute (None: none at all)."""

    version: str | None = "1.0"

    async def open(self, to: str = "localhost") -> object:
        self.parser.reset()
        await self.send(_header(self.version))
        ev = await self.next()
        assert isinstance(ev, StreamHeader), ev
        assert ev.attrs.get("version") == "1.0"  # what we speak, whatever was asked
        return await self.element()


async def _versioned(daemon, version: str | None) -> VersionedClient:
    c = await RawClient.connect(daemon.c2s)
    v = VersionedClient(c.reader, c.writer)
    v.version = version
    return v


@pytest.mark.parametrize("version", ["2.0", "3.1", "10.0"])
async def test_higher_major_version_is_unsupported(daemon, version):
    c = await _versioned(daemon, version)
    await c.send(_header(version))
    assert await c.stream_error() == "unsupported-version"
    await c.expect_closed()


@pytest.mark.parametrize("version", [None, "0.9", "x.y"])
async def test_no_or_pre_1_0_version_is_unsupported(daemon, version):
    # RFC 6120 §4.7.5: no version attribute means 0.9; pre-1.0 streams are not served.
    c = await _versioned(daemon, version)
    await c.send(_header(version))
    assert await c.stream_error() == "unsupported-version"
    await c.expect_closed()


@pytest.mark.parametrize("version", ["1.1", "1.0", "1.23"])
async def test_higher_minor_version_logs_in(daemon, version):
    c = await _versioned(daemon, version)
    features = await c.open()
    assert features.find("starttls", "urn:ietf:params:xml:ns:xmpp-tls") is not None
    await c.starttls()
    await c.open()
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    await c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    assert (await c.element()).tag == "success"
    await c.open()
    assert (await c.bind(f"v{version}")) == f"alice@localhost/v{version}"
    await c.close()
