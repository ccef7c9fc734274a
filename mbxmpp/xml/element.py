"""The element tree every layer shares: compact, slotted, mixed content.

Conventions (the tokenizer, the serializer and every module rely on them):
- ``tag`` is the local name, ``ns`` the namespace URI ("" for none).
- The stream's content namespace (``jabber:client`` on c2s, ``jabber:server`` on s2s) is
  normalised to ``NS_CLIENT`` by the tokenizer, so modules never care which stream a stanza came on.
- ``attrs`` maps plain names to values; ``xml:lang`` is kept as ``"xml:lang"``, and any other
  namespaced attribute as ``"{ns}local"``. ``xmlns`` declarations are not attributes.
- ``children`` holds ``Element`` and ``str`` items in document order.
- ``_bytes`` caches the serialised form for the c2s content namespace; every mutator clears it.
"""

from __future__ import annotations

from typing import Iterator

from .ns import NS_CLIENT, NS_SM


class Element:
    __slots__ = ("tag", "ns", "attrs", "children", "_bytes")

    def __init__(self, tag: str, ns: str = NS_CLIENT, attrs: dict[str, str] | None = None,
                 children: list | None = None) -> None:
        self.tag = tag
        self.ns = ns
        self.attrs = {} if attrs is None else attrs
        self.children = [] if children is None else children
        self._bytes: bytes | None = None

    # -- attributes -------------------------------------------------------------------------
    def get(self, key: str, default: str | None = None) -> str | None:
        return self.attrs.get(key, default)

    def set(self, key: str, value: str | None) -> None:
        """Set an attribute; ``None`` removes it."""
        self._bytes = None
        if value is None:
            self.attrs.pop(key, None)
        else:
            self.attrs[key] = value

    # -- children ---------------------------------------------------------------------------
    def elements(self) -> Iterator[Element]:
        for c in self.children:
            if c.__class__ is not str:
                yield c

    def first_child(self) -> Element | None:
        for c in self.children:
            if c.__class__ is not str:
                return c
        return None

    def find(self, tag: str, ns: str | None = None) -> Element | None:
        """The first child element with this name, in ``ns`` (default: this element's ns)."""
        if ns is None:
            ns = self.ns
        for c in self.children:
            if c.__class__ is not str and c.tag == tag and c.ns == ns:
                return c
        return None

    def find_ns(self, ns: str) -> Element | None:
        """The first child element in namespace ``ns``, whatever its name."""
        for c in self.children:
            if c.__class__ is not str and c.ns == ns:
                return c
        return None

    def findall(self, tag: str | None = None, ns: str | None = None) -> list[Element]:
        if ns is None:
            ns = self.ns
        return [c for c in self.children
                if c.__class__ is not str and c.ns == ns and (tag is None or c.tag == tag)]

    def findtext(self, tag: str, ns: str | None = None) -> str | None:
        el = self.find(tag, ns)
        return None if el is None else el.text

    @property
    def text(self) -> str:
        """The concatenated character data directly inside this element."""
        return "".join(c for c in self.children if c.__class__ is str)

    @text.setter
    def text(self, value: str | None) -> None:
        self._bytes = None
        self.children = [c for c in self.children if c.__class__ is not str]
        if value:
            self.children.insert(0, value)

    def append(self, child: Element | str) -> Element | str:
        self._bytes = None
        self.children.append(child)
        return child

    def remove(self, child: Element) -> None:
        self._bytes = None
        self.children.remove(child)

    def add(self, tag: str, ns: str | None = None, attrs: dict[str, str] | None = None,
            text: str | None = None) -> Element:
        """Append and return a new child element (``ns`` defaults to this element's)."""
        el = Element(tag, self.ns if ns is None else ns, attrs)
        if text:
            el.children.append(text)
        self._bytes = None
        self.children.append(el)
        return el

    def copy(self) -> Element:
        el = Element(self.tag, self.ns, dict(self.attrs),
                     [c if c.__class__ is str else c.copy() for c in self.children])
        el._bytes = self._bytes
        return el

    def clear_cache(self) -> None:
        """Call after changing ``attrs``/``children`` directly (the mutators do it themselves)."""
        self._bytes = None

    # -- output -----------------------------------------------------------------------------
    def to_bytes(self, parent_ns: str = NS_CLIENT) -> bytes:
        """Serialise; the ``xmlns`` is written only where it differs from ``parent_ns``."""
        if parent_ns is NS_CLIENT or parent_ns == NS_CLIENT:
            b = self._bytes
            if b is None:
                b = self._bytes = serialize(self, NS_CLIENT)
            return b
        return serialize(self, parent_ns)

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def __str__(self) -> str:
        return self.to_bytes().decode()

    def __repr__(self) -> str:
        s = str(self)
        return f"<Element {s[:200]}{'...' if len(s) > 200 else ''}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Element):
            return NotImplemented
        return (self.tag == other.tag and self.ns == other.ns and self.attrs == other.attrs
                and self.children == other.children)

    __hash__ = None  # type: ignore[assignment]


