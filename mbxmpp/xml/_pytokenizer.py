"""The pure-Python XML stream tokenizer: the reference twin of ``mbxmpp._ext.tokenizer``.

Both implementations must yield the same events and refuse the same input with the same
condition; ``tests/unit/test_tokenizer.py`` runs every test against both. One documented
difference: once a stream's ``sm`` is set (Stream Management on), the compiled twin applies a
valid ``<a h/>`` to it itself and reports no event for it, where this one reports the element
for the sm module to apply; the resulting SM state is the same. This one is built on
``xml.parsers.expat`` and is used when the extension is not built or ``MBXMPP_NO_EXTENSIONS=1``.

Behaviour (shared with the compiled tokenizer):
- ``feed(bytes) -> list`` of events in order: ``StreamHeader`` (the root start tag, as soon as it
  is parsed), one ``Element`` per complete depth-1 element (stanza or nonza), ``STREAM_END`` when
  the root closes; an empty ``<r xmlns='urn:xmpp:sm:3'/>`` is always the one shared ``SM_REQUEST``
  (the stream recognises Stream Management's most frequent nonza by identity). Character data
  between stanzas (whitespace keepalives, and any stray text) is dropped; anything after the end of the root is ignored.
- ``framed=True`` (RFC 7395 WebSocket): a synthetic wrapper root is fed at creation, so each
  complete top-level element of a frame is an ``Element`` (``<open/>`` and ``<close/>`` included);
  elements without an ``xmlns`` are in ``jabber:client``. A frame must end outside any element
  and hold at most one element, with nothing but whitespace around it, else ``not-well-formed``;
  whitespace-only frames yield nothing.
  (A frame that ends inside a start tag, e.g. ``<a/><b``, is not detected: the rest of the tag in
  the next frame completes it. No harm: the element is still checked like any other.)
- RFC 6120 §11.1 restrictions: DTDs, comments, processing instructions and entity references
  other than the five predefined ones are ``restricted-xml`` (character references are allowed);
  a DTD is refused as soon as it starts, before an entity it declares can be expanded. An XML
  declaration naming another encoding than UTF-8, or bytes that are not UTF-8, are
  ``unsupported-encoding``. Other parser errors are ``not-well-formed``.
- Limits: ``policy-violation`` for a depth-1 element larger than ``max_stanza_size``, for more
  than ``max_stanza_size`` bytes fed without the parser completing a token (an endless attribute
  value or comment), for an element deeper than ``max_depth`` (the root is depth 0), and for more
  than ``max_attrs`` attributes plus namespace declarations on one element. The stanza size is
  counted from the parsed pieces in UTF-8 bytes, approximating the unprefixed wire form:
  ``2 * len(local name) + 5`` per element, ``len(local name) + len(value) + 4`` per attribute,
  ``len(prefix) + len(uri) + 10`` per namespace declaration, plus character data.
- An error raises ``XMLError`` whose ``.events`` holds the events completed earlier in the same
  ``feed()``; the parser then stays failed and every later ``feed()`` raises again.
- ``reset()`` starts a new stream (after STARTTLS or SASL): a new expat parser, all state cleared.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from xml.parsers import expat

from ..errors import StreamError
from .element import SM_REQUEST, STREAM_END, Element, StreamHeader
from .ns import NS_CLIENT, NS_SERVER, NS_SM, NS_XML

SEP = "\x01"            # namespace separator: a character no XML document can contain
SLICE = 65536           # bytes handed to expat per Parse() call (bounds work between checks)
PROLOG_SLICE = 64       # the same before the root start tag: a DTD is refused before it can be used
DECL_MAX = 1024         # longest XML declaration we wait for
FRAME_WRAPPER = f"<frames xmlns='{NS_CLIENT}'>".encode()

# expat error codes (expat.h enum XML_Error) that mean "a DTD or an entity was involved".
RESTRICTED_CODES = frozenset((
    11,  # UNDEFINED_ENTITY
    12,  # RECURSIVE_ENTITY_REF
    13,  # ASYNC_ENTITY
    15,  # BINARY_ENTITY_REF
    16,  # ATTRIBUTE_EXTERNAL_ENTITY_REF
    21,  # EXTERNAL_ENTITY_HANDLING
    22,  # NOT_STANDALONE
    24,  # ENTITY_DECLARED_IN_PE
    43,  # AMPLIFICATION_LIMIT_BREACH
))
ENCODING_CODES = frozenset((18, 19))  # UNKNOWN_ENCODING, INCORRECT_ENCODING

_WS = (b" ", b"\t", b"\r", b"\n")
_BOM = b"\xef\xbb\xbf"
_DECL_ENCODING = re.compile(rb"""\sencoding\s*=\s*(?:"([^"]*)"|'([^']*)')""")


