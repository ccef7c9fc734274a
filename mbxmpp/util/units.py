"""Durations ("30s", "5m", "7d") and sizes ("256KiB", "10MB") as written in the configuration.

A bare integer (or a string of digits) is seconds for a duration and bytes for a size.
KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024 (DESIGN.md, configuration contract).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

__all__ = ["parse_duration", "parse_size", "format_duration", "format_size"]

# Units are case-sensitive: "5M" could be minutes or months, "10mb" millibits; refuse rather than guess.
_DURATION_UNITS: dict[str, Decimal] = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
    "w": Decimal(604800),
}

_SIZE_UNITS: dict[str, int] = {
    "B": 1,
    "KB": 1000, "kB": 1000,
    "MB": 1000 ** 2,
    "GB": 1000 ** 3,
    "TB": 1000 ** 4,
    "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "TiB": 1024 ** 4,
}

_NUMBER_UNIT = re.compile(r"\s*(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>[A-Za-z]*)\s*")

_COMPOUND_PART = re.compile(r"(\d+)(ms|w|d|h|m|s)")
_COMPOUND = re.compile(r"(?:\d+(?:ms|w|d|h|m|s)){2,}")

_DURATION_HELP = 'a duration such as "250ms", "30s", "5m", "1h", "7d", "1w" or a number of seconds'
_SIZE_HELP = 'a size such as "512B", "256KiB", "10MiB", "10MB", "1GB" or a number of bytes'


def _split(v: str) -> tuple[Decimal, str] | None:
    m = _NUMBER_UNIT.fullmatch(v)
    if m is None:
        return None
    try:
        return Decimal(m["num"]), m["unit"]
    except InvalidOperation:  # pragma: no cover - the regex only lets valid numbers through
        return None


def parse_duration(v: str | int | float) -> float:
    """Return the duration `v` in seconds; raise ValueError naming `v` if it is not one."""
    if isinstance(v, bool):
        raise ValueError(f"invalid duration {v!r}: expected {_DURATION_HELP}")
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"invalid duration {v!r}: must be a finite number of seconds")
        if v < 0:
            raise ValueError(f"invalid duration {v!r}: must not be negative")
        return float(v)
    if not isinstance(v, str):
        raise ValueError(f"invalid duration {v!r}: expected {_DURATION_HELP}")
    v_stripped = v.strip()
    if _COMPOUND.fullmatch(v_stripped):  # "1h30m", as format_duration writes it
        return float(sum(Decimal(n) * _DURATION_UNITS[u] for n, u in _COMPOUND_PART.findall(v_stripped)))
    parts = _split(v)
    if parts is None:
        raise ValueError(f"invalid duration {v!r}: expected {_DURATION_HELP}")
    num, unit = parts
    if unit and unit not in _DURATION_UNITS:
        raise ValueError(f"invalid duration {v!r}: unknown unit {unit!r} "
                         f"(use one of {', '.join(_DURATION_UNITS)})")
    if num < 0:
        raise ValueError(f"invalid duration {v!r}: must not be negative")
    return float(num * _DURATION_UNITS[unit or "s"])


def parse_size(v: str | int) -> int:
    """Return the size `v` in bytes; raise ValueError naming `v` if it is not one."""
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError(f"invalid size {v!r}: expected {_SIZE_HELP}")
    if isinstance(v, int):
        if v < 0:
            raise ValueError(f"invalid size {v!r}: must not be negative")
        return v
    parts = _split(v)
    if parts is None:
        raise ValueError(f"invalid size {v!r}: expected {_SIZE_HELP}")
    num, unit = parts
    if unit and unit not in _SIZE_UNITS:
        fixed = {u.lower(): u for u in _SIZE_UNITS}.get(unit.lower())
        hint = (f"units are case-sensitive: did you mean {fixed!r}?" if fixed is not None
                else "use one of B, KB, MB, GB, TB, KiB, MiB, GiB, TiB")
        raise ValueError(f"invalid size {v!r}: unknown unit {unit!r} ({hint})")
    if num < 0:
        raise ValueError(f"invalid size {v!r}: must not be negative")
    total = num * _SIZE_UNITS[unit or "B"]
    if total != total.to_integral_value():
        raise ValueError(f"invalid size {v!r}: not a whole number of bytes")
    return int(total)


def format_duration(seconds: float) -> str:
    """Render seconds compactly for messages: 300 -> "5m", 5400 -> "1h30m", 0.25 -> "250ms"."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    if ms % 1000:
        if ms < 1000:
            return f"{ms}ms"
        return f"{ms / 1000:g}s"
    rest = ms // 1000
    out = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        q, rest = divmod(rest, size)
        if q:
            out.append(f"{q}{unit}")
    return "".join(out)


def format_size(n: int) -> str:
    """Render bytes for messages: exact binary or decimal units when they fit, else one decimal."""
    if n < 0:
        return "-" + format_size(-n)
    for unit, size in (("TiB", 1024 ** 4), ("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024),
                       ("TB", 1000 ** 4), ("GB", 1000 ** 3), ("MB", 1000 ** 2), ("KB", 1000)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    for unit, size in (("TiB", 1024 ** 4), ("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"
