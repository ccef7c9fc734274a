"""Discussion history sent on join (XEP-0045 §7.2.15, §7.2.16), kept in memory per room.

Each entry is the groupchat message as the room broadcast it (``from`` = occupant JID, with the
room's stanza-id and occupant-id), without ``to``; the copy sent on join gets the XEP-0203 delay
from the room.
"""

from __future__ import annotations

import time
from collections import deque

from ...errors import StanzaError
from ...xml.element import Element
from ...xml.ns import NS_DELAY
from ..mam.query import parse_datetime, stamp


class HistoryRequest:
    """The ``<history/>`` of a join: None means no limit of that kind."""

    __slots__ = ("maxchars", "maxstanzas", "seconds", "since")

    def __init__(self, el: Element | None) -> None:
        self.maxchars = self.maxstanzas = self.seconds = None
        self.since: float | None = None
        if el is None:
            return
        for attr in ("maxchars", "maxstanzas", "seconds"):
            v = el.get(attr)
            if v is not None:
                v = v.strip()
                if not (v.isascii() and v.isdigit()):
                    raise StanzaError("bad-request", f"history {attr} must be a non-negative integer")
                setattr(self, attr, int(v))
        since = el.get("since")
        if since is not None:
            self.since = parse_datetime(since)


class Entry:
    __slots__ = ("when", "stanza", "size", "id")

    def __init__(self, when: float, stanza: Element, id: str | None) -> None:
        self.when = when
        self.stanza = stanza
        self.size = len(stanza.to_bytes())
        self.id = id


class History:
    def __init__(self, maxlen: int) -> None:
        self.entries: deque[Entry] = deque(maxlen=max(maxlen, 0) or None)
        self.maxlen = maxlen

    def add(self, stanza: Element, id: str | None, when: float | None = None) -> None:
        if self.maxlen <= 0:
            return
        self.entries.append(Entry(time.time() if when is None else when, stanza, id))

    def forget(self, id: str) -> Entry | None:
        """Drop the entry with this stanza-id (XEP-0425 moderation); returns it."""
        for e in self.entries:
            if e.id == id:
                self.entries.remove(e)
                return e
        return None

    def find(self, id: str) -> Entry | None:
        for e in self.entries:
            if e.id == id:
                return e
        return None

    def select(self, req: HistoryRequest, room_max: int, now: float | None = None) -> list[Entry]:
        """The newest entries that satisfy every limit of the request and the room's maximum,
        oldest first (§7.2.15: the limits combine)."""
        limit = room_max if req.maxstanzas is None else min(req.maxstanzas, room_max)
        if limit <= 0 or req.maxchars == 0:
            return []
        now = time.time() if now is None else now
        oldest = None if req.seconds is None else now - req.seconds
        if req.since is not None:
            oldest = req.since if oldest is None else max(oldest, req.since)
        out: list[Entry] = []
        chars = 0
        for e in reversed(self.entries):
            if len(out) >= limit or (oldest is not None and e.when < oldest):
                break
            if req.maxchars is not None:
                chars += e.size
                if chars > req.maxchars:
                    break
            out.append(e)
        out.reverse()
        return out


def delayed(e: Entry, room: str, to: str) -> Element:
    """The copy of an entry sent on join: ``to`` the joining session, delay from the room."""
    st = e.stanza
    attrs = dict(st.attrs)
    attrs["to"] = to
    el = Element(st.tag, st.ns, attrs, list(st.children))
    el.add("delay", NS_DELAY, {"from": room, "stamp": stamp(e.when)})
    return el


__all__ = ["History", "HistoryRequest", "Entry", "delayed"]
