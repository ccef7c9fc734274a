"""TLS: server contexts (TLS 1.2+, forward-secret AEAD only), SNI per virtual host, and the
self-signed certificate generated into the data dir at first start."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from typing import Callable, Iterable

log = logging.getLogger(__name__)

# Forward-secret AEAD suites for TLS 1.2; TLS 1.3 suites are all AEAD and forward-secret.
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS:!SHA1"


def server_context(cert: str, key: str, *, min_version: str = "1.2",
                   ciphers: str = DEFAULT_CIPHERS, alpn: Iterable[str] = ()) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    ctx.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
                    | ssl.OP_SINGLE_ECDH_USE | getattr(ssl, "OP_NO_RENEGOTIATION", 0))
    ctx.load_cert_chain(cert, key)
    # SCRAM-PLUS tls-server-end-point needs the certificate this context presents (RFC 5929).
    from ..stream.sasl import cert_der_from_pem
    with open(cert, "rb") as f:
        ctx.mb_cert_der = cert_der_from_pem(f.read())  # type: ignore[attr-defined]
    alpn = list(alpn)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class TLSContexts:
    """One context per virtual host, chosen by SNI; the default one otherwise."""

    def __init__(self, default: tuple[str, str], per_host: dict[str, tuple[str, str]],
                 min_version: str = "1.2", ciphers: str = DEFAULT_CIPHERS) -> None:
        self.default_files = default
        self.per_host_files = per_host
        self.min_version = min_version
        self.ciphers = ciphers
        # every context handed out, with the files it presents (reload() refreshes them in place)
        self._made: list[tuple[ssl.SSLContext, str | None]] = []

    def files_for(self, host: str) -> tuple[str, str]:
        """The (cert, key) presented for ``host``: its own, its parent domain's, or the default."""
        host = host.lower().rstrip(".")
        files = self.per_host_files.get(host)
        if files is None and "." in host:
            files = self.per_host_files.get(host.split(".", 1)[1])
        return files or self.default_files

    def context(self, alpn: Iterable[str] = (),
                prepare: Callable[[ssl.SSLContext], None] | None = None) -> ssl.SSLContext:
        """The server context; ``prepare`` adjusts it and every per-host one (e.g. s2s asks
        peers for their certificates)."""
        alpn = list(alpn)
        base = server_context(*self.default_files, min_version=self.min_version,
                              ciphers=self.ciphers, alpn=alpn)
        hosts = {h: server_context(c, k, min_version=self.min_version, ciphers=self.ciphers, alpn=alpn)
                 for h, (c, k) in self.per_host_files.items()}
        if prepare is not None:
            for ctx in (base, *hosts.values()):
                prepare(ctx)
        self._made.append((base, None))
        self._made.extend((ctx, h) for h, ctx in hosts.items())
        if hosts:
            def sni(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
                if name:
                    ctx = hosts.get(name.lower().rstrip("."))
                    if ctx is None and "." in name:
                        # A component (conference.example.org) uses its parent host's certificate.
                        ctx = hosts.get(name.lower().split(".", 1)[1])
                    if ctx is not None:
                        sslobj.context = ctx
            base.sni_callback = sni
        return base


    def reload(self) -> int:
        """Load the certificate files again into every context already handed out: listeners
        keep their sockets and established connections their TLS; new handshakes get the new
        certificates (a renewed Let's Encrypt chain after SIGHUP). Returns how many."""
        from ..stream.sasl import cert_der_from_pem
        for ctx, host in self._made:
            cert, key = self.default_files if host is None else self.per_host_files[host]
            ctx.load_cert_chain(cert, key)
            with open(cert, "rb") as f:
                ctx.mb_cert_der = cert_der_from_pem(f.read())  # type: ignore[attr-defined]
        return len(self._made)


def ensure_self_signed(data_dir: str, names: list[str]) -> tuple[str, str]:
    """Create (once) a self-signed certificate for ``names`` in ``data_dir``; return the paths."""
    cert_path = os.path.join(data_dir, "selfsigned.crt")
    key_path = os.path.join(data_dir, "selfsigned.key")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    os.makedirs(data_dir, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    log.warning("generated a self-signed certificate for %s in %s", ", ".join(names), cert_path)
    return cert_path, key_path
