"""The storage contract (api.py), run against every backend: memory (the reference) and LMDB."""

from __future__ import annotations

import asyncio
import time

import pytest

from mbxmpp.storage import keys
from mbxmpp.storage.api import ArchiveItem, ItemNotFound, SyncFuture, open_storage
from mbxmpp.storage.records import RecordVersionError

BACKENDS = ["memory", "lmdb"]
aio = pytest.mark.asyncio


@pytest.fixture(params=BACKENDS)
def storage(request, tmp_path):
    st = open_storage(request.param, str(tmp_path) if request.param == "lmdb" else None)
    yield st
    st.close_sync()


# -- keyval -----------------------------------------------------------------------------------

VALUES = [0, -1, 2**63 - 1, 1.5, True, False, "", "text é 😀", b"\x00\xff", [], {},
          [1, "a", None, [b"x"]], {"a": {"b": [1, 2]}, "c": None}, {1: "int key"}]


@aio
async def test_keyval_roundtrip(storage):
    kv = storage.keyval("accounts")
    assert kv.get("a@example.org") is None
    for i, v in enumerate(VALUES):
        await kv.set(f"u{i}@example.org", v)
    for i, v in enumerate(VALUES):
        assert kv.get(f"u{i}@example.org") == v
    await kv.set("t@x", (1, 2))
    assert kv.get("t@x") == [1, 2]  # msgpack: tuples come back as lists
    got = kv.get("u12@example.org")
    got["a"] = "mutated"
    assert kv.get("u12@example.org") == VALUES[12]


@aio
async def test_keyval_read_your_writes_and_delete(storage):
    kv = storage.keyval("accounts")
    f1 = kv.set("a@x", {"v": 1})
    assert kv.get("a@x") == {"v": 1}       # before the commit
    f2 = kv.set("a@x", {"v": 2})
    assert kv.get("a@x") == {"v": 2}
    assert kv.count() == 1 and list(kv.owners()) == ["a@x"]
    f3 = kv.set("a@x", None)
    assert kv.get("a@x") is None
    assert kv.count() == 0 and list(kv.owners()) == []
    assert await asyncio.gather(f1, f2, f3) == [None, None, None]
    assert kv.get("a@x") is None
    await kv.set("a@x", None)  # deleting the absent is fine
    await kv.set("a@x", 3)
    await storage.flush()
    assert kv.get("a@x") == 3


@aio
async def test_keyval_owners_prefix_domain_count(storage):
    kv = storage.keyval("accounts")
    owners = ["a@b.org", "a@b.org.evil", "b@b.org", "ab@c.org", "b.org", "", "ü@b.org", "z@b.org"]
    for o in owners:
        kv.set(o, 1)
    await storage.flush()
    assert list(kv.owners()) == sorted(owners)
    assert list(kv.owners("a")) == ["a@b.org", "a@b.org.evil", "ab@c.org"]
    assert list(kv.owners("a@b.org")) == ["a@b.org", "a@b.org.evil"]
    assert list(kv.owners("q")) == []
    assert sorted(kv.owners_in_domain("b.org")) == ["a@b.org", "b@b.org", "z@b.org", "ü@b.org"]
    assert kv.count() == len(owners)
    kv.set("new@b.org", 1)
    kv.set("z@b.org", None)
    assert "new@b.org" in list(kv.owners()) and "z@b.org" not in list(kv.owners())
    assert kv.count() == len(owners)
    await storage.flush()
    assert kv.count() == len(owners)


@aio
async def test_keyval_many_owners_iterate(storage):
    kv = storage.keyval("accounts")
    with storage.batch() as b:  # blocking commit from async code: allowed, if not nice
        for i in range(2500):
            b.set(kv, f"u{i:05d}@x", i)
    got = list(kv.owners())
    assert got == [f"u{i:05d}@x" for i in range(2500)]
    assert kv.count() == 2500


