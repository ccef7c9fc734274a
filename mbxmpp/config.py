"""The TOML configuration: parsed with tomllib into frozen dataclasses, one per section.

`load_config()` checks syntax and types and collects every error into one `ConfigError`;
`check_config()` adds the checks that touch the filesystem (certificates, data directory) and the
cross-listener ones, for the `check-config` command. Durations are float seconds, sizes int bytes,
listen addresses `(host, port)` tuples with IPv6 hosts unbracketed.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import ipaddress
import json
import os
import re
import ssl
import tomllib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from mbxmpp.util.units import format_duration, format_size, parse_duration, parse_size
from mbxmpp.util.ratelimit import Rate
from mbxmpp.components.options import ComponentsConfig, check_component_domains, load_components

__all__ = [
    "ConfigError", "Config", "ServerConfig", "TLSConfig", "TLSCertConfig", "C2SConfig", "S2SConfig",
    "HTTPConfig", "SMConfig", "MAMConfig", "MUCConfig", "UploadConfig", "Proxy65Config",
    "OfflineConfig", "PushConfig", "AccountsConfig", "WebChatConfig", "MetricsConfig", "AuthConfig", "DEFAULT_MODULES", "COMPONENT_SECTIONS", "DEFAULT_CONFIG_FILE",
    "load_config", "find_default_config", "check_config", "parse_listen", "format_listen",
]

DEFAULT_CONFIG_FILE = "mbxmpp.toml"

# Host modules loaded when [server].modules is not set; components (muc, upload, proxy65) are switched
# by their own section's `enabled`. Keep in step with mbxmpp.example.toml.
DEFAULT_MODULES: tuple[str, ...] = (
    "disco", "roster", "presence", "offline", "carbons", "csi", "sm", "push", "blocking",
    "mam", "ping", "version", "time", "last", "vcard", "private", "pep", "bookmarks",
    "muc", "upload", "proxy65", "webchat", "metrics", "adhoc", "register",
)

COMPONENT_SECTIONS = ("muc", "upload", "proxy65")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
TLS_VERSIONS = ("1.2", "1.3")
# Forward secrecy + AEAD only for TLS 1.2; TLS 1.3 suites are not configurable through OpenSSL's list.
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
MAX_ACK_DELAY = 1.0  # [sm] ack_delay: seconds

Listen = tuple[str, int]


class ConfigError(Exception):
    """Every problem found in a configuration, one message per entry."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


# ----------------------------------------------------------------------------------------- sections

@dataclass(frozen=True, slots=True)
class ServerConfig:
    domains: tuple[str, ...] = ("localhost",)
    data_dir: str = "./mbxmpp-data"
    admins: tuple[str, ...] = ()
    log_level: str = "info"
    log_format: str = "text"                   # "json": one JSON object per line (util/logjson.py)
    modules: tuple[str, ...] | None = None     # None: DEFAULT_MODULES
    disabled_modules: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TLSCertConfig:
    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class TLSConfig:
    cert: str | None = None                    # None (with key None): self-signed, generated in data_dir
    key: str | None = None
    domains: Mapping[str, TLSCertConfig] = field(default_factory=lambda: MappingProxyType({}))
    min_version: str = "1.2"
    ciphers: str = DEFAULT_CIPHERS
    certificates_dir: str | None = None        # certbot's live/: DIR/DOMAIN/fullchain.pem + privkey.pem
    certificates_poll: float = 60.0           # how often their mtimes are compared (a stat each)


@dataclass(frozen=True, slots=True)
class C2SConfig:
    listen: tuple[Listen, ...] = (("127.0.0.1", 5222),)
    direct_tls: tuple[Listen, ...] = (("127.0.0.1", 5223),)
    max_stanza_size: int = 256 * 1024
    auth_timeout: float = 30.0
    # Pre-authentication limits (mbxmpp/core/admission.py; mbxmpp.example.toml says why these)
    max_unauthenticated: int = 5000            # all addresses together
    max_unauthenticated_per_ip: int = 10       # beyond it, the address's stalled ones make room
    stalled_after: float = 10.0                # no negotiation step for this long: stalled
    connection_burst_per_ip: int = 300         # new connections per address at once...
    connection_rate_per_ip: int = 30           # ...and per second after; authenticating refunds
    max_auth_attempts: int = 5
    allow_plain: bool = True                   # SASL PLAIN, only ever offered over TLS
    require_encryption: bool = True


@dataclass(frozen=True, slots=True)
class S2SConfig:
    listen: tuple[Listen, ...] = (("127.0.0.1", 5269),)
    direct_tls: tuple[Listen, ...] = ()        # 5270 is the usual port; not bound by default
    max_stanza_size: int = 512 * 1024
    enabled: bool = True
    dialback: bool = True
    require_dane: bool = False
    timeout: float = 30.0
    ca_file: str | None = None                 # CAs trusted for peers besides the system store
    require_valid_certificates: tuple[str, ...] = ()  # peers never accepted by dialback alone
    idle_timeout: float = 600.0                # s2s streams with no traffic this long are closed
    tor_socks: tuple[str, int] | None = None   # Tor's SocksPort: s2s to .onion domains goes through it
    tor_all: bool = False                      # every s2s connection through tor_socks (SRV still in DNS)
    # Onion names this server also answers to (Tor's HiddenServicePort pointed at [s2s] listen):
    # each is served as a virtual host of its own, which federates only through Tor.
    onion_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HTTPConfig:
    listen: tuple[Listen, ...] = (("127.0.0.1", 5443),)
    public_url: str | None = None              # None: https://<first domain>:<first listen port>
    tls: bool = True
    # Browser origins allowed on /xmpp-websocket besides the hosts' own https origins
    websocket_origins: tuple[str, ...] = ()
    # BOSH (/http-bind): how long a session may go without a request before it counts as lost
    # (Stream Management may then hibernate it), and the longest pause a client may ask for
    bosh_inactivity: float = 30.0
    bosh_max_pause: float = 120.0


@dataclass(frozen=True, slots=True)
class SMConfig:
    resume_timeout: float = 300.0
    push_resume_timeout: float = 72 * 3600.0
    max_unacked: int = 1000
    # the server asks for an ack (<r/>) once this many stanzas are unacked (and none is asked)
    request_every: int = 10
    # an <a/> with nothing else to send waits this long for other output to share a write with
    # (XEP-0198 §4 allows holding an ack until a timeout); 0: sent in the same loop iteration
    ack_delay: float = 0.05
    location: str | None = None                # "host:port" clients should resume at (XEP-0198 §5)


