"""What both backends share about their stores: the registry of opened stores (one object per
kind, name and schema version) and the stores' common base.

The first one opened of a kind and name holds the data (and, for LMDB, the overlay of queued
writes); a store opened later with another schema version is a copy of it that decodes with that
version (``with_version``), so that both see the same data.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

from . import keys
from .records import Upgrade, decode


class VersionedStore:
    """A store's name and the schema version its code reads and writes."""

    kind = ""

    def __init__(self, name: str, version: int, upgrade: Upgrade | None) -> None:
        self.name = name
        self.version = version
        self._upgrade = upgrade

    def _decode(self, raw: bytes) -> Any:
        return decode(raw, self.version, self.name, self._upgrade)

    def with_version(self, version: int, upgrade: Upgrade | None) -> Any:
        """This store read and written with another schema version (the same data and, for
        LMDB, the same overlay of queued writes)."""
        st = copy.copy(self)
        st.version, st._upgrade = version, upgrade
        return st


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