@aio
async def test_owner_validation(storage):
    kv, m, ar = storage.keyval("kv"), storage.map("m"), storage.archive("ar")
    await kv.set("", "empty owner is the global record")
    assert kv.get("") == "empty owner is the global record"
    long_ok = "x" * keys.MAX_OWNER_BYTES
    await kv.set(long_ok, 1)
    assert kv.get(long_ok) == 1
    ar.append(long_ok, "fits", with_="w" * 3000)
    for bad in ("x" * (keys.MAX_OWNER_BYTES + 1), "é" * 300, "a\0b"):
        with pytest.raises(ValueError):
            kv.set(bad, 1)
        with pytest.raises(ValueError):
            kv.get(bad)
        with pytest.raises(ValueError):
            m.set(bad, "k", 1)
        with pytest.raises(ValueError):
            ar.append(bad, 1)
        with pytest.raises(ValueError):
            ar.query(bad)
    with pytest.raises(TypeError):
        kv.set(b"bytes@owner", 1)
    with pytest.raises(ValueError):
        m.set("a@b", "k" * 510, 1)
    with pytest.raises(TypeError):
        kv.set("a@b", object())  # not msgpack-serialisable: raises at the call
    assert kv.get("a@b") is None


@aio
async def test_versions(storage):
    v2 = storage.keyval("prefs", version=2)
    await v2.set("a@b", {"new": True})
    v1 = storage.keyval("prefs", version=1)
    with pytest.raises(RecordVersionError, match="newer"):
        v1.get("a@b")
    await v1.set("old@b", {"old": 1})
    assert v2.get("old@b") == {"old": 1}  # older record, no upgrade function: as stored
    v3 = storage.keyval("prefs", version=3, upgrade=lambda ver, val: {"from": ver, "val": val})
    assert v3.get("old@b") == {"from": 1, "val": {"old": 1}}
    m2 = storage.map("mp", version=2)
    await m2.set("a@b", "k", 1)
    with pytest.raises(RecordVersionError):
        storage.map("mp", version=1).get_all("a@b")
    a2 = storage.archive("arc", version=2)
    _, f = a2.append("a@b", "x")
    await f
    with pytest.raises(RecordVersionError):
        storage.archive("arc", version=1).query("a@b")
    assert storage.keyval("prefs", version=2) is v2


@aio
async def test_kinds_are_separate_namespaces(storage):
    await storage.keyval("x").set("a@b", 1)
    await storage.map("x").set("a@b", "k", 2)
    storage.archive("x").append("a@b", 3)
    await storage.flush()
    assert storage.keyval("x").get("a@b") == 1
    assert storage.map("x").get_all("a@b") == {"k": 2}
    assert [i.value for i in storage.archive("x").query("a@b")] == [3]
    assert storage.keyval("y").get("a@b") is None


# -- map --------------------------------------------------------------------------------------

@aio
async def test_map(storage):
    m = storage.map("private")
    assert m.get("a@b", "k") is None and m.get_all("a@b") == {}
    f = m.set("a@b", "k1", {"x": 1})
    assert m.get("a@b", "k1") == {"x": 1}
    await f
    await m.set_many("a@b", {"k2": 2, "": "empty key", "ключ": [3], "k\0nul": 4})
    await m.set_many("a@bc", {"k1": "other owner"})
    await m.set_many("a@", {"k1": "shorter owner"})
    assert m.get_all("a@b") == {"k1": {"x": 1}, "k2": 2, "": "empty key", "ключ": [3], "k\0nul": 4}
    assert m.get("a@b", "k\0nul") == 4
    m.set("a@b", "k2", None)
    assert m.get("a@b", "k2") is None and "k2" not in m.get_all("a@b")
    m.set_many("a@b", {"k1": None, "k3": 3})
    assert m.get_all("a@b") == {"": "empty key", "ключ": [3], "k\0nul": 4, "k3": 3}
    m.delete_all("a@b")
    assert m.get_all("a@b") == {} and m.get("a@b", "k3") is None
    m.set("a@b", "after", 1)  # a set after a queued delete_all survives it
    assert m.get_all("a@b") == {"after": 1}
    assert m.get("a@b", "k3") is None
    await storage.flush()
    assert m.get_all("a@b") == {"after": 1}
    assert m.get_all("a@bc") == {"k1": "other owner"}
    assert m.get_all("a@") == {"k1": "shorter owner"}
    assert m.get("a@bc", "k1") == "other owner"


