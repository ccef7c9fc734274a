"""OpenMetrics at /metrics and a health check at /health on the HTTP side.

Figures are read from the server's own state when scraped: plain integers that the router, the
archive and the upload service already keep (one addition where the work happens: no
prometheus-client call per stanza), queue lengths summed at scrape time; the storage commit
latency is observed once per group commit. /metrics answers only the
configured addresses (loopback by default) or a bearer token; /health says only whether the
server is up and its storage writes.

The families (counters end in ``_total`` on the wire): connections by transport, sessions
(connected / hibernated), logins, login failures by SASL condition, resources bound, stanzas
routed by kind and those handed to components or the federation, queue depths (storage writes
waiting for a commit, Stream Management unacked stanzas, stanzas waiting for an s2s stream),
storage commits and commit latency, MAM archived bytes, upload bytes (stored, received, served),
s2s streams and peers, virtual and component hosts, uptime, and the process (CPU, memory, fds).
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from typing import TYPE_CHECKING, Any, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector

from ..core import events as ev
from .metrics_options import MetricsConfig
from ..core.modules import Module, hook

if TYPE_CHECKING:
    from ..core.api import ModuleServer

COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics(Module[MetricsConfig]):
    name = "metrics"
    description = "OpenMetrics (/metrics) and health (/health) on the HTTP side"

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        cfg = self.options
        self.allow = [ipaddress.ip_network(n, strict=False) for n in cfg.allow]
        self.token = cfg.token
        self.started = time.time()
        self.logins = 0
        self.login_failures: dict[str, int] = {}  # by SASL <failure/> condition
        self.bound = 0
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(namespace="mbxmpp", registry=self.registry)
        self.registry.register(_ServerCollector(self))
        self.commit_seconds = Histogram("mbxmpp_storage_commit_seconds",
                                        "Duration of one storage group commit (write transaction)",
                                        buckets=COMMIT_BUCKETS, registry=self.registry)

    async def start(self) -> None:
        self.server.http.add_route("GET", "/metrics", self.metrics)
        self.server.http.add_route("GET", "/health", self.health)
        storage: Any = self.server.storage
        if hasattr(storage, "on_commit"):
            storage.on_commit = self.commit_seconds.observe

    async def stop(self) -> None:
        storage: Any = self.server.storage
        if getattr(storage, "on_commit", None) == self.commit_seconds.observe:
            storage.on_commit = None

    @hook(ev.AUTHENTICATED, priority=100)
    def _authenticated(self, _stream: Any) -> None:
        self.logins += 1

    @hook(ev.LOGIN_FAILED, priority=100)
    def _login_failed(self, condition: str) -> None:
        self.login_failures[condition] = self.login_failures.get(condition, 0) + 1

    @hook(ev.SESSION_BOUND, priority=100)
    def _bound(self, _session: Any) -> None:
        self.bound += 1

    # -- handlers -----------------------------------------------------------------------------
    async def metrics(self, request: web.Request) -> web.StreamResponse:
        if not self._allowed(request):
            raise web.HTTPForbidden(text="metrics are not open to this address\n")
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST,
                                                "Cache-Control": "no-store"})

    async def health(self, request: web.Request) -> web.StreamResponse:
        ok = self.server.started and not getattr(self.server.storage, "_closed", False)
        return web.json_response({"status": "ok" if ok else "unavailable"}, status=200 if ok else 503,
                                 headers={"Cache-Control": "no-store"})

    def _allowed(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        if self.token and auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(),
                                                                              self.token.encode()):
            return True
        try:
            addr = ipaddress.ip_address((request.remote or "").split("%", 1)[0])
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.allow)


class _ServerCollector:
    """The server's state as metrics, read at scrape time."""

    def __init__(self, mod: Metrics) -> None:
        self.mod = mod

    def collect(self) -> Iterator[Metric]:
        server = self.mod.server.operator  # (the operator's view: connections, components)
        conns = GaugeMetricFamily("mbxmpp_connections", "Open client connections by transport",
                                  labels=["transport"])
        by_transport: dict[str, int] = {}
        for c in server.connections:
            t = getattr(c, "transport_name", "tcp")
            by_transport[t] = by_transport.get(t, 0) + 1
        for t in ("tcp", "websocket", "bosh"):
            conns.add_metric([t], by_transport.pop(t, 0))
        for t, n in by_transport.items():
            conns.add_metric([t], n)
        yield conns
        sessions = list(server.sessions.full.values())
        detached = sum(1 for s in sessions if s.stream is None)
        g = GaugeMetricFamily("mbxmpp_sessions", "Bound client sessions", labels=["state"])
        g.add_metric(["connected"], len(sessions) - detached)
        g.add_metric(["hibernated"], detached)
        yield g
        yield GaugeMetricFamily("mbxmpp_component_hosts", "Component domains served",
                                value=len(server.components))
        yield GaugeMetricFamily("mbxmpp_virtual_hosts", "Virtual hosts served", value=len(server.hosts))
        yield CounterMetricFamily("mbxmpp_logins", "Successful authentications", value=self.mod.logins)
        yield CounterMetricFamily("mbxmpp_sessions_bound", "Resources bound", value=self.mod.bound)
        storage: Any = self.mod.server.storage
        yield CounterMetricFamily("mbxmpp_storage_commits", "Storage write transactions committed",
                                  value=getattr(storage, "commits", 0))
        yield GaugeMetricFamily("mbxmpp_uptime_seconds", "Seconds since the server started",
                                value=time.time() - self.mod.started)
        s2s = GaugeMetricFamily("mbxmpp_s2s_streams", "Server-to-server streams by direction and "
                                "how the peer was authenticated", labels=["direction", "auth"])
        peers: set[str] = set()
        counts: dict[tuple[str, str], int] = {}
        for row in server.s2s.describe() if server.s2s is not None else ():
            key = (row["direction"], row["auth"])
            counts[key] = counts.get(key, 0) + 1
            peers.add(row["remote"])
        for (direction, auth), n in sorted(counts.items()):
            s2s.add_metric([direction, auth], n)
        yield s2s
        yield GaugeMetricFamily("mbxmpp_s2s_peers", "Remote domains with a server-to-server stream",
                                value=len(peers))
        failed = CounterMetricFamily("mbxmpp_login_failures", "Failed SASL exchanges by condition",
                                     labels=["condition"])
        for condition, n in sorted(self.mod.login_failures.items()):
            failed.add_metric([condition], n)
        yield failed
        yield from _routing(server)
        yield from _queues(server)
        yield from _archive_and_upload(server)


