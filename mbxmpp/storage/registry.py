"""The stores a backend has opened (both backends): one object per kind, name and schema version.

The first one opened of a kind and name holds the data (and, for LMDB, the overlay of queued
writes); a store opened later with another schema version is a copy of it that decodes with that
version (``with_version``), so that both see the same data.
"""

from __future__ import annotations

from typing import Any, Iterable

from . import keys
from .records import Upgrade


class StoreRegistry:
    def __init__(self) -> None:
        self._by_version: dict[tuple[str, str, int], Any] = {}
        self._first: dict[tuple[str, str], Any] = {}

    def open(self, storage: Any, cls: Any, name: str, version: int, upgrade: Upgrade | None) -> Any:
        """The store ``cls(storage, name, version, upgrade)``, made once."""
        keys.check_store(name, version)
        k = (cls.kind, name, version)
        st = self._by_version.get(k)
        if st is None:
            first = self._first.get((cls.kind, name))
            if first is None:
                st = self._first[(cls.kind, name)] = cls(storage, name, version, upgrade)
            else:
                st = first.with_version(version, upgrade)
            self._by_version[k] = st
        return st

    def stores(self) -> Iterable[Any]:
        """One store per kind and name (the one holding the data)."""
        return self._first.values()