@dataclass(frozen=True, slots=True)
class MAMConfig:
    retention: float = 7 * 86400.0
    sweep_interval: float = 60.0
    # What may be archived per account and quota window (0: unbounded). Bytes do the protecting:
    # the counts are far above what a load test sends between one pair in minutes (a busy user
    # receives a few thousand messages a day of 1-5 KB; files go by upload, not inline).
    quota_window: float = 86400.0
    max_messages_from_others: int = 8_000_000  # all other senders together, into one account
    max_bytes_from_others: int = 1 << 30
    max_messages_per_sender: int = 2_000_000   # one sender into one account
    max_bytes_per_sender: int = 256 << 20
    max_messages_own: int = 8_000_000          # an account's own sent messages, in its archive
    max_bytes_own: int = 1 << 30
    # One sender into all other accounts together: one account cannot fill thousands of others.
    max_bytes_to_others: int = 1 << 30


@dataclass(frozen=True, slots=True)
class MUCConfig:
    domain: str = "conference.{domain}"
    archive_by_default: bool = False
    enabled: bool = True
    max_rooms_per_user: int = 100             # rooms a user may own (creation refused beyond)
    max_rooms_joined_per_user: int = 200      # rooms a user may be in at once
    max_occupants: int = 1000                 # per room; caps muc#roomconfig_maxusers
    message_rate: int = 5                     # messages (and presence updates) per second per occupant
    message_burst: int = 25                   # ... allowed at once before the rate applies
    max_history: int = 100                    # messages a room remembers for history on join
    max_nick_length: int = 64                 # characters
    max_message_size: int = 64 * 1024         # bytes of a message or presence to a room or an occupant


@dataclass(frozen=True, slots=True)
class UploadConfig:
    domain: str = "upload.{domain}"
    max_file_size: int = 10 * 1024 * 1024
    expire_after: float = 3600.0
    enabled: bool = True
    storage_dir: str | None = None             # load_config fills in <data_dir>/upload
    quota_per_user: int = 100 * 1024 * 1024    # bytes stored (and reserved by open slots) per user
    slots_per_hour: int = 100                  # slot requests per user per hour


@dataclass(frozen=True, slots=True)
class Proxy65Config:
    domain: str = "proxy.{domain}"
    listen: tuple[Listen, ...] = (("127.0.0.1", 5000),)
    public_host: str | None = None             # None: the listen host
    enabled: bool = True
    activation_timeout: float = 60.0           # a connection not activated by then is closed
    idle_timeout: float = 300.0                # an activated stream without traffic is closed
    max_streams_per_user: int = 10             # concurrent activated streams per requester
    max_bytes_per_user: int = 10 * 1024 ** 3   # bytes relayed per requester per hour


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")   # addresses that may scrape /metrics
    token: str = ""                                       # or a bearer token; "" = none


@dataclass(frozen=True, slots=True)
class WebChatConfig:
    language: str = "en"                       # Converse.js interface language (its i18n code)
    assets_dir: str | None = None              # None: <data_dir>/webchat


