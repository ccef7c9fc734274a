"""The asyncio side of federation: the s2s listeners, the outgoing connector (DNS with DANE,
Happy Eyeballs or Tor, TLS with SNI, stanzas queued while it connects, bounced when it fails) and
the router's ``remote``. A pair of domains (ours, theirs) is served by our stream for it, by
another of our streams to that peer it piggybacks on (dialback), or by the peer's own stream when
the peer made it bidirectional (XEP-0288)."""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import socket
import ssl
import time
from asyncio.staggered import staggered_race
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import dns.exception

from ..errors import StanzaError, StreamError
from ..jid import JID
from ..net.tls import DEFAULT_CIPHERS
from ..xml import STREAM_END, PyXMLParser, XMLError
from ..xml.element import Element, _escape_attr
from ..xml.ns import NS_STREAMS, NS_TLS
from . import dns as s2sdns
from .certs import TrustStore, dane_authenticates, peer_chain
from .dialback import dialback_key, key_matches, load_secret
from .peercert import request_any_peer_certificate
from .socks import socks5_connect
from .stream import ST_CLOSED, ST_READY, S2SStream

if TYPE_CHECKING:
    from ..config import S2SConfig
    from ..server import Server

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 2.0
MAX_QUEUE = 1000            # stanzas waiting for one remote domain while its stream connects
MAX_UNAUTH_PER_IP = 32      # incoming streams one address may hold before authenticating
MAX_CHECKS_PER_STREAM = 8   # dialback verifications one incoming stream may have us run at once
MAX_OUTPUT = 16 * 1024 * 1024
SWEEP_EVERY = 10.0
HAPPY_EYEBALLS_DELAY = 0.25   # RFC 8305 §5: the next address is tried after this long