class XMLError(StreamError):
    """The peer sent XML we refuse; ``events`` were completed before the error in the same feed."""

    def __init__(self, condition: str, text: str | None = None, events: list[Any] | None = None) -> None:
        super().__init__(condition, text)
        self.events = [] if events is None else events


def check_xml_decl(head: bytes) -> Literal[True] | tuple[str, str] | None:
    """Look at the first bytes of a document: None = need more bytes, True = go on,
    (condition, text) = refuse. Only the declared encoding is checked here; expat checks the rest."""
    if len(head) < 3 and _BOM.startswith(head):
        return None
    h = head[3:] if head[:3] == _BOM else head
    if h[:5] != b"<?xml"[:len(h[:5])]:
        return True  # no declaration
    if len(h) < 6:
        return None
    if h[5:6] not in _WS:
        return True  # "<?xml-stylesheet ..." and the like: a PI, refused by the parser
    end = h.find(b"?>")
    if end < 0:
        if len(h) > DECL_MAX:
            return ("not-well-formed", "XML declaration too long")
        return None
    m = _DECL_ENCODING.search(h, 5, end)
    if m is not None:
        raw = m.group(1) if m.group(1) is not None else m.group(2)
        enc = raw.decode("ascii", "replace")
        if enc.lower() != "utf-8":
            return ("unsupported-encoding", f"encoding {enc!r} is not supported, XMPP is UTF-8 only")
    return True


def utf8_prefix(data: bytes) -> tuple[int, bool]:
    """(n, invalid): ``data[:n]`` is valid UTF-8. If n < len(data), either data[n] starts an
    ill-formed sequence (invalid=True) or data[n:] is the start of a valid but incomplete one."""
    if data.isascii():
        return len(data), False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.end == len(data) and e.reason == "unexpected end of data":
            return e.start, False
        return e.start, True
    return len(data), False


def _blen(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode())


# raw expat name -> (tag, ns, attribute key, UTF-8 length of the local name); bounded.
_names: dict[str, tuple[str, str, str, int]] = {}
_NAMES_MAX = 4096


def _name(raw: str) -> tuple[str, str, str, int]:
    e = _names.get(raw)
    if e is None:
        uri, sep, local = raw.rpartition(SEP)
        if not sep:
            uri = ""
        tag = local
        ns = NS_CLIENT if uri == NS_SERVER or uri == NS_CLIENT else uri
        if not uri:
            key = tag
        elif uri == NS_XML:
            key = "xml:" + tag
        else:
            key = "{" + uri + "}" + tag
        e = (tag, ns, key, _blen(tag))
        if len(_names) >= _NAMES_MAX:
            _names.clear()
        _names[raw] = e
    return e


class _Stop(Exception):
    """Raised from a handler to stop expat once a failure is recorded."""


