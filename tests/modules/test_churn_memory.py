"""Leak check (issue 11, item 5): sessions that log in, chat and log out leave nothing behind.

In process, with every default module and LMDB storage (what is archived and stored offline goes
to disk, as it should). The caches bounded by count are made small so that the warm-up fills them;
after it, the Python heap must not grow with the sessions that come and go. A leak check, not a
timing assert: ``perf/soak_churn.py`` does the same over the wire with tens of thousands of
sessions.
"""

from __future__ import annotations

import asyncio
import gc
import random
import tracemalloc

import pytest

from mbxmpp import jid as jid_module
from mbxmpp.config import DEFAULT_MODULES
from mbxmpp.modules.carbons import Carbons
from mbxmpp.modules.mam import quota
from mbxmpp.modules.pep import caps as caps_module
from mbxmpp.storage import keys
from tests.harness import ServerHarness

ACCOUNTS = 50
WARMUP = 600
MEASURED = 1200
SMALL_CACHE = 128
CAPS_TIMEOUT = 0.2
# Per ended session. A session is a login, a carbons enable, presence with a caps hash, 5 chat
# messages and a logout: anything it forgets to free costs hundreds of bytes.
MAX_BYTES_PER_SESSION = 40

CAPS = ("<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://test.example' "
        "ver='{ver}'/>")


@pytest.fixture
def small_caches(monkeypatch):
    monkeypatch.setattr(keys, "_CACHE_MAX", SMALL_CACHE)
    monkeypatch.setattr(Carbons, "max_tracked", SMALL_CACHE)
    monkeypatch.setattr(quota, "MAX_SENDERS", SMALL_CACHE)  # (owner, sender) pairs of quotas
    # Unanswered caps queries are held until their timeout: short, so that the end of each
    # phase waits them out (they are bounded by time, not leaked).
    monkeypatch.setattr(caps_module, "QUERY_TIMEOUT", CAPS_TIMEOUT)
    jid_module.set_cache_size(SMALL_CACHE)
    yield
    jid_module.set_cache_size(jid_module.DEFAULT_CACHE_SIZE)


async def _session(h: ServerHarness, n: int, rnd: random.Random) -> None:
    c = await h.login(f"u{rnd.randrange(ACCOUNTS)}@localhost", f"churn{n}", create=False)
    h.send(c, f"<iq type='set' id='c{n}'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
    h.send(c, f"<presence>{CAPS.format(ver=f'v{n % 4}')}</presence>")
    for k in range(5):
        h.send(c, f"<message type='chat' to='u{rnd.randrange(ACCOUNTS)}@localhost' id='m{n}-{k}'>"
                  f"<body>message {k} of session {n}</body></message>")
    await asyncio.sleep(0)
    if n % 2:  # half of them answer the server's caps query, the others leave first
        for st in c.received:
            if st.tag == "iq" and st.get("type") == "get":
                h.send(c, f"<iq type='error' id='{st.get('id')}' to='{st.get('from')}'>"
                          "<error type='cancel'><service-unavailable "
                          "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    h.disconnect(c)


async def _churn(h: ServerHarness, first: int, count: int, rnd: random.Random) -> None:
    for n in range(first, first + count):
        await _session(h, n, rnd)
    # What the sessions started (stores, presence, unanswered caps queries) settles.
    await asyncio.sleep(2 * CAPS_TIMEOUT)
    # Queued writes are bounded by time, not leaked: on a loaded machine the writer thread can
    # be seconds behind, and its queue would count as retained here.
    await h.server.storage.flush()


async def test_ended_sessions_leave_nothing_on_the_heap(small_caches):
    async with ServerHarness(modules=list(DEFAULT_MODULES), storage="lmdb") as h:
        for i in range(ACCOUNTS):
            await h.create_user(f"u{i}@localhost")
        rnd = random.Random(7)
        # Traced from the start: a cache entry allocated before tracing and evicted during it
        # would not count as freed, and a bounded cache would look like a leak.
        tracemalloc.start(4)
        try:
            await _churn(h, 0, WARMUP, rnd)
            gc.collect()
            before = tracemalloc.take_snapshot()
            await _churn(h, WARMUP, MEASURED, rnd)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        assert not h.server.sessions.full  # every session ended
    not_tracemalloc = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = after.filter_traces(not_tracemalloc).compare_to(before.filter_traces(not_tracemalloc),
                                                           "traceback")
    grown = sum(d.size_diff for d in diff)
    top = "\n".join(f"{d.size_diff} B in {d.count_diff} blocks:\n  " + "\n  ".join(d.traceback.format())
                    for d in diff[:5])
    print(f"retained {grown / MEASURED:.1f} B per ended session")
    assert grown / MEASURED < MAX_BYTES_PER_SESSION, f"{grown / MEASURED:.0f} B per session\n{top}"
