"""Builders for the replies every layer sends: IQ results, stanza errors, stream errors."""

from __future__ import annotations

from ..errors import StanzaError, StreamError
from .element import Element
from .ns import NS_CLIENT, NS_STANZAS, NS_STREAM_ERRORS, NS_STREAMS


def iq_result(iq: Element, payload: Element | None = None) -> Element:
    attrs = {"type": "result", "id": iq.attrs.get("id", "")}
    frm = iq.attrs.get("from")
    to = iq.attrs.get("to")
    if frm is not None:
        attrs["to"] = frm
    if to is not None:
        attrs["from"] = to
    el = Element("iq", NS_CLIENT, attrs)
    if payload is not None:
        el.children.append(payload)
    return el


def error_element(err: StanzaError) -> Element:
    e = Element("error", NS_CLIENT, {"type": err.type})
    e.children.append(Element(err.condition, NS_STANZAS))
    if err.text:
        t = Element("text", NS_STANZAS, {"xml:lang": "en"})
        t.children.append(err.text)
        e.children.append(t)
    if err.app_condition is not None:
        ns, name = err.app_condition
        e.children.append(Element(name, ns))
    return e


def error_reply(stanza: Element, err: StanzaError, *, include_payload: bool = True) -> Element:
    """The error reply to ``stanza`` (RFC 6120 §8.3.1): to/from swapped, type='error'."""
    attrs = {"type": "error"}
    for k in ("id",):
        v = stanza.attrs.get(k)
        if v is not None:
            attrs[k] = v
    frm = stanza.attrs.get("from")
    to = stanza.attrs.get("to")
    if frm is not None:
        attrs["to"] = frm
    if to is not None:
        attrs["from"] = to
    el = Element(stanza.tag, NS_CLIENT, attrs)
    if include_payload and stanza.tag == "iq":
        # RFC 6120 §8.3.1: the error MAY include the original payload; clients match on it.
        first = stanza.first_child()
        if first is not None:
            el.children.append(first)
    el.children.append(error_element(err))
    return el


def stream_error_bytes(err: StreamError) -> bytes:
    e = Element("error", NS_STREAMS)
    e.children.append(Element(err.condition, NS_STREAM_ERRORS))
    if err.text:
        t = Element("text", NS_STREAM_ERRORS, {"xml:lang": "en"})
        t.children.append(err.text)
        e.children.append(t)
    if getattr(err, "app", None) is not None:
        e.children.append(err.app)  # type: ignore[arg-type]
    # The stream element's prefix is 'stream'; write it prefixed as RFC 6120 examples do.
    inner = b"".join(c.to_bytes(NS_STREAMS) for c in e.elements())
    return b"<stream:error>" + inner + b"</stream:error>"