class PyXMLParser:
    """Incremental XMPP stream tokenizer on ``xml.parsers.expat`` (see the module docstring)."""

    __slots__ = ("max_stanza_size", "max_depth", "max_attrs", "framed", "sm", "_p",
                 "_depth", "_cur",
                 "_stack", "_root", "_text", "_size", "_pending", "_progress", "_ndecls",
                 "_decls", "_tail", "_head", "_decl_done", "_ended", "_failure", "_events")

    def __init__(self, max_stanza_size: int = 262144, max_depth: int = 64, max_attrs: int = 64,
                 framed: bool = False) -> None:
        self.max_stanza_size = max_stanza_size
        self.max_depth = max_depth
        self.max_attrs = max_attrs
        self.framed = bool(framed)
        # The stream's SMState once Stream Management is on. The compiled twin then handles the
        # usual spellings of <r/> and <a h/> without expat, and applies a valid <a/> itself
        # (no event). This one has nothing to gain: it reports both, as before.
        self.sm: Any = None
        self._p: Any = None
        self.reset()

    def reset(self) -> None:
        """Start a new stream: a fresh expat parser and cleared state (failures included)."""
        old = self._p
        if old is not None:  # break the parser <-> bound-method cycle at once
            old.StartElementHandler = old.EndElementHandler = old.CharacterDataHandler = None
            old.StartNamespaceDeclHandler = old.CommentHandler = None
            old.ProcessingInstructionHandler = old.StartDoctypeDeclHandler = None
        self._depth = 0
        self._cur: list[Any] | None = None  # children of the innermost open element in a stanza
        self._stack: list[list[Any]] = []  # children lists of its open ancestors (below the stanza)
        self._root: Element | None = None   # the stanza being built
        self._text: list[str] = []          # character data not yet added to _cur
        self._size = 0
        self._pending = 0
        self._progress = False
        self._ndecls = 0
        self._decls: list[tuple[str | None, str]] = []
        self._tail = b""
        self._head = b""
        self._decl_done = self.framed
        self._ended = False
        self._failure: tuple[str, str] | None = None
        self._events: list[Any] = []
        p = expat.ParserCreate("UTF-8", SEP)
        if hasattr(p, "SetReparseDeferralEnabled"):
            p.SetReparseDeferralEnabled(False)
        p.buffer_text = True
        p.buffer_size = 65536
        p.StartElementHandler = self._on_start
        p.EndElementHandler = self._on_end
        p.CharacterDataHandler = self._on_chars
        p.StartNamespaceDeclHandler = self._on_nsdecl
        p.CommentHandler = self._on_comment
        p.ProcessingInstructionHandler = self._on_pi
        p.StartDoctypeDeclHandler = self._on_doctype
        self._p = p
        if self.framed:
            p.Parse(FRAME_WRAPPER, False)

    # -- feeding ------------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[Any]:
        if self._failure is not None:
            raise XMLError(*self._failure)
        if self._ended or not data:
            return []
        if data.__class__ is not bytes:
            data = bytes(data)
        events: list[Any] = []
        self._events = events
        if self._tail:
            data = self._tail + data
            self._tail = b""
        if not self._decl_done:
            head = self._head + data
            res = check_xml_decl(head)
            if res is None:
                self._head = head
                return events
            self._head = b""
            self._decl_done = True
            data = head
            if res is not True:
                self._raise(res[0], res[1], events)
        n, invalid = utf8_prefix(data)
        if n:
            self._parse(data, n, events)
            if self._ended:
                return events
        if n < len(data):
            if invalid:
                self._raise("unsupported-encoding", "invalid UTF-8", events)
            if self.framed:
                self._raise("unsupported-encoding", "incomplete UTF-8 sequence at the end of a frame",
                            events)
            self._tail = data[n:]
        if self.framed:
            if self._depth != 1:
                self._raise("not-well-formed", "a frame must hold one complete element", events)
            if len(events) > 1:
                self._raise("not-well-formed", "a frame must hold only one element", events)
        return events

    def _parse(self, data: bytes, n: int, events: list[Any]) -> None:
        p = self._p
        off = 0
        while off < n:
            size = min(SLICE if self._depth else PROLOG_SLICE, n - off)
            chunk = data if size == len(data) else memoryview(data)[off:off + size]
            self._progress = False
            try:
                p.Parse(chunk, False)
            except _Stop:
                assert self._failure is not None
                raise XMLError(self._failure[0], self._failure[1], events) from None
            except expat.ExpatError as e:
                if not self._ended:
                    self._raise(*_expat_failure(e.code, e.lineno, e.offset), events)
            except Exception as e:  # a bug or MemoryError in a handler: the stream is lost
                self._failure = ("internal-server-error", f"tokenizer: {e!r}")
                raise XMLError(*self._failure, events) from e
            if self._ended:
                return
            if self._progress:
                self._pending = 0
            else:
                self._pending += size
                if self._pending > self.max_stanza_size:
                    self._raise("policy-violation",
                                f"more than {self.max_stanza_size} bytes in one token", events)
            off += size

    def _raise(self, condition: str, text: str, events: list[Any]) -> None:
        self._failure = (condition, text)
        raise XMLError(condition, text, events)

    def _fail(self, condition: str, text: str) -> None:
        self._failure = (condition, text)
        raise _Stop

    # -- expat handlers -----------------------------------------------------------------------
    def _on_start(self, name: str, attrs: dict[str, str]) -> None:
        if self._ended:
            return
        self._progress = True
        level = self._depth
        if level > self.max_depth:
            self._fail("policy-violation", f"elements nested deeper than {self.max_depth}")
        if len(attrs) + self._ndecls > self.max_attrs:
            self._fail("policy-violation", f"more than {self.max_attrs} attributes on an element")
        tag, ns, _, nlen = _name(name)
        if level >= 1:
            size = self._size + 2 * nlen + 5
            for k, v in attrs.items():
                size += _name(k)[3] + _blen(v) + 4
            self._size = size
            if size > self.max_stanza_size:
                self._fail("policy-violation", f"stanza larger than {self.max_stanza_size} bytes")
        if attrs:
            attrs = {_name(k)[2]: v for k, v in attrs.items()}
        self._ndecls = 0
        if level == 0:
            self._depth = 1
            decls = self._decls
            self._decls = []
            if self.framed:
                return
            uri = name.rpartition(SEP)[0]
            default_ns = prefix = ""
            for pfx, u in decls:
                if pfx is None:
                    default_ns = u
                elif u == uri and not prefix:
                    prefix = pfx
            self._events.append(StreamHeader(tag, ns, attrs, default_ns, prefix))
            return
        children: list[Any] = []
        el = Element(tag, ns, attrs, children)
        if level == 1:
            self._root = el
        else:
            cur = self._cur
            if self._text:
                cur.append("".join(self._text))  # type: ignore[union-attr]
                self._text = []
            cur.append(el)  # type: ignore[union-attr]
            self._stack.append(cur)  # type: ignore[arg-type]
        self._cur = children
        self._depth = level + 1

    def _on_end(self, name: str) -> None:
        if self._ended:
            return
        self._progress = True
        level = self._depth = self._depth - 1
        if level >= 1:
            if self._text:
                self._cur.append("".join(self._text))  # type: ignore[union-attr]
                self._text = []
            if level == 1:
                root = self._root
                if (root.tag == "r" and root.ns == NS_SM  # type: ignore[union-attr]
                        and not root.attrs and not root.children):  # type: ignore[union-attr]
                    root = SM_REQUEST
                self._events.append(root)
                self._root = self._cur = None
                self._size = 0
            else:
                self._cur = self._stack.pop()
        elif self.framed:
            self._fail("not-well-formed", "end tag without a start tag in the frame")
        else:
            self._events.append(STREAM_END)
            self._ended = True

    def _on_chars(self, data: str) -> None:
        if self._ended:
            return
        self._progress = True
        if self._depth < 2:
            if self.framed and data.strip(" \t\r\n"):
                self._fail("not-well-formed", "text outside the element of a frame")
            return
        self._size += _blen(data)
        if self._size > self.max_stanza_size:
            self._fail("policy-violation", f"stanza larger than {self.max_stanza_size} bytes")
        self._text.append(data)

    def _on_nsdecl(self, prefix: str | None, uri: str | None) -> None:
        if self._ended:
            return
        self._progress = True
        self._ndecls += 1
        if self._ndecls > self.max_attrs:
            self._fail("policy-violation", f"more than {self.max_attrs} attributes on an element")
        if self._depth == 0:
            self._decls.append((prefix, uri or ""))
        else:
            self._size += (_blen(prefix) if prefix else 0) + (_blen(uri) if uri else 0) + 10
            if self._size > self.max_stanza_size:
                self._fail("policy-violation", f"stanza larger than {self.max_stanza_size} bytes")

    def _on_comment(self, data: str) -> None:
        if not self._ended:
            self._fail("restricted-xml", "comments are not allowed")

    def _on_pi(self, target: str, data: str) -> None:
        if not self._ended:
            self._fail("restricted-xml", "processing instructions are not allowed")

    def _on_doctype(self, name: str, sysid: str | None, pubid: str | None, internal: int) -> None:
        if not self._ended:
            self._fail("restricted-xml", "DTDs are not allowed")


def _expat_failure(code: int, line: int, column: int) -> tuple[str, str]:
    """Map an expat error to (condition, text); shared by both tokenizers."""
    if code in RESTRICTED_CODES:
        cond = "restricted-xml"
    elif code in ENCODING_CODES:
        cond = "unsupported-encoding"
    else:
        cond = "not-well-formed"
    return cond, f"{expat.ErrorString(code)} (line {line}, column {column})"
