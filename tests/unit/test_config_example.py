"""The option declarations: every section read by the one loader, documented, and the shipped
mbxmpp.example.toml generated from them; a module's section without the module is an error."""

import dataclasses
import textwrap
import tomllib
import typing
from pathlib import Path

import pytest

from mbxmpp.cli import main
from mbxmpp.config import MODULE_SECTIONS, Config, ConfigError, declaration, load_config, sections
from mbxmpp.config_example import example_toml
from mbxmpp.core.modules import load_class
from mbxmpp.modules import REGISTRY
from mbxmpp.options import TABLE, Table, load_section, option, render_section, section_options, INT

EXAMPLE = Path(__file__).resolve().parents[2] / "mbxmpp.example.toml"
MINIMAL = '[server]\ndomains = ["example.org"]\n'


def load_text(tmp_path, text):
    p = tmp_path / "mbxmpp.toml"
    p.write_text(textwrap.dedent(text))
    return load_config(str(p))


def errors_of(tmp_path, text):
    with pytest.raises(ConfigError) as e:
        load_text(tmp_path, text)
    return e.value.errors


def all_options(cls, path):
    for f, opt in section_options(cls):
        if opt.kind is TABLE:
            yield from all_options(type(getattr(cls(), f.name)), path + (f.name,))
        else:
            yield ".".join(path + (f.name,)), f, opt


def test_shipped_example_is_generated_from_the_declarations():
    assert EXAMPLE.read_text() == example_toml(), (
        "mbxmpp.example.toml is stale: run `python -m mbxmpp config example > mbxmpp.example.toml`")


def test_cli_prints_the_example(capsys):
    assert main(["config", "example"]) == 0
    assert capsys.readouterr().out == EXAMPLE.read_text()


def test_every_option_is_declared_and_documented():
    for name, decl in sections().items():
        declared = {f.name for f, _ in section_options(decl)}
        assert declared == {f.name for f in dataclasses.fields(decl)}, f"[{name}] has undeclared fields"
        for key, _, opt in all_options(decl, (name,)):
            assert opt.doc.strip() or opt.kind is TABLE, f"{key} has no doc"


def test_example_sets_every_declared_key():
    data = tomllib.loads(EXAMPLE.read_text())
    for name, decl in sections().items():
        for key, _, _ in all_options(decl, (name,)):
            table = data
            for part in key.split("."):
                assert part in table, f"{key} missing from the example"
                table = table[part]


def test_each_module_section_is_the_modules_own_declaration():
    """Module[XConfig] in the module class, the same class in Config: the loader reads it for
    the module, and the module reads it as self.options."""
    declared = {}
    for name, spec in REGISTRY.items():
        cls = load_class(spec)
        for base in getattr(cls, "__orig_bases__", ()):
            args = typing.get_args(base)
            if args and isinstance(args[0], type):
                declared[name] = args[0]
    assert declared == {name: declaration(name) for name in MODULE_SECTIONS}
    for name, decl in declared.items():
        assert type(getattr(Config(), name)) is decl


def test_undocumented_option_would_break_the_example():
    @dataclasses.dataclass(frozen=True)
    class Probe:
        """a probe"""
        size: int = option(3, INT, "how many", minimum=1)

    lines = render_section(Probe, ("probe",))
    assert lines == ["[probe]".ljust(44) + "# a probe", "size = 3".ljust(44) + "# how many"]
    errors = []
    assert load_section(Probe, Table({"size": 0}, ("probe",), errors)) == Probe()
    assert errors == ["probe.size: must be at least 1, got 0"]
    with pytest.raises(ValueError, match="needs its one-line doc"):
        option(3, INT, " ")


@pytest.mark.parametrize("server", ['modules = ["roster", "ping"]', 'disabled_modules = ["muc"]'])
def test_section_of_a_module_not_loaded(tmp_path, server):
    errs = errors_of(tmp_path, MINIMAL + server + '\n[muc]\nmax_occupants = 10\n')
    assert errs == ["[muc]: the muc module is not loaded, so this section does nothing; add 'muc' to "
                    "server.modules (or remove it from server.disabled_modules), or remove the section"]


