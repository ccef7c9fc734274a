"""mbxmpp.example.toml, generated from the option declarations (`python -m mbxmpp config example`).

tests/unit/test_config_example.py checks that the shipped file is exactly this text, so an option
added without its doc, or a default changed, shows up there.
"""

from __future__ import annotations

from typing import Any

from .config import sections
from .options import render_section

HEADER = """\
# mbxmpp example configuration: every section and key, with its default where it has one.
# Generated from the option declarations by `python -m mbxmpp config example`; do not edit by hand.
# Copy to ./mbxmpp.toml (read automatically) or pass with `python -m mbxmpp -c FILE`.
# Check it with `python -m mbxmpp -c FILE check-config`.
#
# Durations: "250ms", "30s", "5m", "1h", "7d", "1w", or an integer number of seconds.
# Sizes: "512B", "256KiB", "10MiB" (powers of 1024), "10MB", "1GB" (powers of 1000), or an integer
# number of bytes. Listen addresses: "host:port", IPv6 in brackets "[::]:5222"; port 0 = ephemeral.
# Rates: "N/s", "N/min", "N/h", "N/day"; 0 = no limit.
# Unknown keys are errors, and so is a module's section while that module is not loaded.
# Every section is optional except [server]. Relative paths are relative to the directory the
# server is started from."""


def _module_list(names: Any) -> str:
    """[server] modules, one per line with what each does (from the module classes)."""
    from .core.modules import load_class
    from .modules import REGISTRY
    width = max(len(n) for n in names) + 4
    lines = ["["]
    for name in names:
        cls = load_class(REGISTRY[name])
        xeps = ", ".join(f"XEP-{x}" for x in sorted(cls.xeps))
        what = cls.description + (f" ({xeps})" if xeps and "XEP-" not in cls.description else "")
        quoted = f'"{name}",'
        lines.append(f"    {quoted:<{width}} # {what}")
    return "\n".join(lines + ["]"])


def _shown(key: str, value: Any) -> str | None:
    return _module_list(value) if key == "modules" else None


def example_toml() -> str:
    parts = [HEADER]
    for name, decl in sections().items():
        parts.append("\n".join(render_section(decl, (name,), shown=_shown)))
    return "\n\n".join(parts) + "\n"
