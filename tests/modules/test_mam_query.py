"""MAM queries (XEP-0313 §4-6): paging with RSM (XEP-0059), every filter, flipped pages, the
complete flag, the form, and the errors for bad queries."""

from __future__ import annotations

import datetime

import pytest

from mbxmpp.config import MAMConfig
from mbxmpp.errors import StanzaError
from mbxmpp.modules.mam.query import MAX_MAX, parse_datetime
from mbxmpp.xml.ns import NS_DATA, NS_MAM
from tests.harness import ServerHarness
from tests.modules.test_mam_support import A, B, C, fill, form, forwarded, query, rsm

MODULES = ["disco", "roster", "mam"]
N = 1000


@pytest.fixture(params=["memory", "lmdb"])
def storage(request):  # type: ignore[no-untyped-def]
    return request.param


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize("page", [50, 7, 250, 1000])
async def test_page_forwards_through_1000(storage, page):
    async with ServerHarness(modules=MODULES, storage=storage) as h:
        a = await h.login(A, "r1")
        ids = await fill(h, A, N)
        seen: list[str] = []
        after = None
        pages = 0
        while True:
            r = await query(h, a, rsm(max=page, after=after))
            assert r.iq.get("type") == "result"
            pages += 1
            assert len(r.ids) == min(page, MAX_MAX, N - len(seen))
            assert r.first == r.ids[0] and r.last == r.ids[-1]
            assert r.count == N
            if after is None:
                assert r.first_index == "0"
            elif r.complete:
                assert r.first_index == str(N - len(r.ids))
            else:
                assert r.first_index is None
            assert r.bodies == [str(i) for i in range(len(seen), len(seen) + len(r.ids))]
            seen += r.ids
            if r.complete:
                break
            after = r.last
            assert pages < 2 * N
        assert seen == ids  # no gaps, no duplicates, chronological
        # Past the end: empty and complete.
        r = await query(h, a, rsm(max=page, after=ids[-1]))
        assert r.ids == [] and r.complete and r.first is None and r.count == N


@pytest.mark.parametrize("page", [50, 13, 250])
async def test_page_backwards_through_1000(storage, page):
    async with ServerHarness(modules=MODULES, storage=storage) as h:
        a = await h.login(A, "r1")
        ids = await fill(h, A, N)
        got: list[str] = []
        before = ""  # the last page first
        while True:
            r = await query(h, a, rsm(max=page, before=before))
            assert len(r.ids) == min(page, N - len(got))
            assert r.ids == sorted(r.ids)  # within a page: still chronological
            # The index is given where cheap (and never where slixmpp would stop early).
            assert r.first_index == ("0" if r.complete else None)
            got = r.ids + got
            if r.complete:
                break
            before = r.first
        assert got == ids


async def test_flip_page():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        ids = await fill(h, A, 30)
        r = await query(h, a, rsm(max=10, before=""), flip=True)
        assert r.ids == list(reversed(ids[-10:]))      # newest first
        assert r.first == ids[-10] and r.last == ids[-1]  # the page itself is unchanged
        assert not r.complete
        r = await query(h, a, rsm(max=10, after=ids[4]), flip=True)
        assert r.ids == list(reversed(ids[5:15]))


async def test_complete_flags():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        r = await query(h, a)  # empty archive
        assert r.ids == [] and r.complete and r.count == 0
        ids = await fill(h, A, 20)
        assert (await query(h, a, rsm(max=20))).complete
        assert not (await query(h, a, rsm(max=19))).complete
        assert (await query(h, a, rsm(max=10, after=ids[9]))).complete
        assert not (await query(h, a, rsm(max=10, after=ids[8]))).complete
        assert (await query(h, a, rsm(max=10, before=ids[10]))).complete
        assert not (await query(h, a, rsm(max=10, before=ids[11]))).complete
        # No RSM at all: the server's page (50) holds everything here.
        r = await query(h, a)
        assert len(r.ids) == 20 and r.complete
        # max=0: the count only (XEP-0059 §2.6).
        r = await query(h, a, rsm(max=0))
        assert r.ids == [] and r.count == 20 and not r.complete


async def test_default_and_clamped_page_size():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        await fill(h, A, 300)
        r = await query(h, a)
        assert len(r.ids) == 50 and not r.complete
        r = await query(h, a, rsm(max=10**9))
        assert len(r.ids) == MAX_MAX and not r.complete


