"""Where a remote XMPP server listens (RFC 6120 §3.2, XEP-0368): the SRV records of
``_xmpps-server._tcp`` (direct TLS) and ``_xmpp-server._tcp`` (STARTTLS), ordered by priority and,
within one priority, by weighted random choice (RFC 2782); without any SRV record, the domain itself
on 5269. Lookups go through dnspython's async resolver (the system's resolv.conf)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.resolver

DEFAULT_PORT = 5269


class NoSuchDomain(Exception):
    """The domain has no XMPP service in DNS (NXDOMAIN, or an SRV target of '.')."""


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    direct_tls: bool


def order_srv(records: list[tuple[int, int, str, int, bool]],
              rng: random.Random | None = None) -> list[Target]:
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
                    out.append(Target(host, port, direct))
                    del group[i]
                    break
    return out


async def _srv(resolver: dns.asyncresolver.Resolver, name: str,
               direct: bool) -> list[tuple[int, int, str, int, bool]] | None:
    """The SRV records of ``name``; None when the name does not exist at all."""
    try:
        answer = await resolver.resolve(name, "SRV")
    except dns.resolver.NXDOMAIN:
        return None
    except (dns.resolver.NoAnswer, dns.resolver.NoNameservers):
        return []
    return [(r.priority, r.weight, r.target.to_text(omit_final_dot=True), r.port, direct)
            for r in answer]


async def resolve_targets(domain: str, timeout: float = 10.0) -> list[Target]:
    """The ordered connection targets for ``domain``; raises NoSuchDomain when DNS says the
    domain has no XMPP server, dns.exception.Timeout when DNS does not answer."""
    resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = timeout
    xmpps, xmpp = await asyncio.gather(_srv(resolver, f"_xmpps-server._tcp.{domain}.", True),
                                       _srv(resolver, f"_xmpp-server._tcp.{domain}.", False))
    records = (xmpps or []) + (xmpp or [])
    if records:
        # RFC 6120 §3.2.1: a single SRV record with target "." means "no service here".
        usable = [r for r in records if r[2] not in ("", ".")]
        if not usable:
            raise NoSuchDomain(f"{domain} announces no XMPP server")
        return order_srv(usable)
    # No SRV: the domain's own address records (RFC 6120 §3.2.2), if the domain exists.
    for rdtype in ("A", "AAAA"):
        try:
            await resolver.resolve(f"{domain}.", rdtype)
            return [Target(domain, DEFAULT_PORT, False)]
        except dns.resolver.NXDOMAIN:
            raise NoSuchDomain(f"{domain} does not exist") from None
        except (dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            continue
    raise NoSuchDomain(f"{domain} has no address")


async def resolve_addresses(host: str, timeout: float = 10.0) -> list[str]:
    """The IPv6 and IPv4 addresses of an SRV target (interleaved, IPv6 first: RFC 8305)."""
    resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = timeout

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

