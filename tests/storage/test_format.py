"""The on-disk format of the LMDB backend, byte for byte (format 1, see ``keys.py``).

A data directory written record by record here with ``lmdb`` and ``msgpack`` alone, as mbxmpp wrote
it before the backend was split into modules, reads back the same; and what the backend writes now
(in a loop, outside one, in a batch) is exactly those bytes.  Nothing of ``mbxmpp.storage`` is used
to build the expected bytes: a change of the format fails here.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import lmdb
import msgpack  # type: ignore[import-untyped]
import pytest

from mbxmpp.storage.api import open_storage

aio = pytest.mark.asyncio


def packed(version: int, value: object) -> bytes:
    return bytes(msgpack.packb([version, value], use_bin_type=True))


def id16(us: int, tail: int) -> bytes:
    return us.to_bytes(8, "big") + tail.to_bytes(8, "big")


def h8(jid: str) -> bytes:  # the with-index hashes the bare JID
    return hashlib.blake2b(jid.split("/")[0].encode(), digest_size=8).digest()


T1, T2, T3 = id16(1_600_000_000_000_000, 7), id16(1_600_000_001_000_000, 8), id16(1_700_000_000_000_000, 9)


def old_layout() -> dict[bytes, dict[bytes, bytes]]:
    """Every record of a small data directory: database name -> key -> value."""
    alice, bob = b"alice@example.org\0", b"bob@example.org\0"
    return {
        b"_meta": {b"format": b"1"},
        b"kv:accounts": {alice: packed(1, {"scram": {"salt": b"\x00\x01", "i": 4096}}),
                         bob: packed(2, ["v2", None, 1.5])},
        b"map:roster": {alice + b"bob@example.org": packed(1, {"sub": "both", "groups": ["A"]}),
                        alice + b"carol@example.org": packed(1, {"sub": "none"})},
        b"ar:mam": {alice + T1: packed(1, ["bob@example.org/phone", [b"<message/>"]]),
                    alice + T2: packed(1, [None, "no with"]),
                    bob + T3: packed(1, ["alice@example.org", {"k": [1, 2]}])},
        b"ar:mam#w": {alice + h8("bob@example.org") + T1: b"bob@example.org/phone",
                      bob + h8("alice@example.org") + T3: b"alice@example.org"},
        b"ar:mam#t": {T1 + b"alice@example.org": b"", T2 + b"alice@example.org": b"",
                      T3 + b"bob@example.org": b""},
        b"ar:mam#n": {alice: (2).to_bytes(8, "big"), bob: (1).to_bytes(8, "big")},
    }


def write_raw(path: str, dbs: dict[bytes, dict[bytes, bytes]]) -> None:
    os.makedirs(os.path.join(path, "db"))
    env = lmdb.open(os.path.join(path, "db"), max_dbs=128, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for name, records in dbs.items():
            db = env.open_db(name, txn=txn)
            for k, v in records.items():
                txn.put(k, v, db=db)
    env.close()


def read_raw(path: str) -> dict[bytes, dict[bytes, bytes]]:
    env = lmdb.open(os.path.join(path, "db"), max_dbs=128, readonly=True)
    out: dict[bytes, dict[bytes, bytes]] = {}
    with env.begin() as txn:
        names = [bytes(k) for k in txn.cursor().iternext(values=False)]
        for name in names:
            db = env.open_db(name, txn=txn, create=False)
            out[name] = {bytes(k): bytes(v) for k, v in txn.cursor(db=db)}
    env.close()
    return out


@aio
async def test_a_data_dir_of_the_old_layout_reads_back_the_same(tmp_path):
    write_raw(str(tmp_path), old_layout())
    st = open_storage("lmdb", str(tmp_path))
    acc = st.keyval("accounts", version=2, upgrade=lambda v, old: ["upgraded", old])
    assert acc.get("alice@example.org") == ["upgraded", {"scram": {"salt": b"\x00\x01", "i": 4096}}]
    assert acc.get("bob@example.org") == ["v2", None, 1.5]
    assert list(acc.owners()) == ["alice@example.org", "bob@example.org"] and acc.count() == 2
    roster = st.map("roster")
    assert roster.get_all("alice@example.org") == {
        "bob@example.org": {"sub": "both", "groups": ["A"]}, "carol@example.org": {"sub": "none"}}
    mam = st.archive("mam")
    items = mam.query("alice@example.org")
    assert [(i.id, i.with_, i.value) for i in items] == [
        (T1.hex(), "bob@example.org/phone", [b"<message/>"]), (T2.hex(), None, "no with")]
    assert items[0].when == 1_600_000_000.0
    assert [i.id for i in mam.query("alice@example.org", with_="bob@example.org")] == [T1.hex()]
    assert mam.query("bob@example.org", with_="alice@example.org")[0].value == {"k": [1, 2]}
    assert mam.count("alice@example.org") == 2
    assert list(mam.owners_sizes()) == [("alice@example.org", 2), ("bob@example.org", 1)]
    # the writer keeps the old indexes coherent: expire the two oldest, delete bob
    assert await mam.expire(1_650_000_000.0, budget=10) == (2, False)
    await st.delete_owner("bob@example.org")
    await st.close()
    left = read_raw(str(tmp_path))
    assert left[b"ar:mam"] == {} and left[b"ar:mam#w"] == {} and left[b"ar:mam#t"] == {}
    assert left[b"ar:mam#n"] == {} and list(left[b"kv:accounts"]) == [b"alice@example.org\0"]


@aio
async def test_the_backend_writes_the_old_layout(tmp_path):
    """The same records written through the backend, every write path: the same bytes."""
    st = open_storage("lmdb", str(tmp_path))
    acc, roster, mam = st.keyval("accounts"), st.map("roster"), st.archive("mam")
    bob_acc = st.keyval("accounts", version=2)
    # in a running loop (buffered writes, appends with fresh ids from new_id())
    f1 = acc.set("alice@example.org", {"scram": {"salt": b"\x00\x01", "i": 4096}})
    f2 = roster.set("alice@example.org", "bob@example.org", {"sub": "both", "groups": ["A"]})
    _, f3 = mam.append("alice@example.org", [b"<message/>"], with_="bob@example.org/phone",
                       id=T1.hex())
    await asyncio.gather(f1, f2, f3)
    sid, f4 = mam.append("carol@example.org", "fresh id", with_="alice@example.org/r")
    await f4  # (alone in its run: the writer's putmulti path for fresh ids)
    # outside the loop's write buffer: a job (set_many), and a batch
    await roster.set_many("alice@example.org", {"carol@example.org": {"sub": "none"}})
    async with st.batch() as b:
        b.set(bob_acc, "bob@example.org", ["v2", None, 1.5])
        b.append(mam, "alice@example.org", "no with", id=T2.hex())
    # from synchronous code (the CLI's path), in a thread without a loop
    await asyncio.get_running_loop().run_in_executor(None, lambda: mam.append(
        "bob@example.org", {"k": [1, 2]}, with_="alice@example.org", id=T3.hex())[1].result())
    await st.close()
    want = old_layout()
    carol, t4 = b"carol@example.org\0", bytes.fromhex(sid)
    want[b"ar:mam"][carol + t4] = packed(1, ["alice@example.org/r", "fresh id"])
    want[b"ar:mam#w"][carol + h8("alice@example.org") + t4] = b"alice@example.org/r"
    want[b"ar:mam#t"][t4 + b"carol@example.org"] = b""
    want[b"ar:mam#n"][carol] = (1).to_bytes(8, "big")
    assert read_raw(str(tmp_path)) == want
