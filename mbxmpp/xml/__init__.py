"""The XML layer: the stream tokenizer, the shared element tree and its serializer.

``XMLParser`` is the compiled tokenizer (``mbxmpp._ext.tokenizer``) unless the extension is not
built, its expat check fails, or ``MBXMPP_NO_EXTENSIONS`` is set (aiohttp's switch); then it is the
pure-Python twin. At import the compiled serializer, when available, replaces ``py_serialize`` in
``element`` so that ``Element.to_bytes`` uses it.

Import the extensions only through this package (it resolves the import order between
``mbxmpp._ext.tokenizer`` and the modules it imports from here).
"""

from __future__ import annotations

import os
from typing import Any, Callable

from . import element as _element
from ._pytokenizer import PyXMLParser, XMLError
from .element import STREAM_END, Element, StreamHeader, py_serialize

NO_EXTENSIONS = os.environ.get("MBXMPP_NO_EXTENSIONS", "") not in ("", "0")

CXMLParser: Any = None
c_serialize: Callable[..., bytes] | None = None
if not NO_EXTENSIONS:
    try:
        from mbxmpp._ext.tokenizer import XMLParser as CXMLParser
    except ImportError:
        CXMLParser = None
    try:
        from mbxmpp._ext.serializer import serialize as c_serialize
    except ImportError:
        c_serialize = None

if c_serialize is not None:
    _element.use_serializer(c_serialize)

serialize: Callable[..., bytes] = c_serialize or py_serialize
XMLParser: Any = CXMLParser or PyXMLParser

__all__ = ["XMLParser", "PyXMLParser", "CXMLParser", "XMLError", "Element", "StreamHeader",
           "STREAM_END", "serialize", "py_serialize", "c_serialize"]
