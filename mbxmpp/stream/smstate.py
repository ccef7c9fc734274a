"""Stream Management (XEP-0198) counters and the unacked queue: the pure-Python twin of
``mbxmpp._ext.smstate`` (same behaviour; the compiled one is used when built)."""

from __future__ import annotations

from collections import deque
from typing import Any

from ..xml.ns import NS_SM

_ACK_FORMAT = f"<a xmlns='{NS_SM}' h='%d'/>".encode()

MOD = 1 << 32  # h wraps at 2^32 (XEP-0198 §4)

# ack_attr() results
ACK_OK = 0
ACK_INVALID = 1    # 'h' is not an xs:unsignedInt
ACK_TOO_HIGH = 2   # more than was sent: <handled-count-too-high/>


class SMState:
    __slots__ = ("id", "h_in", "h_out", "acked", "queue", "resume", "max", "request_every",
                 "requested", "__weakref__")

    def __init__(self, id: str, resume: bool, max: int, request_every: int = 5) -> None:
        self.id = id
        self.h_in = 0       # stanzas received from the client
        self.h_out = 0      # stanzas sent to the client
        self.acked = 0      # the client's last acknowledged h
        self.queue: deque[Any] = deque()  # sent, not yet acknowledged
        self.resume = resume
        self.max = max
        self.request_every = request_every
        self.requested = False

    def inbound(self) -> None:
        self.h_in = (self.h_in + 1) % MOD

    def outbound(self, stanza: Any) -> bool:
        """Count a stanza sent; True when it is time to request an ack."""
        self.h_out = (self.h_out + 1) % MOD
        q = self.queue
        q.append(stanza)
        if not self.requested and len(q) >= self.request_every:
            self.requested = True
            return True
        return False

    def ack(self, h: int) -> bool:
        """The client handled stanzas up to ``h``; False if that is more than it was sent."""
        n = (h - self.acked) % MOD
        q = self.queue
        if n > len(q):
            return False
        for _ in range(n):
            q.popleft()
        self.acked = h % MOD
        self.requested = False
        return True

    def ack_attr(self, h: Any) -> int:
        """Apply the 'h' of an <a/> or <resume/> as the client wrote it: digits only (int()
        would take '+1', ' 1' or '²'), below 2^32. One of the ACK_* results."""
        if not isinstance(h, str):
            return ACK_INVALID
        digits = h.lstrip("0")
        if not h or not h.isascii() or not h.isdigit() or len(digits) > 10:
            return ACK_INVALID
        v = int(digits or "0")  # int() refuses over 4,300 digits, leading zeros included
        if v >= MOD:
            return ACK_INVALID
        return ACK_OK if self.ack(v) else ACK_TOO_HIGH

    def ack_bytes(self) -> bytes:
        """The <a/> that answers an <r/>: what was received so far."""
        return _ACK_FORMAT % self.h_in

    def unacked(self) -> list[Any]:
        return list(self.queue)
