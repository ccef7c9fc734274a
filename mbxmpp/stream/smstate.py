"""Stream Management (XEP-0198) counters and the unacked queue: the pure-Python twin of
``mbxmpp._ext.smstate`` (same behaviour; the compiled one is used when built)."""

from __future__ import annotations

from collections import deque
from typing import Any

MOD = 1 << 32  # h wraps at 2^32 (XEP-0198 §4)


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

    def unacked(self) -> list[Any]:
        return list(self.queue)
