"""[sm]: stream management's options (read by mbxmpp/options.py); here, not in sm.py, so that
reading the configuration does not import the module."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import DURATION, INT, STR, option


MAX_ACK_DELAY = 1.0  # [sm] ack_delay: XEP-0198 §4, an answer is sent as soon as possible


@dataclass(frozen=True, slots=True)
class SMConfig:
    """stream management (XEP-0198)"""
    resume_timeout: float = option(300.0, DURATION, "how long a dropped session can be resumed")
    push_resume_timeout: float = option(72 * 3600.0, DURATION,
                                        "same, for sessions that registered for push (XEP-0357)")
    max_unacked: int = option(1000, INT, "unacknowledged stanzas queued per session before it is closed",
                              minimum=1)
    request_every: int = option(10, INT, "ask for an ack (<r/>) once this many stanzas are unacked", minimum=1)
    # XEP-0198 §4 allows holding an ack until a timeout; 0: sent in the same loop iteration
    ack_delay: float = option(0.05, DURATION, 'an <a/> alone waits up to this long to share a write; "0s": at once',
                              minimum=0.0, maximum=MAX_ACK_DELAY)
    location: str | None = option(None, STR, '"host:port" clients should reconnect to for resumption '
                                  '(XEP-0198 §5); "" = none', allow_empty=True)
