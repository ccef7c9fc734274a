"""A minimal, fast XMPP c2s client for load generation (asyncio/uvloop protocol, hand-written).

Only what the scenarios need: stream open, STARTTLS or direct TLS (XEP-0368), SASL SCRAM-SHA-1/-256
(or PLAIN), resource binding, Stream Management (XEP-0198: enable, ack counting, answering the
server's ``<r/>``, periodic requests of its own), roster get/set, presence, messages and MAM result
pages (XEP-0313). Stanzas are parsed with expat; after login, messages and presences carrying a
timestamp in their ``id`` take a fast path that never builds an element tree, and MAM results can be
counted (their archive ids kept) without building the forwarded messages.

SCRAM: the expensive part (PBKDF2) depends only on (hash, password, salt, iterations), so ClientKey,
StoredKey and ServerKey are computed once per such key and cached for the life of the process;
repeated logins cost two HMACs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import socket
import ssl
import time
from collections import deque
from typing import Any, Callable
from xml.parsers import expat
from xml.sax.saxutils import escape as _xml_escape

__all__ = ["XMPPClient", "ClientOptions", "XMPPError", "SMUnavailable", "El", "scram_keys",
           "make_tls_context", "SCRAM_CACHE_STATS"]

_now = time.monotonic_ns

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_ROSTER = "jabber:iq:roster"
NS_SM = "urn:xmpp:sm:3"
SM_R = f"<r xmlns='{NS_SM}'/>".encode()
_STANZAS = frozenset(("message", "presence", "iq"))
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class XMPPError(Exception):
    """A login step failed, the stream closed, or the server answered with an error."""


class SMUnavailable(XMPPError):
    """The server does not offer Stream Management."""


# ----------------------------------------------------------------------------------------- SCRAM

_SCRAM_HASH = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}
_scram_cache: dict[tuple[str, str, bytes, int], tuple[bytes, bytes, bytes]] = {}
SCRAM_CACHE_STATS = {"hits": 0, "misses": 0}


def scram_keys(hname: str, password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes, bytes]:
    """(ClientKey, StoredKey, ServerKey), PBKDF2 done once per (hash, password, salt, iterations)."""
    key = (hname, password, salt, iterations)
    v = _scram_cache.get(key)
    if v is not None:
        SCRAM_CACHE_STATS["hits"] += 1
        return v
    SCRAM_CACHE_STATS["misses"] += 1
    salted = hashlib.pbkdf2_hmac(hname, password.encode("utf-8"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", hname)
    stored_key = hashlib.new(hname, client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", hname)
    v = (client_key, stored_key, server_key)
    _scram_cache[key] = v
    return v


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


# ----------------------------------------------------------------------------------------- TLS

def make_tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE       # the servers under test use self-signed certificates
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Each login is a full handshake, as a fresh client would do (no session tickets reused).
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


# ----------------------------------------------------------------------------------------- elements

class El:
    """A small element tree node (only built for stanzas that need inspection)."""

    __slots__ = ("tag", "attrs", "children", "text", "nchildren")

    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.children: list[El] = []
        self.text = ""
        self.nchildren = 0      # number of child elements, also counted when not built

    def find(self, tag: str) -> El | None:
        for c in self.children:
            if c.tag == tag:
                return c
        return None

    def __repr__(self) -> str:
        return f"<{self.tag} {self.attrs} children={self.nchildren} text={self.text[:40]!r}>"


def _local(tag: str) -> str:
    i = tag.find(":")
    return tag if i < 0 else tag[i + 1:]


class ClientOptions:
    """How a client logs in; shared by many clients."""

    __slots__ = ("host", "port", "domain", "tls", "mech", "roster", "presence", "timeout",
                 "src_ips", "tls_ctx", "wait_self_presence", "sm", "sm_request_every")

    def __init__(self, host: str = "127.0.0.1", port: int = 5222, domain: str = "localhost", *,
                 tls: str = "starttls", mech: str = "SCRAM-SHA-1", roster: bool = True,
                 presence: bool = True, timeout: float = 30.0, src_ips: list[str] | None = None,
                 wait_self_presence: bool = True, sm: bool = False,
                 sm_request_every: int = 0) -> None:
        if tls not in ("starttls", "direct"):
            raise ValueError("tls must be 'starttls' or 'direct'")
        self.host = host
        self.port = port
        self.domain = domain
        self.tls = tls
        self.mech = mech
        self.roster = roster
        self.presence = presence
        self.timeout = timeout
        self.src_ips = src_ips or []
        self.tls_ctx = make_tls_context()
        self.wait_self_presence = wait_self_presence
        # Stream Management: <enable resume='true'/> after bind; the client requests an ack (<r/>)
        # itself after every `sm_request_every` stanzas it sends (0: never)
        self.sm = sm
        self.sm_request_every = sm_request_every


_src_rr = [0]


class XMPPClient(asyncio.Protocol):
    """One c2s connection. ``await login()``, then send; incoming stanzas go to the callbacks.

    Callbacks (set as attributes after login):
      on_timed(kind, id, now_ns, frm)  a message/presence whose id starts with 'm'/'p' (fast path)
      on_stanza(el)                    any other stanza (iq without waiter, presence, message)

    Stream Management (``opts.sm``): ``sm_h_in`` counts the stanzas received since ``<enabled/>``;
    a server ``<r/>`` is answered with ``<a h='sm_h_in'/>`` once the data chunk that carried it is
    parsed (several requests in one chunk get one answer); ``sm_sent(n)`` counts stanzas sent and
    returns the ``<r/>`` to append when one is due; the server's ``<a h/>`` goes to ``sm_acked``
    (``sm_bad_acks`` counts acks of more than was sent).

    MAM (``mam_queryid`` set): a ``<message><result queryid=...>`` is not built: its archive id
    goes to ``mam_ids`` and the rest of the message is skipped.
    """

    def __init__(self, user: str, password: str, resource: str, opts: ClientOptions) -> None:
        self.user = user
        self.password = password
        self.resource = resource
        self.opts = opts
        self.loop = asyncio.get_event_loop()
        self.transport: Any = None
        self.jid = ""
        self.bare = f"{user}@{opts.domain}"
        self.closed = False
        self.close_reason = ""
        self.ready = False
        self.tls_version = ""
        self._queue: deque[El] = deque()
        self._qwaiter: asyncio.Future | None = None
        self._iq_waiters: dict[str, asyncio.Future] = {}
        self._iq_seq = 0
        self._conn_lost: asyncio.Future = self.loop.create_future()
        self.on_timed: Callable[[str, str, int, str], None] | None = None
        self.on_stanza: Callable[[El], None] | None = None
        self.now = 0
        self.wbuf: list[bytes] = []
        self.auto_subscribe = False
        self.build_roster_items = False
        self.credit = 0
        self.sm_on = False
        self.sm_h_in = 0
        self.sm_h_out = 0
        self.sm_acked = 0
        self.sm_bad_acks = 0
        self.sm_r_in = 0
        self.sm_ack_due = False
        self._ack_pending = False
        self._sm_pending = False
        self._sm_since_r = 0
        self.mam_queryid: str | None = None
        self.mam_ids: list[str] = []
        self._new_parser()

    # -- parser ------------------------------------------------------------------------------
    def _new_parser(self) -> None:
        p = expat.ParserCreate()
        p.buffer_text = True
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._chars
        self._parser = p
        self._depth = 0
        self._stack: list[El] = []
        self._skip = 0          # >0: inside a fast-pathed stanza, don't build

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        d = self._depth = self._depth + 1
        if d == 1:                      # stream header
            return
        if self._skip:
            return
        if d == 2:
            if self.sm_on:
                t = _local(tag)
                if t in _STANZAS:
                    self.sm_h_in += 1
                elif t == "r":
                    self.sm_r_in += 1
                    self.sm_ack_due = True
                    self._skip = d
                    return
                elif t == "a":
                    self._sm_got_ack(attrs.get("h", ""))
                    self._skip = d
                    return
            elif self._sm_pending and _local(tag) == "enabled":
                # counting starts here, whatever else the same chunk carries
                self.sm_on = True
                self._sm_pending = False
                self.sm_h_in = self.sm_h_out = self.sm_acked = 0
            if self.ready and self.on_timed is not None:
                t = _local(tag)
                i = attrs.get("id")
                if i and ((t == "message" and i[0] == "m" and attrs.get("type") != "error")
                          or (t == "presence" and i[0] == "p" and attrs.get("type") is None)):
                    self._skip = d
                    self.on_timed(t, i, self.now, attrs.get("from", ""))
                    return
            el = El(_local(tag), attrs)
            self._stack.append(el)
            return
        parent = self._stack[-1] if self._stack else None
        if parent is not None:
            if d == 3 and self.mam_queryid is not None and parent.tag == "message" and \
                    attrs.get("queryid") == self.mam_queryid and _local(tag) == "result":
                # a MAM result: keep its archive id, build nothing (the whole message is skipped)
                self.mam_ids.append(attrs.get("id", ""))
                self._stack.pop()
                self._skip = 2
                return
            parent.nchildren += 1
            if d >= 4 and self.ready and parent.tag == "query" and not self.build_roster_items:
                # roster results: count items, don't build them
                self._skip = d
                return
            el = El(_local(tag), attrs)
            parent.children.append(el)
            self._stack.append(el)

    def _end(self, tag: str) -> None:
        d = self._depth
        self._depth = d - 1
        if d == 1:
            self._lost("stream closed by server")
            return
        if self._skip:
            if self._skip == d:
                self._skip = 0
            return
        el = self._stack.pop()
        if d == 2:
            self._dispatch(el)

    def _chars(self, data: str) -> None:
        if self._stack and not self._skip:
            self._stack[-1].text += data

    def _dispatch(self, el: El) -> None:
        if self.ready:
            if el.tag == "iq":
                w = self._iq_waiters.pop(el.attrs.get("id", ""), None)
                if w is not None:
                    if not w.done():
                        w.set_result(el)
                    return
                if el.attrs.get("type") in ("get", "set"):
                    self._answer_iq(el)
                    return
            elif el.tag == "presence" and self.auto_subscribe:
                t = el.attrs.get("type")
                frm = el.attrs.get("from", "")
                if t == "subscribe":
                    self.sm_count(2)
                    self.write(f"<presence to='{frm}' type='subscribed'/>".encode())
                    # and ask back, so that both ends reach 'both'
                    self.write(f"<presence to='{frm}' type='subscribe'/>".encode())
            if el.tag == "error":
                self._lost("stream error: " + ",".join(c.tag for c in el.children))
                return
            cb = self.on_stanza
            if cb is not None:
                cb(el)
            return
        if el.tag == "error":
            self._lost("stream error: " + ",".join(c.tag for c in el.children))
            return
        self._queue.append(el)
        w = self._qwaiter
        if w is not None and not w.done():
            w.set_result(None)

    def _answer_iq(self, el: El) -> None:
        # roster pushes and pings: answer with an empty result
        i = el.attrs.get("id", "")
        frm = el.attrs.get("from")
        to = f" to='{frm}'" if frm else ""
        self.sm_count(1)
        self.write(f"<iq type='result' id='{_xml_escape(i, {chr(39): '&apos;'})}'{to}/>".encode())

    # -- asyncio protocol ---------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.now = _now()
        try:
            self._parser.Parse(data, False)
        except expat.ExpatError as e:
            self._lost(f"XML error from server: {e}")
            if self.transport is not None:
                self.transport.abort()
        if self.sm_ack_due:
            # The answer rides on this client's next write of the loop iteration (a pipelining
            # client's acks share its TLS records), or goes alone at the iteration's end.
            self.sm_ack_due = False
            if not self._ack_pending:
                self._ack_pending = True
                self.loop.call_soon(self._send_ack)

    def _ack_bytes(self) -> bytes:
        self._ack_pending = False
        return f"<a xmlns='{NS_SM}' h='{self.sm_h_in % (1 << 32)}'/>".encode()

    def _send_ack(self) -> None:
        if self._ack_pending:
            self.write(b"")

    # -- stream management --------------------------------------------------------------------
    def _sm_got_ack(self, h: str) -> None:
        try:
            v = int(h)
        except ValueError:
            self.sm_bad_acks += 1
            return
        if (v - self.sm_acked) % (1 << 32) > (self.sm_h_out - self.sm_acked) % (1 << 32):
            self.sm_bad_acks += 1       # the server acknowledged more than was sent
        self.sm_acked = v

    def sm_count(self, n: int) -> None:
        """Count stanzas sent outside ``sm_sent`` (IQs, presences)."""
        if self.sm_on:
            self.sm_h_out += n

    def sm_sent(self, n: int) -> bytes:
        """Count ``n`` stanzas about to be sent; the ``<r/>`` to append after them when due."""
        if not self.sm_on:
            return b""
        self.sm_h_out += n
        every = self.opts.sm_request_every
        if every <= 0:
            return b""
        self._sm_since_r += n
        if self._sm_since_r >= every:
            self._sm_since_r = 0
            return SM_R
        return b""

    async def sm_sync(self, timeout: float = 5.0) -> bool:
        """Request an ack and wait until the server has acknowledged every stanza sent."""
        if not self.sm_on:
            return False
        self.write(SM_R)
        deadline = _now() + int(timeout * 1e9)
        while self.sm_acked % (1 << 32) != self.sm_h_out % (1 << 32) and _now() < deadline \
                and not self.closed:
            await asyncio.sleep(0.01)
        return self.sm_acked % (1 << 32) == self.sm_h_out % (1 << 32)

    def eof_received(self) -> bool | None:
        self._lost("EOF from server")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(f"connection lost: {exc}" if exc else "connection closed")

    def _lost(self, reason: str) -> None:
        if reason.startswith("connection") and not self._conn_lost.done():
            self._conn_lost.set_result(None)
        if self.closed:
            return
        self.closed = True
        self.ready = False
        self.close_reason = reason
        err = XMPPError(reason)
        w = self._qwaiter
        if w is not None and not w.done():
            w.set_exception(err)
        for f in self._iq_waiters.values():
            if not f.done():
                f.set_exception(err)
        self._iq_waiters.clear()
        if not self._conn_lost.done():
            self._conn_lost.set_result(None)

    # -- I/O helpers --------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._ack_pending:
            data = self._ack_bytes() + data
        if data and not self.closed and self.transport is not None:
            self.transport.write(data)

    def flush(self) -> None:
        """Write what was queued in ``wbuf`` as one TLS record."""
        if self.wbuf:
            data = b"".join(self.wbuf)
            self.wbuf.clear()
            self.write(data)

    async def _recv(self) -> El:
        while not self._queue:
            if self.closed:
                raise XMPPError(self.close_reason)
            self._qwaiter = self.loop.create_future()
            try:
                await self._qwaiter
            finally:
                self._qwaiter = None
        return self._queue.popleft()

    def _open_stream(self) -> None:
        self._new_parser()
        self.write((f"<?xml version='1.0'?><stream:stream to='{self.opts.domain}' version='1.0' "
                    "xml:lang='en' xmlns='jabber:client' "
                    "xmlns:stream='http://etherx.jabber.org/streams'>").encode())

    async def _features(self) -> El:
        el = await self._recv()
        if el.tag != "features":
            raise XMPPError(f"expected stream features, got {el.tag}")
        return el

    def next_id(self, prefix: str = "q") -> str:
        self._iq_seq += 1
        return f"{prefix}{self._iq_seq}"

    async def iq(self, payload: str, type_: str = "get", to: str | None = None,
                 timeout: float | None = None) -> El:
        """Send an IQ and wait for its answer (works before and after ``ready``)."""
        i = self.next_id()
        t = f" to='{to}'" if to else ""
        fut = self.loop.create_future()
        self._iq_waiters[i] = fut
        self.sm_count(1)
        self.write(f"<iq type='{type_}' id='{i}'{t}>{payload}</iq>".encode())
        if not self.ready:
            # before ready, answers arrive through the queue
            self._iq_waiters.pop(i, None)
            while True:
                el = await asyncio.wait_for(self._recv(), timeout or self.opts.timeout)
                if el.tag == "iq" and el.attrs.get("id") == i:
                    break
        else:
            el = await asyncio.wait_for(fut, timeout or self.opts.timeout)
        if el.attrs.get("type") == "error":
            raise XMPPError(f"iq error: {[c.tag for c in el.children]}")
        return el

    # -- login --------------------------------------------------------------------------------
    async def _connect(self) -> None:
        o = self.opts
        ssl_ctx = o.tls_ctx if o.tls == "direct" else None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if o.src_ips:
                src = o.src_ips[_src_rr[0] % len(o.src_ips)]
                _src_rr[0] += 1
                try:
                    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                except OSError:
                    pass
                sock.bind((src, 0))
            await self.loop.sock_connect(sock, (o.host, o.port))
        except BaseException:
            sock.close()
            raise
        await self.loop.create_connection(lambda: self, sock=sock, ssl=ssl_ctx,
                                          server_hostname=o.domain if ssl_ctx else None)
        if ssl_ctx is not None:
            self._note_tls()

    def _note_tls(self) -> None:
        so = self.transport.get_extra_info("ssl_object")
        if so is not None:
            self.tls_version = so.version() or ""

    async def login(self) -> None:
        """Connect and log in fully; raises XMPPError / OSError / TimeoutError."""
        await asyncio.wait_for(self._login(), self.opts.timeout)

    async def _login(self) -> None:
        o = self.opts
        await self._connect()
        self._open_stream()
        feats = await self._features()
        if o.tls == "starttls":
            if feats.find("starttls") is None:
                raise XMPPError("server offers no STARTTLS")
            self.write(f"<starttls xmlns='{NS_TLS}'/>".encode())
            el = await self._recv()
            if el.tag != "proceed":
                raise XMPPError(f"STARTTLS refused: {el.tag}")
            self.transport = await self.loop.start_tls(self.transport, self, o.tls_ctx,
                                                       server_hostname=o.domain)
            self._note_tls()
            self._open_stream()
            feats = await self._features()
        mechs_el = feats.find("mechanisms")
        mechs = [m.text.strip() for m in mechs_el.children] if mechs_el is not None else []
        if o.mech not in mechs:
            raise XMPPError(f"mechanism {o.mech} not offered (offered: {mechs})")
        if o.mech == "PLAIN":
            await self._plain()
        else:
            await self._scram(o.mech)
        self._open_stream()
        feats = await self._features()
        if feats.find("bind") is None:
            raise XMPPError("no resource binding offered")
        el = await self.iq(f"<bind xmlns='{NS_BIND}'><resource>{self.resource}</resource></bind>",
                           "set")
        b = el.find("bind")
        j = b.find("jid") if b is not None else None
        self.jid = j.text if j is not None else f"{self.bare}/{self.resource}"
        sess = feats.find("session")
        if sess is not None and sess.find("optional") is None:
            await self.iq(f"<session xmlns='{NS_SESSION}'/>", "set")
        if o.sm:
            if not any(c.tag == "sm" and c.attrs.get("xmlns") == NS_SM for c in feats.children):
                raise SMUnavailable("server offers no stream management (urn:xmpp:sm:3)")
            self._sm_pending = True
            self.write(f"<enable xmlns='{NS_SM}' resume='true'/>".encode())
            el = await self._recv()
            if el.tag != "enabled" or not self.sm_on:
                raise XMPPError(f"SM enable refused: {el.tag} {[c.tag for c in el.children]}")
        # from here on stanzas are dispatched, not queued
        self.ready = True
        # anything that arrived meanwhile is handed over
        while self._queue:
            self._dispatch(self._queue.popleft())
        if o.roster:
            await self.iq(f"<query xmlns='{NS_ROSTER}'/>")
        if o.presence:
            await self.send_initial_presence()

    async def send_initial_presence(self) -> None:
        if not self.opts.wait_self_presence:
            self.sm_count(1)
            self.write(b"<presence/>")
            return
        fut = self.loop.create_future()
        prev = self.on_stanza
        jid = self.jid

        def watch(el: El) -> None:
            if el.tag == "presence" and el.attrs.get("from") == jid and not fut.done():
                fut.set_result(None)
            elif prev is not None:
                prev(el)

        self.on_stanza = watch
        self.sm_count(1)
        self.write(b"<presence/>")
        try:
            await asyncio.wait_for(fut, self.opts.timeout)
        finally:
            self.on_stanza = prev

    async def _plain(self) -> None:
        msg = base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode()
        self.write(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{msg}</auth>".encode())
        el = await self._recv()
        if el.tag != "success":
            raise XMPPError(f"SASL PLAIN failed: {[c.tag for c in el.children] or el.tag}")

    async def _scram(self, mech: str) -> None:
        hname = _SCRAM_HASH[mech]
        cnonce = base64.b64encode(os.urandom(18)).decode()
        user = self.user.replace("=", "=3D").replace(",", "=2C")
        cfb = f"n={user},r={cnonce}"
        first = base64.b64encode(("n,," + cfb).encode()).decode()
        self.write(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>{first}</auth>".encode())
        el = await self._recv()
        if el.tag != "challenge":
            raise XMPPError(f"SASL: expected challenge, got {el.tag} "
                            f"{[c.tag for c in el.children]}")
        server_first = base64.b64decode(el.text.strip()).decode()
        fields = dict(kv.split("=", 1) for kv in server_first.split(",") if "=" in kv)
        nonce, salt, iters = fields["r"], base64.b64decode(fields["s"]), int(fields["i"])
        if not nonce.startswith(cnonce):
            raise XMPPError("SASL: server nonce does not extend the client nonce")
        cfwp = f"c=biws,r={nonce}"
        auth_msg = f"{cfb},{server_first},{cfwp}".encode()
        client_key, stored_key, server_key = scram_keys(hname, self.password, salt, iters)
        proof = _xor(client_key, hmac.digest(stored_key, auth_msg, hname))
        final = base64.b64encode(f"{cfwp},p={base64.b64encode(proof).decode()}".encode()).decode()
        self.write(f"<response xmlns='{NS_SASL}'>{final}</response>".encode())
        el = await self._recv()
        if el.tag == "challenge":          # some servers send v= as a challenge
            data = el.text
            self.write(f"<response xmlns='{NS_SASL}'/>".encode())
            el = await self._recv()
            el.text = el.text or data
        if el.tag != "success":
            raise XMPPError(f"SASL {mech} failed: {[c.tag for c in el.children] or el.tag}")
        if el.text.strip():
            sf = base64.b64decode(el.text.strip()).decode()
            if sf.startswith("v="):
                want = hmac.digest(server_key, auth_msg, hname)
                if base64.b64decode(sf[2:]) != want:
                    raise XMPPError("SASL: bad server signature")

    # -- after login --------------------------------------------------------------------------
    def close(self, graceful: bool = True) -> None:
        if self.transport is None:
            return
        if graceful and not self.closed:
            try:
                self.transport.write(b"</stream:stream>")
            except Exception:
                pass
        self.ready = False
        self.transport.close()
        self.closed = True

    async def wait_closed(self, timeout: float = 5.0) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._conn_lost), timeout)
        except asyncio.TimeoutError:
            if self.transport is not None:
                self.transport.abort()


def esc(s: str) -> str:
    return _xml_escape(s, {"'": "&apos;", '"': "&quot;"})
