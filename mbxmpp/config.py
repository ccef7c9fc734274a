"""The TOML configuration: every section a declared, frozen dataclass (mbxmpp/options.py).

Core sections are declared here or where they live (s2s/options.py, http/options.py,
auth/options.py, core/limits.py); each module declares its own section in its package (modules/muc/options.py,
modules/sm_options.py, ...). `load_config()` reads them all with one generic reader, checking syntax and
types and collecting every error into one `ConfigError`; `check_config()` adds the checks that
touch the filesystem (certificates, data directory) and the cross-listener ones, for the
`check-config` command. Durations are float seconds, sizes int bytes, listen addresses
`(host, port)` tuples with IPv6 hosts unbracketed.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import importlib
import importlib.util
import ipaddress
import os
import ssl
import sys
import tomllib
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, Callable, Mapping, Self

from .components.options import ComponentsConfig, check_component_domains
from .auth.options import AuthConfig, DovecotAuthConfig, LDAPAuthConfig
from .core.limits import LimitsConfig
from .http.options import HTTPConfig
from .options import MISSING as MISSING_VALUE
from .options import (BOOL, DURATION, INT, LISTEN, SIZE, STR, STR_LIST, Kind, Listen, Option, Table,
                      check_domain, dotted, format_listen, load_section, one_of, option, parse_listen,
                      section_options, show, writable_dir_problem)
from .s2s.options import S2SConfig

if TYPE_CHECKING:
    from .modules.mam.options import MAMConfig
    from .modules.metrics_options import MetricsConfig
    from .modules.muc.options import MUCConfig
    from .modules.offline_options import OfflineConfig
    from .modules.proxy65.options import Proxy65Config
    from .modules.push_options import PushConfig
    from .modules.sm_options import SMConfig
    from .modules.upload.options import UploadConfig
    from .modules.webchat.options import WebChatConfig

__all__ = [
    "ConfigError", "Config", "ServerConfig", "TLSConfig", "TLSCertConfig", "C2SConfig", "S2SConfig",
    "HTTPConfig", "SMConfig", "MAMConfig", "MUCConfig", "UploadConfig", "Proxy65Config",
    "OfflineConfig", "PushConfig", "AccountsConfig", "WebChatConfig", "MetricsConfig", "AuthConfig",
    "DovecotAuthConfig", "LDAPAuthConfig", "LimitsConfig", "DEFAULT_MODULES", "COMPONENT_SECTIONS",
    "DEFAULT_CONFIG_FILE", "load_config", "find_default_config", "check_config", "parse_listen",
    "format_listen",
]

DEFAULT_CONFIG_FILE = "mbxmpp.toml"

# Host modules loaded when [server].modules is not set; components (muc, upload, proxy65) are switched
# by their own section's `enabled`.
DEFAULT_MODULES: tuple[str, ...] = (
    "disco", "roster", "presence", "offline", "carbons", "csi", "sm", "push", "blocking",
    "mam", "ping", "version", "time", "last", "vcard", "private", "pep", "bookmarks",
    "muc", "upload", "proxy65", "webchat", "metrics", "outage", "adhoc", "register",
)

COMPONENT_SECTIONS = ("muc", "upload", "proxy65")

# The modules' own sections: section (= module name) -> its declaration, imported when first needed
# (a module's package imports much of the server).
MODULE_SECTIONS = {
    "sm": "mbxmpp.modules.sm_options:SMConfig",
    "mam": "mbxmpp.modules.mam.options:MAMConfig",
    "muc": "mbxmpp.modules.muc.options:MUCConfig",
    "upload": "mbxmpp.modules.upload.options:UploadConfig",
    "proxy65": "mbxmpp.modules.proxy65.options:Proxy65Config",
    "webchat": "mbxmpp.modules.webchat.options:WebChatConfig",
    "metrics": "mbxmpp.modules.metrics_options:MetricsConfig",
    "offline": "mbxmpp.modules.offline_options:OfflineConfig",
    "push": "mbxmpp.modules.push_options:PushConfig",
}

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
TLS_VERSIONS = ("1.2", "1.3")
# Forward secrecy + AEAD only for TLS 1.2; TLS 1.3 suites are not configurable through OpenSSL's list.
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class ConfigError(Exception):
    """Every problem found in a configuration, one message per entry."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


