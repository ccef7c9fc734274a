"""Option declarations and the one generic reader of TOML sections.

A section is a frozen dataclass whose fields are declared with `option()`: the kind of value
(duration, size, listen addresses, ...), its bounds and a one-line doc. `load_section()` reads
any such class from a TOML table, collecting every problem as "section.key: message";
`render_section()` writes it back as documented TOML (mbxmpp.example.toml is generated from
these). A section with cross-field rules defines ``validate(self, error) -> Self``, called after
its fields are read; ``error("key", "message")`` reports against a key of the section. One whose
files can be checked (directories writable, certificates readable) defines
``check_files(self, error)``, which `check-config` calls when the section is served.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import os
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable

from .util.ratelimit import Rate
from .util.units import format_duration, format_size, parse_duration, parse_size

Listen = tuple[str, int]
ErrorFn = Callable[[str, str], None]

__all__ = ["Option", "Kind", "option", "Table", "load_section", "render_section", "section_options",
           "STR", "BOOL", "INT", "DURATION", "SIZE", "LISTEN", "STR_LIST", "DOMAIN_TEMPLATE", "RATE",
           "TABLE", "one_of", "writable_dir_problem", "parse_listen", "format_listen", "check_domain",
           "show", "dotted"]


# ------------------------------------------------------------------------------------ value parsing

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def dotted(path: tuple[str, ...]) -> str:
    return ".".join(p if _BARE_KEY.fullmatch(p) else json.dumps(p) for p in path)


def type_name(v: object) -> str:
    if isinstance(v, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "float", list: "array", dict: "table"}.get(
        type(v), type(v).__name__)


def show(v: object) -> str:
    text = json.dumps(v) if isinstance(v, (str, bool)) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def check_domain(d: str, *, wildcard: bool = False) -> str:
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
                host = check_domain(host)
            except ValueError:
                raise ValueError(f"invalid listen address {s!r}: {host!r} is not an IP address "
                                 "or host name") from None
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid listen address {s!r}: port must be a number from 0 to 65535")
    return host, int(port)


def format_listen(addr: Listen) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A `check` accepting one of `choices`, in any letter case."""
    def check(v: str) -> str:
        if v.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {show(v.lower())}")
        return v.lower()
    return check


def writable_dir_problem(path: str) -> str | None:
    """Why the server could not write in directory `path` (creating it if need be), or None."""
    p = os.path.abspath(path)
    if os.path.exists(p):
        if not os.path.isdir(p):
            return f"{path!r} exists and is not a directory"
        if not os.access(p, os.W_OK | os.X_OK):
            return f"directory {path!r} is not writable"
        return None
    parent = os.path.dirname(p)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        return f"{path!r} does not exist and cannot be created ({parent!r} is not a writable directory)"
    return None


# --------------------------------------------------------------------------------------- the reader

MISSING: Any = object()


class Table:
    """One TOML table being read: typed getters that record errors and remember the keys used."""

    def __init__(self, data: dict[str, Any], path: tuple[str, ...], errors: list[str]) -> None:
        self.data, self.path, self.errors = data, path, errors
        self.used: set[str] = set()

    def key(self, k: str) -> str:
        # a key of this table is one name even with dots ("a.example"); else "sub.key" is a path
        return dotted(self.path + ((k,) if k in self.data else tuple(k.split("."))))

    def error(self, k: str, msg: str) -> None:
        self.errors.append(f"{self.key(k)}: {msg}")

    def get(self, k: str) -> Any:
        self.used.add(k)
        return self.data.get(k, MISSING)

    def _wrong(self, k: str, expected: str, v: object) -> None:
        self.error(k, f"expected {expected}, got {type_name(v)} {show(v)}")

    def get_str(self, k: str, default: Any, allow_empty: bool = False) -> Any:
        v = self.get(k)
        if v is MISSING:
            return default
        if not isinstance(v, str) or not (v or allow_empty):
            self._wrong(k, "a string" if allow_empty else "a non-empty string", v)
            return default
        return v

    def get_bool(self, k: str, default: bool) -> bool:
        v = self.get(k)
        if v is MISSING:
            return default
        if not isinstance(v, bool):
            self._wrong(k, "a boolean (true or false)", v)
            return default
        return v

    def get_int(self, k: str, default: int, minimum: int = 0) -> int:
        v = self.get(k)
        if v is MISSING:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            self._wrong(k, "an integer", v)
            return default
        if v < minimum:
            self.error(k, f"must be at least {minimum}, got {v}")
            return default
        return v

    def get_duration(self, k: str, default: float, minimum: float = 0.001,
                     maximum: float | None = None) -> float:
        v = self.get(k)
        if v is MISSING:
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
            self.error(k, f"must be at least {format_duration(minimum)}, got {show(v)}")
            return default
        if maximum is not None and secs > maximum:
            self.error(k, f"must be at most {format_duration(maximum)}, got {show(v)}")
            return default
        return secs

    def get_size(self, k: str, default: int, minimum: int = 1) -> int:
        v = self.get(k)
        if v is MISSING:
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
            self.error(k, f"must be at least {format_size(minimum)}, got {show(v)}")
            return default
        return n

    def get_str_list(self, k: str, default: Any) -> Any:
        v = self.get(k)
        if v is MISSING:
            return default
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            self._wrong(k, "an array of non-empty strings", v)
            return default
        return tuple(v)

    def get_listen(self, k: str, default: tuple[Listen, ...]) -> tuple[Listen, ...]:
        v = self.get(k)
        if v is MISSING:
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

    def get_table(self, k: str) -> Table | None:
        v = self.get(k)
        if v is MISSING:
            return None
        if not isinstance(v, dict):
            self._wrong(k, "a table", v)
            return None
        return Table(v, self.path + (k,), self.errors)

    def finish(self) -> None:
        for k in self.data:
            if k not in self.used:
                hint = difflib.get_close_matches(k, sorted(self.used), n=1)
                tail = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.errors.append(f"unknown key '{self.key(k)}'{tail}")


