"""Admission of not-yet-authenticated connections: who may hold a pre-auth slot, and whose slot
is taken back when there are too many. Transport-neutral: the TCP connection (and a WebSocket
or BOSH session) asks for a ``Ticket`` when it starts, reports negotiation progress on it, and
gives it back when it authenticates or ends.

Many real users share one address (carrier-grade NAT, offices, universities), so an address is
never refused for the number of its connections that are getting somewhere. The limits are:

- a token bucket per address for new connections (``burst``, refilled at ``rate`` per second);
  a connection that authenticates gives its token back, so a login storm of real users costs
  nothing, while connections that never authenticate run the bucket dry;
- ``max_per_address``: beyond that many pre-auth connections from one address, each newcomer
  ends the address's connection that has gone longest without progress, if that one has
  stalled (no progress for ``stall_after`` seconds);
- ``max_total`` over all addresses (memory): at the bound, the newcomer ends the connection
  that has gone longest without progress anywhere, if it has stalled, or is refused;
- ``max_bytes``: what one connection may send before it authenticates (the parser's buffer of
  a pre-auth connection is bounded by it, not by the far larger stanza size limit).

Progress is a negotiation step (a stream header, TLS done, a SASL step), not bytes: a client
that trickles a byte at a time never makes any.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable

from ..errors import StreamError

if TYPE_CHECKING:
    from ..config import C2SConfig

# A legitimate client sends less than 2 KiB before it authenticates (headers, <starttls/>,
# a SASL exchange).
MAX_PREAUTH_BYTES = 64 * 1024


def address_key(ip: str) -> str:
    """The unit one budget applies to: an IPv4 address, or the /64 an IPv6 address is in (a
    single host usually has a whole /64 to choose from)."""
    if ":" not in ip:
        return ip
    try:
        addr = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(ipaddress.IPv6Network((addr, 64), strict=False))


class _Address:
    __slots__ = ("stamp", "tickets", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        # least recently progressed first
        self.tickets: OrderedDict[Ticket, None] = OrderedDict()
        self.tokens = tokens
        self.stamp = now


class Ticket:
    """One pre-auth connection's slot."""

    __slots__ = ("_address", "_admission", "_evict", "key", "last_progress", "received")

    def __init__(self, admission: PreauthAdmission, address: _Address, key: str, now: float,
                 evict: Callable[[StreamError], None]) -> None:
        self._admission: PreauthAdmission | None = admission
        self._address = address
        self.key = key
        self.last_progress = now
        self.received = 0
        self._evict = evict

    def progress(self) -> None:
        """A negotiation step was made: the connection is not stalled."""
        adm = self._admission
        if adm is not None:
            self.last_progress = adm.clock()
            self._address.tickets.move_to_end(self)
            adm._tickets.move_to_end(self)

    def take_bytes(self, n: int) -> bool:
        """Count ``n`` bytes received before authentication; False once over the budget."""
        adm = self._admission
        if adm is None:
            return True
        self.received += n
        return self.received <= adm.max_bytes

    def authenticated(self) -> None:
        """The connection authenticated: its slot and its token are given back."""
        adm = self._admission
        if adm is not None:
            self.release()
            adm._refill(self._address, adm.clock())
            self._address.tokens = min(float(adm.burst), self._address.tokens + 1.0)

    def release(self) -> None:
        """The connection ended (or authenticated): the slot is free. Idempotent."""
        adm = self._admission
        if adm is None:
            return
        self._admission = None
        adm._tickets.pop(self, None)
        address = self._address
        address.tickets.pop(self, None)
        if not address.tickets:
            adm._idle[self.key] = adm.clock()
            adm._idle.move_to_end(self.key)


class PreauthAdmission:
    def __init__(self, *, max_total: int = 5000, max_per_address: int = 10,
                 stall_after: float = 10.0, burst: int = 300, rate: float = 30.0,
                 max_bytes: int = MAX_PREAUTH_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.stall_after = stall_after
        self.burst = burst
        self.rate = rate
        self.max_bytes = max_bytes
        self.clock = clock
        self._addresses: dict[str, _Address] = {}
        self._tickets: OrderedDict[Ticket, None] = OrderedDict()  # least recently progressed first
        # addresses without a connection, by when their last one ended: their record goes once
        # their bucket has surely refilled
        self._idle: OrderedDict[str, float] = OrderedDict()

    @classmethod
    def from_config(cls, c2s: C2SConfig) -> PreauthAdmission:
        return cls(max_total=c2s.max_unauthenticated, max_per_address=c2s.max_unauthenticated_per_ip,
                   stall_after=c2s.stalled_after, burst=c2s.connection_burst_per_ip,
                   rate=c2s.connection_rate_per_ip)

    def admit(self, ip: str, evict: Callable[[StreamError], None]) -> Ticket:
        """A slot for a new connection from ``ip``, or the StreamError to refuse it with.
        ``evict(error)`` is how the admission ends this connection later if it must make room
        (the ticket is released by then); it may be called from a later ``admit``."""
        now = self.clock()
        self._forget_idle(now)
        key = address_key(ip)
        address = self._addresses.get(key)
        if address is None:
            address = self._addresses[key] = _Address(float(self.burst), now)
        else:
            self._idle.pop(key, None)
            self._refill(address, now)
        if address.tokens < 1.0:
            if not address.tickets:
                self._idle[key] = now
            raise StreamError("policy-violation", "too many new connections from your address")
        if len(address.tickets) >= self.max_per_address:
            self._evict_stalled(address.tickets, now, StreamError(
                "policy-violation", "too many unauthenticated connections from your address, "
                                    "and this one made no progress"))
        if len(self._tickets) >= self.max_total and not self._evict_stalled(
                self._tickets, now, StreamError("resource-constraint", "too many unauthenticated "
                                                "connections, and this one made no progress")):
            if not address.tickets:
                self._idle[key] = now
            raise StreamError("resource-constraint", "too many unauthenticated connections")
        address.tokens -= 1.0
        ticket = Ticket(self, address, key, now, evict)
        address.tickets[ticket] = None
        self._tickets[ticket] = None
        return ticket

    def count(self, ip: str | None = None) -> int:
        """Pre-auth connections in all (or from ``ip``'s address)."""
        if ip is None:
            return len(self._tickets)
        address = self._addresses.get(address_key(ip))
        return len(address.tickets) if address is not None else 0

    def _evict_stalled(self, tickets: OrderedDict[Ticket, None], now: float,
                       error: StreamError) -> bool:
        oldest = next(iter(tickets), None)
        if oldest is None or now - oldest.last_progress < self.stall_after:
            return False
        evict = oldest._evict
        oldest.release()
        evict(error)
        return True

    def _refill(self, address: _Address, now: float) -> None:
        if address.tokens < self.burst:
            address.tokens = min(float(self.burst), address.tokens + (now - address.stamp) * self.rate)
        address.stamp = now

    def _forget_idle(self, now: float) -> None:
        # After burst / rate seconds without a connection, a bucket is full again: the record
        # is what a new one would be. This keeps the table as small as the recent addresses.
        horizon = now - self.burst / self.rate
        idle = self._idle
        while idle:
            key, since = next(iter(idle.items()))
            if since > horizon:
                break
            del idle[key]
            address = self._addresses.get(key)
            if address is not None and not address.tickets:
                del self._addresses[key]
