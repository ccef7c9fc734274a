"""Bound client sessions: the full-JID map, bare JID -> resources, priority selection.

A Session outlives the stream it came on when Stream Management keeps it (hibernation), so
the session and the stream are separate objects: ``session.stream`` is None while hibernated.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from ..util.ids import new_id
from ..xml.element import Element
from . import events as ev

if TYPE_CHECKING:
    from ..jid import JID
    from .hooks import HookBus


class StanzaSink(Protocol):
    def send_stanza(self, stanza: Element) -> None: ...
    def close(self, error: Any = None) -> None: ...


class Session:
    __slots__ = ("jid", "bare", "full", "username", "host", "resource", "stream", "available",
                 "priority", "presence", "interested", "directed", "mod", "created", "closed",
                 "queue", "__weakref__")

    def __init__(self, jid: JID, stream: StanzaSink | None) -> None:
        self.jid = jid
        self.bare: str = jid.bare
        self.full: str = jid.full
        self.username: str = jid.local  # type: ignore[assignment]
        self.host: str = jid.domain
        self.resource: str = jid.resource  # type: ignore[assignment]
        self.stream = stream
        self.available = False      # has sent initial presence (RFC 6121 §4.2)
        self.priority = 0
        self.presence: Element | None = None  # last broadcast presence
        self.interested = False     # requested the roster (RFC 6121 §2.1.1)
        self.directed: set[str] = set()  # JIDs sent directed presence (RFC 6121 §4.6)
        self.mod: dict[Any, Any] = {}  # per-module state: session.mod[ModuleClass]
        self.created = time.time()
        self.closed = False
        self.queue: list[Element] | None = None  # held while hibernated (Stream Management)

    def send(self, stanza: Element) -> None:
        """Write to the client without running delivery filters (replies, pushes)."""
        s = self.stream
        if s is not None:
            s.send_stanza(stanza)
        elif self.queue is not None:
            self.queue.append(stanza)

    def __repr__(self) -> str:
        return f"<Session {self.full}{' available' if self.available else ''}>"


class SessionManager:
    def __init__(self, hooks: HookBus) -> None:
        self.hooks = hooks
        self.full: dict[str, Session] = {}
        self.by_bare: dict[str, dict[str, Session]] = {}
        self.max_resources = 100

    def bind(self, jid_bare: JID, stream: StanzaSink, resource: str | None) -> Session:
        """Bind a resource; a missing or conflicting one gets a server-generated resource."""
        from ..errors import StanzaError
        resources = self.by_bare.get(jid_bare.bare)
        if resources is not None and len(resources) >= self.max_resources:
            raise StanzaError("resource-constraint", "too many sessions for this account")
        if not resource or (resources is not None and resource in resources):
            # RFC 6120 §7.7.2.2: on conflict the server may assign its own resource.
            resource = (resource + "." if resource else "") + new_id(6)
            if len(resource.encode()) > 1023:  # RFC 7622 §3.1: still a valid resourcepart
                resource = new_id(12)
        session = Session(jid_bare.with_resource(resource), stream)
        self.full[session.full] = session
        self.by_bare.setdefault(session.bare, {})[resource] = session
        self.hooks.fire_all(ev.SESSION_BOUND, session)
        return session

    def unbind(self, session: Session) -> None:
        if self.full.get(session.full) is not session:
            return
        del self.full[session.full]
        res = self.by_bare.get(session.bare)
        if res is not None:
            res.pop(session.resource, None)
            if not res:
                del self.by_bare[session.bare]
        session.closed = True

    def get(self, full: str) -> Session | None:
        return self.full.get(full)

    def resources(self, bare: str) -> list[Session]:
        res = self.by_bare.get(bare)
        return list(res.values()) if res else []

    def available(self, bare: str) -> list[Session]:
        res = self.by_bare.get(bare)
        if not res:
            return []
        return [s for s in res.values() if s.available]

    def top_priority(self, bare: str) -> list[Session]:
        """Available resources with the highest non-negative priority (RFC 6121 §8.5.2.1)."""
        res = self.by_bare.get(bare)
        if not res:
            return []
        best: list[Session] = []
        top = -1
        for s in res.values():
            if not s.available or s.priority < 0:
                continue
            if s.priority > top:
                top = s.priority
                best = [s]
            elif s.priority == top:
                best.append(s)
        return best

    def count(self) -> int:
        return len(self.full)