@dataclass(frozen=True, slots=True)
class OfflineConfig:
    max_messages: int = 1000                   # per user (0: store none)
    max_bytes: int = 10 * 1024 * 1024          # per user (0: unbounded)
    max_messages_per_sender: int = 500         # one sender's share of a user's storage (0: unbounded)
    max_bytes_per_sender: int = 5 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PushConfig:
    include_body: bool = False                 # send the message body to app servers (third parties)
    min_interval: float = 2.0                  # seconds between two pushes to one registration
    publish_timeout: float = 30.0              # wait for the app server's reply
    wake_before: float = 60.0                  # wake-up push before hibernation ends (<= 10% of it)
    max_registrations: int = 20                # per account


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Token buckets (mbxmpp/util/ratelimit.py) that a normal user never hits: in the file each
    is a rate ("N/s", "N/min", "N/h", "N/day"; "0": no limit) and ``<name>_burst``."""
    # every SASL attempt from one IP address: a carrier NAT's reconnect storm is thousands at once
    logins_per_address: Rate = Rate(100.0, 10_000)
    failed_logins_per_address: Rate = Rate(10.0, 1_000)
    # every SASL attempt for one account (all its devices reconnecting at once fit the burst)
    logins_per_account: Rate = Rate(2.0, 600)
    # failures per account AND address: guessing is slowed; an attacker elsewhere locks nobody out
    failed_logins_per_account: Rate = Rate(10 / 60, 30)
    # stanzas one session sends; over it, reading from its connection waits (no error)
    stanzas_per_session: Rate = Rate(5000.0, 50_000)
    # presence subscription requests an account sends (RFC 6121 §3.1.3 allows refusing)
    subscriptions_per_account: Rate = Rate(100 / 3600, 1_000)
    # new group chat rooms an account creates (muc: <policy-violation/>; [muc] caps the count)
    muc_rooms_per_account: Rate = Rate(10 / 3600, 100)
    # spam reports (XEP-0377) recorded per account; over it the JID is blocked, not recorded
    reports_per_account: Rate = Rate(100 / 86400, 100)
    # new BOSH sessions from one address (a carrier NAT's users all reload their web chat at once)
    bosh_sessions_per_address: Rate = Rate(20.0, 2_000)

    @property
    def rates(self) -> dict[str, Rate]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class AccountsConfig:
    chat_plans: tuple[str, ...] = ("paid",)
    default_plan: str = "paid"                 # plan of an account that has none recorded
    refusal_text: str = ("Your plan does not include chat. "
                         "Upgrade your plan to use chat with this account.")

    def allows_chat(self, plan: str | None) -> bool:
        return (self.default_plan if plan is None else plan) in self.chat_plans


@dataclass(frozen=True, slots=True)
class DovecotAuthConfig:
    client_socket: str = "/run/dovecot/auth-client"   # passwords (Dovecot's auth-client listener)
    userdb_socket: str = "/run/dovecot/auth-userdb"   # account lookups for routing; "" = none
    plan_field: str = "plan"                           # passdb/userdb extra field with the plan
    timeout: float = 5.0
    cache_ttl: float = 60.0


@dataclass(frozen=True, slots=True)
class LDAPAuthConfig:
    uri: str = "ldap://127.0.0.1"
    base_dn: str = ""
    bind_dn: str = ""                                  # "" = anonymous search
    bind_password: str = ""
    filter: str = "(mail={jid})"                       # {jid} is the escaped bare JID
    plan_attribute: str = ""                           # "" = every account has the default plan
    timeout: float = 5.0
    cache_ttl: float = 60.0


@dataclass(frozen=True, slots=True)
class AuthConfig:
    backend: str = "internal"                          # internal, dovecot or ldap
    dovecot: DovecotAuthConfig = field(default_factory=DovecotAuthConfig)
    ldap: LDAPAuthConfig = field(default_factory=LDAPAuthConfig)


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    c2s: C2SConfig = field(default_factory=C2SConfig)
    s2s: S2SConfig = field(default_factory=S2SConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    sm: SMConfig = field(default_factory=SMConfig)
    mam: MAMConfig = field(default_factory=MAMConfig)
    muc: MUCConfig = field(default_factory=MUCConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    proxy65: Proxy65Config = field(default_factory=Proxy65Config)
    webchat: WebChatConfig = field(default_factory=WebChatConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    push: PushConfig = field(default_factory=PushConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    components: ComponentsConfig = field(default_factory=ComponentsConfig)  # external (XEP-0114)
    source: str | None = None                  # the file it was read from; None: embedded defaults

    def component_domain(self, section: str, host: str) -> str:
        """The domain of component `section` ("muc", "upload", "proxy65") for virtual host `host`."""
        if section not in COMPONENT_SECTIONS:
            raise ValueError(f"{section!r} is not a component section ({', '.join(COMPONENT_SECTIONS)})")
        template: str = getattr(self, section).domain
        return template.replace("{domain}", host.lower())

    def served_components(self, host: str) -> dict[str, str]:
        """Enabled components of `host`: section -> component domain."""
        return {s: self.component_domain(s, host) for s in COMPONENT_SECTIONS
                if getattr(self, s).enabled}

    @property
    def enabled_modules(self) -> tuple[str, ...]:
        mods = DEFAULT_MODULES if self.server.modules is None else self.server.modules
        return tuple(m for m in mods if m not in self.server.disabled_modules)

    def tls_for(self, domain: str) -> TLSCertConfig | None:
        """The certificate configured for `domain` (exact, then wildcard, then default), if any."""
        d = domain.lower()
        entry = self.tls.domains.get(d)
        if entry is None and "." in d:
            entry = self.tls.domains.get("*." + d.split(".", 1)[1])
        if entry is None and self.tls.cert is not None and self.tls.key is not None:
            entry = TLSCertConfig(self.tls.cert, self.tls.key)
        return entry

    @property
    def http_public_url(self) -> str:
        if self.http.public_url is not None:
            return self.http.public_url
        port = self.http.listen[0][1] if self.http.listen else 5443
        return f"{'https' if self.http.tls else 'http'}://{self.server.domains[0]}:{port}"


# ------------------------------------------------------------------------------------ value parsing

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_LOCALPART_FORBIDDEN = set("\"&'/:<>@ \t\r\n")


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(p if _BARE_KEY.fullmatch(p) else json.dumps(p) for p in path)


def _type_name(v: object) -> str:
    if isinstance(v, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "float", list: "array", dict: "table"}.get(
        type(v), type(v).__name__)


def _show(v: object) -> str:
    text = json.dumps(v) if isinstance(v, (str, bool)) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_domain(d: str, *, wildcard: bool = False) -> str:
    """Return the normalized (lowercase, no trailing dot) domain; raise ValueError if invalid."""
    name = d.strip().lower().rstrip(".") if d.strip() != "." else ""
    if not name:
        raise ValueError(f"invalid domain name {d!r}: empty")
    labels = name.split(".")
    if wildcard and labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    try:
        ascii_labels = [lab if lab.isascii() else lab.encode("idna").decode("ascii") for lab in labels]
    except UnicodeError:
        raise ValueError(f"invalid domain name {d!r}: not a valid internationalized name") from None
    if len(".".join(ascii_labels)) > 253:
        raise ValueError(f"invalid domain name {d!r}: longer than 253 characters")
    for lab in ascii_labels:
        if not _LABEL.fullmatch(lab):
            raise ValueError(f"invalid domain name {d!r}: bad label {lab!r} (letters, digits and "
                             "inner hyphens, 1-63 characters)")
    if all(lab.isdigit() for lab in ascii_labels):
        raise ValueError(f"invalid domain name {d!r}: an IP address is not a domain name")
    return name


def _check_bare_jid(j: str) -> str:
    local, at, domain = j.partition("@")
    if not at or not local:
        raise ValueError(f"invalid JID {j!r}: expected a bare JID user@domain")
    if "/" in domain:
        raise ValueError(f"invalid JID {j!r}: must be a bare JID without a resource")
    if _LOCALPART_FORBIDDEN & set(local) or len(local.encode()) > 1023:
        raise ValueError(f"invalid JID {j!r}: bad localpart {local!r}")
    try:
        domain = _check_domain(domain)
    except ValueError as e:
        raise ValueError(f"invalid JID {j!r}: {e}") from None
    return f"{local.lower()}@{domain}"


def parse_listen(s: str) -> Listen:
    """Parse "host:port" or "[v6]:port" into (host, port); port 0 means an ephemeral port."""
    if not isinstance(s, str):
        raise ValueError(f"invalid listen address {s!r}: expected a \"host:port\" string")
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or not s[end + 1:].startswith(":"):
            raise ValueError(f"invalid listen address {s!r}: expected \"[ipv6]:port\"")
        host, port = s[1:end], s[end + 2:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid listen address {s!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port = s.rpartition(":")
        if not sep or not host:
            raise ValueError(f"invalid listen address {s!r}: expected \"host:port\" "
                             "(e.g. \"0.0.0.0:5222\" or \"[::]:5222\")")
        if ":" in host:
            raise ValueError(f"invalid listen address {s!r}: put an IPv6 address in brackets, "
                             f"\"[{host}]:{port}\"")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if host.replace(".", "").isdigit():
                raise ValueError(f"invalid listen address {s!r}: {host!r} is not an IPv4 address") from None
            try:
                host = _check_domain(host)
            except ValueError:
                raise ValueError(f"invalid listen address {s!r}: {host!r} is not an IP address "
                                 "or host name") from None
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid listen address {s!r}: port must be a number from 0 to 65535")
    return host, int(port)


def format_listen(addr: Listen) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------------------- the reader

_MISSING: Any = object()


class _Table:
    """One TOML table being read: typed getters that record errors and remember the keys used."""

    def __init__(self, data: dict[str, Any], path: tuple[str, ...], errors: list[str]) -> None:
        self.data, self.path, self.errors = data, path, errors
        self.used: set[str] = set()

    def key(self, k: str) -> str:
        return _dotted(self.path + (k,))

    def error(self, k: str, msg: str) -> None:
        self.errors.append(f"{self.key(k)}: {msg}")

    def _get(self, k: str) -> Any:
        self.used.add(k)
        return self.data.get(k, _MISSING)

    def _wrong(self, k: str, expected: str, v: object) -> None:
        self.error(k, f"expected {expected}, got {_type_name(v)} {_show(v)}")

    def get_str(self, k: str, default: Any, allow_empty: bool = False) -> Any:
        v = self._get(k)
        if v is _MISSING:
            return default
        if not isinstance(v, str) or not (v or allow_empty):
            self._wrong(k, "a string" if allow_empty else "a non-empty string", v)
            return default
        return v

    def get_bool(self, k: str, default: bool) -> bool:
        v = self._get(k)
        if v is _MISSING:
            return default
        if not isinstance(v, bool):
            self._wrong(k, "a boolean (true or false)", v)
            return default
        return v

    def get_int(self, k: str, default: int, minimum: int = 0) -> int:
        v = self._get(k)
        if v is _MISSING:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            self._wrong(k, "an integer", v)
            return default
        if v < minimum:
            self.error(k, f"must be at least {minimum}, got {v}")
            return default
        return v

    def get_duration(self, k: str, default: float, minimum: float = 0.001) -> float:
        v = self._get(k)
        if v is _MISSING:
            return default
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            self._wrong(k, 'a duration such as "30s", "5m", "1h", "7d" or an integer number of seconds', v)
            return default
        try:
            secs = parse_duration(v)
        except ValueError as e:
            self.error(k, str(e))
            return default
        if secs < minimum:
            self.error(k, f"must be at least {format_duration(minimum)}, got {_show(v)}")
            return default
        return secs

    def get_size(self, k: str, default: int, minimum: int = 1) -> int:
        v = self._get(k)
        if v is _MISSING:
            return default
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            self._wrong(k, 'a size such as "256KiB", "10MiB", "10MB" or an integer number of bytes', v)
            return default
        try:
            n = parse_size(v)
        except ValueError as e:
            self.error(k, str(e))
            return default
        if n < minimum:
            self.error(k, f"must be at least {format_size(minimum)}, got {_show(v)}")
            return default
        return n

    def get_str_list(self, k: str, default: Any) -> Any:
        v = self._get(k)
        if v is _MISSING:
            return default
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            self._wrong(k, "an array of non-empty strings", v)
            return default
        return tuple(v)

    def get_listen(self, k: str, default: tuple[Listen, ...]) -> tuple[Listen, ...]:
        v = self._get(k)
        if v is _MISSING:
            return default
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self._wrong(k, 'an array of "host:port" strings (e.g. ["[::]:5222"])', v)
            return default
        out = []
        for s in v:
            try:
                out.append(parse_listen(s))
            except ValueError as e:
                self.error(k, str(e))
        return tuple(out)

    def get_table(self, k: str) -> _Table | None:
        v = self._get(k)
        if v is _MISSING:
            return None
        if not isinstance(v, dict):
            self._wrong(k, "a table", v)
            return None
        return _Table(v, self.path + (k,), self.errors)

    def finish(self) -> None:
        for k in self.data:
            if k not in self.used:
                hint = difflib.get_close_matches(k, sorted(self.used), n=1)
                tail = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.errors.append(f"unknown key '{self.key(k)}'{tail}")


# ------------------------------------------------------------------------------------ section loaders

def _load_server(t: _Table) -> ServerConfig:
    d = ServerConfig()
    domains: list[str] = []
    raw = t.get_str_list("domains", _MISSING)
    if raw is _MISSING:
        if "domains" not in t.data:
            t.error("domains", 'required: the virtual hosts this server serves, e.g. ["example.org"]')
    elif not raw:
        t.error("domains", "at least one domain is required")
    else:
        for x in raw:
            try:
                name = _check_domain(x)
            except ValueError as e:
                t.error("domains", str(e))
                continue
            if name in domains:
                t.error("domains", f"duplicate domain {name!r}")
            else:
                domains.append(name)
    admins = []
    for a in t.get_str_list("admins", ()):
        try:
            admins.append(_check_bare_jid(a))
        except ValueError as e:
            t.error("admins", str(e))
    level = t.get_str("log_level", d.log_level).lower()
    if level not in LOG_LEVELS:
        t.error("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {_show(level)}")
        level = d.log_level
    log_format = t.get_str("log_format", d.log_format).lower()
    if log_format not in LOG_FORMATS:
        t.error("log_format", f"must be one of {', '.join(LOG_FORMATS)}, got {_show(log_format)}")
        log_format = d.log_format
    modules = t.get_str_list("modules", None)
    disabled = t.get_str_list("disabled_modules", ())
    for key, names in (("modules", modules or ()), ("disabled_modules", disabled)):
        for m in names:
            if not m.isidentifier():
                t.error(key, f"invalid module name {m!r}")
    return ServerConfig(
        domains=tuple(domains) or d.domains, data_dir=t.get_str("data_dir", d.data_dir),
        admins=tuple(admins), log_level=level, log_format=log_format, modules=modules, disabled_modules=disabled)


def _load_cert_pair(t: _Table, required: bool) -> tuple[str | None, str | None]:
    cert, key = t.get_str("cert", None), t.get_str("key", None)
    if (cert is None) != (key is None) or (required and cert is None and key is None):
        missing = "key" if key is None else "cert"
        t.error(missing, "required: cert and key must be set together")
    return cert, key


def _load_tls(t: _Table) -> TLSConfig:
    d = TLSConfig()
    cert, key = _load_cert_pair(t, required=False)
    domains: dict[str, TLSCertConfig] = {}
    dt = t.get_table("domains")
    if dt is not None:
        for name in list(dt.data):
            sub = dt.get_table(name)
            if sub is None:
                continue
            try:
                norm = _check_domain(name, wildcard=True)
            except ValueError as e:
                dt.error(name, str(e))
                norm = None
            c, k = _load_cert_pair(sub, required=True)
            sub.finish()
            if norm is not None and c is not None and k is not None:
                domains[norm] = TLSCertConfig(c, k)
        dt.finish()
    v = t._get("min_version")
    min_version = d.min_version
    if v is not _MISSING:
        # COMPAT: `min_version = 1.2` (a TOML float) is an easy mistake; accept it.
        sv = f"{v:.1f}" if isinstance(v, float) else v
        if sv not in TLS_VERSIONS:
            t.error("min_version", f'must be "1.2" or "1.3", got {_show(v)}')
        else:
            min_version = sv
    ciphers = t.get_str("ciphers", d.ciphers)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
    except ssl.SSLError:
        t.error("ciphers", f"OpenSSL accepts no cipher from {_show(ciphers)}")
        ciphers = d.ciphers
    return TLSConfig(cert=cert, key=key, domains=MappingProxyType(domains),
                     min_version=min_version, ciphers=ciphers,
                     certificates_dir=t.get_str("certificates_dir", d.certificates_dir),
                     certificates_poll=t.get_duration("certificates_poll", d.certificates_poll,
                                                      minimum=0.1))


def _load_c2s(t: _Table) -> C2SConfig:
    d = C2SConfig()
    return C2SConfig(
        listen=t.get_listen("listen", d.listen), direct_tls=t.get_listen("direct_tls", d.direct_tls),
        max_stanza_size=t.get_size("max_stanza_size", d.max_stanza_size, minimum=4096),
        auth_timeout=t.get_duration("auth_timeout", d.auth_timeout),
        max_unauthenticated=t.get_int("max_unauthenticated", d.max_unauthenticated, 1),
        max_unauthenticated_per_ip=t.get_int("max_unauthenticated_per_ip", d.max_unauthenticated_per_ip, 1),
        stalled_after=t.get_duration("stalled_after", d.stalled_after),
        connection_burst_per_ip=t.get_int("connection_burst_per_ip", d.connection_burst_per_ip, 1),
        connection_rate_per_ip=t.get_int("connection_rate_per_ip", d.connection_rate_per_ip, 1),
        max_auth_attempts=t.get_int("max_auth_attempts", d.max_auth_attempts, 1),
        allow_plain=t.get_bool("allow_plain", d.allow_plain),
        require_encryption=t.get_bool("require_encryption", d.require_encryption))


def _load_s2s(t: _Table) -> S2SConfig:
    d = S2SConfig()
    return S2SConfig(
        listen=t.get_listen("listen", d.listen), direct_tls=t.get_listen("direct_tls", d.direct_tls),
        max_stanza_size=t.get_size("max_stanza_size", d.max_stanza_size, minimum=4096),
        enabled=t.get_bool("enabled", d.enabled), dialback=t.get_bool("dialback", d.dialback),
        require_dane=t.get_bool("require_dane", d.require_dane), timeout=t.get_duration("timeout", d.timeout),
        ca_file=t.get_str("ca_file", d.ca_file) or None,
        require_valid_certificates=tuple(
            x.lower() for x in t.get_str_list("require_valid_certificates", list(d.require_valid_certificates))),
        idle_timeout=t.get_duration("idle_timeout", d.idle_timeout),
        tor_socks=_socks_address(t, "tor_socks"), tor_all=_tor_all(t, d.tor_all),
        onion_hosts=_onion_hosts(t))


def _onion_hosts(t: _Table) -> tuple[str, ...]:
    out = []
    for name in t.get_str_list("onion_hosts", ()):
        try:
            name = _check_domain(name)
        except ValueError as e:
            t.error("onion_hosts", str(e))
            continue
        if not name.endswith(".onion"):
            t.error("onion_hosts", f"{name!r} is not an .onion name")
        elif name not in out:
            out.append(name)
    if out and not t.get_str("tor_socks", "", allow_empty=True):
        t.error("onion_hosts", "needs tor_socks (Tor's SocksPort): onion hosts federate only through Tor")
    return tuple(out)


def _tor_all(t: _Table, default: bool) -> bool:
    value = t.get_bool("tor_all", default)
    if value and not t.get_str("tor_socks", "", allow_empty=True):
        t.error("tor_all", "needs tor_socks (Tor's SocksPort)")
    return value


def _socks_address(t: _Table, key: str) -> tuple[str, int] | None:
    value = t.get_str(key, "", allow_empty=True)
    if not value:
        return None
    from .s2s.socks import parse_proxy
    try:
        return parse_proxy(value)
    except ValueError:
        t.error(key, f'expected "host:port" such as "127.0.0.1:9050" (Tor\'s SocksPort), or "" for none, '
                     f"got {_show(value)}")
        return None


def _load_http(t: _Table) -> HTTPConfig:
    d = HTTPConfig()
    from urllib.parse import urlsplit
    url = t.get_str("public_url", None)
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            t.error("public_url", f'expected an absolute http(s) URL such as "https://example.org:5443", '
                                  f"got {_show(url)}")
            url = None
        else:
            url = url.rstrip("/")
    origins = []
    for o in t.get_str_list("websocket_origins", d.websocket_origins):
        parts = urlsplit(o)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
                or parts.query or parts.fragment:
            t.error("websocket_origins", f'expected origins such as "https://chat.example.org", got {_show(o)}')
            continue
        origins.append(f"{parts.scheme}://{parts.netloc}".lower())
    return HTTPConfig(listen=t.get_listen("listen", d.listen), public_url=url, tls=t.get_bool("tls", d.tls),
                      websocket_origins=tuple(origins),
                      bosh_inactivity=t.get_duration("bosh_inactivity", d.bosh_inactivity, 0.1),
                      bosh_max_pause=t.get_duration("bosh_max_pause", d.bosh_max_pause, 1.0))


def _load_sm(t: _Table) -> SMConfig:
    d = SMConfig()
    ack_delay = t.get_duration("ack_delay", d.ack_delay, 0.0)
    if ack_delay > MAX_ACK_DELAY:  # XEP-0198 §4: an answer is sent as soon as possible
        t.error("ack_delay", f"must be at most {format_duration(MAX_ACK_DELAY)}, got {_show(t._get('ack_delay'))}")
        ack_delay = d.ack_delay
    return SMConfig(resume_timeout=t.get_duration("resume_timeout", d.resume_timeout),
                    push_resume_timeout=t.get_duration("push_resume_timeout", d.push_resume_timeout),
                    max_unacked=t.get_int("max_unacked", d.max_unacked, 1),
                    request_every=t.get_int("request_every", d.request_every, 1),
                    ack_delay=ack_delay,
                    location=t.get_str("location", d.location, allow_empty=True) or None)


def _load_mam(t: _Table) -> MAMConfig:
    d = MAMConfig()
    return MAMConfig(retention=t.get_duration("retention", d.retention, minimum=1),
                     sweep_interval=t.get_duration("sweep_interval", d.sweep_interval, minimum=1),
                     quota_window=t.get_duration("quota_window", d.quota_window, minimum=1),
                     max_messages_from_others=t.get_int("max_messages_from_others",
                                                        d.max_messages_from_others, 0),
                     max_bytes_from_others=t.get_size("max_bytes_from_others",
                                                      d.max_bytes_from_others, 0),
                     max_messages_per_sender=t.get_int("max_messages_per_sender",
                                                       d.max_messages_per_sender, 0),
                     max_bytes_per_sender=t.get_size("max_bytes_per_sender",
                                                     d.max_bytes_per_sender, 0),
                     max_messages_own=t.get_int("max_messages_own", d.max_messages_own, 0),
                     max_bytes_own=t.get_size("max_bytes_own", d.max_bytes_own, 0),
                     max_bytes_to_others=t.get_size("max_bytes_to_others",
                                                    d.max_bytes_to_others, 0))


def _component_template(t: _Table, default: str) -> str:
    tpl: str = t.get_str("domain", default)
    probe = tpl.replace("{domain}", "example.org")
    try:
        if "{" in probe or "}" in probe:
            raise ValueError("the only placeholder is {domain}")
        _check_domain(probe)
    except ValueError as e:
        t.error("domain", f"invalid component domain {tpl!r}: {e}")
        return default
    return tpl.lower()


def _load_muc(t: _Table) -> MUCConfig:
    d = MUCConfig()
    return MUCConfig(domain=_component_template(t, d.domain),
                     archive_by_default=t.get_bool("archive_by_default", d.archive_by_default),
                     enabled=t.get_bool("enabled", d.enabled),
                     max_rooms_per_user=t.get_int("max_rooms_per_user", d.max_rooms_per_user, 0),
                     max_rooms_joined_per_user=t.get_int("max_rooms_joined_per_user",
                                                         d.max_rooms_joined_per_user, 1),
                     max_occupants=t.get_int("max_occupants", d.max_occupants, 1),
                     message_rate=t.get_int("message_rate", d.message_rate, 0),
                     message_burst=t.get_int("message_burst", d.message_burst, 1),
                     max_history=t.get_int("max_history", d.max_history, 0),
                     max_nick_length=t.get_int("max_nick_length", d.max_nick_length, 1),
                     max_message_size=t.get_size("max_message_size", d.max_message_size, 1024))


def _load_upload(t: _Table) -> UploadConfig:
    d = UploadConfig()
    cfg = UploadConfig(domain=_component_template(t, d.domain),
                       max_file_size=t.get_size("max_file_size", d.max_file_size),
                       expire_after=t.get_duration("expire_after", d.expire_after, minimum=1),
                       enabled=t.get_bool("enabled", d.enabled), storage_dir=t.get_str("storage_dir", None),
                       quota_per_user=t.get_size("quota_per_user", d.quota_per_user),
                       slots_per_hour=t.get_int("slots_per_hour", d.slots_per_hour, 1))
    if cfg.quota_per_user < cfg.max_file_size:
        t.error("quota_per_user", f"must be at least max_file_size ({format_size(cfg.max_file_size)}), "
                                  f"or files of that size could never be uploaded")
    return cfg


def _load_proxy65(t: _Table) -> Proxy65Config:
    d = Proxy65Config()
    host = t.get_str("public_host", None)
    if host is not None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:
                host = _check_domain(host)
            except ValueError as e:
                t.error("public_host", f"expected a host name or IP address: {e}")
                host = None
    return Proxy65Config(domain=_component_template(t, d.domain), listen=t.get_listen("listen", d.listen),
                         public_host=host, enabled=t.get_bool("enabled", d.enabled),
                         activation_timeout=t.get_duration("activation_timeout", d.activation_timeout),
                         idle_timeout=t.get_duration("idle_timeout", d.idle_timeout),
                         max_streams_per_user=t.get_int("max_streams_per_user", d.max_streams_per_user, 1),
                         max_bytes_per_user=t.get_size("max_bytes_per_user", d.max_bytes_per_user))


def _load_metrics(t: _Table) -> MetricsConfig:
    d = MetricsConfig()
    allow = []
    for n in t.get_str_list("allow", d.allow):
        try:
            allow.append(str(ipaddress.ip_network(n, strict=False)))
        except ValueError:
            t.error("allow", f'expected addresses or networks such as "127.0.0.1" or "10.0.0.0/8", got {_show(n)}')
    return MetricsConfig(allow=tuple(allow), token=t.get_str("token", d.token, allow_empty=True))


def _load_webchat(t: _Table) -> WebChatConfig:
    d = WebChatConfig()
    lang = t.get_str("language", d.language)
    if not re.fullmatch(r"[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})*", lang):
        t.error("language", f'expected a language code such as "en", "de" or "pt_BR", got {_show(lang)}')
        lang = d.language
    return WebChatConfig(language=lang, assets_dir=t.get_str("assets_dir", None))


def _load_offline(t: _Table) -> OfflineConfig:
    d = OfflineConfig()
    return OfflineConfig(max_messages=t.get_int("max_messages", d.max_messages, 0),
                         max_bytes=t.get_size("max_bytes", d.max_bytes, 0),
                         max_messages_per_sender=t.get_int("max_messages_per_sender",
                                                           d.max_messages_per_sender, 0),
                         max_bytes_per_sender=t.get_size("max_bytes_per_sender",
                                                         d.max_bytes_per_sender, 0))


def _load_push(t: _Table) -> PushConfig:
    d = PushConfig()
    return PushConfig(include_body=t.get_bool("include_body", d.include_body),
                      min_interval=t.get_duration("min_interval", d.min_interval),
                      publish_timeout=t.get_duration("publish_timeout", d.publish_timeout),
                      wake_before=t.get_duration("wake_before", d.wake_before),
                      max_registrations=t.get_int("max_registrations", d.max_registrations, 1))


AUTH_BACKENDS = ("internal", "dovecot", "ldap")


def _load_auth(t: _Table) -> AuthConfig:
    d = AuthConfig()
    backend = t.get_str("backend", d.backend)
    if backend not in AUTH_BACKENDS:
        t.error("backend", f"must be one of {', '.join(AUTH_BACKENDS)}, got {_show(backend)}")
        backend = d.backend
    dovecot, ldap = d.dovecot, d.ldap
    dt = t.get_table("dovecot")
    if dt is not None:
        dd = DovecotAuthConfig()
        dovecot = DovecotAuthConfig(
            client_socket=dt.get_str("client_socket", dd.client_socket),
            userdb_socket=dt.get_str("userdb_socket", dd.userdb_socket, allow_empty=True),
            plan_field=dt.get_str("plan_field", dd.plan_field),
            timeout=dt.get_duration("timeout", dd.timeout), cache_ttl=dt.get_duration("cache_ttl", dd.cache_ttl))
        dt.finish()
    lt = t.get_table("ldap")
    if lt is not None:
        ld = LDAPAuthConfig()
        ldap = LDAPAuthConfig(
            uri=lt.get_str("uri", ld.uri), base_dn=lt.get_str("base_dn", ld.base_dn, allow_empty=True),
            bind_dn=lt.get_str("bind_dn", ld.bind_dn, allow_empty=True),
            bind_password=lt.get_str("bind_password", ld.bind_password, allow_empty=True),
            filter=lt.get_str("filter", ld.filter), plan_attribute=lt.get_str("plan_attribute", "", allow_empty=True),
            timeout=lt.get_duration("timeout", ld.timeout), cache_ttl=lt.get_duration("cache_ttl", ld.cache_ttl))
        if "{jid}" not in ldap.filter:
            lt.error("filter", f"must contain {{jid}}, got {_show(ldap.filter)}")
        if backend == "ldap" and not ldap.base_dn:
            lt.error("base_dn", "required with backend = \"ldap\"")
        lt.finish()
    elif backend == "ldap":
        t.error("ldap", "required with backend = \"ldap\": [auth.ldap] uri and base_dn")
    return AuthConfig(backend=backend, dovecot=dovecot, ldap=ldap)


def _load_accounts(t: _Table) -> AccountsConfig:
    d = AccountsConfig()
    return AccountsConfig(chat_plans=t.get_str_list("chat_plans", d.chat_plans),
                          default_plan=t.get_str("default_plan", d.default_plan),
                          refusal_text=t.get_str("refusal_text", d.refusal_text))


def _load_limits(t: _Table) -> LimitsConfig:
    rates = {}
    for name, d in LimitsConfig().rates.items():
        burst = t.get_int(name + "_burst", int(d.burst), 1)
        text = "0" if t.data.get(name) == 0 else t.get_str(name, None)  # 0: no limit
        t.used.add(name)
        try:
            rates[name] = Rate(d.per_second, burst) if text is None else Rate.parse(str(text), burst)
        except ValueError as e:
            t.error(name, str(e))
            rates[name] = d
    return LimitsConfig(**rates)


_SECTIONS = {
    "server": _load_server, "tls": _load_tls, "c2s": _load_c2s, "s2s": _load_s2s, "http": _load_http,
    "sm": _load_sm, "mam": _load_mam, "muc": _load_muc, "upload": _load_upload,
    "proxy65": _load_proxy65, "webchat": _load_webchat, "metrics": _load_metrics, "offline": _load_offline, "push": _load_push,
    "accounts": _load_accounts, "auth": _load_auth, "limits": _load_limits,
    "components": load_components,
}


def _check_component_domains(cfg: Config, errors: list[str]) -> None:
    owner: dict[str, str] = {h: f"server.domains ({h})" for h in cfg.server.domains}
    for host in cfg.server.domains:
        for section, dom in cfg.served_components(host).items():
            what = f"{section}.domain ({dom} for {host})"
            prev = owner.get(dom)
            if prev is not None and not prev.startswith(f"{section}.domain"):
                errors.append(f"{section}.domain: {dom!r} for {host} is already used by {prev}")
            owner.setdefault(dom, what)
    check_component_domains(cfg, owner, errors)


def _build(data: dict[str, Any], source: str | None) -> Config:
    errors: list[str] = []
    root = _Table(data, (), errors)
    parts: dict[str, Any] = {}
    if "server" not in data:
        errors.append("missing required section [server] (with at least `domains = [...]`)")
    for name, loader in _SECTIONS.items():
        t = root.get_table(name)
        if t is not None:
            parts[name] = loader(t)
            t.finish()
    root.finish()
    cfg = Config(**parts, source=source)
    if cfg.upload.storage_dir is None:
        cfg = dataclasses.replace(cfg, upload=dataclasses.replace(
            cfg.upload, storage_dir=os.path.join(cfg.server.data_dir, "upload")))
    extra = tuple(h for h in cfg.s2s.onion_hosts if h not in cfg.server.domains)
    if extra:  # the onion names are served as virtual hosts (DESIGN: [s2s] onion_hosts)
        cfg = dataclasses.replace(cfg, server=dataclasses.replace(
            cfg.server, domains=cfg.server.domains + extra))
    _check_component_domains(cfg, errors)
    if errors:
        raise ConfigError(errors)
    return cfg


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate `path`; None gives the embedded defaults. Raises ConfigError."""
    if path is None:
        return _build({"server": {"domains": ["localhost"]}}, None)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError([f"cannot read config file {os.fspath(path)!r}: {e.strerror or e}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{os.fspath(path)}: invalid TOML: {e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{os.fspath(path)}: not UTF-8: {e}"]) from None
    return _build(data, os.fspath(path))


