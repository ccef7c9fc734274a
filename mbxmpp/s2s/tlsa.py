"""`python -m mbxmpp tlsa [--check]`: the TLSA records (RFC 6698, DANE-EE 3 1 1) to publish for
the certificates this server presents, and, with --check, whether DNS publishes matching ones, so
that an operator rotating a certificate is warned before peers refuse it."""

from __future__ import annotations

import os
from typing import TextIO

from cryptography import x509

from ..config import Config
from . import dns as s2sdns
from .certs import tlsa_data, tlsa_matches

SELFSIGNED = "selfsigned.crt"


def certificate_for(cfg: Config, host: str) -> str | None:
    """The certificate file the server presents for ``host`` (the same choice as SNI)."""
    entry = cfg.tls.domains.get(host)
    if entry is None and "." in host:
        entry = cfg.tls.domains.get(host.split(".", 1)[1])
    if entry is not None:
        return entry.cert
    if cfg.tls.cert:
        return cfg.tls.cert
    path = os.path.join(cfg.server.data_dir, SELFSIGNED)
    return path if os.path.exists(path) else None


def _leaf(path: str) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())[0]


async def report(cfg: Config, check: bool, out: TextIO) -> int:
    """Print the records; with ``check``, compare with DNS. Returns the exit code (1: DNS
    publishes TLSA records none of which matches a certificate we present)."""
    failed = False
    for host in cfg.server.domains:
        path = certificate_for(cfg, host)
        if path is None:
            print(f"{host}: no certificate yet (a self-signed one is made at first start)", file=out)
            continue
        leaf = _leaf(path)
        data = tlsa_data(leaf, 1, 1)
        assert data is not None
        if not check:
            print(f"_5269._tcp.{host}. IN TLSA 3 1 1 {data.hex()}   ; {path}", file=out)
            continue
        try:
            targets = await s2sdns.resolve_targets(host)
        except s2sdns.NoSuchDomain as e:
            print(f"{host}: {e}", file=out)
            continue
        for t in targets:
            name = f"_{t.port}._tcp.{t.host}."
            records, secure = await s2sdns.resolve_tlsa(t.host, t.port)
            want = f"{name} IN TLSA 3 1 1 {data.hex()}"
            if not records:
                print(f"{host}: {name} has no TLSA records; to use DANE publish:\n  {want}", file=out)
            elif not secure:
                print(f"{host}: {name} TLSA records are not DNSSEC-validated (peers ignore them)", file=out)
            elif any(tlsa_matches(leaf, r) for r in records if r[0] in (1, 3)):
                print(f"{host}: {name} OK (a TLSA record matches {path})", file=out)
            else:
                failed = True
                print(f"{host}: {name} MISMATCH: no TLSA record matches {path}; peers that use "
                      f"DANE will refuse this server. Publish:\n  {want}", file=out)
    return 1 if failed else 0