def declaration(section: str) -> type:
    """The class declaring a module's section (MODULE_SECTIONS)."""
    mod, _, name = MODULE_SECTIONS[section].partition(":")
    cls: type = getattr(_import_declarations(mod), name)
    return cls


def _import_declarations(name: str) -> ModuleType:
    """Import a module's options file. One inside a module's package (modules/muc/options.py) is
    loaded without running the package's __init__, which imports the module and much of the
    server (aiohttp for upload): the CLI reads the configuration on every command. The package,
    imported later, finds it in sys.modules. Options files import only mbxmpp.options and
    mbxmpp.util (tests/unit/test_config_example.py checks that)."""
    package = name.rpartition(".")[0]
    if name in sys.modules or package in sys.modules or package == "mbxmpp.modules":
        return importlib.import_module(name)
    import mbxmpp.modules
    path = os.path.join(os.path.dirname(mbxmpp.modules.__file__), *name.split(".")[2:]) + ".py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def __getattr__(name: str) -> Any:
    """`from mbxmpp.config import MUCConfig` and the like: the modules' declarations."""
    for section, spec in MODULE_SECTIONS.items():
        if spec.endswith(":" + name):
            return declaration(section)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _module_section(section: str) -> Any:
    return field(default_factory=lambda: declaration(section)())


# ----------------------------------------------------------------------------------------- sections

def _admin(j: str) -> str:
    local, at, domain = j.partition("@")
    if not at or not local:
        raise ValueError(f"invalid JID {j!r}: expected a bare JID user@domain")
    if "/" in domain:
        raise ValueError(f"invalid JID {j!r}: must be a bare JID without a resource")
    if set("\"&'/:<>@ \t\r\n") & set(local) or len(local.encode()) > 1023:
        raise ValueError(f"invalid JID {j!r}: bad localpart {local!r}")
    try:
        domain = check_domain(domain)
    except ValueError as e:
        raise ValueError(f"invalid JID {j!r}: {e}") from None
    return f"{local.lower()}@{domain}"


def _module_name(m: str) -> str:
    if not m.isidentifier():
        raise ValueError(f"invalid module name {m!r}")
    return m


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """the served domains, where data lives, logging and the feature modules"""
    domains: tuple[str, ...] = option(
        ("localhost",), STR_LIST, "virtual hosts served (at least one); re-read on reload (SIGHUP, `reload`): "
        "added ones are served, removed ones end their sessions with <host-gone/>. Domains added with "
        "`python -m mbxmpp domains add` are kept in <data_dir>/domains and served after these",
        each=check_domain, required='the virtual hosts this server serves, e.g. ["example.org"]',
        example=("example.org", "customer-domain.example"))
    data_dir: str = option("./mbxmpp-data", STR, "LMDB database, self-signed certificate, uploads",
                           example="/var/lib/mbxmpp")
    admins: tuple[str, ...] = option((), STR_LIST, "bare JIDs with administrative rights", each=_admin,
                                     example=("admin@example.org",))
    log_level: str = option("info", STR, "debug, info, warning, error or critical", check=one_of(LOG_LEVELS))
    log_format: str = option("text", STR, '"json": one object per line (time, level, logger, message)',
                             check=one_of(LOG_FORMATS))
    modules: tuple[str, ...] | None = option(
        None, STR_LIST, "Feature modules, one per line (omit the key to get exactly this default list):",
        each=_module_name, example=DEFAULT_MODULES, default_doc="")
    disabled_modules: tuple[str, ...] = option((), STR_LIST, "names removed from `modules` (handy with the "
                                               "default list)", each=_module_name)

    def validate(self, error: Callable[[str, str], None]) -> Self:
        domains: list[str] = []
        for name in self.domains:
            if name in domains:
                error("domains", f"duplicate domain {name!r}")
            else:
                domains.append(name)
        if not self.domains:
            error("domains", "at least one domain is required")
        return dataclasses.replace(self, domains=tuple(domains) or ("localhost",))


@dataclass(frozen=True, slots=True)
class TLSCertConfig:
    cert: str
    key: str


