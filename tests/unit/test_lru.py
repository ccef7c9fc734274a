import pytest

from mbxmpp.util.lru import LRU


def test_get_put_and_default():
    c: LRU[str, int] = LRU(3)
    assert c.get("a") is None
    assert c.get("a", 7) == 7
    c.put("a", 1)
    assert c.get("a") == 1
    assert "a" in c and "b" not in c
    assert len(c) == 1


def test_evicts_least_recently_used():
    c: LRU[str, int] = LRU(3)
    for i, k in enumerate("abc"):
        c.put(k, i)
    assert c.get("a") == 0  # refresh "a": "b" is now the oldest
    c.put("d", 3)
    assert "b" not in c
    assert [k for k in "acd" if k in c] == ["a", "c", "d"]
    assert len(c) == 3


def test_put_existing_refreshes_without_eviction():
    c: LRU[str, int] = LRU(2)
    c.put("a", 1)
    c.put("b", 2)
    c.put("a", 10)  # update + refresh, nothing evicted
    assert len(c) == 2 and c.get("a") == 10
    c.put("c", 3)  # evicts "b", the least recently used
    assert "b" not in c and "a" in c and "c" in c


def test_contains_does_not_refresh():
    c: LRU[str, int] = LRU(2)
    c.put("a", 1)
    c.put("b", 2)
    assert "a" in c
    c.put("c", 3)
    assert "a" not in c


def test_falsy_values_are_hits():
    c: LRU[str, object] = LRU(2)
    c.put("zero", 0)
    assert c.get("zero", "missing") == 0
    assert c.hits == 1 and c.misses == 0
    c.get("nope")
    assert c.misses == 1


def test_pop_clear_repr():
    c: LRU[str, int] = LRU(2)
    c.put("a", 1)
    assert c.pop("a") == 1 and c.pop("a") is None
    c.put("b", 2)
    c.clear()
    assert len(c) == 0
    assert "0/2" in repr(c)


def test_bounded_under_many_inserts():
    c: LRU[int, int] = LRU(100)
    for i in range(10_000):
        c.put(i, i)
    assert len(c) == 100
    assert all(i in c for i in range(9_900, 10_000))


@pytest.mark.parametrize("size", [0, -1])
def test_invalid_size(size):
    with pytest.raises(ValueError):
        LRU(size)
