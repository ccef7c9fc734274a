"""`python -m mbxmpp check`: what a remote tester (the IM Observatory) would find, with the fix
for each finding, graded.

Per virtual host and component domain: DNS SRV records for clients and servers (XEP-0368's
direct-TLS ones too) and the addresses of their targets; the certificate each name gets by SNI
(names, expiry, chain); TLSA records against that certificate; and, for every TLS port this
configuration listens on, whether it answers, which TLS versions it accepts and which weak
suites it refuses. `python -m mbxmpp tlsa` prints the TLSA records to publish.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import dns.asyncresolver
import dns.exception
import dns.resolver
from cryptography import x509

from .s2s.certs import tlsa_data
from .s2s.certs import tlsa_matches as cert_matches

from .xml.ns import NS_CLIENT, NS_STREAMS, NS_TLS

if TYPE_CHECKING:
    from .config import Config

ERROR, WARNING, OK = "error", "warning", "ok"
EXPIRY_WARNING_DAYS = 14
# (label, record, default port) of the SRV records a remote tester looks up (RFC 6120 §3.2.1,
# XEP-0368 for the direct-TLS ones).
SRV_KINDS = (("client", "_xmpp-client._tcp", 5222), ("client (direct TLS)", "_xmpps-client._tcp", 5223),
             ("server", "_xmpp-server._tcp", 5269), ("server (direct TLS)", "_xmpps-server._tcp", 5270))
# Suites a careful server refuses under TLS 1.2: no forward secrecy (plain RSA key exchange),
# CBC mode, SHA-1 MACs. (OpenSSL's names; the probe offers only these.)
WEAK_SUITES = ("AES128-SHA:AES256-SHA:AES128-SHA256:AES256-SHA256:AES128-GCM-SHA256:"
               "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA")


@dataclass
class Finding:
    level: str
    what: str
    fix: str = ""


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, level: str, what: str, fix: str = "") -> None:
        self.findings.append(Finding(level, what, fix))

    @property
    def grade(self) -> str:
        levels = {f.level for f in self.findings}
        return "F" if ERROR in levels else "B" if WARNING in levels else "A"

    def render(self) -> str:
        out = []
        for f in self.findings:
            out.append(f"[{f.level.upper():7}] {f.what}")
            if f.fix and f.level != OK:
                out.append(f"          fix: {f.fix}")
        n_err = sum(f.level == ERROR for f in self.findings)
        n_warn = sum(f.level == WARNING for f in self.findings)
        out.append(f"grade {self.grade}: {n_err} errors, {n_warn} warnings, "
                   f"{sum(f.level == OK for f in self.findings)} checks passed")
        return "\n".join(out)


# -- certificates --------------------------------------------------------------------------------
def load_chain(path: str) -> list[x509.Certificate]:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())


def cert_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return []


def name_matches(pattern: str, name: str) -> bool:
    """RFC 6125 §6.4.3: a wildcard stands for exactly one leftmost label."""
    if pattern.startswith("*."):
        return "." in name and name.split(".", 1)[1] == pattern[2:]
    return pattern == name


def tlsa_records(cert: x509.Certificate) -> list[tuple[int, int, int, str]]:
    """DANE-EE records for a certificate: 3 1 1 (SHA-256 of the public key), 3 0 1 (of the whole
    certificate)."""
    return [(3, sel, 1, (tlsa_data(cert, sel, 1) or b"").hex()) for sel in (1, 0)]


def tlsa_matches(record: tuple[int, int, int, str], chain: list[x509.Certificate]) -> bool:
    """Does a published record match the certificate (EE usages) or its chain (TA usages)?"""
    usage, selector, mtype, data = record
    candidates = chain[:1] if usage in (1, 3) else chain[1:]
    want = (usage, selector, mtype, bytes.fromhex(data))
    return any(cert_matches(cert, want) for cert in candidates)


def check_certificate(report: Report, name: str, chain: list[x509.Certificate]) -> None:
    leaf = chain[0]
    names = cert_names(leaf)
    if any(name_matches(p, name) for p in names):
        report.add(OK, f"{name}: the certificate names it")
    else:
        report.add(ERROR, f"{name}: the certificate is for {', '.join(names) or 'no DNS name'}",
                   f"get a certificate whose subjectAltName includes {name} and set it in "
                   f'[tls] or [tls.domains."{name}"]')
    now = datetime.datetime.now(datetime.timezone.utc)
    left = leaf.not_valid_after_utc - now
    if left.total_seconds() <= 0:
        report.add(ERROR, f"{name}: the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}",
                   "renew it (certbot renew) and reload the server")
    elif left.days < EXPIRY_WARNING_DAYS:
        report.add(WARNING, f"{name}: the certificate expires in {left.days} days",
                   "renew it now (certbot renew) and reload the server")
    else:
        report.add(OK, f"{name}: the certificate is valid until {leaf.not_valid_after_utc:%Y-%m-%d}")
    if leaf.issuer == leaf.subject:
        report.add(WARNING, f"{name}: the certificate is self-signed: clients and other servers "
                            "will not trust it", "get one from a public CA (e.g. Let's Encrypt)")
    elif len(chain) == 1:
        report.add(WARNING, f"{name}: the certificate file holds no intermediate certificates",
                   "use the full chain (fullchain.pem), not cert.pem")


# -- DNS -----------------------------------------------------------------------------------------
def resolver(nameserver: str | None) -> dns.asyncresolver.Resolver:
    if nameserver is None:
        return dns.asyncresolver.Resolver()
    r = dns.asyncresolver.Resolver(configure=False)
    host, _, port = nameserver.rpartition(":") if nameserver.count(":") == 1 else (nameserver, "", "")
    r.nameservers = [host]
    if port:
        r.port = int(port)
    r.lifetime = 3.0
    return r


class DNSDown(Exception):
    """The resolver did not answer: every DNS check after the first is pointless."""


async def _query(res: dns.asyncresolver.Resolver, name: str, rdtype: str) -> list[object]:
    """The answers, [] for none (NXDOMAIN or no data); DNSDown when DNS did not answer."""
    try:
        return list(await res.resolve(name, rdtype))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.resolver.NoNameservers as e:
        # A server that answered (REFUSED, SERVFAIL) knows nothing usable for the name; only
        # servers that did not answer at all make DNS down.
        if any(err[4] is not None for err in e.kwargs.get("errors", ())):
            return []
        raise DNSDown(f"no answer from DNS for {name} {rdtype}") from e
    except dns.exception.Timeout as e:
        raise DNSDown(f"no answer from DNS for {name} {rdtype}") from e


async def check_dns(report: Report, res: dns.asyncresolver.Resolver, domain: str,
                    chain: list[x509.Certificate] | None, s2s: bool) -> None:
    found_any = False
    for label, prefix, _port in SRV_KINDS:
        if label.startswith("server") and not s2s:
            continue
        answers = await _query(res, f"{prefix}.{domain}", "SRV")
        if not answers:
            continue
        found_any = True
        for srv in answers:
            target = str(srv.target).rstrip(".")  # type: ignore[attr-defined]
            if target == "":
                report.add(OK, f"{domain}: {label} service explicitly not offered ({prefix})")
                continue
            addrs = await _query(res, target, "A") + await _query(res, target, "AAAA")
            if not addrs:
                report.add(ERROR, f"{domain}: SRV {prefix} points at {target}, which has no A/AAAA record",
                           f"add an A or AAAA record for {target}")
            else:
                report.add(OK, f"{domain}: {label} at {target}:{srv.port} "  # type: ignore[attr-defined]
                               f"({', '.join(str(a) for a in addrs)})")
            if chain is not None and label.startswith("server"):
                await check_tlsa(report, res, target, srv.port, chain)  # type: ignore[attr-defined]
    if not found_any:
        addrs = await _query(res, domain, "A") + await _query(res, domain, "AAAA")
        if addrs:
            report.add(WARNING, f"{domain}: no SRV records; clients and servers fall back to "
                                f"{domain}:5222/5269", f"publish _xmpp-client._tcp.{domain} and "
                                f"_xmpp-server._tcp.{domain} SRV records")
        else:
            report.add(ERROR, f"{domain}: neither SRV nor A/AAAA records: nobody can reach it",
                       f"publish SRV records (_xmpp-client._tcp.{domain} ...) and A/AAAA records")


async def check_tlsa(report: Report, res: dns.asyncresolver.Resolver, target: str, port: int,
                     chain: list[x509.Certificate]) -> None:
    name = f"_{port}._tcp.{target}"
    answers = await _query(res, name, "TLSA")
    if not answers:
        return  # DANE is optional
    records = [(a.usage, a.selector, a.mtype, a.cert.hex()) for a in answers]  # type: ignore[attr-defined]
    if any(tlsa_matches(r, chain) for r in records):
        report.add(OK, f"{name}: a TLSA record matches the certificate")
    else:
        want = " / ".join(f"{u} {s} {m} {d}" for u, s, m, d in tlsa_records(chain[0]))
        report.add(ERROR, f"{name}: no TLSA record matches the certificate: DANE peers will refuse "
                          "to connect", f"publish {name}. IN TLSA {want} (python -m mbxmpp tlsa), "
                          "or remove the stale records before rotating certificates")


# -- TLS ports -----------------------------------------------------------------------------------
def _probe_ctx(version: ssl.TLSVersion | None = None, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        try:
            ctx.minimum_version = ctx.maximum_version = version
        except ValueError:
            pass
        if version <= ssl.TLSVersion.TLSv1_1:
            ctx.set_ciphers("ALL:@SECLEVEL=0")  # let OpenSSL offer the old protocol at all
    if ciphers is not None:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ciphers)
    return ctx


async def _handshake(host: str, port: int, name: str, ctx: ssl.SSLContext, starttls: bool) -> str | None:
    """The negotiated version, or None when the handshake was refused."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except (OSError, asyncio.TimeoutError):
        raise ConnectionError(f"{host}:{port} does not answer") from None
    try:
        if starttls:
            writer.write(f"<?xml version='1.0'?><stream:stream to='{name}' version='1.0' "
                         f"xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'>".encode())
            buf = b""
            while b"</stream:features>" not in buf:
                chunk = await asyncio.wait_for(reader.read(4096), 5)
                if not chunk:
                    return None
                buf += chunk
            writer.write(f"<starttls xmlns='{NS_TLS}'/>".encode())
            buf = b""
            while b"proceed" not in buf:
                chunk = await asyncio.wait_for(reader.read(4096), 5)
                if not chunk:
                    return None
                buf += chunk
        await asyncio.wait_for(writer.start_tls(ctx, server_hostname=name), 5)
        sslobj = writer.get_extra_info("ssl_object")
        return sslobj.version() if sslobj is not None else None
    except (ssl.SSLError, OSError, asyncio.TimeoutError, ConnectionError):
        return None
    finally:
        writer.close()


