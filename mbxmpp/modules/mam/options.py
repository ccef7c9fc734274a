"""[mam]: the message archive's options (read by mbxmpp/options.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ...options import DURATION, INT, SIZE, option


@dataclass(frozen=True, slots=True)
class MAMConfig:
    """message archive (XEP-0313)"""
    retention: float = option(7 * 86400.0, DURATION, "older messages are never shown again, to the second",
                              minimum=1)
    sweep_interval: float = option(60.0, DURATION, "how often their space is reclaimed", minimum=1)
    quota_window: float = option(
        86400.0, DURATION, "the quotas start from zero each window (a UTC day by default)", minimum=1,
        before="What others may put into one account's archive, and what it keeps of its own sent "
               "messages, per quota_window (0 = unbounded). Beyond it the message is refused, not "
               "delivered nor stored, and the sender gets <resource-constraint/>. Bytes do the "
               "protecting: a busy user receives a few thousand messages a day of 1-5 KB (files go by "
               "upload), a load test's pair at 1,000 messages/s of ~300 bytes sends about 180 MB in 10 "
               "minutes; the counts are beyond any load test. Worst case per account: the retention's "
               "days x (from others + own); per attacking account: its days x max_bytes_to_others, "
               "however many accounts it writes to.")
    max_messages_from_others: int = option(8_000_000, INT, "from all other senders together into one account")
    max_bytes_from_others: int = option(1 << 30, SIZE, "their bytes", minimum=0)
    max_messages_per_sender: int = option(2_000_000, INT, "from one sender into one account")
    max_bytes_per_sender: int = option(256 << 20, SIZE, "their bytes", minimum=0)
    max_messages_own: int = option(8_000_000, INT, "an account's own sent messages in its archive")
    max_bytes_own: int = option(1 << 30, SIZE, "their bytes", minimum=0)
    max_bytes_to_others: int = option(1 << 30, SIZE, "from one sender into all other accounts together",
                                      minimum=0)
