"""Feeding received bytes to a stream's parser: shared by the s2s and component streams (the c2s
stream keeps its own copy on its hot path, with the WebSocket framing rule)."""

from __future__ import annotations

from typing import Any, Callable

from ..xml import XMLError, XMLParser


def feed_events(parser: XMLParser, data: bytes, handle: Callable[[Any], None],
                stopped: Callable[[], bool]) -> XMLError | None:
    """Hand each parsed event to `handle` until `stopped()` says the rest must be dropped (the
    stream closed, or TLS was asked for: what follows <starttls/> is plaintext injection).
    A well-formedness error is returned after the events before it were handled, for the
    caller to fail the stream with, unless the stream stopped first."""
    try:
        events = parser.feed(data)
    except XMLError as e:
        for event in e.events:
            handle(event)
            if stopped():
                return None
        return e
    for event in events:
        handle(event)
        if stopped():
            return None
    return None
