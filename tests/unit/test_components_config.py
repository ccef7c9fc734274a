"""[components] (external components, XEP-0114): reading, errors, and what check-config says."""

from __future__ import annotations

import textwrap

import pytest

from mbxmpp.components.options import describe
from mbxmpp.config import ConfigError, check_config, load_config

MINIMAL = '[server]\ndomains = ["example.org"]\n'


def load(tmp_path, text):
    p = tmp_path / "mbxmpp.toml"
    p.write_text(MINIMAL + textwrap.dedent(text))
    return load_config(str(p))


def errors(tmp_path, text):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    return e.value.errors


def test_defaults_bind_nothing(tmp_path):
    cfg = load(tmp_path, "")
    assert cfg.components.listen == (("127.0.0.1", 5347),)
    assert not cfg.components.hosts and cfg.components.listening == ()
    assert describe(cfg) == ["external components: none configured ([components.hosts]), nothing listens"]


def test_hosts_read_and_secret_kept_out_of_repr(tmp_path):
    cfg = load(tmp_path, """
        [components]
        listen = ["[::1]:5347"]
        auth_timeout = "10s"
        [components.hosts."IRC.Example.org"]
        secret = "hunter2-but-longer"
        name = "IRC"
    """)
    host = cfg.components.hosts["irc.example.org"]  # (normalised)
    assert host.secret == "hunter2-but-longer" and host.name == "IRC"
    assert "hunter2" not in repr(cfg)
    assert cfg.components.listening == (("::1", 5347),)
    assert cfg.components.auth_timeout == 10.0
    assert describe(cfg) == ["external components: irc.example.org on [::1]:5347"]


def test_bad_entries(tmp_path):
    assert errors(tmp_path, """
        [components.hosts."a..b"]
        secret = "x"
        [components.hosts."irc.example.org"]
        name = "no secret"
        [components.hosts."ok.example.org"]
        secret = ""
        port = 1
    """) == [
        "components.hosts.\"a..b\": invalid domain name 'a..b': bad label '' (letters, digits and "
        "inner hyphens, 1-63 characters)",
        'components.hosts."irc.example.org".secret: missing: the shared secret the component '
        "authenticates with",
        'components.hosts."ok.example.org".secret: expected a non-empty string, got string ""',
        "unknown key 'components.hosts.\"ok.example.org\".port'",
    ]


def test_domain_already_served(tmp_path):
    assert errors(tmp_path, """
        [components.hosts."example.org"]
        secret = "x"
        [components.hosts."conference.example.org"]
        secret = "y"
    """) == [
        "components.hosts.\"example.org\": 'example.org' is already served by server.domains (example.org)",
        "components.hosts.\"conference.example.org\": 'conference.example.org' is already served by "
        "muc.domain (conference.example.org for example.org)",
    ]


def test_check_config_listener_clash_and_public_listener(tmp_path):
    cfg = load(tmp_path, f"""
        data_dir = "{tmp_path}/data"
        [c2s]
        listen = ["0.0.0.0:5347"]
        [components]
        listen = ["0.0.0.0:5347"]
        [components.hosts."irc.example.org"]
        secret = "x"
    """.replace("        data_dir", "data_dir", 1))
    assert "components.listen: 0.0.0.0:5347 clashes with c2s.listen 0.0.0.0:5347" in check_config(cfg)
    assert describe(cfg)[1] == ("note: components.listen 0.0.0.0:5347 is not loopback: component "
                                "streams are not encrypted (XEP-0114 has no TLS)")