# -- archive ----------------------------------------------------------------------------------

T0 = 1_700_000_000.0


async def fill(ar, owner, n, step=1.0, withs=("x@y/r1", "x@y/r2", "z@y", None)):
    ids = []
    for i in range(n):
        sid, f = ar.append(owner, {"n": i}, when=T0 + i * step, with_=withs[i % len(withs)])
        ids.append(sid)
    await f
    return ids


@aio
async def test_archive_basics(storage):
    ar = storage.archive("mam")
    assert ar.query("a@b") == [] and ar.first_last("a@b") == (None, None)
    assert ar.count("a@b") == 0
    sid, f = ar.append("a@b", {"body": "hi"}, when=T0, with_="c@d/res")
    assert keys.id_str_to_bytes(sid) is not None and len(sid) == 32
    assert await f is None
    item = ar.get("a@b", sid)
    assert item == ArchiveItem(sid, T0, "c@d/res", {"body": "hi"})
    assert isinstance(item, tuple) and item.with_ == "c@d/res"
    assert ar.get("a@b", "nonsense") is None and ar.get("a@b", "0" * 32) is None
    assert ar.get("a@b", sid.upper()) is None
    assert ar.get("other@b", sid) is None
    sid2, f = ar.append("a@b", "no with")
    await f
    first, last = ar.first_last("a@b")
    assert first.id == sid and last.id == sid2 and last.with_ is None
    assert abs(last.when - time.time()) < 60
    assert ar.count("a@b") == 2 and ar.count("a@bc") == 0


@aio
async def test_archive_paging_no_gaps_no_dups(storage):
    ar = storage.archive("mam")
    ids = await fill(ar, "u@x", 1000)
    await fill(ar, "u@x.other", 10)
    await fill(ar, "u@", 10)
    assert ids == sorted(ids)
    assert [i.id for i in ar.query("u@x")] == ids
    assert [i.value["n"] for i in ar.query("u@x", limit=3)] == [0, 1, 2]
    # forward pages with after_id
    seen, after = [], None
    while True:
        page = ar.query("u@x", after_id=after, limit=37)
        if not page:
            break
        seen += [i.id for i in page]
        after = page[-1].id
    assert seen == ids
    # backward pages with before_id, newest first (RSM <before/>)
    seen, before = [], None
    while True:
        page = ar.query("u@x", before_id=before, limit=41, reverse=True)
        if not page:
            break
        assert [i.id for i in page] == sorted((i.id for i in page), reverse=True)
        seen += [i.id for i in page]
        before = page[-1].id
    assert seen == ids[::-1]
    last50 = ar.query("u@x", limit=50, reverse=True)
    assert [i.id for i in last50] == ids[:-51:-1]
    # between two ids
    assert [i.id for i in ar.query("u@x", after_id=ids[10], before_id=ids[15])] == ids[11:15]
    assert ar.query("u@x", after_id=ids[15], before_id=ids[10]) == []
    assert ar.count("u@x", after_id=ids[10], before_id=ids[15]) == 4
    assert ar.query("u@x", after_id=ids[-1]) == []
    assert ar.query("u@x", limit=0) == []


@aio
async def test_archive_unknown_ids(storage):
    ar = storage.archive("mam")
    ids = await fill(ar, "u@x", 5)
    other = await fill(ar, "v@x", 1)
    for bad in ("nope", other[0], "f" * 32, ids[0].upper()):
        with pytest.raises(ItemNotFound):
            ar.query("u@x", after_id=bad)
        with pytest.raises(KeyError):
            ar.query("u@x", before_id=bad, reverse=True, limit=0)
        with pytest.raises(KeyError):
            ar.count("u@x", after_id=bad)
    with pytest.raises(ValueError):
        ar.query("u@x", limit=-1)