async def test_filter_with():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        await fill(h, A, 5, with_=B + "/r1")
        await fill(h, A, 3, with_=B + "/r2")
        await fill(h, A, 4, with_=C + "/x")
        assert len((await query(h, a, form(**{"with": B}))).ids) == 8
        assert len((await query(h, a, form(**{"with": B + "/r2"}))).ids) == 3
        assert len((await query(h, a, form(**{"with": C}))).ids) == 4
        assert len((await query(h, a, form(**{"with": "Carol@LOCALHOST"}))).ids) == 4  # prepped
        r = await query(h, a, form(**{"with": "dave@localhost"}))
        assert r.ids == [] and r.complete and r.count == 0
        r = await query(h, a, form(**{"with": B}) + rsm(max=5))
        assert len(r.ids) == 5 and r.count == 8 and not r.complete
        assert all(forwarded(m).get("from").startswith(B) for m in r.messages)


async def test_filter_start_end():
    # Items of 2023: a retention of 100 years keeps them visible.
    async with ServerHarness(modules=MODULES, mam=MAMConfig(retention=100 * 365 * 86400.0)) as h:
        a = await h.login(A, "r1")
        t0 = 1_700_000_000.0
        await h.server.module("mam").sweeper.stop()  # type: ignore[union-attr]
        ids = await fill(h, A, 10, start=t0)  # one per second
        r = await query(h, a, form(start=iso(t0 + 3)))
        assert r.ids == ids[3:]
        r = await query(h, a, form(end=iso(t0 + 3)))
        assert r.ids == ids[:4]  # both bounds are inclusive
        r = await query(h, a, form(start=iso(t0 + 2), end=iso(t0 + 5)))
        assert r.ids == ids[2:6]
        r = await query(h, a, form(start="2023-11-14T22:13:22Z", end="2023-11-14T23:13:24+01:00"))
        assert r.ids == ids[2:5]  # offsets understood
        r = await query(h, a, form(start=iso(t0 + 5), end=iso(t0 + 2)))
        assert r.ids == [] and r.complete
        # A result's own stamp used as 'end' includes that result.
        r2 = await query(h, a, form(start=iso(t0 + 7)) + rsm(max=1))
        stamp = forwarded_stamp(r2.messages[0])
        assert (await query(h, a, form(end=stamp))).ids == ids[:8]


def forwarded_stamp(m):  # type: ignore[no-untyped-def]
    from mbxmpp.xml.ns import NS_DELAY, NS_FORWARD
    return m.find("result", NS_MAM).find("forwarded", NS_FORWARD).find("delay", NS_DELAY).get(
        "stamp")


async def test_filter_ids_and_id_ranges():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        ids = await fill(h, A, 20)
        r = await query(h, a, form(after_id=ids[4]))
        assert r.ids == ids[5:]
        r = await query(h, a, form(before_id=ids[4]))
        assert r.ids == ids[:4]
        r = await query(h, a, form(after_id=ids[4], before_id=ids[9]))
        assert r.ids == ids[5:9] and r.count == 4
        r = await query(h, a, form(ids=[ids[7], ids[2], ids[15]]))
        assert r.ids == [ids[2], ids[7], ids[15]]  # archive order
        r = await query(h, a, form(ids=[ids[3]]))
        assert r.ids == [ids[3]] and r.complete
        # Form bounds and RSM cursors together.
        r = await query(h, a, form(after_id=ids[4]) + rsm(max=3, after=ids[10]))
        assert r.ids == ids[11:14] and r.count == 15
        r = await query(h, a, form(before_id=ids[12]) + rsm(max=3, before=""))
        assert r.ids == ids[9:12]
        # 'before-id' does not mean paging backwards (XEP-0313 §8).
        r = await query(h, a, form(before_id=ids[12]) + rsm(max=3))
        assert r.ids == ids[0:3]


async def test_form_discovery():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        r = await query(h, a, type="get", queryid=None)
        x = r.iq.find("query", NS_MAM).find("x", NS_DATA)
        assert x.get("type") == "form"
        fields = {f.get("var"): f.get("type") for f in x.findall("field")}
        assert fields == {"FORM_TYPE": "hidden", "with": "jid-single", "start": "text-single",
                          "end": "text-single", "before-id": "text-single",
                          "after-id": "text-single", "ids": "list-multi"}
        ids = [f for f in x.findall("field") if f.get("var") == "ids"][0]
        v = ids.find("validate", "http://jabber.org/protocol/xdata-validate")
        assert v is not None and v.find("open") is not None
        assert all(f.find("required") is None for f in x.findall("field"))


