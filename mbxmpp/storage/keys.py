"""Byte-sortable key codecs for the storage layer (sans-IO, no lmdb import).

Every key starts with the *owner prefix* ``owner.encode() + b"\\0"``; an owner therefore never contains
NUL, and all records of one owner in one database are a single cursor range.  Because NUL sorts below
every other byte, keys sort exactly as their owners do.

=============  ==================================================  ===========================
database       key                                                 value
=============  ==================================================  ===========================
keyval         owner \\0                                            record
map            owner \\0 key                                        record
archive        owner \\0 id16                                       record of [with, value]
archive #w     owner \\0 h8(bare(with)) id16                        b""
archive #t     id16 owner                                          b""  (global expiry scan)
archive #n     owner \\0                                            be64 item count
=============  ==================================================  ===========================

``id16`` = be64(microseconds since the epoch) + 8 random-ish bytes; its text form (32 lowercase hex
digits) sorts like the bytes, is URL-safe and serves as MAM / XEP-0359 stanza-id.  LMDB keys are at
most 511 bytes, hence :data:`MAX_OWNER_BYTES` (the longest key is the ``#w`` index key).
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time

_getrandbits = random.getrandbits

MAX_KEY = 511
ID_LEN = 16
WITH_HASH_LEN = 8
#: an owner prefix plus the with-hash plus an id must fit in one LMDB key
MAX_OWNER_BYTES = MAX_KEY - 1 - WITH_HASH_LEN - ID_LEN  # 486
US = 1_000_000
U64 = _U64 = (1 << 64) - 1
_STORE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def check_store(name: object, version: object) -> None:
    """A store name becomes part of a database name: 1-64 of A-Z a-z 0-9 _ . - (no ':' or '#')."""
    if not isinstance(name, str) or not _STORE_NAME.fullmatch(name):
        raise ValueError(f"store name {name!r}: 1-64 of A-Z a-z 0-9 _ . -")
    if type(version) is not int or version < 0:
        raise ValueError(f"schema version must be a non-negative int, not {version!r}")


#: bounded caches of the per-call key work (owner prefixes, with-hashes), oldest entry out first
#: (not emptied when full: a cache refilled from empty every few thousand sessions leaves the
#: allocator's pools half used, and the process's RSS grows with every refill). Owners
#: and contacts repeat, and the loop thread pays for every append, set and read.  Bulk writes of
#: distinct owners (``batch()``) bypass them (:func:`owner_prefix_uncached`): there a cache only costs.
_CACHE_MAX = 8192
_prefixes: dict[str, bytes] = {}
_with_hashes: dict[str, bytes] = {}


def owner_prefix_uncached(owner: str) -> bytes:
    """``owner`` as a key prefix; ValueError if it cannot be one (NUL inside, too long)."""
    if not isinstance(owner, str):
        raise TypeError(f"owner must be str, not {type(owner).__name__}")
    b = owner.encode("utf-8")  # UnicodeEncodeError (a ValueError) for lone surrogates
    if len(b) > MAX_OWNER_BYTES:
        raise ValueError(f"owner is {len(b)} bytes in UTF-8; the limit is {MAX_OWNER_BYTES}")
    if b"\0" in b:
        raise ValueError("owner must not contain NUL")
    return b + b"\0"


def owner_prefix(owner: str) -> bytes:
    """``owner`` as a key prefix (cached); ValueError if it cannot be one (NUL inside, too long)."""
    p = _prefixes.get(owner)  # TypeError here for an unhashable owner, as below
    if p is None:
        p = owner_prefix_uncached(owner)
        if type(owner) is str:
            if len(_prefixes) >= _CACHE_MAX:
                del _prefixes[next(iter(_prefixes))]
            _prefixes[owner] = p
    return p


def owner_of(key: bytes) -> str:
    """The owner of any key that starts with an owner prefix."""
    return key[:key.index(b"\0")].decode("utf-8")


def prefix_end(prefix: bytes) -> bytes:
    """Smallest key greater than every key that starts with ``prefix`` (``prefix`` ends with \\0)."""
    return prefix[:-1] + b"\x01"


def map_key(prefix: bytes, key: str) -> bytes:
    if not isinstance(key, str):
        raise TypeError(f"map key must be str, not {type(key).__name__}")
    k = prefix + key.encode("utf-8")
    if len(k) > MAX_KEY:
        raise ValueError(f"owner + map key is {len(k)} bytes; the limit is {MAX_KEY}")
    return k


def map_key_part(prefix: bytes, key: bytes) -> str:
    return key[len(prefix):].decode("utf-8")


# -- time and ids ---------------------------------------------------------------------------------

def ts_us(when: float) -> int:
    """Seconds since the epoch -> integer microseconds (the unit in every key)."""
    if not 0 <= when < _U64 / US:  # also false for NaN
        raise ValueError(f"time {when!r} out of range")
    return min(round(when * US), _U64)


def clamp_us(when: float) -> int:
    """A query bound in microseconds, clamped to what ids can hold (before 1970 -> 0, inf -> max)."""
    if when != when:
        raise ValueError("time bound is NaN")
    if when <= 0:
        return 0
    if when >= _U64 / US:
        return _U64
    return min(round(when * US), _U64)


def id_bytes_to_str(b: bytes) -> str:
    return b.hex()


def id_str_to_bytes(s: object) -> bytes | None:
    """The 16 bytes of an id string, or None if ``s`` is not an id this layer could have made."""
    if not isinstance(s, str) or len(s) != 2 * ID_LEN:
        return None
    try:
        b = bytes.fromhex(s)
    except ValueError:
        return None
    return b if b.hex() == s else None  # reject upper case: one id, one spelling


def id_ts_us(b: bytes) -> int:
    return int.from_bytes(b[:8], "big")


def id_when(b: bytes) -> float:
    return int.from_bytes(b[:8], "big") / US


def ts_bound(us: int) -> bytes:
    """Smallest id with timestamp ``us``."""
    return us.to_bytes(8, "big") + bytes(8)


class IdAllocator:
    """Time-ordered 16-byte ids, strictly increasing per process for ``when=None`` even if the
    wall clock steps back (the id then carries the last timestamp handed out, plus one).

    ``lock`` guards the sequence; a caller that holds it anyway (the LMDB backend's enqueue lock
    is this lock) uses :meth:`new_locked` and saves taking a second lock per append."""

    __slots__ = ("_last", "lock")

    def __init__(self) -> None:
        self._last = 0
        self.lock = threading.Lock()

    def new(self, when: float | None = None) -> bytes:
        if when is not None:  # explicit times (imports, tests): unique, not monotonic
            return ((ts_us(when) << 64) | _getrandbits(64)).to_bytes(16, "big")
        with self.lock:
            return self.new_locked()

    def new_locked(self) -> bytes:
        """A fresh id for the current time; ``lock`` must be held."""
        n = ((time.time_ns() // 1000) << 64) | _getrandbits(64)
        if n <= self._last:
            n = self._last + 1 + _getrandbits(16)
        self._last = n
        return n.to_bytes(16, "big")


ids = IdAllocator()


# -- "with" ---------------------------------------------------------------------------------------

def bare(jid: str) -> str:
    """Bare part of a JID string (a resource starts at the first '/', RFC 7622 §3.1)."""
    i = jid.find("/")
    return jid if i < 0 else jid[:i]


def with_hash(with_: str) -> bytes:
    """8-byte hash of the bare JID; index hits are confirmed against the record (collisions)."""
    h = _with_hashes.get(with_)
    if h is None:
        h = hashlib.blake2b(bare(with_).encode("utf-8"), digest_size=WITH_HASH_LEN).digest()
        if type(with_) is str:
            if len(_with_hashes) >= _CACHE_MAX:
                del _with_hashes[next(iter(_with_hashes))]
            _with_hashes[with_] = h
    return h


def with_matches(query: str, stored: str | None) -> bool:
    """XEP-0313 §4.1.1: a bare JID matches every resource, a full JID matches exactly."""
    if stored is None:
        return False
    if "/" in query:
        return stored == query
    return bare(stored) == query


def time_key(id16: bytes, owner_bytes: bytes) -> bytes:
    return id16 + owner_bytes
