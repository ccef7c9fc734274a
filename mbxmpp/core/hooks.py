"""HookBus: named events, integer priorities, stop on the first handler that returns non-None.

Handlers are kept as a precomputed tuple per event, rebuilt only when handlers change
(Prosody's util/events.lua), so firing is a flat loop and an event without handlers is one
dict lookup.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)

Handler = Callable[[Any], Any]


class HookBus:
    __slots__ = ("_handlers", "_chains")

    def __init__(self) -> None:
        self._handlers: dict[str, list[tuple[int, int, Handler]]] = {}
        self._chains: dict[str, tuple[Handler, ...]] = {}

    def add(self, event: str, handler: Handler, priority: int = 0) -> None:
        lst = self._handlers.setdefault(event, [])
        lst.append((priority, len(lst), handler))
        # Higher priority first; equal priorities keep registration order.
        lst.sort(key=lambda t: (-t[0], t[1]))
        self._chains[event] = tuple(h for _, _, h in lst)

    def remove(self, event: str, handler: Handler) -> None:
        lst = [t for t in self._handlers.get(event, []) if t[2] != handler]
        self._handlers[event] = lst
        self._chains[event] = tuple(h for _, _, h in lst)
        if not lst:
            del self._chains[event]

    def has(self, event: str) -> bool:
        return event in self._chains

    def fire(self, event: str, arg: Any) -> Any:
        """Run the handlers in priority order; return the first non-None result."""
        chain = self._chains.get(event)
        if chain is None:
            return None
        for h in chain:
            r = h(arg)
            if r is not None:
                return r
        return None

    def fire_all(self, event: str, arg: Any) -> None:
        """Run every handler whatever they return; one failing handler does not stop the others."""
        chain = self._chains.get(event)
        if chain is None:
            return
        for h in chain:
            try:
                h(arg)
            except Exception:
                log.exception("handler %r for %s failed", h, event)