async def check_port(report: Report, label: str, host: str, port: int, name: str, starttls: bool) -> None:
    where = f"{label} {host}:{port}"
    try:
        got = await _handshake(host, port, name, _probe_ctx(), starttls)
    except ConnectionError as e:
        report.add(ERROR, f"{where}: {e}", "check that the server runs and the firewall lets the port through")
        return
    if got is None:
        report.add(ERROR, f"{where}: no TLS handshake", "check the certificate and key files")
        return
    report.add(OK, f"{where}: answers ({got})")
    for version, should in ((ssl.TLSVersion.TLSv1, False), (ssl.TLSVersion.TLSv1_1, False),
                            (ssl.TLSVersion.TLSv1_2, True), (ssl.TLSVersion.TLSv1_3, True)):
        try:
            accepted = await _handshake(host, port, name, _probe_ctx(version), starttls) is not None
        except ConnectionError:
            accepted = False
        vname = version.name.replace("TLSv", "TLS ").replace("_", ".")
        if accepted and not should:
            report.add(ERROR, f"{where}: accepts {vname}", '[tls] min_version = "1.2"')
        elif should and not accepted and version == ssl.TLSVersion.TLSv1_3:
            report.add(WARNING, f"{where}: does not offer {vname}", "use an OpenSSL with TLS 1.3")
        elif should == accepted:
            report.add(OK, f"{where}: {'accepts' if accepted else 'refuses'} {vname}")
    try:
        weak = await _handshake(host, port, name, _probe_ctx(ciphers=WEAK_SUITES), starttls)
    except ConnectionError:
        weak = None
    if weak is not None:
        report.add(ERROR, f"{where}: accepts a suite without forward secrecy or with CBC/SHA-1",
                   '[tls] ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20"')
    else:
        report.add(OK, f"{where}: refuses weak suites (no forward secrecy, CBC, SHA-1)")