async def happy_connect(addrs: list[str], port: int, delay: float = HAPPY_EYEBALLS_DELAY) -> socket.socket:
    """Happy Eyeballs (RFC 8305 §5): a TCP connection to each address in turn, the next one
    started ``delay`` after the previous (at once when it fails); the first to connect wins."""
    loop = asyncio.get_running_loop()
    opened: list[socket.socket] = []

    async def one(addr: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        opened.append(sock)
        await loop.sock_connect(sock, (addr, port))
        return sock

    try:
        winner, _index, errors = await staggered_race([functools.partial(one, a) for a in addrs], delay)
    except BaseException:
        for sock in opened:
            sock.close()
        raise
    for sock in opened:
        if sock is not winner:
            sock.close()
    if winner is None:
        raise OSError("; ".join(f"{a}: {e}" for a, e in zip(addrs, errors) if e is not None)
                      or "no address")
    return winner


class Held(asyncio.Protocol):
    """A connection in the race (or that just won it) before its S2SConnection exists: what
    arrives is kept (``starttls_first`` reads it) and the rest handed over."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.data: list[bytes] = []
        self.lost: tuple[Exception | None] | None = None
        self._waiter: asyncio.Future | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.data.append(data)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        """What arrived so far, waiting for something; ConnectionError once the peer is gone."""
        while not self.data:
            if self.lost is not None:
                raise ConnectionError(f"connection closed ({self.lost[0] or 'by the peer'})")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        data = b"".join(self.data)
        self.data.clear()
        return data

    def hand_over(self, protocol: asyncio.Protocol) -> None:
        t = self.transport
        assert t is not None
        t.set_protocol(protocol)
        protocol.connection_made(t)
        for data in self.data:
            protocol.data_received(data)
        if self.lost is not None:
            protocol.connection_lost(self.lost[0])


async def starttls_first(held: Held, local: str, remote: str, tls: ssl.SSLContext, timeout: float) -> None:
    """The plaintext part of a STARTTLS stream (RFC 6120 §5.4.2): our header, the peer's
    features, <starttls/>, <proceed/>, then the TLS handshake. The stream then starts over on
    TLS (§5.4.3.3), exactly as on a direct TLS connection: that is where S2SStream takes it."""
    assert held.transport is not None
    held.transport.write(
        f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
        f"xmlns:stream='{NS_STREAMS}' xmlns:db='jabber:server:dialback' "
        f"from='{_escape_attr(local)}' to='{_escape_attr(remote)}' version='1.0'>".encode())
    parser = PyXMLParser(max_stanza_size=65536)
    events: list[Any] = []

    async def element() -> Element:
        while True:
            while not events:
                events.extend(parser.feed(await held.read()))
            ev = events.pop(0)
            if ev is STREAM_END:
                raise ConnectionError("the peer closed the stream")
            if isinstance(ev, Element):
                if ev.tag == "error" and ev.ns == NS_STREAMS:
                    child = ev.first_child()
                    raise ConnectionError(f"stream error: {child.tag if child is not None else '?'}")
                return ev

    try:
        features = await element()
        if features.tag != "features" or features.find("starttls", NS_TLS) is None:
            raise ConnectionError("the peer offers no STARTTLS (TLS is required)")
        held.transport.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        answer = await element()
    except XMLError as e:
        raise ConnectionError(f"not XML: {e}") from None
    if answer.tag != "proceed" or answer.ns != NS_TLS:
        raise ConnectionError(f"STARTTLS refused (<{answer.tag}/>)")
    loop = asyncio.get_running_loop()
    new = await loop.start_tls(held.transport, held, tls, server_hostname=remote,
                               ssl_handshake_timeout=timeout)
    held.transport = new  # type: ignore[assignment]


async def open_held(target: s2sdns.Target, sock: socket.socket, tls: ssl.SSLContext | None,
                    local: str, remote: str, timeout: float) -> Held:
    """Make the connected ``sock`` a transport held by a ``Held`` and, ``tls`` given, secure
    it: direct TLS (XEP-0368) or STARTTLS (``starttls_first``)."""
    loop = asyncio.get_running_loop()
    try:
        if target.direct_tls and tls is not None:
            _, held = await loop.create_connection(Held, sock=sock, ssl=tls, server_hostname=remote,
                                                   ssl_handshake_timeout=timeout)
        else:
            _, held = await loop.create_connection(Held, sock=sock)
    except BaseException:
        sock.close()
        raise
    if tls is not None and not target.direct_tls:
        try:
            await starttls_first(held, local, remote, tls, timeout)
        except BaseException:
            if held.transport is not None:
                held.transport.abort()
            raise
    return held


async def race_targets(targets: list[s2sdns.Target],
                       addresses: Callable[[s2sdns.Target], Awaitable[list[str]]],
                       finish: Callable[[s2sdns.Target, socket.socket], Awaitable[Any]] | None = None,
                       delay: float = HAPPY_EYEBALLS_DELAY) -> tuple[int, Any]:
    """Happy Eyeballs across the SRV targets, in their RFC 6120 §3.2 order: each target's attempt
    (its addresses looked up, ``happy_connect`` over them, then ``finish`` on the socket: the
    service's ``open_held``, TLS direct or by STARTTLS) starts ``delay`` after the previous
    target's, or at once when that one fails; the first to complete wins and the others are
    closed (a target that drops SYNs, or accepts TCP and never answers, costs ``delay``, not the
    timeout). Returns the winner's index in ``targets`` and what ``finish`` returned (without
    it: the socket); OSError when none completes. Authentication runs on the winner alone; if
    it fails, the caller races the remaining targets again."""

    async def one(target: s2sdns.Target) -> Any:
        try:
            addrs = await addresses(target)
        except dns.exception.DNSException as e:
            raise OSError(f"{target.host}: {e}") from None
        if not addrs:
            raise OSError(f"{target.host} has no address")
        sock = await happy_connect(addrs, target.port, delay)
        return sock if finish is None else await finish(target, sock)

    winner, index, errors = await staggered_race([functools.partial(one, t) for t in targets], delay)
    if winner is None or index is None:
        raise OSError("; ".join(f"{t.host}:{t.port}: {e}" for t, e in zip(targets, errors) if e is not None)
                      or "no candidates")
    return index, winner


class S2SConnection(asyncio.Protocol):
    """One TCP connection carrying one s2s stream, in either direction."""

    def __init__(self, service: S2SService, stream: S2SStream, tls_context: ssl.SSLContext,
                 direct_tls: bool) -> None:
        self.service = service
        self.stream = stream
        self.tls_context = tls_context
        self.direct_tls = direct_tls
        self.transport: asyncio.Transport | None = None
        self._wbuf: list[bytes] = []
        self._loop = asyncio.get_event_loop()
        self._closing = False
        self._lost = False
        self._close_timer: asyncio.TimerHandle | None = None
        self.last_activity = time.monotonic()
        self.connected_at = time.time()
        self.peer_ip = ""
        self.counted = False   # in the service's count of unauthenticated incoming streams
        stream.write = self._write
        stream.on_close = self._close_transport

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else ""
        if not self.stream.peer:
            self.stream.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self.stream.secure = True
            self._tls_done(sslobj, restart=False)
        self.service.connections.add(self)
        if self.stream.outgoing:
            self.stream.start()
        else:
            if not self.service.count_unauthenticated(self):
                self.stream.fail(StreamError("policy-violation", "too many unauthenticated streams"))
                return
            self._close_timer = self._loop.call_later(self.service.config.timeout * 2,
                                                      self._auth_expired)

    def _auth_expired(self) -> None:
        """An incoming stream that authenticated no domain in time (one used only for our
        <db:verify/> answers included) is closed."""
        self._close_timer = None
        stream = self.stream
        if not stream.pairs and stream.stage != ST_CLOSED and not self._closing:
            if stream.tls_requested:
                self.abort()
            else:
                log.info("s2s in %s: no domain authenticated in time, closing", stream.peer)
                stream.close()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self.last_activity = time.monotonic()
        stream = self.stream
        stream.receive_data(data)
        if stream.tls_requested and self.transport is not None and not self.transport.is_closing():
            self._flush()
            self.transport.pause_reading()
            asyncio.ensure_future(self._start_tls())

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        if self._close_timer is not None:
            self._close_timer.cancel()
        self.service.uncount(self)
        self.service.connections.discard(self)
        self.transport = None
        self._wbuf.clear()
        self.stream.connection_lost()

    # -- output and closing -------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self._closing:
            return
        if not self._wbuf:
            self._loop.call_soon(self._flush)
        self._wbuf.append(data)

    def _flush(self) -> None:
        if not self._wbuf:
            return
        data = b"".join(self._wbuf)
        self._wbuf.clear()
        t = self.transport
        if t is not None and not t.is_closing():
            self.last_activity = time.monotonic()
            t.write(data)
            if t.get_write_buffer_size() > MAX_OUTPUT and not self._closing:
                self.stream.fail(StreamError("policy-violation", "too much unread output"))

    def _close_transport(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._flush()
        self._closing = True
        t = self.transport
        if t is None or t.is_closing():
            return
        if t.can_write_eof():
            t.write_eof()
        self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, self.abort)

    def abort(self) -> None:
        t = self.transport
        if t is not None:
            t.abort()
        elif not self._lost:
            self.connection_lost(None)

    # -- TLS -----------------------------------------------------------------------------------
    async def _start_tls(self) -> None:
        t = self.transport
        if t is None:
            return
        out = self.stream.outgoing
        try:
            new = await self._loop.start_tls(
                t, self, self.tls_context, server_side=not out,
                server_hostname=self.stream.remote if out else None,
                ssl_handshake_timeout=self.service.config.timeout)
        except (TimeoutError, ssl.SSLError, OSError, ConnectionError) as e:
            log.info("s2s %s: TLS handshake failed: %s", self.stream.peer, e)
            self.stream.close_reason = f"TLS handshake failed: {e}"
            if self.transport is not None:
                self.transport.abort()
            self.connection_lost(e)
            return
        if new is None or self._lost:
            return
        self.transport = new  # type: ignore[assignment]
        sslobj = new.get_extra_info("ssl_object")
        self._tls_done(sslobj, restart=True)

    def _tls_done(self, sslobj: Any, restart: bool) -> None:
        chain = peer_chain(sslobj) if sslobj is not None else []
        results: dict[str, bool] = {}
        trust = self.service.trust
        stream = self.stream
        if stream.dane_records:
            # DANE decides for the domain it was looked up for: a mismatch is refused even
            # where PKIX (or dialback) would accept (RFC 7673 §3).
            remote = stream.remote or ""
            results[remote] = dane_authenticates(chain, stream.dane_records, trust, remote)
            stream.peer_verified = "dane" if results[remote] else "dane-mismatch"
        elif stream.outgoing:
            stream.peer_verified = "pkix" if trust.authenticates(chain, stream.remote or "") else "none"

        def authenticates(domain: str) -> bool:
            if domain not in results:
                results[domain] = trust.authenticates(chain, domain)
            return results[domain]

        version = sslobj.version() if sslobj is not None else ""
        if restart:
            self.stream.tls_started(authenticates, version or "")
        else:
            self.stream.cert_authenticates = authenticates
            self.stream.tls_version = version or ""


class Outgoing:
    """Our stream(s) to one remote domain from one of our domains."""

    def __init__(self, local: str, remote: str) -> None:
        self.local = local
        self.remote = remote
        self.queue: list[Element] = []
        self.conn: S2SConnection | None = None
        self.task: asyncio.Task | None = None
        self.attempt: asyncio.Future | None = None   # the current stream's negotiation outcome
        self.started = 0.0   # when the connector started (DNS included)
        # <db:verify/> we asked for: (originating, receiving, stream id, key)
        self.verifies: list[tuple[str, str, str, str]] = []

    @property
    def ready(self) -> bool:
        conn = self.conn
        return (conn is not None and conn.stream.stage == ST_READY
                and (self.local, self.remote) in conn.stream.pairs)


class S2SService:
    """The federation: the router's ``remote`` and what the s2s streams call into."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.trust = TrustStore(self.config.ca_file)
        self.secret = load_secret(server.data_dir)
        self.out: dict[tuple[str, str], Outgoing] = {}
        self.connections: set[S2SConnection] = set()
        # dialback checks we wait for: (originating, receiving, stream id) -> the incoming stream
        self.checks: dict[tuple[str, str, str], S2SStream] = {}
        # incoming streams the peer made bidirectional (XEP-0288): (local, remote) -> stream
        self.bidi_in: dict[tuple[str, str], S2SStream] = {}
        self.unauth_per_ip: dict[str, int] = {}
        self.listeners: list[asyncio.AbstractServer] = []
        self.direct_listeners: list[asyncio.AbstractServer] = []
        self._client_contexts: dict[tuple[str, bool], ssl.SSLContext] = {}
        self._sweeper: asyncio.Task | None = None
        self._server_contexts: dict[bool, ssl.SSLContext] = {}   # direct TLS? -> context

    @property
    def config(self) -> S2SConfig:
        return self.server.config.s2s  # (read each time: a reloaded configuration applies)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._make_server_contexts()
        cfg = self.config
        for host, port in cfg.listen:
            srv = await loop.create_server(lambda: self._incoming(False), host, port,
                                           backlog=256, reuse_address=True)
            self.listeners.append(srv)
            log.info("s2s (STARTTLS) listening on %s:%d", host, port)
        await self._direct_listeners()
        self._sweeper = asyncio.ensure_future(self._sweep())
        self.server.router.remote = self

    def _make_server_contexts(self) -> None:
        tls = self.server.tls
        assert tls is not None
        self._server_contexts = {
            False: tls.context(prepare=self._request_peer_certificate),
            True: tls.context(alpn=["xmpp-server"], prepare=self._request_peer_certificate)}

    async def _direct_listeners(self) -> None:
        loop = asyncio.get_running_loop()
        ctx = self._server_contexts[True]
        for host, port in self.config.direct_tls:
            srv = await loop.create_server(lambda: self._incoming(True), host, port,
                                           ssl=ctx, backlog=256, reuse_address=True,
                                           ssl_handshake_timeout=self.config.timeout)
            self.direct_listeners.append(srv)
            log.info("s2s (direct TLS) listening on %s:%d", host, port)

    async def reload_tls(self) -> None:
        """New certificates (after ``server.tls`` was rebuilt, e.g. on SIGHUP): new connections
        get them, established streams keep theirs. The direct TLS listeners are re-created (their
        context is bound at creation); closing a listener leaves its connections open."""
        self._make_server_contexts()
        self._client_contexts.clear()
        self.trust = TrustStore(self.config.ca_file)  # ([s2s] ca_file may have changed too)
        old, self.direct_listeners = self.direct_listeners, []
        for srv in old:
            srv.close()
        await self._direct_listeners()

    async def stop(self) -> None:
        self.server.router.remote = None
        for srv in self.listeners + self.direct_listeners:
            srv.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for entry in list(self.out.values()):
            if entry.task is not None:
                entry.task.cancel()
        for conn in list(self.connections):
            conn.stream.fail(StreamError("system-shutdown", "the server is shutting down"))

    def end_streams_of(self, local: str, err: StreamError) -> None:
        """Domain ``local`` is no longer served (removed at run time): end the streams opened
        for it (incoming ones whose pairs all name it too) and drop what waits to go out."""
        for conn in list(self.connections):
            s = conn.stream
            locals_ = {p[0] if s.outgoing else p[1] for p in s.pairs} or {s.local or ""}
            if locals_ == {local}:
                s.fail(err)
        for key, entry in list(self.out.items()):
            if entry.local == local:
                if entry.task is not None:
                    entry.task.cancel()
                del self.out[key]

    def _request_peer_certificate(self, ctx: ssl.SSLContext) -> None:
        """Incoming contexts ask the peer for its certificate (SASL EXTERNAL, XEP-0178) and
        accept any: whether it authenticates a domain is decided after the handshake."""
        request_any_peer_certificate(ctx)

    def _incoming(self, direct: bool) -> S2SConnection:
        stream = S2SStream(self, _no_write, outgoing=False, secure=direct,
                           max_stanza_size=self.config.max_stanza_size)
        return S2SConnection(self, stream, self._server_contexts[direct], direct)

    def client_context(self, local: str, direct: bool) -> ssl.SSLContext:
        """Our client side toward peers: our certificate for ``local`` (for the peer's SASL
        EXTERNAL); the peer's certificate is checked by us after the handshake (PKIX + RFC
        6125, or dialback), so the handshake itself does not verify it."""
        ctx = self._client_contexts.get((local, direct))
        if ctx is None:
            tls = self.server.tls
            assert tls is not None
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.minimum_version = (ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3"
                                   else ssl.TLSVersion.TLSv1_2)
            ctx.set_ciphers(tls.ciphers or DEFAULT_CIPHERS)
            ctx.load_cert_chain(*tls.files_for(local))
            if direct:
                ctx.set_alpn_protocols(["xmpp-server"])  # XEP-0368
            self._client_contexts[(local, direct)] = ctx
        return ctx

    # -- the router's remote --------------------------------------------------------------------
    def send(self, stanza: Element, frm: JID, to: JID) -> None:
        local, remote = frm.domain, to.domain
        if not self.is_local(local):
            self.server.router.bounce(stanza, StanzaError("not-allowed", "not from a local domain"))
            return
        entry = self.out.get((local, remote))
        if entry is None or not entry.ready:
            peer_stream = self.bidi_in.get((local, remote))
            if peer_stream is not None and peer_stream.stage != ST_CLOSED:
                peer_stream.send_stanza(stanza)  # the peer's own stream, both ways (XEP-0288)
                return
        if entry is None:
            entry = self.out[(local, remote)] = Outgoing(local, remote)
        if entry.ready:
            assert entry.conn is not None
            entry.conn.stream.send_stanza(stanza)
            return
        if len(entry.queue) >= MAX_QUEUE:
            self.server.router.bounce(stanza, StanzaError("resource-constraint", "too many queued"))
            return
        entry.queue.append(stanza)
        if entry.conn is not None:
            return  # connecting, or waiting for a piggybacked authentication
        carrier = self._carrier(local, remote)
        if carrier is not None:
            entry.conn = carrier
            carrier.stream.piggyback(local)
            asyncio.get_running_loop().call_later(self.config.timeout, self._piggyback_expired,
                                                  entry, carrier)
            return
        self._connect(entry)

    def _piggyback_expired(self, entry: Outgoing, carrier: S2SConnection) -> None:
        """No answer to a piggybacked <db:result/> in time: a stream of its own."""
        if entry.conn is carrier and not entry.ready and self.out.get((entry.local, entry.remote)) is entry:
            carrier.stream.piggybacking.discard(entry.local)
            log.info("s2s out %s -> %s: no answer to piggybacking, a stream of its own",
                     entry.local, entry.remote)
            entry.conn = None
            self._connect(entry)

    def _carrier(self, local: str, remote: str) -> S2SConnection | None:
        """A ready stream to ``remote`` (for another of our domains) that ``local`` may
        piggyback on."""
        for entry in self.out.values():
            conn = entry.conn
            if entry.remote == remote and entry.local != local and entry.ready and conn is not None \
                    and conn.stream.can_piggyback():
                return conn
        return None

    def piggyback_done(self, stream: S2SStream, local: str, ok: bool) -> None:
        entry = self.out.get((local, stream.remote or ""))
        if entry is None or entry.conn is None or entry.conn.stream is not stream:
            return
        if ok:
            log.info("s2s out %s -> %s: ready (dialback, piggybacked on the stream of %s)",
                     local, entry.remote, stream.local)
            self._flush_queue(entry)
        else:
            log.info("s2s out %s -> %s: piggybacking refused, a stream of its own", local, entry.remote)
            entry.conn = None
            self._connect(entry)

    def _connect(self, entry: Outgoing) -> None:
        if entry.task is None or entry.task.done():
            entry.task = asyncio.ensure_future(self._establish(entry))

    async def _establish(self, entry: Outgoing) -> None:
        remote = entry.remote
        timeout = self.config.timeout
        condition, reason = "remote-server-not-found", ""
        entry.started = time.monotonic()
        if _onion(remote):
            await self._establish_onion(entry)
            return
        if _onion(entry.local) and self.config.tor_socks is None:
            # An onion host of ours never connects from our clearnet address.
            self._fail_entry(entry, "remote-server-not-found",
                             "an onion host federates only through Tor ([s2s] tor_socks)")
            return
        try:
            targets = await asyncio.wait_for(s2sdns.resolve_targets(remote, timeout), timeout)
        except s2sdns.NoSuchDomain as e:
            targets, reason = [], str(e)
        except (TimeoutError, dns.exception.Timeout):
            targets, condition, reason = [], "remote-server-timeout", "DNS did not answer"
        except dns.exception.DNSException as e:
            targets, reason = [], f"DNS: {e}"
        proxy = self.config.tor_socks if self.config.tor_all or _onion(entry.local) else None
        if proxy is not None:  # all s2s through Tor: the proxy resolves each target's name
            for target in targets:
                ok, why, timed_out = await self._attempt(entry, target, socks=proxy)
                if ok:
                    return
                reason = why
                condition = "remote-server-timeout" if timed_out else "remote-server-not-found"
            targets = []

        def addresses(target: s2sdns.Target) -> Awaitable[list[str]]:
            return asyncio.wait_for(s2sdns.resolve_addresses(target.host, timeout), timeout)

        def finish(target: s2sdns.Target, sock: socket.socket) -> Awaitable[Held]:
            ctx = self.client_context(entry.local, target.direct_tls)
            return open_held(target, sock, ctx, entry.local, remote, timeout)

        while targets:
            try:
                index, held = await asyncio.wait_for(race_targets(targets, addresses, finish), timeout)
            except TimeoutError:
                condition, reason = "remote-server-timeout", "no candidate answered in time"
                break
            except OSError as e:
                condition, reason = "remote-server-not-found", str(e)
                break
            target = targets.pop(index)
            ok, why, timed_out = await self._attempt(entry, target, held=held)
            if ok:
                return
            reason = why
            condition = "remote-server-timeout" if timed_out else "remote-server-not-found"
        log.info("s2s out %s -> %s failed: %s", entry.local, remote, reason or "no candidates")
        self._fail_entry(entry, condition, reason)

    async def _establish_onion(self, entry: Outgoing) -> None:
        """A .onion domain: through Tor's SocksPort on 5269, never through DNS."""
        proxy = self.config.tor_socks
        if proxy is None:
            self._fail_entry(entry, "remote-server-not-found", "no Tor proxy configured ([s2s] tor_socks)")
            return
        target = s2sdns.Target(entry.remote, s2sdns.DEFAULT_PORT, False)
        ok, why, timed_out = await self._attempt(entry, target, socks=proxy)
        if ok:
            return
        log.info("s2s out %s -> %s failed: %s", entry.local, entry.remote, why)
        self._fail_entry(entry, "remote-server-timeout" if timed_out else "remote-server-not-found", why)

    async def _attempt(self, entry: Outgoing, target: s2sdns.Target, held: Held | None = None,
                       socks: tuple[str, int] | None = None) -> tuple[bool, str, bool]:
        """One stream to one target over ``held`` (the connection that won ``race_targets``) or,
        through ``socks``, to its host name: (ready?, why not, timed out?). ``held`` is closed on
        failure."""
        loop = asyncio.get_running_loop()
        addr = f"{target.host}:{target.port}"
        stream = S2SStream(self, _no_write, outgoing=True, local=entry.local, remote=entry.remote,
                           # (a held connection won the race with its TLS done)
                           secure=target.direct_tls or held is not None,
                           peer=addr + (" through Tor" if socks else ""),
                           max_stanza_size=self.config.max_stanza_size)
        if not _onion(target.host):  # (onion names are never looked up in DNS)
            why = await self._dane(stream, target)
            if why:
                if held is not None and held.transport is not None:
                    held.transport.abort()
                return False, f"{addr}: {why}", False
        for originating, receiving, sid, key in entry.verifies:
            stream.send_verify(originating, receiving, sid, key)
        ctx = self.client_context(entry.local, target.direct_tls)
        conn = S2SConnection(self, stream, ctx, target.direct_tls)
        entry.conn = conn
        entry.attempt = loop.create_future()
        try:
            await asyncio.wait_for(self._open(loop, conn, target, held, ctx, entry.attempt, socks),
                                   self.config.timeout)
        except TimeoutError:
            stream.close_reason = "timed out"
            conn.abort()
            entry.conn = None
            return False, f"{stream.peer}: timed out", True
        except (OSError, ssl.SSLError) as e:
            entry.conn = None
            return False, f"{addr}: {e}", False
        if stream.stage == ST_READY:
            return True, "", False
        entry.conn = None
        return False, f"{stream.peer}: {stream.close_reason or 'closed'}", False

    async def _dane(self, stream: S2SStream, target: s2sdns.Target) -> str:
        """Look up the target's TLSA records (RFC 7673) when DNSSEC secured its name; the
        records then decide the peer's certificate. Returns why the target may not be used."""
        records: list[tuple[int, int, int, bytes]] = []
        if target.secure:
            try:
                found, secure = await s2sdns.resolve_tlsa(target.host, target.port, self.config.timeout)
            except dns.exception.DNSException as e:
                # A secure zone whose TLSA lookup fails: the records may exist (RFC 7671 §4.1).
                return f"TLSA lookup failed: {e}"
            if secure:
                records = [r for r in found if r[0] in (0, 1, 2, 3)]
        if records:
            stream.dane_records = records
        elif self.config.require_dane:
            return "no DNSSEC-validated TLSA records ([s2s] require_dane)"
        return ""

    async def _open(self, loop: asyncio.AbstractEventLoop, conn: S2SConnection,
                    target: s2sdns.Target, held: Held | None, ctx: ssl.SSLContext,
                    attempt: asyncio.Future, socks: tuple[str, int] | None) -> None:
        if held is not None:
            assert held.transport is not None
            peer = held.transport.get_extra_info("peername")
            if peer:
                ip, port = peer[:2]
                conn.stream.peer = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
            held.hand_over(conn)
        else:
            assert socks is not None
            sock = await socks5_connect(socks, target.host, target.port)
            try:
                if target.direct_tls:
                    await loop.create_connection(lambda: conn, sock=sock, ssl=ctx,
                                                 server_hostname=conn.stream.remote,
                                                 ssl_handshake_timeout=self.config.timeout)
                else:
                    await loop.create_connection(lambda: conn, sock=sock)
            except BaseException:
                sock.close()
                raise
        await attempt

    def _flush_queue(self, entry: Outgoing) -> None:
        assert entry.conn is not None
        queue, entry.queue = entry.queue, []
        for stanza in queue:
            entry.conn.stream.send_stanza(stanza)

    def _fail_entry(self, entry: Outgoing, condition: str, reason: str) -> None:
        queue, entry.queue = entry.queue, []
        verifies, entry.verifies = entry.verifies, []
        if self.out.get((entry.local, entry.remote)) is entry:
            del self.out[(entry.local, entry.remote)]
        for stanza in queue:
            self.server.router.bounce(stanza, StanzaError(condition, reason or None))
        for originating, receiving, sid, _key in verifies:
            waiting = self.checks.pop((originating, receiving, sid), None)
            if waiting is not None:
                waiting.dialback_done(originating, receiving, None)

    # -- what the streams call ------------------------------------------------------------------
    def is_local(self, domain: str) -> bool:
        # (the router's components: internal ones and external ones, XEP-0114)
        return domain in self.server.hosts or domain in self.server.router.components

    def default_host(self) -> str:
        return self.server.config.server.domains[0]

    def dialback_allowed(self, domain: str) -> bool:
        return self.config.dialback and domain not in self.config.require_valid_certificates

    def dialback_key(self, receiving: str, originating: str, stream_id: str) -> str:
        return dialback_key(self.secret, receiving, originating, stream_id)

    def check_key(self, receiving: str, originating: str, stream_id: str, key: str) -> bool:
        return key_matches(self.secret, receiving, originating, stream_id, key)

    def verify_dialback(self, stream: S2SStream, originating: str, receiving: str, key: str) -> None:
        """Ask ``originating``'s authoritative server whether ``key`` is its key for ``stream``."""
        sid = stream.stream_id
        if sum(1 for s in self.checks.values() if s is stream) >= MAX_CHECKS_PER_STREAM:
            # Each check costs DNS lookups and a connection: a peer may not have us run many.
            stream.db_result(receiving, originating, "error", "resource-constraint", "wait")
            return
        self.checks[(originating, receiving, sid)] = stream
        entry = self.out.get((receiving, originating))
        if entry is None:
            entry = self.out[(receiving, originating)] = Outgoing(receiving, originating)
        entry.verifies.append((originating, receiving, sid, key))
        if entry.conn is not None and entry.conn.stream.stage != ST_CLOSED:
            entry.conn.stream.send_verify(originating, receiving, sid, key)
        else:
            self._connect(entry)
        asyncio.get_running_loop().call_later(self.config.timeout, self._check_expired,
                                              originating, receiving, sid)

    def _check_expired(self, originating: str, receiving: str, sid: str) -> None:
        entry = self.out.get((receiving, originating))
        if entry is not None:
            entry.verifies = [v for v in entry.verifies if v[:3] != (originating, receiving, sid)]
        stream = self.checks.pop((originating, receiving, sid), None)
        if stream is not None:
            stream.dialback_done(originating, receiving, None)

    def verify_answer(self, stream: S2SStream, el: Element) -> None:
        originating, receiving, sid = el.get("from") or "", el.get("to") or "", el.get("id") or ""
        entry = self.out.get((receiving, originating))
        if entry is not None:
            entry.verifies = [v for v in entry.verifies if v[:3] != (originating, receiving, sid)]
        waiting = self.checks.pop((originating, receiving, sid), None)
        if waiting is None:
            return
        t = el.get("type")
        waiting.dialback_done(originating, receiving, True if t == "valid" else None if t == "error" else False)

    def route_incoming(self, stanza: Element, stream: S2SStream) -> None:
        self.server.router.route_from_peer(stanza)

    def outgoing_ready(self, stream: S2SStream) -> None:
        entry = self.out.get((stream.local or "", stream.remote or ""))
        if entry is None or entry.conn is None or entry.conn.stream is not stream:
            return
        log.info("s2s out %s -> %s: connected to %s in %.2fs", entry.local, entry.remote, stream.peer,
                 time.monotonic() - entry.started)
        self._flush_queue(entry)  # before anything sent directly now that the stream is ready
        if entry.attempt is not None and not entry.attempt.done():
            entry.attempt.set_result(True)

    def bidi_wanted(self) -> bool:
        return True

    def count_unauthenticated(self, conn: S2SConnection) -> bool:
        """Count a new incoming connection; False when its address holds too many already."""
        n = self.unauth_per_ip.get(conn.peer_ip, 0)
        if n >= MAX_UNAUTH_PER_IP:
            return False
        self.unauth_per_ip[conn.peer_ip] = n + 1
        conn.counted = True
        return True

    def uncount(self, conn: S2SConnection) -> None:
        if conn.counted:
            conn.counted = False
            n = self.unauth_per_ip.get(conn.peer_ip, 1) - 1
            if n <= 0:
                self.unauth_per_ip.pop(conn.peer_ip, None)
            else:
                self.unauth_per_ip[conn.peer_ip] = n

    def incoming_authenticated(self, stream: S2SStream, remote: str, local: str) -> None:
        conn = self._conn_of(stream)
        if conn is not None:
            self.uncount(conn)
        if stream.bidi:
            self.bidi_in[(local, remote)] = stream

    def stream_closed(self, stream: S2SStream) -> None:
        if not stream.outgoing:
            for k in [k for k, s in self.checks.items() if s is stream]:
                del self.checks[k]
            for pair in [p for p, s in self.bidi_in.items() if s is stream]:
                del self.bidi_in[pair]
            return
        for key, entry in list(self.out.items()):  # its own pair, and those piggybacked on it
            if entry.conn is None or entry.conn.stream is not stream:
                continue
            if entry.local == stream.local and entry.attempt is not None and not entry.attempt.done():
                entry.attempt.set_result(False)   # the connector tries the next candidate
                continue
            # An established stream ended: the next stanza opens a new one.
            log.info("s2s out %s -> %s closed: %s", entry.local, entry.remote, stream.close_reason)
            entry.conn = None
            if not entry.queue and not entry.verifies:
                del self.out[key]
            else:
                self._connect(entry)

    def _conn_of(self, stream: S2SStream) -> S2SConnection | None:
        return next((c for c in self.connections if c.stream is stream), None)

    # -- idle streams -----------------------------------------------------------------------------
    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(SWEEP_EVERY, self.config.idle_timeout))
            now = time.monotonic()
            for conn in list(self.connections):
                stream = conn.stream
                if now - conn.last_activity > self.config.idle_timeout and not stream.tls_requested \
                        and stream.stage != ST_CLOSED:
                    log.info("s2s %s: closing idle stream", stream.peer)
                    stream.close_reason = "idle"
                    stream.close()

    def describe(self) -> list[dict[str, Any]]:
        """The streams, for the operator (JSON-ready): peer, direction, how each side was
        authenticated, TLS version, the domain pairs and the traffic."""
        out = []
        for conn in self.connections:
            s = conn.stream
            out.append({"direction": "out" if s.outgoing else "in", "local": s.local or "",
                        "remote": s.remote or "", "peer": s.peer,
                        # how the initiating side authenticated: pkix (SASL EXTERNAL) or dialback
                        "auth": s.auth_method or "none",
                        # outgoing: how we checked the peer's certificate (dane, pkix, none)
                        "peer_verified": s.peer_verified or "-", "tls": s.tls_version or "-",
                        "bidi": s.bidi, "pairs": sorted(f"{a} -> {b}" for a, b in s.pairs),
                        "since": datetime.datetime.fromtimestamp(conn.connected_at, datetime.timezone.utc)
                        .strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "stanzas_in": s.stanzas_in, "stanzas_out": s.stanzas_out})
        return sorted(out, key=lambda r: (r["remote"], r["direction"], r["local"]))


def format_streams(rows: list[dict[str, Any]]) -> list[str]:
    """The operator's table of ``S2SService.describe()`` rows (for an ``s2s`` CLI command)."""
    lines = [f"{'REMOTE':<30} {'DIR':<3} {'LOCAL':<25} {'AUTH':<8} {'PEER CERT':<9} {'TLS':<7} "
             f"{'BIDI':<4} {'SINCE':<20} IN/OUT"]
    for r in rows:
        lines.append(f"{r['remote']:<30} {r['direction']:<3} {r['local']:<25} {r['auth']:<8} "
                     f"{r['peer_verified']:<9} {r['tls']:<7} {'yes' if r['bidi'] else 'no':<4} "
                     f"{r['since']:<20} {r['stanzas_in']}/{r['stanzas_out']}")
    lines.append(f"{len(rows)} stream{'s' if len(rows) != 1 else ''}")
    return lines


def _onion(domain: str) -> bool:
    return domain.endswith(".onion")


def _no_write(data: bytes) -> None:  # replaced by the connection before anything is written
    raise AssertionError("stream not attached to a connection")
