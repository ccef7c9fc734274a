"""The ``[components]`` section: where external components (XEP-0114) connect, and the domains
they may serve, each with its shared secret.

    [components]
    listen = ["127.0.0.1:5347"]
    [components.hosts."irc.example.org"]
    secret = "a long random string"
    name = "IRC bridge"            # optional: its name in the parent domain's disco#items

Nothing listens while no domain is configured: no component could authenticate, and a port that
only refuses is attack surface for nothing. The listener is on loopback by default, as in Prosody
and ejabberd: the protocol has no TLS, and the stanzas (and a replayable-looking handshake)
would cross the network in clear.

Declared with mbxmpp/options.py; ``mbxmpp.config`` reads the section with it (nothing of the\nserver is imported here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from ..options import LISTEN, SIZE, DURATION, Kind, Listen, Option, Table, check_domain, dotted, option

if TYPE_CHECKING:
    from ..config import Config

DEFAULT_LISTEN = (("127.0.0.1", 5347),)


@dataclass(frozen=True, slots=True)
class ComponentHostConfig:
    secret: str = field(repr=False)            # never in a repr, a log line or an error
    name: str | None = None


def _read_hosts(t: Table, k: str, opt: Option, default: Any) -> Mapping[str, ComponentHostConfig]:
    ht = t.get_table(k)
    if ht is None:
        return default
    hosts: dict[str, ComponentHostConfig] = {}
    for name in list(ht.data):
        sub = ht.get_table(name)
        if sub is None:
            continue
        try:
            domain: str | None = check_domain(name)
        except ValueError as e:
            ht.error(name, str(e))
            domain = None
        secret = sub.get_str("secret", None)
        if secret is None and "secret" not in sub.data:
            sub.error("secret", "missing: the shared secret the component authenticates with")
        display = sub.get_str("name", None)
        sub.finish()
        if domain is not None and secret is not None:
            hosts[domain] = ComponentHostConfig(secret, display)
    ht.finish()
    return MappingProxyType(hosts)


def _hosts_toml(path: tuple[str, ...], value: Mapping[str, ComponentHostConfig]) -> list[str]:
    out: list[str] = []
    for domain, host in value.items():
        out += [f"[{dotted(path + (domain,))}]", f'secret = "{host.secret}"']
        if host.name is not None:
            out.append(f'name = "{host.name}"')
    return out


COMPONENT_HOSTS = Kind("components by domain", _read_hosts, lambda v: "", block=_hosts_toml)


@dataclass(frozen=True, slots=True)
class ComponentsConfig:
    """external components (XEP-0114): bridges, gateways, bots; nothing listens without [components.hosts]"""
    listen: tuple[Listen, ...] = option(DEFAULT_LISTEN, LISTEN, "where components connect (no TLS in "
                                        "XEP-0114: keep it on loopback)")
    max_stanza_size: int = option(512 * 1024, SIZE, "a bridge carries many users' traffic; larger stanzas "
                                  "close its stream", minimum=4096)
    auth_timeout: float = option(30.0, DURATION, "from the connection to the accepted handshake")
    hosts: Mapping[str, ComponentHostConfig] = option(
        lambda: MappingProxyType({}), COMPONENT_HOSTS, "each component domain with its shared secret "
        "(and optional name in the parent domain's disco#items)", factory=True,
        example=MappingProxyType({"irc.example.org": ComponentHostConfig("a long random string",
                                                                         "IRC bridge")}))

    @property
    def listening(self) -> tuple[Listen, ...]:
        """The addresses actually bound: none without a configured domain."""
        return self.listen if self.hosts else ()


def check_component_domains(cfg: Config, owner: dict[str, str], errors: list[str]) -> None:
    """A component's domain may not be a served domain or an internal component's
    (``owner``: domain -> the key that serves it)."""
    for domain in cfg.components.hosts:
        prev = owner.get(domain)
        if prev is not None:
            errors.append(f"{dotted(('components', 'hosts', domain))}: {domain!r} is already served "
                          f"by {prev}")


def describe(cfg: Config) -> list[str]:
    """What check-config says: what listens for which domains, and a listener off loopback."""
    import ipaddress

    from ..config import format_listen
    comp = cfg.components
    if not comp.hosts:
        return ["external components: none configured ([components.hosts]), nothing listens"]
    where = ", ".join(format_listen(a) for a in comp.listen) or "nowhere (listen = [])"
    lines = [f"external components: {', '.join(sorted(comp.hosts))} on {where}"]
    for host, port in comp.listen:
        try:
            local = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = False
        if not local:
            lines.append(f"note: components.listen {format_listen((host, port))} is not loopback: "
                         "component streams are not encrypted (XEP-0114 has no TLS)")
    return lines