@aio
async def test_archive_time_and_with_filters(storage):
    ar = storage.archive("mam")
    ids = await fill(ar, "u@x", 40, step=0.5)
    def q(**kw):
        return [i.value["n"] for i in ar.query("u@x", **kw)]
    assert q(start=T0 + 1, end=T0 + 3) == [2, 3, 4, 5, 6]          # both ends inclusive
    assert q(start=T0 + 1.000001, end=T0 + 2.999999) == [3, 4, 5]
    assert q(start=T0 + 1, end=T0 + 3, reverse=True, limit=2) == [6, 5]
    assert q(end=T0 - 1) == [] and q(start=T0 + 100) == []
    assert ar.count("u@x", start=T0 + 1, end=T0 + 3) == 5
    assert q(with_="x@y") == [n for n in range(40) if n % 4 in (0, 1)]
    assert q(with_="x@y/r1") == [n for n in range(40) if n % 4 == 0]
    assert q(with_="x@y/r3") == []
    assert q(with_="z@y") == [n for n in range(40) if n % 4 == 2]
    assert q(with_="z@y/any") == []
    assert q(with_="y") == [] and q(with_="x@") == []
    assert ar.count("u@x", with_="x@y") == 20
    assert q(with_="x@y", start=T0 + 2, limit=3) == [4, 5, 8]
    assert q(with_="x@y", reverse=True, limit=3) == [37, 36, 33]
    assert q(with_="x@y", after_id=ids[4], limit=2) == [5, 8]
    assert q(with_="x@y", before_id=ids[8], reverse=True, limit=2) == [5, 4]
    page = ar.query("u@x", with_="x@y", limit=3)
    assert [i.with_ for i in page] == ["x@y/r1", "x@y/r2", "x@y/r1"]
    # ids filter: unknown ids skipped; other filters still apply
    want = [ids[7], ids[3], "garbage", "0" * 32, ids[30]]
    assert q(ids=want) == [3, 7, 30]
    assert q(ids=want, reverse=True) == [30, 7, 3]
    assert q(ids=want, with_="z@y") == [30]
    assert q(ids=want, limit=1) == [3]
    assert q(ids=want, after_id=ids[3]) == [7, 30]
    assert q(ids=want, end=T0 + 3.5) == [3, 7]
    assert q(ids=[]) == []
    assert ar.count("u@x", ids=want) == 3


@aio
async def test_archive_bounds_are_clamped(storage):
    ar = storage.archive("mam")
    ids = await fill(ar, "u@x", 5)
    inf = float("inf")
    assert [i.id for i in ar.query("u@x", start=-5, end=inf)] == ids
    assert ar.query("u@x", end=-1) == [] and ar.query("u@x", start=inf) == []
    assert ar.count("u@x", start=-inf, end=1e300) == 5
    with pytest.raises(ValueError):
        ar.query("u@x", start=float("nan"))
    for bad in (-1.0, inf, float("nan")):
        with pytest.raises(ValueError):
            ar.append("u@x", 1, when=bad)
    assert await ar.delete("u@x", before=-1) == 0
    assert await ar.expire(-1) == (0, False)
    assert await ar.expire(inf, budget=2) == (2, True)
    assert await ar.delete("u@x", before=inf) == 3


@aio
async def test_archive_with_same_time_and_explicit_ids(storage):
    ar = storage.archive("mam")
    sids = [ar.append("u@x", i, when=T0)[0] for i in range(20)]
    await storage.flush()
    assert len(set(sids)) == 20
    got = ar.query("u@x")
    assert sorted(i.value for i in got) == list(range(20)) and all(i.when == T0 for i in got)
    nid = ar.new_id()
    assert nid > sids[-1] or True
    sid, f = ar.append("u@x", "pre-allocated", id=nid, when=0, with_="a@b")
    assert sid == nid
    await f
    assert ar.get("u@x", nid).value == "pre-allocated"
    assert ar.get("u@x", nid).when == keys.id_when(bytes.fromhex(nid))
    # re-using an id replaces the item (and its with-index entry)
    await ar.append("u@x", "replaced", id=nid, with_="c@d")[1]
    assert ar.get("u@x", nid) == (nid, keys.id_when(bytes.fromhex(nid)), "c@d", "replaced")
    assert ar.query("u@x", with_="a@b") == []
    assert [i.value for i in ar.query("u@x", with_="c@d")] == ["replaced"]
    assert ar.count("u@x") == 21
    with pytest.raises(ValueError):
        ar.append("u@x", 1, id="not-an-id")


