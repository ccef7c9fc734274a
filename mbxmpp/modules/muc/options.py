"""[muc]: the group chat component's options (read by mbxmpp/options.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ...options import BOOL, DOMAIN_TEMPLATE, INT, SIZE, option


@dataclass(frozen=True, slots=True)
class MUCConfig:
    """group chat component (XEP-0045)"""
    enabled: bool = option(True, BOOL, "false: no group chat")
    domain: str = option("conference.{domain}", DOMAIN_TEMPLATE, "{domain} expands per virtual host")
    archive_by_default: bool = option(
        False, BOOL, "archive new rooms' history (MAM) unless their owner turns it off")
    max_rooms_per_user: int = option(100, INT, "rooms one user may own; creating more is refused")
    max_rooms_joined_per_user: int = option(200, INT, "rooms one user may be in at once", minimum=1)
    max_occupants: int = option(1000, INT, "per room (caps the owner's maxusers setting)", minimum=1)
    message_rate: int = option(5, INT, "messages and presence updates per second per occupant (0: no limit)")
    message_burst: int = option(25, INT, "... allowed at once before the rate applies", minimum=1)
    max_history: int = option(100, INT, "messages a room keeps in memory for history on join")
    max_nick_length: int = option(64, INT, "characters", minimum=1)
    max_message_size: int = option(64 * 1024, SIZE, "a larger message or presence to a room (or an "
                                   "occupant) is refused", minimum=1024)
