"""Versioned msgpack records: every stored value is ``msgpack([schema_version, value])``.

Values are anything msgpack carries: dict (str or int keys), list, str, bytes, int, float, bool,
None.  Tuples come back as lists.  Packing happens in the caller's thread, at the moment of the
``set``/``append`` call, so an unserialisable value raises there (TypeError), not in the writer.
"""

from __future__ import annotations

from typing import Any, Callable

import msgpack  # type: ignore[import-untyped]

#: ``upgrade(old_version, old_value) -> value`` turns an older record into the current schema
Upgrade = Callable[[int, Any], Any]


class RecordError(ValueError):
    """A stored record that this code cannot read (corrupt, or not a versioned record)."""


class RecordVersionError(RecordError):
    """A record written by newer code: its schema version is above what this code knows."""


# A shared Packer is safe under the GIL: pack() is one C call that never calls back into Python.
_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def pack(version: int, value: Any) -> bytes:
    if type(version) is not int or version < 0:
        raise ValueError(f"schema version must be a non-negative int, not {version!r}")
    b: bytes = _packer.pack([version, value])
    return b


def unpack(data: bytes | memoryview) -> tuple[int, Any]:
    try:
        rec = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except Exception as e:
        raise RecordError(f"undecodable record: {e}") from e
    if type(rec) is not list or len(rec) != 2 or type(rec[0]) is not int:
        raise RecordError("not a versioned record")
    return rec[0], rec[1]


def decode(data: bytes | memoryview, known: int, store: str, upgrade: Upgrade | None = None) -> Any:
    """The value of a record read from store ``store`` whose code knows schema versions <= ``known``."""
    version, value = unpack(data)
    return current(version, value, known, store, upgrade)


def current(version: int, value: Any, known: int, store: str, upgrade: Upgrade | None = None) -> Any:
    """``value`` (read with schema ``version``) in the schema ``known`` of the reading code."""
    if version == known:
        return value
    if version > known:
        raise RecordVersionError(
            f"store {store!r} holds a record of schema version {version}, but this code knows "
            f"versions up to {known}: it was written by a newer mbxmpp; upgrade mbxmpp")
    return upgrade(version, value) if upgrade is not None else value