def test_new_id_monotonic(storage, monkeypatch):
    ar = storage.archive("mam")
    a = [ar.new_id() for _ in range(1000)]
    assert a == sorted(a) and len(set(a)) == 1000
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() - 3600 * 10**9)  # clock steps back 1 h
    b = [ar.new_id() for _ in range(100)]
    assert b == sorted(b) and b[0] > a[-1]
    assert all(c in "0123456789abcdef" for c in b[0])
    assert ar.new_id(when=T0) < a[0]  # explicit times are not forced forward


@aio
async def test_archive_delete(storage):
    ar = storage.archive("mam")
    ids = await fill(ar, "u@x", 20)
    keep = await fill(ar, "u@xx", 3)
    assert await ar.delete("u@x", ids=[ids[0], ids[5], "garbage", keep[0]]) == 2
    assert ar.count("u@x") == 18 and ar.get("u@x", ids[5]) is None
    assert ar.query("u@x", with_="x@y", limit=1)[0].id == ids[1]
    assert await ar.delete("u@x", before=T0 + 10) == 8
    assert [i.id for i in ar.query("u@x")] == ids[10:]
    assert await ar.delete("u@x", ids=[ids[10], ids[19]], before=T0 + 15) == 1
    assert ar.count("u@x") == 9
    assert ar.first_last("u@x")[0].id == ids[11]
    assert await ar.delete("u@x") == 9
    assert ar.query("u@x") == [] and ar.first_last("u@x") == (None, None) and ar.count("u@x") == 0
    assert ar.query("u@x", with_="x@y") == []
    assert ar.count("u@xx") == 3
    assert list(ar.owners_sizes()) == [("u@xx", 3)]


@aio
async def test_archive_expire_and_sizes(storage):
    ar = storage.archive("mam")
    for k, owner in enumerate(["c@x", "a@x", "b@x", "ü@x"]):
        for i in range(25):
            ar.append(owner, i, when=T0 + i * 4 + k, with_="w@x/r")
    await storage.flush()
    assert list(ar.owners_sizes()) == [("a@x", 25), ("b@x", 25), ("c@x", 25), ("ü@x", 25)]
    before = T0 + 50  # items at i*4+k < 50: 13 + 13 + 12 + 12 = 50
    assert await ar.expire(before, budget=0) == (0, True)
    assert await ar.expire(before, budget=-5) == (0, True)
    assert await ar.expire(before, budget=10) == (10, True)
    # oldest first across owners: c@x (k=0) went first
    assert ar.first_last("c@x")[0].value == 3
    assert await ar.expire(before, budget=30) == (30, True)
    assert await ar.expire(before, budget=30) == (10, False)
    assert await ar.expire(before, budget=30) == (0, False)
    assert all(i.when >= before for o in ("a@x", "b@x", "c@x", "ü@x") for i in ar.query(o))
    sizes = dict(ar.owners_sizes())
    assert sum(sizes.values()) == 100 - 50
    assert sizes == {o: ar.count(o) for o in sizes} == {o: len(ar.query(o)) for o in sizes}
    assert ar.count("a@x", with_="w@x") == sizes["a@x"]
    assert await ar.expire(T0 + 1000, budget=1000) == (50, False)
    assert list(ar.owners_sizes()) == []


# -- whole storage ----------------------------------------------------------------------------

