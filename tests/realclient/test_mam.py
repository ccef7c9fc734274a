"""MAM (XEP-0313) over the wire with slixmpp's xep_0313 plugin: live stanza-ids, retrieval, RSM
paging both ways, the form, metadata; archived messages survive kill -9."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp import JID

from tests.daemon import Daemon
from tests.realclient.conftest import PASSWORD, connect, disconnect

pytestmark = pytest.mark.realclient

NS_SID = "{urn:xmpp:sid:0}stanza-id"
PLUGINS = ("xep_0030", "xep_0059", "xep_0297", "xep_0313")


async def _bodies(c, n: int, timeout: float = 10.0) -> list:  # type: ignore[no-untyped-def]
    out = []
    while len(out) < n:
        m = await asyncio.wait_for(c.messages.get(), timeout)
        if m["body"]:
            out.append(m)
    return out


async def _retrieve_all(c, **kw):  # type: ignore[no-untyped-def]
    return [m async for m in c.plugin["xep_0313"].iterate(jid=JID(c.boundjid.bare), **kw)]


async def test_archive_retrieval_and_paging(daemon):
    a = await connect(daemon, "alice@localhost/mam", plugins=PLUGINS)
    b = await connect(daemon, "bob@localhost/mam", plugins=PLUGINS)
    n = 25
    for i in range(n):
        a.send_message(mto="bob@localhost", mbody=f"mam {i}", mtype="chat")
    got = await _bodies(b, n)
    assert [m["body"] for m in got] == [f"mam {i}" for i in range(n)]
    live_ids = []
    for m in got:
        sid = m.xml.find(NS_SID)
        assert sid is not None and sid.get("by") == "bob@localhost"
        live_ids.append(sid.get("id"))
    assert len(set(live_ids)) == n

    # Disco on the account advertises MAM.
    info = await b.plugin["xep_0030"].get_info(jid="bob@localhost")
    feats = info["disco_info"]["features"]
    assert "urn:xmpp:mam:2" in feats and "urn:xmpp:mam:2#extended" in feats
    assert "urn:xmpp:sid:0" in feats

    # One plain query (with RSM max), filtered on the contact.
    res = await b.plugin["xep_0313"].retrieve(jid=JID("bob@localhost"),
                                              with_jid=JID("alice@localhost"), rsm={"max": 50})
    msgs = res["mam"]["results"]
    assert [m["mam_result"]["forwarded"]["stanza"]["body"] for m in msgs] == \
        [f"mam {i}" for i in range(n)]
    assert [m["mam_result"]["id"] for m in msgs] == live_ids  # archive id == live stanza-id
    assert res["mam_fin"]["complete"] in (True, "true")
    assert res["mam_fin"]["rsm"]["count"] == str(n) or int(res["mam_fin"]["rsm"]["count"]) == n

    # RSM paging forwards, pages of 10, in both archives.
    for c in (a, b):
        fwd = await _retrieve_all(c, rsm={"max": 10})
        assert [m["mam_result"]["forwarded"]["stanza"]["body"] for m in fwd] == \
            [f"mam {i}" for i in range(n)]
    # ... and backwards from the end.
    rev = await _retrieve_all(b, rsm={"max": 10}, reverse=True)
    assert [m["mam_result"]["forwarded"]["stanza"]["body"] for m in rev] == \
        [f"mam {i}" for i in reversed(range(n))]

    # The form and the metadata.
    form = await b.plugin["xep_0313"].get_fields(jid=JID("bob@localhost"))
    fields = {f["var"] for f in form["fields"]}
    assert {"with", "start", "end", "before-id", "after-id", "ids"} <= fields
    md = await b.plugin["xep_0313"].get_archive_metadata(jid=JID("bob@localhost"))
    assert md["mam_metadata"]["start"]["id"] == live_ids[0]
    assert md["mam_metadata"]["end"]["id"] == live_ids[-1]

    # Someone else's archive: forbidden.
    with pytest.raises(Exception) as ei:
        await a.plugin["xep_0313"].retrieve(jid=JID("bob@localhost"), rsm={"max": 5}, timeout=5)
    assert "forbidden" in str(getattr(ei.value, "iq", ei.value))
    await disconnect(a, b)


async def test_archive_survives_kill9():
    d = Daemon()  # mam is a default module
    try:
        for u in ("alice@localhost", "bob@localhost"):
            d.add_user(u, PASSWORD)
        d.start()
        a = await connect(d, "alice@localhost/k", plugins=PLUGINS)
        b = await connect(d, "bob@localhost/k", plugins=PLUGINS)
        for i in range(5):
            a.send_message(mto="bob@localhost", mbody=f"durable {i}", mtype="chat")
        await _bodies(b, 5)
        # A query that sees them proves they were committed (queries see committed appends).
        res = await b.plugin["xep_0313"].retrieve(jid=JID("bob@localhost"), rsm={"max": 50})
        assert len(res["mam"]["results"]) == 5
        d.kill9()
        await disconnect(a, b)
        d.start()
        b = await connect(d, "bob@localhost/k2", plugins=PLUGINS)
        res = await b.plugin["xep_0313"].retrieve(jid=JID("bob@localhost"), rsm={"max": 50})
        assert [m["mam_result"]["forwarded"]["stanza"]["body"] for m in res["mam"]["results"]] \
            == [f"durable {i}" for i in range(5)]
        a = await connect(d, "alice@localhost/k2", plugins=PLUGINS)
        got = await _retrieve_all(a, rsm={"max": 2})
        assert len(got) == 5
        await disconnect(a, b)
    finally:
        d.cleanup()
