"""[s2s]: federation's options (read by mbxmpp/options.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Self

from ..options import BOOL, DURATION, LISTEN, SIZE, STR, STR_LIST, ErrorFn, Listen, check_domain, option, show


def _socks_address(value: str) -> tuple[str, int] | None:
    if not value:
        return None
    from .socks import parse_proxy
    try:
        return parse_proxy(value)
    except ValueError:
        raise ValueError(f'expected "host:port" such as "127.0.0.1:9050" (Tor\'s SocksPort), or "" for none, '
                         f"got {show(value)}") from None


def _onion(name: str) -> str:
    name = check_domain(name)
    if not name.endswith(".onion"):
        raise ValueError(f"{name!r} is not an .onion name")
    return name


@dataclass(frozen=True, slots=True)
class S2SConfig:
    """federation with other servers"""
    enabled: bool = option(True, BOOL, "false: no federation at all, no s2s listener")
    listen: tuple[Listen, ...] = option((("127.0.0.1", 5269),), LISTEN, "STARTTLS listeners",
                                        example=(("::", 5269),))
    direct_tls: tuple[Listen, ...] = option((), LISTEN, "direct TLS listeners (XEP-0368); 5270 is the usual port",
                                            example=(("::", 5270),))
    max_stanza_size: int = option(512 * 1024, SIZE, "larger stanzas close the stream with policy-violation",
                                  minimum=4096)
    dialback: bool = option(True, BOOL, "accept dialback (XEP-0220) when the peer's certificate does not verify")
    require_dane: bool = option(False, BOOL, "outgoing: only to peers whose DNSSEC-validated TLSA records match")
    timeout: float = option(30.0, DURATION, "connect and handshake timeout for outgoing connections")
    ca_file: str | None = option(None, STR, "CAs trusted for peers besides the system store",
                                 example="/etc/mbxmpp/extra-ca.pem")
    require_valid_certificates: tuple[str, ...] = option(
        (), STR_LIST, "peers never accepted by dialback alone", each=str.lower, example=("bank.example",))
    idle_timeout: float = option(600.0, DURATION, "s2s streams with no traffic this long are closed")
    tor_socks: tuple[str, int] | None = option(
        None, STR, "s2s to .onion domains (and from ours) through Tor's SocksPort, never DNS; \"\" = none",
        allow_empty=True, check=_socks_address, example="127.0.0.1:9050")
    tor_all: bool = option(False, BOOL, "every s2s connection through tor_socks (SRV/TLSA still asked of DNS)")
    # Onion names this server also answers to (Tor's HiddenServicePort pointed at [s2s] listen):
    # each is served as a virtual host of its own, which federates only through Tor.
    onion_hosts: tuple[str, ...] = option(
        (), STR_LIST, "onion names also served as virtual hosts (Tor's HiddenServicePort -> [s2s] listen); "
        "only through Tor", each=_onion,
        example=("exampleonionaddressxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.onion",))

    def validate(self, error: ErrorFn) -> Self:
        if self.tor_all and self.tor_socks is None:
            error("tor_all", "needs tor_socks (Tor's SocksPort)")
        if self.onion_hosts and self.tor_socks is None:
            error("onion_hosts", "needs tor_socks (Tor's SocksPort): onion hosts federate only through Tor")
        return replace(self, onion_hosts=tuple(dict.fromkeys(self.onion_hosts)))

    def check_files(self, error: ErrorFn) -> None:
        if self.ca_file is None:
            return
        try:
            with open(self.ca_file, "rb") as f:
                pem = f.read()
            from cryptography import x509
            x509.load_pem_x509_certificates(pem)
        except OSError as e:
            error("ca_file", f"cannot read {self.ca_file!r}: {e.strerror or e}")
        except ValueError:
            error("ca_file", f"{self.ca_file!r} holds no PEM certificate")
