"""TLS: server contexts (TLS 1.2+, forward-secret AEAD only), SNI per virtual host, and the
self-signed certificate generated into the data dir at first start."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
import weakref
from collections.abc import Callable, Iterable

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


class _Group:
    """The contexts of one context() call: the default one and one per host (chosen by SNI),
    made with the same ALPN and ``prepare``; hosts added later get theirs here too."""

    __slots__ = ("__weakref__", "alpn", "base", "hosts", "prepare")

    def __init__(self, base: ssl.SSLContext, alpn: list[str],
                 prepare: Callable[[ssl.SSLContext], None] | None) -> None:
        self.base = base
        self.hosts: dict[str, ssl.SSLContext] = {}
        self.alpn = alpn
        self.prepare = prepare

    def sni(self, sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        if name:
            name = name.lower().rstrip(".")
            ctx = self.hosts.get(name)
            if ctx is None and "." in name:
                # A component (conference.example.org) uses its parent host's certificate.
                ctx = self.hosts.get(name.split(".", 1)[1])
            if ctx is not None:
                sslobj.context = ctx


def acme_files(certificates_dir: str, host: str) -> tuple[str, str] | None:
    """certbot's layout: ``DIR/HOST/fullchain.pem`` and ``privkey.pem``, when both exist."""
    d = os.path.join(certificates_dir, host)
    cert, key = os.path.join(d, "fullchain.pem"), os.path.join(d, "privkey.pem")
    return (cert, key) if os.path.isfile(cert) and os.path.isfile(key) else None


class TLSContexts:
    """One context per virtual host, chosen by SNI; the default one otherwise.

    Per-host files are the explicit ones (``[tls.domains]``) and, for the served hosts that
    have none, those found in ``certificates_dir`` (certbot's live/ folder). ``set_hosts`` and
    ``reload`` apply a changed set of hosts or changed files to every context handed out."""

    def __init__(self, default: tuple[str, str], per_host: dict[str, tuple[str, str]],
                 min_version: str = "1.2", ciphers: str = DEFAULT_CIPHERS,
                 certificates_dir: str | None = None, hosts: Iterable[str] = ()) -> None:
        self.default_files = default
        self.explicit_files = dict(per_host)
        self.certificates_dir = certificates_dir
        self.hosts = list(hosts)
        self.min_version = min_version
        self.ciphers = ciphers
        self.per_host_files = self._resolve()
        # every context() handed out, weakly: a group lives as long as its default context is
        # in use (its SNI callback refers to the group), e.g. until s2s replaces its listeners
        self._groups: list[weakref.ref[_Group]] = []
        self._stamp = self._mtimes()

    def _resolve(self) -> dict[str, tuple[str, str]]:
        files = dict(self.explicit_files)  # explicit entries win
        if self.certificates_dir is not None:
            for h in self.hosts:
                found = None if h in files else acme_files(self.certificates_dir, h)
                if found is not None:
                    files[h] = found
        return files

    def files_for(self, host: str) -> tuple[str, str]:
        """The (cert, key) presented for ``host``: its own, its parent domain's, or the default."""
        host = host.lower().rstrip(".")
        files = self.per_host_files.get(host)
        if files is None and "." in host:
            files = self.per_host_files.get(host.split(".", 1)[1])
        return files or self.default_files

    def _make(self, files: tuple[str, str], group: _Group) -> ssl.SSLContext:
        ctx = server_context(*files, min_version=self.min_version, ciphers=self.ciphers,
                             alpn=group.alpn)
        if group.prepare is not None:
            group.prepare(ctx)
        return ctx

    def context(self, alpn: Iterable[str] = (),
                prepare: Callable[[ssl.SSLContext], None] | None = None) -> ssl.SSLContext:
        """The server context; ``prepare`` adjusts it and every per-host one (e.g. s2s asks
        peers for their certificates)."""
        alpn = list(alpn)
        base = server_context(*self.default_files, min_version=self.min_version,
                              ciphers=self.ciphers, alpn=alpn)
        if prepare is not None:
            prepare(base)
        group = _Group(base, alpn, prepare)
        group.hosts = {h: self._make(f, group) for h, f in self.per_host_files.items()}
        base.sni_callback = group.sni  # (always: hosts may be added while serving)
        self._groups.append(weakref.ref(group))
        return base

    def set_hosts(self, hosts: Iterable[str]) -> None:
        """The served hosts changed (domains added or removed at run time): ``reload()`` looks
        for their certificates in ``certificates_dir`` and makes or drops their contexts."""
        self.hosts = list(hosts)

    def reload(self) -> int:
        """Load the certificate files again into every context already handed out: listeners
        keep their sockets and established connections their TLS; new handshakes get the new
        certificates (a renewed Let's Encrypt chain after SIGHUP). Hosts whose files appeared
        get a context, hosts whose files are gone lose theirs. Returns how many contexts.
        Raises (OSError, ValueError) when a file cannot be loaded or a key does not match its
        certificate: every context is then left as it was."""
        from ..stream.sasl import cert_der_from_pem
        self._stamp = self._mtimes()
        files = self._resolve()
        groups = [g for g in (r() for r in self._groups) if g is not None]
        self._groups = [weakref.ref(g) for g in groups]
        # Check every pair, and make the new contexts, before touching any in use: a context
        # given a certificate its key does not match would fail every handshake, and a renewal
        # seen half-done (certbot switches fullchain.pem, then privkey.pem) is just that.
        for pair in {self.default_files, *files.values()}:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(*pair)
        fresh = [{h: self._make(f, g) for h, f in files.items() if h not in g.hosts}
                 for g in groups]
        self.per_host_files = files
        n = 0
        for group, new in zip(groups, fresh):
            for h in [h for h in group.hosts if h not in files]:
                del group.hosts[h]
            for ctx, pair in [(group.base, self.default_files),
                              *((group.hosts[h], files[h]) for h in group.hosts)]:
                ctx.load_cert_chain(*pair)
                with open(pair[0], "rb") as f:
                    ctx.mb_cert_der = cert_der_from_pem(f.read())  # type: ignore[attr-defined]
            group.hosts.update(new)
            n += 1 + len(group.hosts)
        return n

    def _mtimes(self) -> tuple[tuple[str, float], ...]:
        """What ``changed()`` compares: every file in use and every candidate in
        certificates_dir (a host's certificate may appear there), with its mtime."""
        paths = {self.default_files[0], self.default_files[1]}
        for c, k in self.explicit_files.values():
            paths.update((c, k))
        if self.certificates_dir is not None:
            for h in self.hosts:
                d = os.path.join(self.certificates_dir, h)
                paths.update((os.path.join(d, "fullchain.pem"), os.path.join(d, "privkey.pem")))
        out = []
        for p in sorted(paths):
            try:
                out.append((p, os.stat(p).st_mtime))  # (follows certbot's symlinks)
            except OSError:
                out.append((p, -1.0))
        return tuple(out)

    def changed(self) -> bool:
        """Whether a certificate file changed, appeared or vanished since the last load (a
        stat per file: cheap enough to poll)."""
        return self._mtimes() != self._stamp


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
    now = datetime.datetime.now(datetime.UTC)
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
