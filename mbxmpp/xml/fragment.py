"""Parse back one element stored with ``Element.to_bytes()`` (offline messages, PEP items...)."""

from __future__ import annotations

from . import XMLParser
from .element import SM_REQUEST, Element
from .ns import NS_CLIENT, NS_STREAMS

_HEADER = f"<stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'>".encode()


def parse_fragment(data: bytes) -> Element:
    p = XMLParser(max_stanza_size=max(262144, 2 * len(data)))
    p.feed(_HEADER)
    for e in p.feed(data):
        if e is SM_REQUEST:
            return Element(SM_REQUEST.tag, SM_REQUEST.ns)  # the stream's shared event: a copy
        if isinstance(e, Element):
            return e
    raise ValueError("no complete element in stored data")
