"""Occupants (XEP-0045 §5.1): one per nickname, with every session (full JID) joined under it.

A nickname is compared through ``nick_key``: PRECIS NicknameCaseMapped (RFC 8266: spaces trimmed
and collapsed, width and compatibility mapped, case folded) then a skeleton of common
Cyrillic/Greek look-alikes, so that "Alice", "alice ", "ａｌｉｃｅ" and "аlice" (Cyrillic а) are one
nickname and a newcomer cannot impersonate an occupant (XEP-0045 §15.4).
"""

from __future__ import annotations

import time

import precis_i18n

from ...errors import StanzaError
from ...xml.element import Element

_NICKNAME = precis_i18n.get_profile("NicknameCaseMapped")

# Letters that render like Latin ones (Unicode confusables.txt, the frequent cases).
_SKELETON = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i",
    "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ѵ": "v",
    "ɡ": "g", "ı": "i", "ℓ": "l",
})


def nick_key(nick: str) -> str:
    """The comparison key of a nickname; not-acceptable if it is not a nickname at all."""
    try:
        folded = _NICKNAME.enforce(nick)
    except UnicodeError as e:
        raise StanzaError("not-acceptable", f"invalid nickname: {getattr(e, 'reason', e)}") from e
    return folded.translate(_SKELETON)


class Occupant:
    __slots__ = ("nick", "key", "bare", "sessions", "role", "occupant_id", "joined", "presence",
                 "tokens", "last_refill", "voice_requested")

    def __init__(self, nick: str, key: str, bare: str, role: str, occupant_id: str) -> None:
        self.nick = nick
        self.key = key
        self.bare = bare                        # the real bare JID
        self.sessions: dict[str, Element] = {}  # full JID -> its last presence (as sent)
        self.role = role
        self.occupant_id = occupant_id          # XEP-0421
        self.joined = time.time()
        self.presence: Element | None = None    # what the room shows (the latest session's)
        self.tokens = float("inf")              # rate limit bucket: starts full
        self.last_refill = time.monotonic()
        self.voice_requested = 0.0

    def allow(self, rate: float, burst: int) -> bool:
        """A token bucket: ``rate`` stanzas per second, ``burst`` at once."""
        if rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(float(burst), self.tokens + (now - self.last_refill) * rate)
        self.last_refill = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def __repr__(self) -> str:
        return f"<Occupant {self.nick} {self.bare} {self.role} {len(self.sessions)} session(s)>"