def _cert_pair(t: Table, required: bool) -> tuple[str | None, str | None]:
    cert, key = t.get_str("cert", None), t.get_str("key", None)
    if (cert is None) != (key is None) or (required and cert is None and key is None):
        t.error("key" if key is None else "cert", "required: cert and key must be set together")
    return cert, key


def _read_cert_domains(t: Table, k: str, opt: Option, default: Any) -> Mapping[str, TLSCertConfig]:
    domains: dict[str, TLSCertConfig] = {}
    dt = t.get_table(k)
    if dt is None:
        return default
    for name in list(dt.data):
        sub = dt.get_table(name)
        if sub is None:
            continue
        try:
            norm: str | None = check_domain(name, wildcard=True)
        except ValueError as e:
            dt.error(name, str(e))
            norm = None
        c, key = _cert_pair(sub, required=True)
        sub.finish()
        if norm is not None and c is not None and key is not None:
            domains[norm] = TLSCertConfig(c, key)
    dt.finish()
    return MappingProxyType(domains)


def _cert_domains_toml(path: tuple[str, ...], value: Mapping[str, TLSCertConfig]) -> list[str]:
    out: list[str] = []
    for name, pair in value.items():
        out += [f"[{dotted(path + (name,))}]", f'cert = "{pair.cert}"', f'key = "{pair.key}"']
    return out


def _read_min_version(t: Table, k: str, opt: Option, default: str) -> str:
    v = t.get(k)
    if v is MISSING_VALUE:
        return default
    # COMPAT: `min_version = 1.2` (a TOML float) is an easy mistake; accept it.
    sv = f"{v:.1f}" if isinstance(v, float) else v
    if sv not in TLS_VERSIONS:
        t.error(k, f'must be "1.2" or "1.3", got {show(v)}')
        return default
    return str(sv)


def _ciphers(ciphers: str) -> str:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
    except ssl.SSLError:
        raise ValueError(f"OpenSSL accepts no cipher from {show(ciphers)}") from None
    return ciphers


CERT_DOMAINS = Kind("certificates by domain", _read_cert_domains, lambda v: "", block=_cert_domains_toml)
TLS_VERSION = Kind("TLS version", _read_min_version, lambda v: f'"{v}"')


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """certificates; omit cert and key: a self-signed certificate is generated in data_dir"""
    cert: str | None = option(None, STR, "default certificate chain (PEM, leaf first)",
                              example="/etc/mbxmpp/fullchain.pem")
    key: str | None = option(None, STR, "its private key (PEM, unencrypted); set both or neither",
                             example="/etc/mbxmpp/privkey.pem")
    domains: Mapping[str, TLSCertConfig] = option(
        lambda: MappingProxyType({}), CERT_DOMAINS, 'per-host certificate chosen by SNI ("*.example.org" allowed)',
        factory=True, example=MappingProxyType({"customer-domain.example": TLSCertConfig(
            "/etc/mbxmpp/customer-domain.example/fullchain.pem",
            "/etc/mbxmpp/customer-domain.example/privkey.pem")}))
    min_version: str = option("1.2", TLS_VERSION, 'lowest TLS version accepted: "1.2" or "1.3"')
    ciphers: str = option(DEFAULT_CIPHERS, STR, "OpenSSL cipher list for TLS 1.2 (forward secret, AEAD only)",
                          check=_ciphers)
    certificates_dir: str | None = option(
        None, STR, "certbot's layout: DIR/DOMAIN/fullchain.pem + privkey.pem for each served domain and "
        "component domain (a component without its folder gets its parent's); [tls.domains] entries win",
        example="/etc/letsencrypt/live")
    certificates_poll: float = option(60.0, DURATION, "how often those files' mtimes are checked: a renewal is "
                                      "served without a reload", minimum=0.1)

    def validate(self, error: Callable[[str, str], None]) -> Self:
        if (self.cert is None) != (self.key is None):
            error("key" if self.key is None else "cert", "required: cert and key must be set together")
        return self


