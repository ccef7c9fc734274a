"""[metrics]: the metrics endpoint's options (read by mbxmpp/options.py); here, not in
metrics.py, so that reading the configuration does not import aiohttp and prometheus_client."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..options import STR, STR_LIST, option, show


def _network(n: str) -> str:
    try:
        return str(ipaddress.ip_network(n, strict=False))
    except ValueError:
        raise ValueError(f'expected addresses or networks such as "127.0.0.1" or "10.0.0.0/8", '
                         f"got {show(n)}") from None


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """/metrics (OpenMetrics) on the HTTP side; /health is open to all"""
    allow: tuple[str, ...] = option(("127.0.0.1/32", "::1/128"), STR_LIST,
                                    "addresses or networks that may scrape /metrics", each=_network)
    token: str = option("", STR, 'or any address sending "Authorization: Bearer <token>"; "" = none',
                        allow_empty=True)
