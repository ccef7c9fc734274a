"""[push]: push notifications' options (read by mbxmpp/options.py); here, not in push.py, so
that reading the configuration does not import the module."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import BOOL, DURATION, INT, option


@dataclass(frozen=True, slots=True)
class PushConfig:
    """push notifications (XEP-0357)"""
    include_body: bool = option(False, BOOL, "send message bodies to app servers (third parties)")
    min_interval: float = option(2.0, DURATION, "at most one push per registration per interval")
    publish_timeout: float = option(30.0, DURATION, "wait this long for the app server's reply")
    wake_before: float = option(60.0, DURATION, "wake-up push before a hibernated session expires "
                                "(at most 10% of it)")
    max_registrations: int = option(20, INT, "per account", minimum=1)