# ------------------------------------------------------------------------------------ declarations

@dataclass(frozen=True)
class Kind:
    """A kind of value: how it is read from a table and how it is written in TOML."""
    name: str
    read: Callable[[Table, str, Option, Any], Any]
    toml: Callable[[Any], str]
    # a kind that is a table of tables ([tls.domains."x"]): its TOML text, given its path
    block: Callable[[tuple[str, ...], Any], list[str]] | None = None


@dataclass(frozen=True)
class Option:
    kind: Kind
    doc: str                                   # one line (wrapped in the example file)
    minimum: float | None = None
    maximum: float | None = None
    allow_empty: bool = False                  # strings: "" accepted (None default: "" means None)
    check: Callable[[Any], Any] | None = None  # the value read -> normalized; ValueError: reported
    each: Callable[[str], str] | None = None   # the same for each item of a list (bad ones dropped)
    required: str | None = None                # when the key must be set: what to say if it is not
    example: Any = MISSING                     # shown in the example file instead of the default
    default_doc: str | None = None             # the default in words (when not a value); "": unsaid
    before: str = ""                           # a paragraph printed above the key in the example


def option(default: Any, kind: Kind, doc: str, *, minimum: float | None = None, maximum: float | None = None,
           allow_empty: bool = False, check: Callable[[Any], Any] | None = None,
           each: Callable[[str], str] | None = None, required: str | None = None, example: Any = MISSING,
           default_doc: str | None = None, before: str = "", factory: bool = False) -> Any:
    """A dataclass field read from the file as `kind` (see Option). With `factory`, `default` is a
    zero-argument callable making the default (a mutable one, or a nested section)."""
    if not doc.strip() and kind is not TABLE:
        raise ValueError("an option needs its one-line doc (it goes into mbxmpp.example.toml)")
    meta = {"option": Option(kind, doc, minimum, maximum, allow_empty, check, each, required, example,
                             default_doc, before)}
    if factory:
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


def section_options(cls: type) -> list[tuple[dataclasses.Field[Any], Option]]:
    return [(f, f.metadata["option"]) for f in dataclasses.fields(cls) if "option" in f.metadata]


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc,operator]


def load_section(cls: type, t: Table) -> Any:
    """Read the declared section `cls` from `t` (the caller reports `t`'s unknown keys)."""
    values: dict[str, Any] = {}
    for f, opt in section_options(cls):
        default = _default_of(f)
        if opt.required is not None and f.name not in t.data:
            t.error(f.name, f"required: {opt.required}")
        before = len(t.errors)
        value = opt.kind.read(t, f.name, opt, default)
        if len(t.errors) == before and f.name in t.data and value is not default:
            value = _checked(t, f.name, opt, value, default)
        values[f.name] = value
    section = cls(**values)
    validate = getattr(section, "validate", None)
    return validate(t.error) if validate is not None else section


def _checked(t: Table, key: str, opt: Option, value: Any, default: Any) -> Any:
    if opt.each is not None:
        items = []
        for item in value:
            try:
                items.append(opt.each(item))
            except ValueError as e:
                t.error(key, str(e))
        value = tuple(items)
    if opt.check is not None:
        try:
            value = opt.check(value)
        except ValueError as e:
            t.error(key, str(e))
            return default
    return value


# ------------------------------------------------------------------------------------------- kinds

def _toml(v: Any) -> str:
    if v is None:
        return '""'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return str(v)


def _read_str(t: Table, k: str, opt: Option, default: Any) -> Any:
    v = t.get_str(k, default, allow_empty=opt.allow_empty)
    return None if v == "" and default is None else v


def _read_int(t: Table, k: str, opt: Option, default: Any) -> int:
    return t.get_int(k, default, int(opt.minimum or 0))


def _read_duration(t: Table, k: str, opt: Option, default: Any) -> float:
    return t.get_duration(k, default, 0.001 if opt.minimum is None else opt.minimum, opt.maximum)