def find_default_config() -> str | None:
    """`./mbxmpp.toml` if it exists (the CLI order is `-c FILE`, this, then the embedded defaults)."""
    return DEFAULT_CONFIG_FILE if os.path.isfile(DEFAULT_CONFIG_FILE) else None


# ------------------------------------------------------------------------------------- check_config

def _cert_names(cert: Any) -> list[str]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _name_matches(pattern: str, domain: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = domain.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == domain


def _check_pair(label: str, cert_path: str, key_path: str, errors: list[str]) -> Any:
    """Check one cert/key pair; return the leaf certificate, or None after recording errors."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def read(key: str, path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            errors.append(f"{label}.{key}: cannot read {path!r}: {e.strerror or e}")
            return None

    cert_pem, key_pem = read("cert", cert_path), read("key", key_path)
    leaf = key = None
    if cert_pem is not None:
        try:
            leaf = x509.load_pem_x509_certificates(cert_pem)[0]
        except ValueError as e:
            errors.append(f"{label}.cert: {cert_path!r} is not a PEM certificate: {e}")
    if key_pem is not None:
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except TypeError:
            errors.append(f"{label}.key: {key_path!r} is encrypted; the server needs an unencrypted key")
        except Exception as e:  # ValueError, or UnsupportedAlgorithm for an exotic key type
            errors.append(f"{label}.key: {key_path!r} is not a PEM private key: {e}")
    if leaf is None or key is None:
        return None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        errors.append(f"{label}.key: {key_path!r} does not match the certificate {cert_path!r}")
        return None
    if leaf.not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc):
        errors.append(f"{label}.cert: {cert_path!r} expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    return leaf


def _check_tls(cfg: Config, errors: list[str]) -> None:
    leaves: dict[str, Any] = {}
    if cfg.tls.cert is not None and cfg.tls.key is not None:
        leaves["*default*"] = _check_pair("tls", cfg.tls.cert, cfg.tls.key, errors)
    for name, pair in cfg.tls.domains.items():
        leaves[name] = _check_pair(_dotted(("tls", "domains", name)), pair.cert, pair.key, errors)
    for host in cfg.server.domains:
        entry = cfg.tls.domains.get(host)
        which = host if entry is not None else "*default*"
        if entry is None and "." in host and "*." + host.split(".", 1)[1] in cfg.tls.domains:
            which = "*." + host.split(".", 1)[1]
        if which == "*default*" and cfg.tls.certificates_dir is not None and os.path.exists(
                os.path.join(cfg.tls.certificates_dir, host, "fullchain.pem")):
            continue  # its own from certificates_dir (_check_certificates_dir)
        leaf = leaves.get(which)
        if leaf is None:
            continue  # no certificate (self-signed) or already reported
        names = _cert_names(leaf)
        if not any(_name_matches(n, host) for n in names):
            src = "tls.cert" if which == "*default*" else _dotted(("tls", "domains", which)) + ".cert"
            errors.append(f"{src}: certificate does not cover virtual host {host!r} "
                          f"(it names {', '.join(names) or 'nothing'})")


def _check_certificates_dir(cfg: Config, errors: list[str]) -> None:
    """[tls] certificates_dir: readable, and each served domain's pair found there is valid."""
    path = cfg.tls.certificates_dir
    if path is None:
        return
    if not os.path.isdir(path):
        errors.append(f"tls.certificates_dir: {path!r} is not a directory")
        return
    if not os.access(path, os.R_OK | os.X_OK):
        errors.append(f"tls.certificates_dir: directory {path!r} is not readable")
        return
    for host in cfg.server.domains:
        if host in cfg.tls.domains:
            continue  # the explicit entry wins (checked above)
        d = os.path.join(path, host)
        cert, key = os.path.join(d, "fullchain.pem"), os.path.join(d, "privkey.pem")
        if not os.path.exists(cert) and not os.path.exists(key):
            continue  # none for this domain: the default certificate is presented
        leaf = _check_pair(f"tls.certificates_dir ({host})", cert, key, errors)
        if leaf is not None and not any(_name_matches(n, host) for n in _cert_names(leaf)):
            errors.append(f"tls.certificates_dir: {cert!r} does not cover virtual host {host!r}")


def _check_listeners(cfg: Config, errors: list[str]) -> None:
    groups = [("c2s.listen", cfg.c2s.listen), ("c2s.direct_tls", cfg.c2s.direct_tls),
              ("http.listen", cfg.http.listen)]
    if cfg.s2s.enabled:
        groups += [("s2s.listen", cfg.s2s.listen), ("s2s.direct_tls", cfg.s2s.direct_tls)]
    if cfg.proxy65.enabled:
        groups.append(("proxy65.listen", cfg.proxy65.listen))
    groups.append(("components.listen", cfg.components.listening))
    seen: list[tuple[str, Listen]] = []
    for key, addrs in groups:
        for addr in addrs:
            if addr[1] == 0:
                continue  # ephemeral: never clashes
            for other_key, other in seen:
                if other[1] == addr[1] and _hosts_overlap(other[0], addr[0]):
                    errors.append(f"{key}: {format_listen(addr)} clashes with {other_key} "
                                  f"{format_listen(other)}")
                    break
            seen.append((key, addr))


def _hosts_overlap(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        ia, ib = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    # asyncio binds "::" with IPV6_V6ONLY, so "0.0.0.0" and "::" may share a port.
    return ia.version == ib.version and (ia.is_unspecified or ib.is_unspecified)


def _check_writable_dir(key: str, path: str, errors: list[str]) -> None:
    p = os.path.abspath(path)
    if os.path.exists(p):
        if not os.path.isdir(p):
            errors.append(f"{key}: {path!r} exists and is not a directory")
        elif not os.access(p, os.W_OK | os.X_OK):
            errors.append(f"{key}: directory {path!r} is not writable")
        return
    parent = os.path.dirname(p)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        errors.append(f"{key}: {path!r} does not exist and cannot be created "
                      f"({parent!r} is not a writable directory)")


def _check_modules(cfg: Config, errors: list[str]) -> None:
    try:
        import mbxmpp.modules as mods
    except ImportError:
        return
    registry = getattr(mods, "REGISTRY", None) or getattr(mods, "MODULES", None)
    if not isinstance(registry, Mapping):
        return
    for key, names in (("server.modules", cfg.server.modules or ()),
                       ("server.disabled_modules", cfg.server.disabled_modules)):
        for m in names:
            if m not in registry:
                errors.append(f"{key}: unknown module {m!r} (known: {', '.join(sorted(registry))})")


def _check_s2s_ca(cfg: Config, errors: list[str]) -> None:
    path = cfg.s2s.ca_file
    if not cfg.s2s.enabled or path is None:
        return
    try:
        with open(path, "rb") as f:
            pem = f.read()
        from cryptography import x509
        x509.load_pem_x509_certificates(pem)
    except OSError as e:
        errors.append(f"s2s.ca_file: cannot read {path!r}: {e.strerror or e}")
    except ValueError:
        errors.append(f"s2s.ca_file: {path!r} holds no PEM certificate")


def check_config(cfg: Config) -> list[str]:
    """Checks beyond load_config, for `check-config`: files, keys, listeners, directories."""
    errors: list[str] = []
    _check_tls(cfg, errors)
    _check_certificates_dir(cfg, errors)
    _check_s2s_ca(cfg, errors)
    _check_listeners(cfg, errors)
    _check_writable_dir("server.data_dir", cfg.server.data_dir, errors)
    if cfg.upload.enabled and cfg.upload.storage_dir is not None:
        _check_writable_dir("upload.storage_dir", cfg.upload.storage_dir, errors)
    _check_modules(cfg, errors)
    return errors