@dataclass(frozen=True, slots=True)
class C2SConfig:
    """client connections"""
    listen: tuple[Listen, ...] = option((("127.0.0.1", 5222),), LISTEN, "STARTTLS listeners",
                                        example=(("::", 5222),))
    direct_tls: tuple[Listen, ...] = option((("127.0.0.1", 5223),), LISTEN, "direct TLS listeners (XEP-0368)",
                                            example=(("::", 5223),))
    max_stanza_size: int = option(256 * 1024, SIZE, "larger stanzas close the stream with policy-violation",
                                  minimum=4096)
    auth_timeout: float = option(30.0, DURATION, "time to finish TLS and authentication before disconnect")
    # Pre-authentication limits (mbxmpp/core/admission.py)
    max_unauthenticated: int = option(
        5000, INT, "pre-auth connections from all addresses together; at the bound the one stalled longest is "
        "ended, or the newcomer refused (resource-constraint)", minimum=1,
        before="Before authentication. Thousands of users may share one address (carrier-grade NAT, offices), "
        "so an address is never refused for how many of its connections are getting somewhere; what is "
        "bounded is what sits idle, what never authenticates, and the total (memory: a pre-auth connection "
        "holds at most 64 KiB of input plus its TLS state, about 0.1 MiB at worst, so 5000 of them about "
        "500 MiB). Direct TLS connections count from their TCP connect (handshake).")
    max_unauthenticated_per_ip: int = option(
        10, INT, "beyond this many from one address (an IPv6 /64), each newcomer ends the address's connection "
        "stalled longest (policy-violation); none stalled: admitted", minimum=1)
    stalled_after: float = option(10.0, DURATION, "no step (stream header, TLS done, SASL step) for this long: "
                                  "stalled. A slow mobile link needs a few seconds")
    connection_burst_per_ip: int = option(300, INT, "new connections one address may open at once (a reconnect "
                                          "storm after a restart, 100s at once)...", minimum=1)
    connection_rate_per_ip: int = option(30, INT, "...refilled per second; one that authenticates gives its "
                                         "token back, so only those that never do use it up", minimum=1)
    max_auth_attempts: int = option(5, INT, "failed SASL attempts before the stream is closed", minimum=1)
    allow_plain: bool = option(True, BOOL, "offer SASL PLAIN (never offered without TLS)")
    require_encryption: bool = option(True, BOOL, "refuse to authenticate without TLS")


@dataclass(frozen=True, slots=True)
class AccountsConfig:
    """mail-provider plans: only some include chat"""
    chat_plans: tuple[str, ...] = option(("paid",), STR_LIST, "plans whose accounts may log in to chat")
    default_plan: str = option("paid", STR, "plan of accounts that have none recorded")
    refusal_text: str = option("Your plan does not include chat. Upgrade your plan to use chat with this "
                               "account.", STR, "login refusal shown to other accounts",
                               example="Your plan does not include chat. Upgrade at https://example.org/upgrade")

    def allows_chat(self, plan: str | None) -> bool:
        return (self.default_plan if plan is None else plan) in self.chat_plans


