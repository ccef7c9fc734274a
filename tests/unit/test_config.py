import dataclasses
import datetime
import os
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mbxmpp.config import (
    DEFAULT_MODULES, AccountsConfig, C2SConfig, Config, ConfigError, TLSCertConfig, check_config,
    find_default_config, format_listen, load_config, parse_listen,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "mbxmpp.example.toml"


def write(tmp_path, text, name="mbxmpp.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def load_text(tmp_path, text):
    return load_config(write(tmp_path, text))


def errors_of(tmp_path, text):
    with pytest.raises(ConfigError) as e:
        load_text(tmp_path, text)
    assert str(e.value) == "\n".join(e.value.errors)
    return e.value.errors


MINIMAL = '[server]\ndomains = ["example.org"]\n'


# --------------------------------------------------------------------------------------- defaults

def test_embedded_defaults():
    cfg = load_config(None)
    assert cfg.source is None
    assert cfg.server.domains == ("localhost",)
    assert cfg.server.data_dir == "./mbxmpp-data"
    assert cfg.server.modules is None and cfg.enabled_modules == DEFAULT_MODULES
    assert cfg.tls.cert is None and cfg.tls.key is None and dict(cfg.tls.domains) == {}
    assert cfg.tls.min_version == "1.2"
    assert cfg.c2s.listen == (("127.0.0.1", 5222),)
    assert cfg.c2s.direct_tls == (("127.0.0.1", 5223),)
    assert cfg.s2s.listen == (("127.0.0.1", 5269),)
    assert cfg.s2s.direct_tls == ()
    assert cfg.http.listen == (("127.0.0.1", 5443),)
    assert cfg.proxy65.listen == (("127.0.0.1", 5000),)
    assert cfg.c2s.max_stanza_size == 256 * 1024
    assert cfg.s2s.max_stanza_size == 512 * 1024
    assert cfg.c2s.auth_timeout == 30.0
    assert cfg.sm.resume_timeout == 300.0 and cfg.sm.push_resume_timeout == 72 * 3600.0
    assert cfg.mam.retention == 7 * 86400.0 and cfg.mam.sweep_interval == 60.0
    assert cfg.upload.max_file_size == 10 * 1024 * 1024 and cfg.upload.expire_after == 3600.0
    assert cfg.upload.storage_dir == os.path.join("./mbxmpp-data", "upload")
    assert cfg.offline.max_messages == 1000
    assert cfg.accounts.allows_chat(None) and cfg.accounts.allows_chat("paid")
    assert not cfg.accounts.allows_chat("free")
    assert cfg.http_public_url == "https://localhost:5443"


def test_minimal_file_uses_defaults(tmp_path):
    cfg = load_text(tmp_path, MINIMAL)
    assert cfg.source.endswith("mbxmpp.toml")
    assert cfg.server.domains == ("example.org",)
    assert dataclasses.replace(cfg, server=Config().server, source=None) == load_config(None)


def test_dataclasses_are_frozen():
    cfg = load_config(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.c2s.max_stanza_size = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.tls.domains["x"] = TLSCertConfig("a", "b")  # type: ignore[index]


def test_example_file_loads():
    cfg = load_config(str(EXAMPLE))
    assert cfg.server.domains[:2] == ("example.org", "customer-domain.example")
    assert cfg.server.domains[2:] == cfg.s2s.onion_hosts  # served as virtual hosts too
    assert cfg.server.modules == DEFAULT_MODULES
    assert cfg.c2s.listen == (("::", 5222),)
    assert cfg.s2s.direct_tls == (("::", 5270),)
    assert cfg.tls.domains["customer-domain.example"].key.endswith("privkey.pem")
    assert cfg.proxy65.public_host == "proxy.example.org"


def test_example_file_sets_every_key():
    """The example documents every key: each section's fields all appear in it."""
    import tomllib
    data = tomllib.loads(EXAMPLE.read_text())
    for f in dataclasses.fields(Config):
        if f.name == "source":
            continue
        section = getattr(Config(), f.name)
        assert f.name in data, f"[{f.name}] missing from the example"
        for sf in dataclasses.fields(section):
            assert sf.name in data[f.name], f"{f.name}.{sf.name} missing from the example"


def test_find_default_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_default_config() is None
    (tmp_path / "mbxmpp.toml").write_text(MINIMAL)
    assert find_default_config() == "mbxmpp.toml"
    assert load_config(find_default_config()).server.domains == ("example.org",)


# ----------------------------------------------------------------------------------- values / units

def test_units_in_sections(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + """
        [c2s]
        max_stanza_size = "64KiB"
        auth_timeout = 10
        [s2s]
        max_stanza_size = 1048576
        timeout = "2m"
        [sm]
        resume_timeout = "90"
        push_resume_timeout = "1w"
        request_every = 25
        ack_delay = "20ms"
        [mam]
        retention = "30d"
        sweep_interval = "30s"
        [upload]
        max_file_size = "100MB"
        expire_after = "1d12h"
    """)
    assert cfg.c2s.max_stanza_size == 65536 and cfg.c2s.auth_timeout == 10.0
    assert cfg.s2s.max_stanza_size == 1048576 and cfg.s2s.timeout == 120.0
    assert cfg.sm.resume_timeout == 90.0 and cfg.sm.push_resume_timeout == 604800.0
    assert cfg.sm.request_every == 25 and cfg.sm.ack_delay == 0.02
    assert cfg.mam.retention == 30 * 86400.0 and cfg.mam.sweep_interval == 30.0
    assert cfg.upload.max_file_size == 100_000_000 and cfg.upload.expire_after == 129600.0


def test_sm_request_every_at_least_one(tmp_path):
    errs = errors_of(tmp_path, MINIMAL + "[sm]\nrequest_every = 0\n")
    assert len(errs) == 1 and errs[0].startswith("sm.request_every"), errs


def test_sm_ack_delay_bounds(tmp_path):
    from mbxmpp.config import SMConfig
    assert SMConfig().ack_delay == 0.05
    ok = tmp_path / "ok"
    ok.mkdir()
    assert load_text(ok, MINIMAL + '[sm]\nack_delay = "0s"\n').sm.ack_delay == 0.0  # at once
    errs = errors_of(tmp_path, MINIMAL + '[sm]\nack_delay = "2s"\n')  # "as soon as possible"
    assert len(errs) == 1 and errs[0].startswith("sm.ack_delay") and "at most 1s" in errs[0], errs


def test_mam_sweep_interval_below_minimum(tmp_path):
    errs = errors_of(tmp_path, MINIMAL + '[mam]\nsweep_interval = "250ms"\n')
    assert errs == ['mam.sweep_interval: must be at least 1s, got "250ms"']


def test_storage_quotas(tmp_path):
    d = load_config(None)
    assert d.mam.quota_window == 86400.0
    assert (d.mam.max_messages_per_sender, d.mam.max_bytes_per_sender) == (2_000_000, 256 << 20)
    assert (d.mam.max_messages_from_others, d.mam.max_bytes_from_others) == (8_000_000, 1 << 30)
    assert (d.mam.max_messages_own, d.mam.max_bytes_own) == (8_000_000, 1 << 30)
    assert d.mam.max_bytes_to_others == 1 << 30
    assert (d.offline.max_bytes, d.offline.max_messages_per_sender,
            d.offline.max_bytes_per_sender) == (10 * 1024 * 1024, 500, 5 * 1024 * 1024)
    cfg = load_text(tmp_path, MINIMAL + """
        [mam]
        quota_window = "12h"
        max_messages_per_sender = 0
        max_bytes_from_others = "1GiB"
        max_bytes_own = 1000
        max_bytes_to_others = "2MiB"
        [offline]
        max_bytes = "1MB"
        max_messages_per_sender = 7
        max_bytes_per_sender = "0"
    """)
    assert cfg.mam.quota_window == 43200.0 and cfg.mam.max_messages_per_sender == 0
    assert cfg.mam.max_bytes_from_others == 1 << 30 and cfg.mam.max_bytes_own == 1000
    assert cfg.mam.max_bytes_to_others == 2 << 20
    assert cfg.offline.max_bytes == 1_000_000 and cfg.offline.max_messages_per_sender == 7
    assert cfg.offline.max_bytes_per_sender == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    errs = errors_of(bad, MINIMAL + '[mam]\nmax_bytes_own = "lots"\nmax_messages_own = -1\n'
                          '[offline]\nmax_bytes = -5\n')
    assert len(errs) == 3 and errs[0] == "mam.max_messages_own: must be at least 0, got -1", errs
    assert errs[1].startswith("mam.max_bytes_own: invalid size 'lots'"), errs
    assert errs[2].startswith("offline.max_bytes:"), errs


def test_bad_duration_and_size_name_key_and_value(tmp_path):
    errs = errors_of(tmp_path, MINIMAL + """
        [sm]
        resume_timeout = "5 minutes"
        [upload]
        max_file_size = "10mb"
    """)
    assert len(errs) == 2
    assert errs[0].startswith("sm.resume_timeout: invalid duration '5 minutes'")
    assert errs[1].startswith("upload.max_file_size: invalid size '10mb'")


def test_negative_values(tmp_path):
    errs = errors_of(tmp_path, MINIMAL + """
        [c2s]
        max_stanza_size = -1
        max_auth_attempts = 0
        [offline]
        max_messages = -3
    """)
    assert any(e.startswith("c2s.max_stanza_size:") and "negative" in e for e in errs)
    assert "c2s.max_auth_attempts: must be at least 1, got 0" in errs
    assert "offline.max_messages: must be at least 0, got -3" in errs


# ------------------------------------------------------------------------------------- unknown keys

def test_unknown_top_level_key(tmp_path):
    errs = errors_of(tmp_path, "colour = 1\n" + MINIMAL)
    assert errs == ["unknown key 'colour'"]


def test_unknown_key_in_section_with_hint(tmp_path):
    errs = errors_of(tmp_path, MINIMAL + '[c2s]\nmax_stanza_sise = "1MiB"\n')
    assert len(errs) == 1
    assert errs[0].startswith("unknown key 'c2s.max_stanza_sise'")
    assert "max_stanza_size" in errs[0].split("'c2s.max_stanza_sise'")[1]


def test_unknown_key_in_tls_domain_entry(tmp_path):
    errs = errors_of(tmp_path, MINIMAL + """
        [tls.domains."example.org"]
        cert = "a.pem"
        key = "b.pem"
        chain = "c.pem"
    """)
    assert errs == ["unknown key 'tls.domains.\"example.org\".chain'"]


def test_unknown_section(tmp_path):
    errs = errors_of(tmp_path, MINIMAL + "[muc_light]\nenabled = true\n")
    assert errs == ["unknown section [muc_light] (sections: server, tls, c2s, http, s2s, sm, mam, muc, upload, "
                    "proxy65, webchat, metrics, offline, push, limits, accounts, auth, components)"]
    assert errors_of(tmp_path, MINIMAL + "[mucc]\nenabled = true\n") == [
        "unknown section [mucc] (did you mean [muc]?)"]
    assert errors_of(tmp_path, MINIMAL + "[roster]\nversioning = true\n") == [
        "[roster]: the roster module has no options"]


# -------------------------------------------------------------------------------------- wrong types

@pytest.mark.parametrize("snippet, key, expected", [
    ('[c2s]\nallow_plain = "yes"', "c2s.allow_plain", "a boolean"),
    ('[c2s]\nmax_auth_attempts = "5"', "c2s.max_auth_attempts", "an integer"),
    ('[c2s]\nmax_auth_attempts = true', "c2s.max_auth_attempts", "an integer"),
    ('[c2s]\nlisten = "[::]:5222"', "c2s.listen", "an array of \"host:port\" strings"),
    ('[c2s]\nmax_stanza_size = 1.5', "c2s.max_stanza_size", "a size"),
    ('[sm]\nresume_timeout = false', "sm.resume_timeout", "a duration"),
    ('[http]\npublic_url = 443', "http.public_url", "a non-empty string"),
    ('[accounts]\nchat_plans = "paid"', "accounts.chat_plans", "an array of non-empty strings"),
    ('s2s = 1', "s2s", "a table"),
])
def test_wrong_types(tmp_path, snippet, key, expected):
    text = MINIMAL + snippet + "\n" if snippet.startswith("[") else snippet + "\n" + MINIMAL
    errs = errors_of(tmp_path, text)
    assert len(errs) == 1, errs
    assert errs[0].startswith(f"{key}: expected {expected}")
    assert "got " in errs[0]


def test_missing_server_section(tmp_path):
    errs = errors_of(tmp_path, "[c2s]\nallow_plain = true\n")
    assert errs == ["missing required section [server] (with at least `domains = [...]`)"]


def test_domains_required_and_nonempty(tmp_path):
    assert errors_of(tmp_path, '[server]\ndata_dir = "/x"\n')[0].startswith("server.domains: required")
    assert errors_of(tmp_path, "[server]\ndomains = []\n") == [
        "server.domains: at least one domain is required"]


def test_domains_validated_and_lowercased(tmp_path):
    cfg = load_text(tmp_path, '[server]\n'
                    'domains = ["Example.ORG.", "xn--bcher-kva.example", "bücher.example"]\n')
    assert cfg.server.domains == ("example.org", "xn--bcher-kva.example", "bücher.example")
    errs = errors_of(tmp_path, '[server]\n'
                     'domains = ["bad_domain.org", "-x.org", "a..b", "1.2.3.4", "ok.org", "OK.org"]\n')
    assert len(errs) == 5
    assert all(e.startswith("server.domains: ") for e in errs)
    assert "'bad_domain.org'" in errs[0] and "duplicate domain 'ok.org'" in errs[4]


def test_admins(tmp_path):
    cfg = load_text(tmp_path, '[server]\ndomains = ["example.org"]\nadmins = ["Admin@Example.org"]\n')
    assert cfg.server.admins == ("admin@example.org",)
    errs = errors_of(tmp_path, '[server]\ndomains = ["example.org"]\nadmins = ["admin", "a@b/c", "@x.org"]\n')
    assert len(errs) == 3 and all(e.startswith("server.admins: invalid JID") for e in errs)


def test_log_level_and_modules(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + 'log_level = "DEBUG"\ndisabled_modules = ["push"]\n')
    assert cfg.server.log_level == "debug"
    assert "push" not in cfg.enabled_modules and "roster" in cfg.enabled_modules
    cfg = load_text(tmp_path, MINIMAL + 'modules = ["roster", "ping"]\n')
    assert cfg.enabled_modules == ("roster", "ping")
    errs = errors_of(tmp_path, MINIMAL + 'log_level = "loud"\nmodules = ["not-a-module"]\n')
    assert errs == ["server.log_level: must be one of debug, info, warning, error, critical, got \"loud\"",
                    "server.modules: invalid module name 'not-a-module'"]


# ------------------------------------------------------------------------------------------- TLS

def test_tls_cert_and_key_together(tmp_path):
    assert errors_of(tmp_path, MINIMAL + '[tls]\ncert = "a.pem"\n') == [
        "tls.key: required: cert and key must be set together"]
    assert errors_of(tmp_path, MINIMAL + '[tls.domains."example.org"]\nkey = "a.pem"\n') == [
        'tls.domains."example.org".cert: required: cert and key must be set together']


def test_tls_options(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + """
        [tls]
        min_version = 1.3
        ciphers = "ECDHE+AESGCM"
        [tls.domains."*.Example.org"]
        cert = "w.pem"
        key = "w.key"
        [tls.domains."example.org"]
        cert = "e.pem"
        key = "e.key"
    """)
    assert cfg.tls.min_version == "1.3" and cfg.tls.ciphers == "ECDHE+AESGCM"
    assert cfg.tls_for("example.org") == TLSCertConfig("e.pem", "e.key")
    assert cfg.tls_for("upload.example.org") == TLSCertConfig("w.pem", "w.key")
    assert cfg.tls_for("other.net") is None
    errs = errors_of(tmp_path, MINIMAL + '[tls]\nmin_version = "1.1"\nciphers = "NOPE-NOTHING"\n')
    assert errs[0] == 'tls.min_version: must be "1.2" or "1.3", got "1.1"'
    assert errs[1].startswith("tls.ciphers: OpenSSL accepts no cipher")


# ------------------------------------------------------------------------------------------ listen

@pytest.mark.parametrize("text, addr", [
    ("0.0.0.0:5222", ("0.0.0.0", 5222)),
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("[::]:5222", ("::", 5222)),
    ("[::1]:5223", ("::1", 5223)),
    ("[2001:db8::1]:65535", ("2001:db8::1", 65535)),
    ("localhost:5269", ("localhost", 5269)),
])
def test_parse_listen(text, addr):
    assert parse_listen(text) == addr
    assert format_listen(addr) == text


@pytest.mark.parametrize("bad", ["5222", ":5222", "::1:5222", "[::1]5222", "[nope]:1", "1.2.3.400:1",
                                 "0.0.0.0:65536", "0.0.0.0:http", "[::1]", "bad_host:1"])
def test_parse_listen_rejects(bad):
    with pytest.raises(ValueError, match="invalid listen address"):
        parse_listen(bad)


def test_listen_in_config(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + """
        [c2s]
        listen = ["0.0.0.0:5222", "[::]:5222"]
        direct_tls = []
        [proxy65]
        listen = ["[::1]:7777"]
    """)
    assert cfg.c2s.listen == (("0.0.0.0", 5222), ("::", 5222))
    assert cfg.c2s.direct_tls == ()
    assert cfg.proxy65.listen == (("::1", 7777),)
    errs = errors_of(tmp_path, MINIMAL + '[c2s]\nlisten = ["::1:5222", "ok:1"]\n[http]\nlisten = ["x"]\n')
    assert len(errs) == 2
    assert errs[0].startswith("c2s.listen: invalid listen address '::1:5222'")
    assert errs[1].startswith("http.listen: invalid listen address 'x'")


# ---------------------------------------------------------------------------------- many errors

def test_all_errors_are_collected(tmp_path):
    errs = errors_of(tmp_path, """
        bogus = 1
        [server]
        domains = ["example.org"]
        admins = ["nobody"]
        [c2s]
        max_stanza_size = "huge"
        allow_plain = 1
        typo = true
        [sm]
        resume_timeout = "-1s"
        [tls]
        cert = "x.pem"
        [upload]
        domain = "{host}.upload"
    """)
    keys = [e.split(":")[0] for e in errs]
    assert len(errs) == 8, errs
    for expected in ("server.admins", "c2s.max_stanza_size", "c2s.allow_plain", "sm.resume_timeout",
                     "tls.key", "upload.domain"):
        assert expected in keys
    assert "unknown key 'bogus'" in errs
    assert any(e.startswith("unknown key 'c2s.typo'") for e in errs)


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_text(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(tmp_path / "absent.toml"))


# ------------------------------------------------------------------------------- components

def test_component_domain_expansion(tmp_path):
    cfg = load_text(tmp_path, """
        [server]
        domains = ["example.org", "customer.example"]
        [muc]
        domain = "rooms.{domain}"
        [proxy65]
        domain = "proxy.shared.example"
    """)
    assert cfg.component_domain("muc", "example.org") == "rooms.example.org"
    assert cfg.component_domain("muc", "customer.example") == "rooms.customer.example"
    assert cfg.component_domain("upload", "customer.example") == "upload.customer.example"
    assert cfg.component_domain("proxy65", "example.org") == "proxy.shared.example"
    assert cfg.served_components("example.org") == {
        "muc": "rooms.example.org", "upload": "upload.example.org", "proxy65": "proxy.shared.example"}
    with pytest.raises(ValueError):
        cfg.component_domain("c2s", "example.org")


def test_disabled_component_not_listed(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + "[upload]\nenabled = false\n")
    assert set(cfg.served_components("example.org")) == {"muc", "proxy65"}


def test_component_domain_collisions(tmp_path):
    errs = errors_of(tmp_path, """
        [server]
        domains = ["example.org", "chat.example.org"]
        [muc]
        domain = "chat.{domain}"
        [upload]
        domain = "files.example.org"
        [proxy65]
        domain = "files.example.org"
    """)
    assert any(e.startswith("muc.domain: 'chat.example.org' for example.org is already used by "
                            "server.domains")
               for e in errs)
    assert any(e.startswith("proxy65.domain: 'files.example.org'") for e in errs)


def test_bad_component_template(tmp_path):
    errs = errors_of(tmp_path, MINIMAL + '[muc]\ndomain = "{domain"\n')
    assert len(errs) == 1 and errs[0].startswith("muc.domain: invalid component domain '{domain'")


# ------------------------------------------------------------------------------- misc sections

def test_http_accounts_proxy(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + """
        [http]
        public_url = "https://chat.example.org/"
        tls = false
        [accounts]
        chat_plans = ["pro", "business"]
        default_plan = "free"
        refusal_text = "No chat for you."
        [proxy65]
        public_host = "192.0.2.7"
        [upload]
        storage_dir = "/srv/files"
    """)
    assert cfg.http.public_url == cfg.http_public_url == "https://chat.example.org"
    assert cfg.accounts == AccountsConfig(("pro", "business"), "free", "No chat for you.")
    assert not cfg.accounts.allows_chat(None) and cfg.accounts.allows_chat("business")
    assert cfg.proxy65.public_host == "192.0.2.7"
    assert cfg.upload.storage_dir == "/srv/files"
    errs = errors_of(tmp_path, MINIMAL + '[http]\npublic_url = "ftp://x"\n[proxy65]\npublic_host = "a b"\n')
    assert errs[0].startswith("http.public_url: expected an absolute http(s) URL")
    assert errs[1].startswith("proxy65.public_host: expected a host name or IP address")


def test_websocket_origins(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + """
        [http]
        websocket_origins = ["https://Chat.Example.org/", "http://localhost:8080"]
    """)
    assert cfg.http.websocket_origins == ("https://chat.example.org", "http://localhost:8080")
    assert load_text(tmp_path, MINIMAL).http.websocket_origins == ()
    errs = errors_of(tmp_path, MINIMAL + '[http]\nwebsocket_origins = ["chat.example.org", "https://a/b"]\n')
    assert len(errs) == 2 and all(e.startswith("http.websocket_origins: expected origins") for e in errs)
    errs = errors_of(tmp_path, MINIMAL + '[http]\nwebsocket_origins = "https://a"\n')
    assert errs[0].startswith("http.websocket_origins:")


def test_bosh_keys(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + """
        [http]
        bosh_inactivity = "45s"
        bosh_max_pause = "10m"
        [limits]
        bosh_sessions_per_address = "5/s"
        bosh_sessions_per_address_burst = 50
    """)
    assert (cfg.http.bosh_inactivity, cfg.http.bosh_max_pause) == (45.0, 600.0)
    rate = cfg.limits.bosh_sessions_per_address
    assert (rate.per_second, rate.burst) == (5.0, 50)
    default = load_text(tmp_path, MINIMAL)
    assert (default.http.bosh_inactivity, default.http.bosh_max_pause) == (30.0, 120.0)
    errs = errors_of(tmp_path, MINIMAL + '[http]\nbosh_inactivity = "soon"\n')
    assert errs[0].startswith("http.bosh_inactivity:")


# --------------------------------------------------------------------------------- check_config

def make_cert(tmp_path, name, names, key=None, days=30):
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def tls_config(tmp_path, cert, key, extra=""):
    return load_text(tmp_path, f"""
        [server]
        domains = ["example.org"]
        data_dir = "{tmp_path / 'data'}"
        [tls]
        cert = "{cert}"
        key = "{key}"
    """ + extra)


def test_check_config_defaults_ok(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_config(load_config(None)) == []


def test_check_config_good_cert(tmp_path):
    cert, key = make_cert(tmp_path, "good", ["example.org", "*.example.org"])
    assert check_config(tls_config(tmp_path, cert, key)) == []


def test_check_config_mismatched_key(tmp_path):
    cert, _ = make_cert(tmp_path, "a", ["example.org"])
    _, other_key = make_cert(tmp_path, "b", ["example.org"])
    errs = check_config(tls_config(tmp_path, cert, other_key))
    assert len(errs) == 1 and errs[0].startswith("tls.key:") and "does not match" in errs[0]


def test_check_config_missing_files(tmp_path):
    errs = check_config(tls_config(tmp_path, tmp_path / "nope.crt", tmp_path / "nope.key"))
    assert len(errs) == 2
    assert errs[0].startswith("tls.cert: cannot read") and errs[1].startswith("tls.key: cannot read")


def test_check_config_garbage_and_expired_and_uncovered(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    cert, key = make_cert(tmp_path, "good", ["example.org"])
    errs = check_config(tls_config(tmp_path, str(junk), key))
    assert len(errs) == 1 and "is not a PEM certificate" in errs[0]
    cert, key = make_cert(tmp_path, "old", ["example.org"], days=-1)
    errs = check_config(tls_config(tmp_path, cert, key))
    assert len(errs) == 1 and "expired" in errs[0]
    cert, key = make_cert(tmp_path, "other", ["other.net"])
    errs = check_config(tls_config(tmp_path, cert, key))
    assert errs == ["tls.cert: certificate does not cover virtual host 'example.org' (it names other.net)"]


def test_check_config_per_domain_cert(tmp_path):
    cert, key = make_cert(tmp_path, "default", ["other.net"])
    dcert, dkey = make_cert(tmp_path, "ex", ["example.org"])
    _, badkey = make_cert(tmp_path, "x", ["example.org"])
    extra = f'[tls.domains."example.org"]\ncert = "{dcert}"\nkey = "{dkey}"\n'
    assert check_config(tls_config(tmp_path, cert, key, extra)) == []
    extra = f'[tls.domains."example.org"]\ncert = "{dcert}"\nkey = "{badkey}"\n'
    errs = check_config(tls_config(tmp_path, cert, key, extra))
    assert len(errs) == 1 and errs[0].startswith('tls.domains."example.org".key:')


def test_check_config_duplicate_ports(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + f"""
        data_dir = "{tmp_path / 'data'}"
        [c2s]
        listen = ["0.0.0.0:5222", "[::]:5222"]
        direct_tls = ["127.0.0.1:5222", "127.0.0.1:0"]
        [http]
        listen = ["127.0.0.1:0", "[::1]:5269"]
        [s2s]
        listen = ["[::]:5269"]
    """)
    errs = check_config(cfg)
    assert errs == ["c2s.direct_tls: 127.0.0.1:5222 clashes with c2s.listen 0.0.0.0:5222",
                    "s2s.listen: [::]:5269 clashes with http.listen [::1]:5269"]


def test_check_config_disabled_listeners_ignored(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + f"""
        data_dir = "{tmp_path / 'data'}"
        [s2s]
        enabled = false
        listen = ["127.0.0.1:5222"]
    """)
    assert check_config(cfg) == []


def test_check_config_data_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = dataclasses.replace(load_config(None), server=dataclasses.replace(
        load_config(None).server, data_dir=str(blocker)))
    cfg = dataclasses.replace(cfg, upload=dataclasses.replace(cfg.upload, storage_dir=str(blocker / "up")))
    errs = check_config(cfg)
    assert errs[0] == f"server.data_dir: {str(blocker)!r} exists and is not a directory"
    assert errs[1].startswith("upload.storage_dir:") and "cannot be created" in errs[1]
    ok = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, data_dir=str(tmp_path / "a" / "b")),
                             upload=dataclasses.replace(cfg.upload, storage_dir=str(tmp_path / "u")))
    assert check_config(ok) == []


def test_c2s_dataclass_defaults_match_contract():
    d = C2SConfig()
    assert (d.max_unauthenticated_per_ip, d.max_auth_attempts, d.allow_plain, d.require_encryption) == \
        (10, 5, True, True)


def test_onion_hosts_are_served_as_virtual_hosts():
    from mbxmpp.config import _build
    cfg = _build({"server": {"domains": ["example.org"]},
                  "s2s": {"tor_socks": "127.0.0.1:9050", "onion_hosts": ["abcdefghij234567.onion"]}}, None)
    assert cfg.server.domains == ("example.org", "abcdefghij234567.onion")
    assert cfg.s2s.onion_hosts == ("abcdefghij234567.onion",)
    with pytest.raises(ConfigError) as e:
        _build({"server": {"domains": ["example.org"]}, "s2s": {"onion_hosts": ["example.com"]}}, None)
    assert "not an .onion name" in str(e.value)
    with pytest.raises(ConfigError) as e:
        _build({"server": {"domains": ["example.org"]}, "s2s": {"onion_hosts": ["abc.onion"]}}, None)
    assert "needs tor_socks" in str(e.value)