def test_section_saying_disabled_is_accepted_without_the_module(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + 'modules = ["roster"]\n[upload]\nenabled = false\n')
    assert cfg.upload.enabled is False and "upload" not in cfg.enabled_modules


def test_module_sections_still_checked(tmp_path):
    assert errors_of(tmp_path, MINIMAL + '[webchat]\nlanguage = "english!"\n') == [
        'webchat.language: expected a language code such as "en", "de" or "pt_BR", got "english!"']
    assert errors_of(tmp_path, MINIMAL + '[metrics]\nallow = ["10.0.0.0/8", "nowhere"]\n') == [
        'metrics.allow: expected addresses or networks such as "127.0.0.1" or "10.0.0.0/8", got "nowhere"']
    assert errors_of(tmp_path, MINIMAL + '[auth]\nbackend = "ldap"\n') == [
        'auth.ldap.base_dn: required with backend = "ldap" (in [auth.ldap], with uri)']
    assert errors_of(tmp_path, MINIMAL + '[auth]\nbackend = "ldap"\n[auth.ldap]\nfilter = "(uid=x)"\n') == [
        "auth.ldap.filter: must contain {jid}, got \"(uid=x)\"",
        'auth.ldap.base_dn: required with backend = "ldap" (in [auth.ldap], with uri)']


def test_reading_the_config_imports_no_module():
    """The CLI reads the configuration on every command: the options files are light."""
    import subprocess
    import sys
    code = ("import sys; from mbxmpp.config import load_config; load_config(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.startswith('mbxmpp.modules.') and "
            "not m.endswith('options') or m.split('.')[0] in ('aiohttp', 'prometheus_client')))")
    out = subprocess.run([sys.executable, "-c", code, str(EXAMPLE)], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_check_config_covers_only_what_is_served(tmp_path):
    """Listener clashes and file checks come from the declarations of the served sections."""
    from mbxmpp.config import check_config
    blocker = tmp_path / "file"
    blocker.write_text("")
    text = MINIMAL + f"""
        data_dir = "{tmp_path / 'data'}"
        {{modules}}
        [c2s]
        listen = ["127.0.0.1:7000"]
        [proxy65]
        listen = ["127.0.0.1:7000"]
        [upload]
        storage_dir = "{blocker / 'up'}"
    """
    errs = check_config(load_text(tmp_path, text.replace("{modules}", "")))
    assert errs[0] == "proxy65.listen: 127.0.0.1:7000 clashes with c2s.listen 127.0.0.1:7000"
    assert errs[1].startswith("upload.storage_dir: ") and "cannot be created" in errs[1]
    assert len(errs) == 2
    text = text.replace("[proxy65]\n", "[proxy65]\n        enabled = false\n")
    proxy_off = text.replace("{modules}", 'modules = ["roster", "upload", "proxy65"]')
    assert [e.split(":")[0] for e in check_config(load_text(tmp_path, proxy_off))] == ["upload.storage_dir"]
    no_upload = text.replace("{modules}", 'modules = ["roster", "proxy65"]')
    no_upload = no_upload[:no_upload.index("[upload]")] + "[upload]\nenabled = false\n"
    assert check_config(load_text(tmp_path, no_upload)) == []


def test_components_are_those_of_loaded_modules(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + 'modules = ["roster", "upload"]\n')
    assert cfg.served_components("example.org") == {"upload": "upload.example.org"}


async def test_modules_read_their_own_section():
    from mbxmpp.modules.offline_options import OfflineConfig
    from tests.harness import ServerHarness
    async with ServerHarness(modules=["ping", "offline"], offline=OfflineConfig(max_messages=2)) as h:
        offline, ping = h.server.module("offline"), h.server.module("ping")
        assert offline.options is h.server.config.offline and offline.max_messages == 2
        assert ping.options is None  # no section of its own


def test_empty_module_list_is_the_default_list_as_the_server_loads_it(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + 'modules = []\n[muc]\nmax_occupants = 10\n')
    assert "muc" in cfg.enabled_modules and cfg.muc.max_occupants == 10
