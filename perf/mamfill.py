"""Fill an mbxmpp MAM archive in place through the storage API (no server, no wire).

Shared by ``perf/bench_mam.py`` (in-process query benchmark) and the ``mam_archiving`` scenario
(``perf/scenarios.py``: a server instance's LMDB archive preloaded before the daemon starts).

``n`` messages spread round-robin over ``owners`` (bare JIDs): message ``i`` belongs to
``owners[i % len(owners)]``, is exchanged with one of ``contacts`` remote peers, alternately
incoming and outgoing, and is stamped inside the retention window (from 6 days ago up to a minute
ago, evenly spaced, oldest first), in the MAM module's record format (``[stanza bytes]`` in its
store ``ARCHIVE_STORE`` / ``RECORD_VERSION``), committed in batches of ``chunk``.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

from mbxmpp.modules.mam import ARCHIVE_STORE, RECORD_VERSION

CONTACTS = 20          # distinct peers per owner
CHUNK = 20_000         # appends per committed batch
SPAN_S = 6 * 86400.0   # inside the default 7-day retention ([mam] retention)

__all__ = ["CONTACTS", "CHUNK", "stanza", "mam_archive", "fill", "fill_async", "archive_total"]


def stanza(owner: str, peer: str, i: int, incoming: bool) -> bytes:
    """Message ``i`` of ``owner``'s archive, as the MAM module would store it."""
    frm, to = (peer, owner) if incoming else (owner + "/phone", peer.split("/")[0])
    return (f"<message xmlns='jabber:client' from='{frm}' to='{to}' type='chat' id='m{i:08d}'>"
            f"<body>Message number {i}: a fairly ordinary chat line of typical length.</body>"
            f"<active xmlns='http://jabber.org/protocol/chatstates'/>"
            f"<origin-id xmlns='urn:xmpp:sid:0' id='o{i:08d}'/></message>").encode()


def mam_archive(storage: Any) -> Any:
    """The MAM module's archive store on ``storage`` (the same object the module uses)."""
    return storage.archive(ARCHIVE_STORE, RECORD_VERSION)


def _chunks(n: int, owners: list[str], contacts: int, chunk: int, now: float | None
            ) -> Iterator[list[tuple[str, list[bytes], float, str]]]:
    users = len(owners)
    if not users:
        raise ValueError("no owners to fill")
    now = time.time() if now is None else now
    t0 = now - SPAN_S
    step = (now - 60 - t0) / max(1, n)
    for base in range(0, n, chunk):
        out = []
        for i in range(base, min(n, base + chunk)):
            owner = owners[i % users]
            peer = f"contact{(i // users) % contacts}@other.example/res"
            out.append((owner, [stanza(owner, peer, i, i % 2 == 0)], t0 + i * step, peer))
        yield out


def fill(storage: Any, n: int, owners: list[str], *, contacts: int = CONTACTS,
         chunk: int = CHUNK, now: float | None = None) -> float:
    """Append ``n`` messages (see the module docstring); blocks until durable. For synchronous
    code (outside any running event loop). Returns the seconds it took."""
    ar = mam_archive(storage)
    t = time.perf_counter()
    for items in _chunks(n, owners, contacts, chunk, now):
        with storage.batch() as b:
            for owner, value, when, peer in items:
                b.append(ar, owner, value, when=when, with_=peer)
    return time.perf_counter() - t


async def fill_async(storage: Any, n: int, owners: list[str], *, contacts: int = CONTACTS,
                     chunk: int = CHUNK, now: float | None = None) -> float:
    """:func:`fill` from a coroutine (the batches are awaited)."""
    ar = mam_archive(storage)
    t = time.perf_counter()
    for items in _chunks(n, owners, contacts, chunk, now):
        async with storage.batch() as b:
            for owner, value, when, peer in items:
                b.append(ar, owner, value, when=when, with_=peer)
    return time.perf_counter() - t


def archive_total(storage: Any) -> tuple[int, int]:
    """(items, non-empty archives) in the MAM store."""
    items = owners = 0
    for _owner, size in mam_archive(storage).owners_sizes():
        items += size
        owners += 1
    return items, owners
