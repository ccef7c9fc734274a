"""OpenMetrics and health over real HTTPS: scraped and parsed with prometheus-client's parser,
refused to addresses not allowed unless they carry the token."""

from __future__ import annotations


import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import Daemon
from tests.rawclient import RawClient, client_ssl

TOKEN = "s3cret-token"



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