@dataclass(frozen=True, slots=True)
class Config:
    # The sections in the order of the example file: core ones, then the modules' own.
    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    c2s: C2SConfig = field(default_factory=C2SConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    s2s: S2SConfig = field(default_factory=S2SConfig)
    sm: SMConfig = _module_section("sm")
    mam: MAMConfig = _module_section("mam")
    muc: MUCConfig = _module_section("muc")
    upload: UploadConfig = _module_section("upload")
    proxy65: Proxy65Config = _module_section("proxy65")
    webchat: WebChatConfig = _module_section("webchat")
    metrics: MetricsConfig = _module_section("metrics")
    offline: OfflineConfig = _module_section("offline")
    push: PushConfig = _module_section("push")
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    components: ComponentsConfig = field(default_factory=ComponentsConfig)  # external (XEP-0114)
    source: str | None = None                  # the file it was read from; None: embedded defaults

    def component_domain(self, section: str, host: str) -> str:
        """The domain of component `section` ("muc", "upload", "proxy65") for virtual host `host`."""
        if section not in COMPONENT_SECTIONS:
            raise ValueError(f"{section!r} is not a component section ({', '.join(COMPONENT_SECTIONS)})")
        template: str = getattr(self, section).domain
        return template.replace("{domain}", host.lower())

    def served_components(self, host: str) -> dict[str, str]:
        """Served components of `host` (module loaded, section enabled): section -> domain."""
        return {s: self.component_domain(s, host) for s in COMPONENT_SECTIONS
                if getattr(self, s).enabled and s in self.enabled_modules}

    @property
    def enabled_modules(self) -> tuple[str, ...]:
        mods = self.server.modules or DEFAULT_MODULES  # as Server.module_names: [] is the default list
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


# --------------------------------------------------------------------------------------- the reader



def sections() -> dict[str, type]:
    """Every section's declaration: section name -> class (the field types of Config)."""
    return {f.name: type(f.default_factory()) for f in dataclasses.fields(Config)  # type: ignore[misc,operator]
            if f.name != "source"}


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


def _check_served(cfg: Config, data: dict[str, Any], errors: list[str]) -> None:
    """A module's section while the module is not loaded configures nothing: say so (a section
    that only says `enabled = false` agrees with that)."""
    enabled = set(cfg.enabled_modules)
    for name in MODULE_SECTIONS:
        if name in data and name not in enabled and data[name] != {"enabled": False}:
            errors.append(f"[{name}]: the {name} module is not loaded, so this section does nothing; "
                          f"add {name!r} to server.modules (or remove it from server.disabled_modules), "
                          f"or remove the section")


def _unknown_sections(root: Table, declared: Mapping[str, type], errors: list[str]) -> None:
    from .modules import REGISTRY
    for name, value in root.data.items():
        if name in declared or not isinstance(value, dict):
            continue  # (a stray top-level key: root.finish() reports it)
        root.used.add(name)
        if name in REGISTRY:
            errors.append(f"[{name}]: the {name} module has no options")
            continue
        hint = difflib.get_close_matches(name, sorted(declared), n=1)
        tail = f" (did you mean [{hint[0]}]?)" if hint else f" (sections: {', '.join(declared)})"
        errors.append(f"unknown section [{dotted((name,))}]{tail}")


def _build(data: dict[str, Any], source: str | None) -> Config:
    errors: list[str] = []
    root = Table(data, (), errors)
    parts: dict[str, Any] = {}
    if "server" not in data:
        errors.append("missing required section [server] (with at least `domains = [...]`)")
    declared = sections()
    for name, decl in declared.items():
        t = root.get_table(name)
        if t is not None:
            parts[name] = load_section(decl, t)
            t.finish()
    _unknown_sections(root, declared, errors)
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
    _check_served(cfg, data, errors)
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
        leaves[name] = _check_pair(dotted(("tls", "domains", name)), pair.cert, pair.key, errors)
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
            src = "tls.cert" if which == "*default*" else dotted(("tls", "domains", which)) + ".cert"
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


def _served_sections(cfg: Config) -> dict[str, Any]:
    """The sections of what this configuration serves: core ones, and loaded modules' sections,
    without those that say `enabled = false`."""
    enabled = set(cfg.enabled_modules)
    out = {}
    for name in sections():
        value = getattr(cfg, name)
        if (name not in MODULE_SECTIONS or name in enabled) and getattr(value, "enabled", True):
            out[name] = value
    return out


def _check_listeners(cfg: Config, errors: list[str]) -> None:
    """No two listeners of anything served (every listen-address option declared) share a port."""
    groups = [(f"{name}.{f.name}", getattr(value, f.name))
              for name, value in _served_sections(cfg).items()
              for f, opt in section_options(type(value)) if opt.kind is LISTEN
              and not (name == "components" and not value.listening)]  # (binds only with hosts)
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


def check_config(cfg: Config) -> list[str]:
    """Checks beyond load_config, for `check-config`: files, keys, listeners, directories."""
    errors: list[str] = []
    _check_tls(cfg, errors)
    _check_certificates_dir(cfg, errors)
    _check_listeners(cfg, errors)
    problem = writable_dir_problem(cfg.server.data_dir)
    if problem is not None:
        errors.append(f"server.data_dir: {problem}")
    for name, section in _served_sections(cfg).items():  # the sections' own file checks
        check_files = getattr(section, "check_files", None)
        if check_files is not None:
            check_files(lambda key, msg, name=name: errors.append(f"{name}.{key}: {msg}"))
    _check_modules(cfg, errors)
    return errors
