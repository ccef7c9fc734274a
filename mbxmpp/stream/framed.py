"""The c2s stream framed as RFC 7395 (XMPP over WebSocket) frames it: one top-level element per
message, ``<open/>`` and ``<close/>`` of urn:ietf:params:xml:ns:xmpp-framing instead of the
stream header and its end tag, and every message a standalone document (stanzas carry
xmlns='jabber:client', stream features and errors declare the stream prefix).

Sans-IO like C2SStream: the transport calls ``receive_data`` with each text message's bytes and
sends every ``write`` as one message. Everything else (SASL, bind, SM, the stanza path) is the
C2SStream state machine itself.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import StreamError
from ..xml import Element
from ..xml.build import stream_error_bytes
from ..xml.ns import NS_CLIENT, NS_FRAMING
from .c2s import SM_REQUEST_BYTES, ST_HEADER, C2SHost, C2SStream

# Stanzas as the serializer writes them under a jabber:client parent: no xmlns of their own.
# By the byte after '<': the start tag's name.
_STANZA_STARTS = {ord("m"): b"<message", ord("p"): b"<presence", ord("i"): b"<iq"}
_CLIENT_NS = f" xmlns='{NS_CLIENT}'".encode()
_STREAM_PREFIX = b" xmlns:stream='http://etherx.jabber.org/streams'"
_NAME_ENDS = frozenset(b" >/")  # byte values that end a start tag's name


def standalone(data: bytes) -> bytes:
    """One serialised top-level element as a standalone document: a jabber:client stanza gets
    its namespace declared (RFC 7395 §3.3.3); every other element already declares its own.
    (Cached stanza bytes, and the Stream Management queue, are in the TCP form.)"""
    start = _STANZA_STARTS.get(data[1])
    if start is not None:
        n = len(start)
        # the serializer writes an xmlns right after the name, before any attribute
        if (data.startswith(start) and len(data) > n and data[n] in _NAME_ENDS
                and not data.startswith(b" xmlns=", n)):
            return start + _CLIENT_NS + data[n:]
    return data


class FramedC2SStream(C2SStream):
    FRAMED = True
    FEATURES_START = b"<stream:features" + _STREAM_PREFIX + b">"
    CLOSE_TAG = f"<close xmlns='{NS_FRAMING}'/>".encode()

    __slots__ = ()

    def __init__(self, server: C2SHost, send_message: Callable[[bytes], None], **kw: object) -> None:
        """``send_message(data)`` sends ``standalone(data)`` as one message (the transport
        applies it where it frames, saving a call per stanza)."""
        # RFC 7395 §3.9: the WebSocket is the transport's TLS; there is no STARTTLS inside.
        super().__init__(server, send_message, secure=True, **kw)  # type: ignore[arg-type]

    # -- framing hooks ------------------------------------------------------------------------
    def _header_bytes(self, attrs: str) -> bytes:
        return f"<open xmlns='{NS_FRAMING}' {attrs}/>".encode()

    @staticmethod
    def _error_bytes(err: StreamError) -> bytes:
        data = stream_error_bytes(err)
        return b"<stream:error" + _STREAM_PREFIX + data[len(b"<stream:error"):]

    def _write_with_request(self, data: bytes) -> None:
        self.write(data)
        self.write(SM_REQUEST_BYTES)  # its own message

    def _negotiation_element(self, el: Element) -> None:
        if el.ns == NS_FRAMING:
            if el.tag == "open":
                self._accept_open(el.attrs)
                self._check_version(el.attrs)
                self._send_features()
            elif el.tag == "close":
                self.clean_close = True  # the client ended the session on purpose
                self.close()
            else:
                raise StreamError("unsupported-stanza-type", f"unknown framing element {el.tag!r}")
            return
        if self.stage == ST_HEADER:
            # As over TCP, where a first element other than <stream:stream> is refused so: the
            # stream is not open, and what came is not in the namespace that opens it.
            raise StreamError("invalid-namespace", "open the stream with <open/> first")
        super()._negotiation_element(el)
