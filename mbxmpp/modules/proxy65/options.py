"""[proxy65]: the SOCKS5 bytestream proxy's options (read by mbxmpp/options.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ...options import BOOL, DOMAIN_TEMPLATE, DURATION, INT, LISTEN, SIZE, STR, Listen, check_domain, option


def _host(host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        try:
            return check_domain(host)
        except ValueError as e:
            raise ValueError(f"expected a host name or IP address: {e}") from None


@dataclass(frozen=True, slots=True)
class Proxy65Config:
    """SOCKS5 bytestream proxy for file transfer (XEP-0065)"""
    enabled: bool = option(True, BOOL, "false: no proxy")
    domain: str = option("proxy.{domain}", DOMAIN_TEMPLATE, "{domain} expands per virtual host")
    listen: tuple[Listen, ...] = option((("127.0.0.1", 5000),), LISTEN, "SOCKS5 listeners",
                                        example=(("::", 5000),))
    public_host: str | None = option(None, STR, "host name or address given to clients", check=_host,
                                     example="proxy.example.org", default_doc="the listen host")
    activation_timeout: float = option(60.0, DURATION, "connections not activated by then are closed")
    idle_timeout: float = option(300.0, DURATION, "activated streams without traffic are closed")
    max_streams_per_user: int = option(10, INT, "concurrent streams a requester may have activated", minimum=1)
    max_bytes_per_user: int = option(10 * 1024 ** 3, SIZE, "bytes relayed per requester per hour")
