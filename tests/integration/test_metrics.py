"""OpenMetrics and health over real HTTPS: scraped and parsed with prometheus-client's parser,
refused to addresses not allowed unless they carry the token; the counters and queue depths
follow real stanzas, logins and uploads sent over the wire, by the exact amounts."""

from __future__ import annotations
import asyncio
import base64

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import Daemon
from tests.integration.test_upload import get as http_get
from tests.integration.test_upload import put as http_put
from tests.integration.test_upload import request_slot, urls
from tests.rawclient import RawClient, client_ssl

TOKEN = "s3cret-token"
NS_SM = "urn:xmpp:sm:3"


@pytest.fixture(scope="module")
def daemon():
    d = Daemon()
    d.add_user("alice@localhost", "pw")
    d.start()
    yield d
    d.finish()


@pytest.fixture(scope="module")
def closed_daemon():
    # Loopback is not in the allow-list: only the token opens /metrics.
    d = Daemon(extra=f'[metrics]\nallow = ["10.0.0.0/8"]\ntoken = "{TOKEN}"\n')
    d.start()
    yield d
    d.finish()


async def _get(port: int, path: str, headers: dict | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"https://127.0.0.1:{port}{path}", ssl=client_ssl(), headers=headers or {}) as r:
            return r.status, await r.text()


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_parse_and_follow_the_server(daemon):
    client = await RawClient.connect(daemon.c2s)
    await client.login("alice", "pw")
    try:
        status, text = await _get(daemon.http, "/metrics")
        assert status == 200
        m = _samples(text)
        assert m[("mbxmpp_sessions", (("state", "connected"),))] == 1
        assert m[("mbxmpp_connections", (("transport", "tcp"),))] >= 1
        assert m[("mbxmpp_sessions_bound_total", ())] >= 1
        assert m[("mbxmpp_logins_total", ())] >= 1
        assert m[("mbxmpp_process_resident_memory_bytes", ())] > 0
        assert ("mbxmpp_storage_commit_seconds_count", ()) in m
        assert m[("mbxmpp_virtual_hosts", ())] == 1
        assert m[("mbxmpp_s2s_peers", ())] == 0  # federation on, no peer yet
    finally:
        await client.close()


async def test_health(daemon):
    status, text = await _get(daemon.http, "/health")
    assert status == 200 and '"ok"' in text