def _local(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


# -- the whole check -----------------------------------------------------------------------------
def cert_chain_for(cfg: Config, name: str) -> list[x509.Certificate] | None:
    entry = cfg.tls_for(name)
    if entry is None:
        parent = name.split(".", 1)[1] if "." in name else name
        entry = cfg.tls_for(parent)
    path = entry.cert if entry is not None else os.path.join(cfg.server.data_dir, "selfsigned.crt")
    try:
        return load_chain(path)
    except (OSError, ValueError):
        return None


async def run_check(cfg: Config, nameserver: str | None = None, hosts: Iterable[str] | None = None,
                    probe_ports: bool = True) -> Report:
    report = Report()
    res = resolver(nameserver)
    dns_up = True
    names: list[tuple[str, bool]] = []
    for h in hosts or cfg.server.domains:
        names.append((h, True))
        names.extend((c, False) for c in cfg.served_components(h).values())
    for name, is_host in names:
        chain = cert_chain_for(cfg, name)
        if chain is None:
            report.add(ERROR, f"{name}: no certificate readable for it",
                       "set [tls] cert/key (or start the server once to generate a self-signed one)")
        else:
            check_certificate(report, name, chain)
        if not dns_up:
            continue
        try:
            if is_host:
                await check_dns(report, res, name, chain, cfg.s2s.enabled)
            else:
                addrs = await _query(res, name, "A") + await _query(res, name, "AAAA")
                if not addrs and not await _query(res, f"_xmpp-server._tcp.{name}", "SRV"):
                    report.add(WARNING, f"{name}: no DNS records: servers elsewhere cannot reach "
                                        "this component", f"add a CNAME or A record for {name}")
        except DNSDown as e:
            dns_up = False
            report.add(ERROR, f"{e}; DNS checks skipped",
                       "check the resolver (or --nameserver) and the domains' name servers")
    if probe_ports:
        first = cfg.server.domains[0]
        ports: list[tuple[str, str, int, bool]] = [("c2s", h, p, True) for h, p in cfg.c2s.listen]
        ports += [("c2s direct TLS", h, p, False) for h, p in cfg.c2s.direct_tls]
        if cfg.http.tls:
            ports += [("https", h, p, False) for h, p in cfg.http.listen]
        for label, h, p, starttls in ports:
            await check_port(report, label, _local(h), p, first, starttls)
    return report


def tlsa_lines(cfg: Config) -> list[str]:
    """The DANE-EE records for each host's certificate, named for the host itself; where SRV
    records point elsewhere, publish them under each SRV target instead."""
    out = []
    for h in cfg.server.domains:
        chain = cert_chain_for(cfg, h)
        if chain is None:
            continue
        ports = [5269] + [p for _, p in cfg.s2s.direct_tls] + [p for _, p in cfg.c2s.listen[:1]]
        for u, s, m, d in tlsa_records(chain[0]):
            for port in dict.fromkeys(ports):
                out.append(f"_{port}._tcp.{h}. IN TLSA {u} {s} {m} {d}")
    return out
