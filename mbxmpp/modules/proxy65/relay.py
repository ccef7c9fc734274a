"""The SOCKS5 side of the bytestream proxy: the handshake of XEP-0065 §6.3.2 and the relay.

Only what XEP-0065 needs of RFC 1928: the no-authentication method, CONNECT, a domain-name
address that is a SHA-1 hex digest, port 0. Anything else gets the RFC's refusal and the
connection is closed: the proxy never opens a connection anywhere, it only joins two clients that
named the same digest, and only once the requester has activated them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .options import Proxy65Config

log = logging.getLogger(__name__)

MAX_HANDSHAKE = 2 + 255 + 4 + 1 + 255 + 2      # the longest greeting plus request
MAX_PENDING = 10_000                            # connections waiting for activation, all users
MAX_UNACTIVATED_PER_IP = 64                     # connections of one address not relaying yet
HIGH_WATER = 256 * 1024                         # a side's unsent bytes before the other side pauses
DIGEST = re.compile(rb"[0-9a-f]{40}")
BYTES_WINDOW = 3600.0

# RFC 1928 §6 replies
SUCCEEDED = 0x00
GENERAL_FAILURE = 0x01
NOT_ALLOWED = 0x02
REFUSED = 0x05
COMMAND_NOT_SUPPORTED = 0x07
ADDRESS_TYPE_NOT_SUPPORTED = 0x08

GREETING, REQUEST, WAITING, RELAY, CLOSED = range(5)


class Relay:
    """Connections waiting by digest, activated pairs, and the per-user limits."""

    def __init__(self, cfg: Proxy65Config) -> None:
        self.cfg = cfg
        self.pending: dict[str, list[SocksConnection]] = {}
        self.connections: set[SocksConnection] = set()
        self.streams: dict[str, int] = {}                     # requester -> active streams
        self.usage: dict[str, tuple[float, int]] = {}         # requester -> (window start, bytes)
        self.unactivated: dict[str, int] = {}                 # peer address -> connections

    def waiting(self) -> int:
        return sum(len(v) for v in self.pending.values())

    def register(self, conn: SocksConnection, digest: str) -> bool:
        """A client named ``digest``; False if it cannot wait for it (two already do, or the
        proxy has too many waiting)."""
        waiting = self.pending.setdefault(digest, [])
        if len(waiting) >= 2 or self.waiting() >= MAX_PENDING:
            if not waiting:
                del self.pending[digest]
            return False
        waiting.append(conn)
        return True

    def unregister(self, conn: SocksConnection) -> None:
        waiting = self.pending.get(conn.digest)
        if waiting and conn in waiting:
            waiting.remove(conn)
            if not waiting:
                del self.pending[conn.digest]

    def activate(self, digest: str, requester: str) -> tuple[str, str] | None:
        """Join the two connections of ``digest``; the error (condition, text) if not possible."""
        waiting = self.pending.get(digest)
        if not waiting:
            return "item-not-found", "no bytestream with that sid, requester and target"
        if len(waiting) < 2:
            return "not-allowed", "only one party is connected"
        if self.streams.get(requester, 0) >= self.cfg.max_streams_per_user:
            return "resource-constraint", f"at most {self.cfg.max_streams_per_user} streams at once"
        if self.bytes_left(requester) <= 0:
            return "resource-constraint", "hourly transfer volume used up"
        del self.pending[digest]
        a, b = waiting
        self.streams[requester] = self.streams.get(requester, 0) + 1
        a.start_relay(b, requester)
        b.start_relay(a, requester)
        return None

    def bytes_left(self, requester: str) -> int:
        start, used = self.usage.get(requester, (0.0, 0))
        if time.monotonic() - start >= BYTES_WINDOW:
            return self.cfg.max_bytes_per_user
        return self.cfg.max_bytes_per_user - used

    def count(self, requester: str, n: int) -> bool:
        """Account relayed bytes; False once the requester is over its volume."""
        now = time.monotonic()
        start, used = self.usage.get(requester, (0.0, 0))
        if now - start >= BYTES_WINDOW:
            start, used = now, 0
        used += n
        self.usage[requester] = (start, used)
        return used <= self.cfg.max_bytes_per_user

    def stream_ended(self, requester: str) -> None:
        n = self.streams.get(requester, 0) - 1
        if n > 0:
            self.streams[requester] = n
        else:
            self.streams.pop(requester, None)

    def admit(self, ip: str) -> bool:
        n = self.unactivated.get(ip, 0)
        if n >= MAX_UNACTIVATED_PER_IP:
            return False
        self.unactivated[ip] = n + 1
        return True

    def release(self, ip: str) -> None:
        n = self.unactivated.get(ip, 0) - 1
        if n > 0:
            self.unactivated[ip] = n
        else:
            self.unactivated.pop(ip, None)

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close()


class SocksConnection(asyncio.Protocol):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.state = GREETING
        self.buf = b""
        self.digest = ""
        self.peer: SocksConnection | None = None
        self.requester = ""
        self.eof = False                   # this side sent EOF (half-closed towards us)
        self.stream_open = False           # counted in the requester's active streams
        self.last_activity = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.ip = ""                       # counted in relay.unactivated until it relays or closes

    # -- asyncio callbacks ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = transport  # type: ignore[assignment]  # (uvloop's is not an asyncio.Transport)
        t.set_write_buffer_limits(high=HIGH_WATER)  # type: ignore[attr-defined]
        self.relay.connections.add(self)
        peer = t.get_extra_info("peername")  # type: ignore[attr-defined]
        ip = str(peer[0]) if peer else ""
        if not self.relay.admit(ip):
            self.state = CLOSED
            self.relay.connections.discard(self)
            t.close()  # type: ignore[attr-defined]
            return
        self.ip = ip
        # Handshake and activation both within activation_timeout; then idle_timeout applies.
        self.timer = asyncio.get_running_loop().call_later(self.relay.cfg.activation_timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self.state == RELAY:
            peer = self.peer
            assert peer is not None and peer.transport is not None
            self.last_activity = time.monotonic()
            peer.transport.write(data)
            if not self.relay.count(self.requester, len(data)):
                log.info("proxy65: %s used up its hourly volume; stream closed", self.requester)
                self.close()
            return
        if self.state == WAITING:
            return  # XEP-0065 §8: bytes before activation are ignored
        if self.state == CLOSED:
            return
        self.buf += data
        if len(self.buf) > MAX_HANDSHAKE:
            self.close()
            return
        if self.state == GREETING:
            self._greeting()
        if self.state == REQUEST:
            self._request()

    def eof_received(self) -> bool:
        peer = self.peer
        if self.state != RELAY or peer is None or peer.transport is None:
            return False
        # Half-close: pass the EOF on and keep relaying the other way until it ends too.
        self.eof = True
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
        if peer.eof:
            self.close()
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.state_closed()
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.peer = None
            peer.close()  # what is already buffered for it is still sent

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and self.peer.state == RELAY:
            self.peer.transport.resume_reading()

    # -- handshake ------------------------------------------------------------------------------
    def _greeting(self) -> None:
        b = self.buf
        if len(b) < 2:
            return
        if b[0] != 5:
            self.close()
            return
        n = b[1]
        if len(b) < 2 + n:
            return
        methods, self.buf = b[2:2 + n], b[2 + n:]
        if 0 not in methods:
            self._write(b"\x05\xff")
            self.close()
            return
        self._write(b"\x05\x00")
        self.state = REQUEST

    def _request(self) -> None:
        b = self.buf
        if len(b) < 5:
            return
        ver, cmd, atyp = b[0], b[1], b[3]
        if ver != 5:
            self.close()
            return
        if atyp == 1:
            end = 4 + 4 + 2
        elif atyp == 4:
            end = 4 + 16 + 2
        elif atyp == 3:
            end = 5 + b[4] + 2
        else:
            self._refuse(ADDRESS_TYPE_NOT_SUPPORTED)
            return
        if len(b) < end:
            return
        self.buf = b""
        if cmd != 1:
            self._refuse(COMMAND_NOT_SUPPORTED)
            return
        if atyp != 3:
            self._refuse(NOT_ALLOWED)  # an address: this is not a general SOCKS proxy
            return
        name, port = b[5:end - 2], int.from_bytes(b[end - 2:end], "big")
        if port != 0 or DIGEST.fullmatch(name) is None:
            self._refuse(REFUSED)      # only the hash of a bytestream, port 0 (XEP-0065 §5.3.2)
            return
        self.digest = name.decode()
        if not self.relay.register(self, self.digest):
            self.digest = ""
            self._refuse(REFUSED)
            return
        self.state = WAITING
        self._write(b"\x05\x00\x00\x03" + bytes((len(name),)) + name + b"\x00\x00")

    def _refuse(self, code: int) -> None:
        self._write(bytes((5, code, 0, 1, 0, 0, 0, 0, 0, 0)))
        self.close()

    # -- relay ----------------------------------------------------------------------------------
    def start_relay(self, peer: SocksConnection, requester: str) -> None:
        self.peer = peer
        self.requester = requester
        self.stream_open = True
        self._release_ip()
        self.state = RELAY
        self.last_activity = time.monotonic()
        self._cancel_timer()
        self.timer = asyncio.get_running_loop().call_later(self.relay.cfg.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        self.timer = None
        if self.state != RELAY:
            return
        peer_activity = self.peer.last_activity if self.peer is not None else 0.0
        idle = time.monotonic() - max(self.last_activity, peer_activity)
        if idle >= self.relay.cfg.idle_timeout:
            log.info("proxy65: stream %s idle; closed", self.digest)
            self.close()
        else:
            self.timer = asyncio.get_running_loop().call_later(self.relay.cfg.idle_timeout - idle, self._idle_check)

    def _timed_out(self) -> None:
        self.timer = None
        if self.state != RELAY:
            self.close()

    # -- closing --------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.state_closed()

    def state_closed(self) -> None:
        if self.state == CLOSED:
            return
        if self.stream_open:
            # One count per stream: the side that closes first ends it for both.
            self.relay.stream_ended(self.requester)
            self.stream_open = False
            if self.peer is not None:
                self.peer.stream_open = False
        if self.state == WAITING:
            self.relay.unregister(self)
        self.state = CLOSED
        self._release_ip()
        self._cancel_timer()
        self.relay.connections.discard(self)

    def _release_ip(self) -> None:
        if self.ip:
            self.relay.release(self.ip)
            self.ip = ""

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