async def test_metrics_refused_to_others_without_the_token(closed_daemon):
    status, text = await _get(closed_daemon.http, "/metrics")
    assert status == 403 and "mbxmpp_" not in text
    status, _ = await _get(closed_daemon.http, "/metrics", {"Authorization": "Bearer wrong"})
    assert status == 403
    status, text = await _get(closed_daemon.http, "/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and "mbxmpp_uptime_seconds" in text
    status, _ = await _get(closed_daemon.http, "/health")
    assert status == 200


@pytest.fixture(scope="module")
def busy():
    d = Daemon()
    for user in ("alice", "bob"):
        d.add_user(f"{user}@localhost", "pw")
    d.start()
    yield d
    d.finish()


async def _scrape(d: Daemon) -> dict[tuple[str, tuple], float]:
    status, text = await _get(d.http, "/metrics")
    assert status == 200, text
    return _samples(text)


def _moved(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


async def _until(c: RawClient, tag: str) -> object:
    while True:
        el = await c.element()
        if el.tag == tag:
            return el


async def test_routed_stanzas_queues_archive_and_upload_bytes(busy):
    alice = await RawClient.connect(busy.c2s)
    await alice.login("alice", "pw", resource="a")
    bob = await RawClient.connect(busy.c2s)
    await bob.login("bob", "pw", resource="b")
    await bob.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    assert (await bob.element()).tag == "enabled"
    try:
        m0 = await _scrape(busy)
        bodies = ["first", "second message", "third"]
        for b in bodies:
            await alice.send(f"<message to='bob@localhost/b' type='chat'><body>{b}</body></message>")
        await alice.send("<presence to='bob@localhost/b'/>")
        await alice.send("<message to='juliet@capulet.invalid' type='chat'><body>far</body></message>")
        got = [await _until(bob, "message") for _ in bodies]
        assert [m.findtext("body") for m in got] == bodies  # type: ignore[attr-defined]
        await _until(bob, "presence")
        m1 = await _scrape(busy)
        # 3 + the one to capulet.invalid (+ its bounce, once the DNS lookup has failed)
        assert _moved(m0, m1, "mbxmpp_stanzas_routed_total", kind="message") in (4, 5)
        assert _moved(m0, m1, "mbxmpp_stanzas_routed_total", kind="presence") == 1
        assert _moved(m0, m1, "mbxmpp_stanzas_routed_out_total", to="s2s") == 1
        # Bob has not acknowledged anything: 3 messages and 1 presence wait in his SM queue.
        assert m1[("mbxmpp_sm_unacked_stanzas", ())] == 4
        # Both archives (alice's sent copy, bob's received one) took each stanza with its body.
        archived = _moved(m0, m1, "mbxmpp_mam_archived_bytes_total")
        assert archived >= 2 * sum(len(f"<body>{b}</body>") for b in bodies), archived
        await bob.send(f"<a xmlns='{NS_SM}' h='4'/>")
        await bob.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        await _until(bob, "iq")
        m2 = await _scrape(busy)
        assert m2[("mbxmpp_sm_unacked_stanzas", ())] == 1  # the ping's result only
        assert _moved(m1, m2, "mbxmpp_stanzas_routed_total", kind="iq") == 2  # the ping, its result
        assert _moved(m1, m2, "mbxmpp_mam_archived_bytes_total") == 0
        assert m2[("mbxmpp_storage_pending_writes", ())] >= 0
        assert m2[("mbxmpp_s2s_queued_stanzas", ())] in (0, 1)  # 1 until the DNS lookup fails

        body = bytes(range(256)) * 40
        put_url, get_url = urls(await request_slot(alice, "data.bin", len(body)))
        m3 = await _scrape(busy)
        assert _moved(m2, m3, "mbxmpp_stanzas_routed_out_total", to="component") == 1
        assert (await http_put(put_url, body))[0] == 201
        m4 = await _scrape(busy)
        assert _moved(m3, m4, "mbxmpp_upload_received_bytes_total") == len(body)
        assert _moved(m3, m4, "mbxmpp_upload_stored_bytes") == len(body)
        status, _, got_body = await http_get(get_url)
        assert status == 200 and got_body == body
        status, _, part = await http_get(get_url, Range="bytes=100-149")
        assert status == 206 and part == body[100:150]
        m5 = await _scrape(busy)
        assert _moved(m4, m5, "mbxmpp_upload_served_bytes_total") == len(body) + 50
        assert _moved(m4, m5, "mbxmpp_upload_stored_bytes") == 0
    finally:
        await alice.close()
        await bob.close()


async def test_failed_logins_counted_by_condition(busy):
    m0 = await _scrape(busy)
    c = await RawClient.connect(busy.c2s)
    try:
        await c.open()
        await c.starttls()
        await c.open()
        for password in ("wrong", "also wrong"):
            token = base64.b64encode(f"\0alice\0{password}".encode()).decode()
            await c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
            assert (await c.element()).tag == "failure"
        await c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-NONE'/>")
        assert (await c.element()).tag == "failure"
    finally:
        await c.close()
    await asyncio.sleep(0)
    m1 = await _scrape(busy)
    assert _moved(m0, m1, "mbxmpp_login_failures_total", condition="not-authorized") == 2
    assert _moved(m0, m1, "mbxmpp_login_failures_total", condition="invalid-mechanism") == 1
    assert _moved(m0, m1, "mbxmpp_logins_total") == 0
