"""The named records of the LMDB backend: what the stores queue for the writer, the overlay entries
of queued writes, and the cached parts of archive records.

They live in memory only.  On disk, every value is still ``msgpack([version, value])`` (an archive
item: ``msgpack([version, [with_, value]])``) under the keys of ``keys.py``; nothing here is stored.
The writes made in a loop, where their cost matters, make few objects: a :class:`LoopPut` per
keyval/map set, nothing per archive append (an :class:`AppendRun` holds its appends by column).
"""

from __future__ import annotations

from typing import Any, NamedTuple

#: ``make(Record, (field, ...))``: a NamedTuple built without the Python frame of its ``__new__``
#: (~150 ns less), for a record made once per write in a loop (``LoopPut``); the fields in
#: declaration order, all of them
make = tuple.__new__


class ArDbs:
    """The four databases of one archive (see ``keys.py``).  Hashed by identity: the writer sums
    item counts per archive in a dict keyed by it."""

    __slots__ = ("main", "w", "t", "n")

    def __init__(self, main: Any, w: Any, t: Any, n: Any) -> None:
        self.main = main  # owner \0 id16 -> record of [with_, value]
        self.w = w        # with-index: owner \0 h8(bare(with_)) id16 -> with_ in UTF-8
        self.t = t        # time index: id16 owner -> b"" (global expiry)
        self.n = n        # owner \0 -> be64 item count


# -- writer operations (applied by ``apply.py``, in call order, inside one write transaction) ----

class Put(NamedTuple):
    """A keyval or map record written (``raw`` None: deleted)."""
    db: Any
    key: bytes
    raw: bytes | None


class DelPrefix(NamedTuple):
    """Every key of ``db`` starting with ``prefix`` deleted (a map's ``delete_all``)."""
    db: Any
    prefix: bytes


class ArRec(NamedTuple):
    """One archive append, ready for the writer."""
    fresh: bool             # the id was allocated for this append: no item can have it yet
    prefix: bytes           # owner prefix
    id16: bytes
    wkey: bytes | None      # with-index key, None without ``with_``
    wval: bytes | None      # ``with_`` in UTF-8 (the with-index value)
    raw: bytes              # the packed record


class ArPut(NamedTuple):
    """An archive append made outside a loop or in a batch (in a loop, appends are buffered as
    :class:`AppendRun`\\ s instead)."""
    dbs: ArDbs
    rec: ArRec


class ArDelete(NamedTuple):
    """An owner's items deleted: those in ``id16s`` (None: all) older than ``before_us`` (None:
    any age).  Its job's result is the number deleted."""
    dbs: ArDbs
    prefix: bytes
    id16s: list[bytes] | None
    before_us: int | None


class ArExpire(NamedTuple):
    """At most ``budget`` items older than ``before_us``, over all owners, deleted oldest first.
    Its job's result is ``(deleted, more_left)``."""
    dbs: ArDbs
    before_us: int
    budget: int


class DelOwner(NamedTuple):
    """Every record of one owner, in every database of the environment (account deletion)."""
    prefix: bytes


Op = Put | DelPrefix | ArPut | ArDelete | ArExpire | DelOwner


class AppendRun:
    """Consecutive appends to one archive, as the writer applies them together, held column by
    column: an append made in a loop adds one entry to each list and makes no object of its own
    (that the garbage collector would track until the commit).  Entry ``i`` of the columns is
    the :class:`ArRec` ``rec(i)``."""

    __slots__ = ("dbs", "fresh", "prefixes", "id16s", "wkeys", "wvals", "raws")

    def __init__(self, dbs: ArDbs) -> None:
        self.dbs = dbs
        self.fresh: list[bool] = []
        self.prefixes: list[bytes] = []
        self.id16s: list[bytes] = []
        self.wkeys: list[bytes | None] = []
        self.wvals: list[bytes | None] = []
        self.raws: list[bytes] = []

    def __len__(self) -> int:
        return len(self.raws)

    def add(self, r: ArRec) -> None:
        self.fresh.append(r.fresh)
        self.prefixes.append(r.prefix)
        self.id16s.append(r.id16)
        self.wkeys.append(r.wkey)
        self.wvals.append(r.wval)
        self.raws.append(r.raw)

    def rec(self, i: int) -> ArRec:
        return ArRec(self.fresh[i], self.prefixes[i], self.id16s[i], self.wkeys[i], self.wvals[i],
                     self.raws[i])

    def one(self, i: int) -> AppendRun:
        """A run of append ``i`` alone (to retry it in a transaction of its own)."""
        run = AppendRun(self.dbs)
        run.add(self.rec(i))
        return run


# -- overlays: queued keyval/map writes that reads must see before their commit ---------------

class Touch(NamedTuple):
    """A queued write's overlay entry: ``store._pend_set(token, Pending(seq, raw))`` when queued,
    ``store._unpend(token, seq)`` once committed.  ``token`` is the keyval key, or for a map
    ``(owner prefix, map key)`` with map key None for ``delete_all``."""
    store: Any
    token: Any
    raw: bytes | None


class Pending(NamedTuple):
    """An overlay value: the ``seq`` of the queued write that set it, and its record (None:
    deleted)."""
    seq: int
    raw: bytes | None


class LoopPut(NamedTuple):
    """A single keyval/map set made in a running loop: its :class:`Put` fields first (the writer
    applies it as a Put), then its overlay entry and its own future.  It is its own overlay value
    (it has the ``seq`` and ``raw`` of a :class:`Pending`)."""
    db: Any
    key: bytes
    raw: bytes | None
    store: Any
    token: Any
    seq: int
    fut: Any


# -- archive record parts cached per ``with_`` ------------------------------------------------

class WithEntry(NamedTuple):
    """A record is msgpack ``[version, [with_, value]]``, i.e. ``head`` (fixed per schema version
    and ``with_``) + ``pack(value)``."""
    head: bytes
    with_hash: bytes        # keys.with_hash(with_), b"" without with_
    utf8: bytes | None      # with_ in UTF-8, None without with_


class LastId(NamedTuple):
    """The last id ``new_id()`` returned, as text and as bytes (``append(id=text)`` then needs no
    parsing, and knows the id is fresh)."""
    text: str | None
    id16: bytes


NO_LAST_ID = LastId(None, b"")
