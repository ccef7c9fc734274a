"""Where a remote XMPP server listens (RFC 6120 §3.2, XEP-0368): the SRV records of
``_xmpps-server._tcp`` (direct TLS) and ``_xmpp-server._tcp`` (STARTTLS), ordered by priority and,
within one priority, by weighted random choice (RFC 2782); without any SRV record, the domain itself
on 5269. Lookups go through dnspython's async resolver (the system's resolv.conf)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.flags
import dns.resolver

DEFAULT_PORT = 5269


class NoSuchDomain(Exception):
    """The domain has no XMPP service in DNS (NXDOMAIN, or an SRV target of '.')."""


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    direct_tls: bool
    secure: bool = False   # the answer that named it was DNSSEC-validated (DANE may apply)


def _resolver(timeout: float) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = timeout
    # Ask for DNSSEC (DO) and for the validating resolver's verdict (AD, RFC 6840 §5.7).
    resolver.use_edns(0, dns.flags.DO, 1232)
    resolver.flags = dns.flags.RD | dns.flags.AD
    return resolver


def _secure(answer: dns.resolver.Answer) -> bool:
    return bool(answer.response.flags & dns.flags.AD)


def order_srv(records: list[tuple[int, int, str, int, bool]],
              rng: random.Random | None = None, secure: bool = False) -> list[Target]:
    """RFC 2782 order: lowest priority first; inside a priority, repeated weighted random picks
    (weight 0 records have a small chance, as the RFC asks)."""
    rng = rng or random.Random()
    out: list[Target] = []
    by_prio: dict[int, list[tuple[int, str, int, bool]]] = {}
    for prio, weight, host, port, direct in records:
        by_prio.setdefault(prio, []).append((weight, host, port, direct))
    for prio in sorted(by_prio):
        group = sorted(by_prio[prio], key=lambda r: r[0])  # weight-0 records first (RFC 2782)
        while group:
            total = sum(w for w, *_ in group)
            pick = rng.randint(0, total)
            run = 0
            for i, (w, host, port, direct) in enumerate(group):
                run += w
                if run >= pick:
                    out.append(Target(host, port, direct, secure))
                    del group[i]
                    break
    return out


async def _srv(resolver: dns.asyncresolver.Resolver, name: str,
               direct: bool) -> tuple[list[tuple[int, int, str, int, bool]] | None, bool]:
    """The SRV records of ``name`` (None when the name does not exist at all) and whether
    the answer was validated."""
    try:
        answer = await resolver.resolve(name, "SRV")
    except dns.resolver.NXDOMAIN:
        return None, False
    except (dns.resolver.NoAnswer, dns.resolver.NoNameservers):
        return [], False
    return [(r.priority, r.weight, r.target.to_text(omit_final_dot=True), r.port, direct)
            for r in answer], _secure(answer)


async def resolve_targets(domain: str, timeout: float = 10.0) -> list[Target]:
    """The ordered connection targets for ``domain``; raises NoSuchDomain when DNS says the
    domain has no XMPP server, dns.exception.Timeout when DNS does not answer."""
    resolver = _resolver(timeout)
    (xmpps, secure_s), (xmpp, secure) = await asyncio.gather(
        _srv(resolver, f"_xmpps-server._tcp.{domain}.", True),
        _srv(resolver, f"_xmpp-server._tcp.{domain}.", False))
    records = (xmpps or []) + (xmpp or [])
    if records:
        # RFC 6120 §3.2.1: a single SRV record with target "." means "no service here".
        usable = [r for r in records if r[2] not in ("", ".")]
        if not usable:
            raise NoSuchDomain(f"{domain} announces no XMPP server")
        # RFC 7673 §3: DANE for SRV targets only when the SRV answers were secure.
        return order_srv(usable, secure=(secure_s or not xmpps) and (secure or not xmpp))
    # No SRV: the domain's own address records (RFC 6120 §3.2.2), if the domain exists.
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(f"{domain}.", rdtype)
            return [Target(domain, DEFAULT_PORT, False, _secure(answer))]
        except dns.resolver.NXDOMAIN:
            raise NoSuchDomain(f"{domain} does not exist") from None
        except (dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            continue
    raise NoSuchDomain(f"{domain} has no address")


async def resolve_addresses(host: str, timeout: float = 10.0) -> list[str]:
    """The IPv6 and IPv4 addresses of an SRV target (interleaved, IPv6 first: RFC 8305)."""
    resolver = _resolver(timeout)

    async def one(rdtype: str) -> list[str]:
        try:
            return [r.address for r in await resolver.resolve(f"{host}.", rdtype)]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return []

    v6, v4 = await asyncio.gather(one("AAAA"), one("A"))
    out: list[str] = []
    for i in range(max(len(v6), len(v4))):
        out.extend(v[i] for v in (v6, v4) if i < len(v))
    return out



async def resolve_tlsa(host: str, port: int, timeout: float = 10.0) -> tuple[list[tuple[int, int, int, bytes]], bool]:
    """The TLSA records of ``_<port>._tcp.<host>`` (RFC 6698 §3) and whether the answer was
    validated (only then may they be used: RFC 7671 §4)."""
    resolver = _resolver(timeout)
    try:
        answer = await resolver.resolve(f"_{port}._tcp.{host}.", "TLSA")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return [], False
    return [(r.usage, r.selector, r.mtype, r.cert) for r in answer], _secure(answer)