# The helpers below take the running Server (router, sessions, storage, s2s, module()).

def _routing(server: Any) -> Iterator[Metric]:
    router = server.router
    by_kind = CounterMetricFamily("mbxmpp_stanzas_routed", "Stanzas routed, by kind",
                                  labels=["kind"])
    by_kind.add_metric(["message"], router.routed_messages)
    by_kind.add_metric(["presence"], router.routed_presences)
    by_kind.add_metric(["iq"], router.routed_iqs)
    yield by_kind
    out = CounterMetricFamily("mbxmpp_stanzas_routed_out", "Stanzas routed to a component or to "
                              "the federation", labels=["to"])
    out.add_metric(["component"], router.routed_to_components)
    out.add_metric(["s2s"], router.routed_to_s2s)
    yield out


def _queues(server: Any) -> Iterator[Metric]:
    pending = getattr(server.storage, "pending_writes", None)  # (LMDB: a group-commit writer)
    if pending is not None:
        yield GaugeMetricFamily("mbxmpp_storage_pending_writes", "Writes waiting for the storage "
                                "writer's next commit", value=pending())
    unacked = 0
    for session in server.sessions.full.values():
        sm = getattr(session.stream, "sm", None)  # (a live stream, or Hibernated)
        if sm is not None:
            unacked += len(sm.queue)
    yield GaugeMetricFamily("mbxmpp_sm_unacked_stanzas", "Stanzas sent to Stream Management "
                            "sessions and not acknowledged yet (hibernated sessions included)",
                            value=unacked)
    s2s = server.s2s
    yield GaugeMetricFamily("mbxmpp_s2s_queued_stanzas", "Stanzas waiting for an outgoing "
                            "server-to-server stream to be ready",
                            value=sum(len(e.queue) for e in s2s.out.values()) if s2s is not None else 0)


def _archive_and_upload(server: Any) -> Iterator[Metric]:
    mam: Any = server.module("mam")
    if mam is not None:
        yield CounterMetricFamily("mbxmpp_mam_archived_bytes", "Bytes of stanzas appended to "
                                  "message archives (MAM, rooms included)", value=mam.archived_bytes)
    upload: Any = server.module("upload")
    if upload is not None:
        yield GaugeMetricFamily("mbxmpp_upload_stored_bytes", "Bytes of uploaded files kept",
                                value=sum(s.size for s in upload.store.slots.values() if s.done))
        yield CounterMetricFamily("mbxmpp_upload_received_bytes", "Bytes of files uploaded",
                                  value=upload.http.received_bytes)
        yield CounterMetricFamily("mbxmpp_upload_served_bytes", "Bytes of files downloaded",
                                  value=upload.http.served_bytes)
