"""The XML layer: the stream tokenizer, the shared element tree and its serializer.

``XMLParser`` is the compiled tokenizer (``mbxmpp._ext.tokenizer``) unless the extension is not
built, its expat check fails, or ``MBXMPP_NO_EXTENSIONS`` is set (aiohttp's switch); then it is the
pure-Python twin. At import the compiled serializer, when available, replaces ``py_serialize`` in
``element`` so that ``Element.to_bytes`` uses it.

Import the extensions only through this package (it resolves the import order between
``mbxmpp._ext.tokenizer`` and the modules it imports from here).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable

from . import element as _element
from ._pytokenizer import PyXMLParser, XMLError
from .element import SM_REQUEST, STREAM_END, Element, StreamHeader, py_serialize

NO_EXTENSIONS = os.environ.get("MBXMPP_NO_EXTENSIONS", "") not in ("", "0")


def _compiled(module: str, name: str) -> Any:
    """`name` from a compiled module, or None (not built, or its import-time checks failed)."""
    if NO_EXTENSIONS:
        return None
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):  # AttributeError: a circular import, see serializer.pyx
        return None


CXMLParser: Any = _compiled("mbxmpp._ext.tokenizer", "XMLParser")
c_serialize: Callable[..., bytes] | None = _compiled("mbxmpp._ext.serializer", "serialize")
if c_serialize is not None:
    _element.use_serializer(c_serialize)

serialize: Callable[..., bytes] = c_serialize or py_serialize
XMLParser: Any = CXMLParser or PyXMLParser

__all__ = ["XMLParser", "PyXMLParser", "CXMLParser", "XMLError", "Element", "StreamHeader",
           "SM_REQUEST", "STREAM_END", "serialize", "py_serialize", "c_serialize", "NO_EXTENSIONS"]
