"""[offline]: offline storage's options (read by mbxmpp/options.py); here, not in offline.py,
so that reading the configuration does not import the module."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import INT, SIZE, option


@dataclass(frozen=True, slots=True)
class OfflineConfig:
    """offline message storage (XEP-0160)"""
    max_messages: int = option(1000, INT, "per user; further messages are bounced; 0 = store none")
    max_bytes: int = option(10 * 1024 * 1024, SIZE, "per user; further messages are bounced; 0 = unbounded",
                            minimum=0)
    max_messages_per_sender: int = option(500, INT, "one sender's share, so others still get through; "
                                          "0 = unbounded")
    max_bytes_per_sender: int = option(5 * 1024 * 1024, SIZE, "the same in bytes", minimum=0)