async def test_queryid_echoed_and_result_shape():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        ids = await fill(h, A, 2)
        r = await query(h, a, queryid="abc")
        for m, id_ in zip(r.messages, ids):
            res = m.find("result", NS_MAM)
            assert res.get("queryid") == "abc" and res.get("id") == id_
            assert m.get("from") == A and m.get("to") == A + "/r1"
        r = await query(h, a, queryid=None)
        assert all(m.find("result", NS_MAM).get("queryid") is None for m in r.messages)


@pytest.mark.parametrize("payload,condition", [
    (form(start="yesterday"), "bad-request"),
    (form(end="2020-13-01T00:00:00Z"), "bad-request"),
    (form(start="2020-01-01"), "bad-request"),
    (form(start="2020-01-01T00:00:00"), "bad-request"),  # no time zone
    (form(**{"with": "@bad"}), "bad-request"),
    (form(**{"with": [B, C]}), "bad-request"),
    (form(FORM_TYPE="urn:xmpp:mam:1"), "bad-request"),
    (f"<x xmlns='{NS_DATA}' type='submit'><field var='with'><value>{B}</value></field></x>",
     "bad-request"),  # no FORM_TYPE
    (f"<x xmlns='{NS_DATA}' type='form'><field var='FORM_TYPE'><value>{NS_MAM}</value></field>"
     f"</x>", "bad-request"),
    (f"<x xmlns='{NS_DATA}' type='submit'><field><value>x</value></field></x>", "bad-request"),
    (form(**{"{urn:example}full-text": "x"}), "feature-not-implemented"),
    (form(**{"include-groupchat": "true"}), "feature-not-implemented"),
    (rsm(max=-1), "bad-request"),
    (rsm(max="ten"), "bad-request"),
    (rsm(max="1.5"), "bad-request"),
    ("<set xmlns='http://jabber.org/protocol/rsm'><index>3</index></set>",
     "feature-not-implemented"),
    (rsm(after="00000000000000000000000000000000"), "item-not-found"),
    (rsm(before="nope"), "item-not-found"),
    (form(after_id="00000000000000000000000000000000"), "item-not-found"),
    (form(before_id="nope"), "item-not-found"),
    (form(ids=["nope"]), "item-not-found"),
])
async def test_bad_queries(payload, condition):
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        await fill(h, A, 3)
        r = await query(h, a, payload)
        assert r.iq.get("type") == "error" and r.error == condition, r.iq
        assert r.messages == []


async def test_known_id_mixed_with_unknown_is_item_not_found():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        ids = await fill(h, A, 3)
        r = await query(h, a, form(ids=[ids[0], "ffffffffffffffffffffffffffffffff"]))
        assert r.error == "item-not-found" and r.messages == []
        # An id of someone else's archive is unknown in this one.
        bob_ids = await fill(h, B, 1)
        r = await query(h, a, rsm(after=bob_ids[0]))
        assert r.error == "item-not-found"


async def test_other_users_archive_is_forbidden():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1")
        await h.create_user(B)
        await fill(h, B, 3)
        r = await query(h, a, to=B)
        assert r.error == "forbidden" and r.messages == []
        r = await query(h, a, to=B, type="get")
        assert r.error == "forbidden"
        r = await query(h, a, to="nobody@localhost")
        assert r.error == "service-unavailable"
        # Addressed explicitly to one's own bare JID is fine.
        r = await query(h, a, to=A)
        assert r.iq.get("type") == "result" and r.iq.get("from") == A


def test_parse_datetime():
    assert parse_datetime("1970-01-01T00:00:00Z") == 0.0
    assert parse_datetime("2010-06-07T00:00:00.5Z") == 1275868800.5
    assert parse_datetime("2010-06-07T02:00:00+02:00") == 1275868800.0
    assert parse_datetime("2010-06-07T00:00:00.1234567Z") == 1275868800.123456
    for bad in ("2010-06-07T00:00Z", "2010-02-30T00:00:00Z", "2010-06-07T25:00:00Z",
                "2010-06-07T00:00:00+25:00", "２０１０-06-07T00:00:00Z", ""):
        with pytest.raises(StanzaError) as ei:
            parse_datetime(bad)
        assert ei.value.condition == "bad-request"