def _read_size(t: Table, k: str, opt: Option, default: Any) -> int:
    return t.get_size(k, default, 1 if opt.minimum is None else int(opt.minimum))


def _read_template(t: Table, k: str, opt: Option, default: Any) -> str:
    tpl: str = t.get_str(k, default)
    probe = tpl.replace("{domain}", "example.org")
    try:
        if "{" in probe or "}" in probe:
            raise ValueError("the only placeholder is {domain}")
        check_domain(probe)
    except ValueError as e:
        t.error(k, f"invalid component domain {tpl!r}: {e}")
        return default
    return tpl.lower()


def _read_rate(t: Table, k: str, opt: Option, default: Rate) -> Rate:
    burst = t.get_int(k + "_burst", int(default.burst), 1)
    text = "0" if t.data.get(k) == 0 else t.get_str(k, None)  # 0: no limit
    t.used.add(k)
    try:
        return Rate(default.per_second, burst) if text is None else Rate.parse(str(text), burst)
    except ValueError as e:
        t.error(k, str(e))
        return default


def _read_table(t: Table, k: str, opt: Option, default: Any) -> Any:
    sub = t.get_table(k)
    if sub is None:
        return default
    section = load_section(type(default), sub)
    sub.finish()
    return section


STR = Kind("string", _read_str, _toml)
BOOL = Kind("boolean", lambda t, k, o, d: t.get_bool(k, d), _toml)
INT = Kind("integer", _read_int, _toml)
DURATION = Kind("duration", _read_duration, lambda v: _toml(format_duration(v)))
SIZE = Kind("size", _read_size, lambda v: _toml(format_size(v)) if v else "0")
LISTEN = Kind("listen addresses", lambda t, k, o, d: t.get_listen(k, d),
              lambda v: _toml([format_listen(a) for a in v]))
STR_LIST = Kind("array of strings", lambda t, k, o, d: t.get_str_list(k, d),
                lambda v: _toml(list(v or ())))
DOMAIN_TEMPLATE = Kind("domain template", _read_template, _toml)
RATE = Kind("rate", _read_rate, lambda r: _toml(r.text()) if r.per_second else "0")
TABLE = Kind("table", _read_table, lambda v: "")


# ---------------------------------------------------------------------------------------- rendering

COMMENT_COLUMN = 44
WIDTH = 110


def _comment_lines(text: str, indent: str = "") -> list[str]:
    return [indent + "# " + line for line in _wrap(text, WIDTH - len(indent) - 2)] if text else []


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)


def _with_comment(code: str, doc: str) -> list[str]:
    """`code` with `doc` as a trailing comment at COMMENT_COLUMN, wrapped onto lines of its own."""
    first_width = WIDTH - max(COMMENT_COLUMN, len(code) + 2) - 2
    if "\n" in code:  # a multi-line value: the doc goes above it
        return _comment_lines(doc) + [code]
    lines = _wrap(doc, max(first_width, 30))
    if not lines:
        return [code]
    out = [f"{code:<{COMMENT_COLUMN - 2}}  # {lines[0]}"]
    rest = " ".join(lines[1:])
    out += [" " * COMMENT_COLUMN + "# " + ln for ln in _wrap(rest, WIDTH - COMMENT_COLUMN - 2)]
    return out


def render_section(cls: type, path: tuple[str, ...], value: Any = None,
                   shown: Callable[[str, Any], str | None] | None = None) -> list[str]:
    """The TOML text of section `cls` at `path`: its header with the class docstring, then every
    declared key with its example (or default) value and doc, nested tables after. `shown`
    may return a key's text in place of the kind's rendering (a multi-line list)."""
    doc = (cls.__doc__ or "").strip()
    head, _, body = doc.partition("\n")
    out = _with_comment(f"[{dotted(path)}]", head)
    out += _comment_lines(" ".join(body.split()))
    tables = []
    for f, opt in section_options(cls):
        default = _default_of(f)
        example = opt.example if opt.example is not MISSING else default
        if opt.kind is TABLE:
            tables.append(render_section(type(default), path + (f.name,)))
            continue
        if opt.kind.block is not None:
            tables.append(_with_comment(f"# [{dotted(path + (f.name, 'NAME'))}]", opt.doc)
                          + opt.kind.block(path + (f.name,), example))
            continue
        if opt.before:
            out += _comment_lines(opt.before)
        text = (shown(f.name, example) if shown is not None else None) or opt.kind.toml(example)
        doc = f"required: {opt.doc}" if opt.required else opt.doc
        if opt.example is not MISSING and opt.example != default and opt.default_doc != "" \
                and not opt.required:
            words = opt.default_doc or ("none" if default in (None, (), "") else opt.kind.toml(default))
            doc = f"{doc}; default {words}" if doc else f"default {words}"
        out += _with_comment(f"{f.name} = {text}", doc)
        if opt.kind is RATE:
            out.append(f"{f.name}_burst = {int(example.burst)}")
    for lines in tables:
        out += [""] + lines
    return out
