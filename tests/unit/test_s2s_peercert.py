"""mbxmpp/s2s/peercert.py: an incoming s2s context asks for the peer's certificate and accepts
one from an unknown CA (the server decides after the handshake); without the hook, it asks for
none. Real TLS handshakes over loopback."""

from __future__ import annotations

import asyncio
import datetime
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mbxmpp.s2s import peercert


def self_signed(tmp_path, name: str) -> tuple[str, str, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path), cert.public_bytes(serialization.Encoding.DER)


async def handshake(server_ctx: ssl.SSLContext, client_cert: tuple[str, str] | None) -> bytes | None:
    """A TLS handshake over loopback; the certificate the server got from the client (DER)."""
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        got.set_result(w.get_extra_info("ssl_object").getpeercert(binary_form=True))
        w.write(b"ok")
        await w.drain()
        w.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        client_ctx.load_cert_chain(*client_cert)
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        try:
            # (TLS 1.3: the client is done before the server checks its certificate; a refusal
            # shows as an alert or the end of the connection instead of the server's "ok")
            if await asyncio.wait_for(r.read(2), 10) != b"ok":
                raise ConnectionError("the server ended the connection")
            return got.result()
        finally:
            w.close()
    finally:
        server.close()


def server_context(tmp_path) -> ssl.SSLContext:
    cert, key, _ = self_signed(tmp_path, "us.example")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


async def test_a_certificate_from_an_unknown_ca_is_requested_and_accepted(tmp_path):
    ctx = server_context(tmp_path)
    assert peercert.request_any_peer_certificate(ctx) is True
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    cert, key, der = self_signed(tmp_path, "peer.example")   # no CA anywhere trusts it
    assert await handshake(ctx, (cert, key)) == der
    assert await handshake(ctx, None) is None   # a peer without a certificate still gets in


async def test_plain_cert_optional_refuses_that_certificate(tmp_path):
    """What the hook is for: Python's own CERT_OPTIONAL aborts the handshake instead."""
    ctx = server_context(tmp_path)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    cert, key, _ = self_signed(tmp_path, "peer.example")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await handshake(ctx, (cert, key))


@pytest.mark.parametrize("broken", ["no library", "no pointer"])
async def test_without_the_hook_no_certificate_is_requested(tmp_path, monkeypatch, broken):
    if broken == "no library":
        monkeypatch.setattr(peercert, "_LIB", None)
    else:
        monkeypatch.setattr(peercert, "_ssl_ctx_pointer", lambda ctx: 0)
    ctx = server_context(tmp_path)
    assert peercert.request_any_peer_certificate(ctx) is False
    assert ctx.verify_mode == ssl.CERT_NONE
    cert, key, _ = self_signed(tmp_path, "peer.example")
    assert await handshake(ctx, (cert, key)) is None   # the handshake works, without a certificate


def test_a_pointer_that_reads_back_other_values_is_not_used(tmp_path, monkeypatch):
    """Another context's SSL_CTX (valid memory, other settings) fails the read-back check and is
    left as it was."""
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)   # verify mode none: the check reads 0
    real = peercert._ssl_ctx_pointer
    monkeypatch.setattr(peercert, "_ssl_ctx_pointer", lambda ctx: real(other))
    ctx = server_context(tmp_path)
    assert peercert.request_any_peer_certificate(ctx) is False
    assert ctx.verify_mode == ssl.CERT_NONE and other.verify_mode == ssl.CERT_NONE
