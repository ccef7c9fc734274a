"""TLS policy over real sockets: SNI picks the virtual host's certificate, TLS < 1.2 and weak
suites are refused, and the direct-TLS port speaks ALPN xmpp-client (XEP-0368)."""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mbxmpp.net.tls import ensure_self_signed
from tests.daemon import Daemon
from tests.rawclient import RawClient


@pytest.fixture(scope="module")
def daemon():
    certdir = tempfile.mkdtemp(prefix="mbxmpp-certs-")
    cert, key = ensure_self_signed(os.path.join(certdir, "ex"), ["example.test"])
    d = Daemon(domains=("localhost", "example.test"),
               extra=f'[tls.domains."example.test"]\ncert = "{cert}"\nkey = "{key}"\n')
    d.start()
    yield d
    assert d.stop() == 0
    d.cleanup()


def _ctx(**kw) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


async def _peer_cn(port: int, name: str) -> tuple[str, str | None, str]:
    ctx = _ctx()
    ctx.set_alpn_protocols(["xmpp-client"])
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name)
    obj = w.get_extra_info("ssl_object")
    cert = x509.load_der_x509_certificate(obj.getpeercert(binary_form=True))
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    res = (cn, obj.selected_alpn_protocol(), obj.version())
    w.close()
    return res  # type: ignore[return-value]


async def test_sni_selects_virtual_host_certificate(daemon):
    cn, alpn, version = await _peer_cn(daemon.tls, "example.test")
    assert cn == "example.test"
    assert alpn == "xmpp-client"
    assert version in ("TLSv1.2", "TLSv1.3")
    cn, _, _ = await _peer_cn(daemon.tls, "localhost")
    assert cn == "localhost"


async def test_tls_1_1_refused(daemon):
    ctx = _ctx(minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        r, w = await asyncio.open_connection("127.0.0.1", daemon.tls, ssl=ctx)
        w.close()


async def test_non_forward_secret_suite_refused(daemon):
    ctx = _ctx(maximum_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("AES128-GCM-SHA256")  # RSA key exchange: no forward secrecy
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        r, w = await asyncio.open_connection("127.0.0.1", daemon.tls, ssl=ctx)
        w.close()


async def test_tls12_ecdhe_aead_accepted(daemon):
    ctx = _ctx(maximum_version=ssl.TLSVersion.TLSv1_2)
    r, w = await asyncio.open_connection("127.0.0.1", daemon.tls, ssl=ctx)
    obj = w.get_extra_info("ssl_object")
    name, _, _ = obj.cipher()
    assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name)
    w.close()


async def test_starttls_handshake_timeout_releases_the_connection(monkeypatch, tmp_path):
    # In process, on asyncio's own loop (the daemon runs uvloop): there a handshake timeout
    # never reached connection_lost(), so the pre-auth slot and the connection leaked.
    from mbxmpp.net import connection as connection_mod
    from mbxmpp.net.connection import C2SConnection
    from mbxmpp.net.tls import ensure_self_signed, server_context
    from tests.harness import ServerHarness

    monkeypatch.setattr(connection_mod, "TLS_HANDSHAKE_TIMEOUT", 0.3)
    ctx = server_context(*ensure_self_signed(str(tmp_path), ["localhost"]))
    async with ServerHarness(modules=[]) as h:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: C2SConnection(h.server, ctx, False), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        c = await RawClient.connect(port)
        await c.open()
        await c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert (await c.element()).tag == "proceed"
        assert h.server.preauth.count("127.0.0.1") == 1
        await asyncio.sleep(0.8)  # no ClientHello: the handshake times out
        assert h.server.preauth.count() == 0
        assert not h.server.connections
        await c.close()
        srv.close()
        await srv.wait_closed()