@aio
async def test_delete_owner(storage):
    kv, m, ar, ar2 = (storage.keyval("acc"), storage.map("priv"), storage.archive("mam"),
                      storage.archive("offline"))
    for o in ("a@x", "a@xy", "a@", "b@x"):
        kv.set(o, o)
        m.set_many(o, {"k": o, "k2": 2})
        ar.append(o, o, with_="c@d")
        ar2.append(o, o)
    await storage.flush()
    kv.set("a@x", "queued before")
    await storage.delete_owner("a@x")
    assert kv.get("a@x") is None and m.get_all("a@x") == {} and m.get("a@x", "k") is None
    assert ar.query("a@x") == [] and ar2.query("a@x") == [] and ar.count("a@x") == 0
    assert ar.query("a@x", with_="c@d") == []
    for o in ("a@xy", "a@", "b@x"):
        assert kv.get(o) == o and m.get_all(o) == {"k": o, "k2": 2}
        assert [i.value for i in ar.query(o, with_="c@d")] == [o]
        assert ar2.count(o) == 1
    assert dict(ar.owners_sizes()) == {"a@xy": 1, "a@": 1, "b@x": 1}
    assert await ar.expire(time.time() + 10, 100) == (3, False)
    storage.delete_owner_sync("b@x")
    assert kv.get("b@x") is None


@aio
async def test_batch_async_and_discard(storage):
    kv, m, ar = storage.keyval("acc"), storage.map("priv"), storage.archive("mam")
    async with storage.batch() as b:
        b.set(kv, "a@x", 1)
        b.map_set(m, "a@x", "k", 2)
        b.map_set_many(m, "a@x", {"k2": 3})
        sid = b.append(ar, "a@x", 4, with_="c@d")
        assert len(b) >= 4
    assert kv.get("a@x") == 1 and m.get_all("a@x") == {"k": 2, "k2": 3}
    assert ar.get("a@x", sid).value == 4
    with pytest.raises(RuntimeError):
        async with storage.batch() as b:
            b.set(kv, "b@x", 1)
            raise RuntimeError("discard")
    with pytest.raises(RuntimeError):
        with storage.batch() as b:
            b.set(kv, "b@x", 1)
            raise RuntimeError("discard")
    await storage.flush()
    assert kv.get("b@x") is None
    b = storage.batch()
    b.set(kv, "c@x", 5)
    await b.commit()
    assert kv.get("c@x") == 5


def test_sync_use_without_loop(storage):
    kv, ar = storage.keyval("acc"), storage.archive("mam")
    f = kv.set("a@x", 1)
    assert isinstance(f, SyncFuture) and not isinstance(f, asyncio.Future)
    assert f.result(timeout=10) is None and kv.get("a@x") == 1
    with storage.batch() as b:
        for i in range(1000):
            b.set(kv, f"u{i}@x", i)
        sid = b.append(ar, "a@x", "hello")
    assert kv.get("u999@x") == 999 and kv.count() == 1001
    assert ar.get("a@x", sid).value == "hello"
    assert ar.expire(time.time() + 10).result(timeout=10) == (1, False)
    storage.flush_sync()

    async def coro():
        await kv.set("r@x", 7)
        return kv.get("r@x")
    assert storage.run_sync(coro()) == 7
    storage.delete_owner_sync("a@x")
    assert kv.get("a@x") is None
    storage.close_sync()
    with pytest.raises(RuntimeError):
        storage.keyval("other")


@aio
async def test_store_names(storage):
    for bad in ("", "a:b", "a#b", "x" * 65, "é"):
        with pytest.raises(ValueError):
            storage.keyval(bad)
    assert storage.keyval("ok.name-1_x") is storage.keyval("ok.name-1_x")


@aio
async def test_idle_after_flush(storage):
    kv, ar = storage.keyval("accounts"), storage.archive("mam")
    kv.set("a@x", 1)
    ar.append("a@x", [b"<m/>"], with_="b@x")
    await storage.flush()
    assert storage.idle()  # flushed: an SM <r/> can be answered without waiting