class StreamHeader:
    """The opening ``<stream:stream>`` (or RFC 7395 ``<open/>``) with its attributes."""

    __slots__ = ("tag", "ns", "attrs", "default_ns", "prefix")

    def __init__(self, tag: str, ns: str, attrs: dict[str, str], default_ns: str, prefix: str) -> None:
        self.tag = tag
        self.ns = ns
        self.attrs = attrs
        self.default_ns = default_ns  # the content namespace declared (jabber:client / jabber:server)
        self.prefix = prefix          # the prefix used for the stream element ("stream" usually)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.attrs.get(key, default)

    def __repr__(self) -> str:
        return f"<StreamHeader {self.prefix}:{self.tag} ns={self.ns!r} default_ns={self.default_ns!r} {self.attrs!r}>"


class _StreamEnd:
    __slots__ = ()

    def __repr__(self) -> str:
        return "STREAM_END"


STREAM_END = _StreamEnd()  # the peer sent ``</stream:stream>``

# A Stream Management request (XEP-0198 ``<r/>``, no attributes, no content) as both tokenizers
# report it: one shared Element, which nobody may modify, so that the stream can recognise the
# most frequent nonza by identity.
SM_REQUEST = Element("r", NS_SM)


# The pure-Python serializer; the compiled one in mbxmpp._ext.serializer replaces it when built.
def _escape_text(s: str) -> str:
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    return s


def _escape_attr(s: str) -> str:
    s = _escape_text(s)
    if "'" in s:
        s = s.replace("'", "&apos;")
    if '"' in s:
        s = s.replace('"', "&quot;")
    if "\n" in s or "\r" in s or "\t" in s:
        s = s.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    return s


def _serialize_into(el: Element, parent_ns: str, out: list[str]) -> None:
    out.append("<")
    out.append(el.tag)
    if el.ns != parent_ns:
        out.append(" xmlns='")
        out.append(_escape_attr(el.ns))
        out.append("'")
    n = 0
    for k, v in el.attrs.items():
        if k[0] == "{":
            ns, _, local = k[1:].partition("}")
            n += 1
            out.append(f" xmlns:a{n}='{_escape_attr(ns)}' a{n}:{local}='{_escape_attr(v)}'")
        else:
            out.append(f" {k}='{_escape_attr(v)}'")
    if not el.children:
        out.append("/>")
        return
    out.append(">")
    ns = el.ns
    client = ns == NS_CLIENT
    for c in el.children:
        if c.__class__ is str:
            out.append(_escape_text(c))
            continue
        if c.__class__ is Element:
            # A child's cached ``_bytes`` (its serialisation under a jabber:client parent) is what
            # it serialises to here when the parent is in jabber:client, or when its own xmlns is
            # written either way (ns neither jabber:client nor the parent's). Same rule as the
            # compiled serializer.
            b = c._bytes
            if b is not None and b.__class__ is bytes and (
                    client or (c.ns != NS_CLIENT and c.ns != ns)):
                out.append(b.decode())
                continue
        _serialize_into(c, ns, out)
    out.append("</")
    out.append(el.tag)
    out.append(">")


def py_serialize(el: Element, parent_ns: str = NS_CLIENT) -> bytes:
    out: list[str] = []
    _serialize_into(el, parent_ns, out)
    return "".join(out).encode()


serialize = py_serialize


def use_serializer(fn) -> None:  # type: ignore[no-untyped-def]
    """Install the compiled serializer (called by mbxmpp.xml at import)."""
    global serialize
    serialize = fn
