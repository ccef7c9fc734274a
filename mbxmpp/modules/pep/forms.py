"""Node configuration for PEP: the fields we support, their defaults, parsing of XEP-0004 forms,
and the XEP-0060 §7.1.5 / XEP-0223 publish-options precondition check.

A node's configuration is a plain dict keyed by the field var without the ``pubsub#`` prefix
(``{"access_model": "presence", "max_items": 1, ...}``), with normalised values (bool, int, str),
so that it is stored as is and compared field by field.
"""

from __future__ import annotations

from typing import Any, Callable

from ...errors import StanzaError
from ...xml.build import error_reply
from ...xml.element import Element
from ...xml.ns import (NS_BOOKMARKS2, NS_BOOKMARKS_LEGACY, NS_CLIENT, NS_DATA, NS_PUBSUB_ERRORS,
                       NS_PUBSUB_NODE_CONFIG, NS_PUBSUB_PUBLISH_OPTIONS)


MAX_ITEMS = 256  # the most items a node keeps; "max" means this (Prosody's pep_max_items)

ACCESS_MODELS = ("open", "presence", "whitelist")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
PUBLISH_MODELS = ("publishers", "subscribers", "open")
NOTIFICATION_TYPES = ("headline", "normal")

DEFAULTS: dict[str, Any] = {
    "title": "",
    "description": "",
    "type": "",
    "access_model": "presence",
    "publish_model": "publishers",
    "persist_items": True,
    "max_items": 1,
    "send_last_published_item": "on_sub_and_presence",
    "deliver_notifications": True,
    "deliver_payloads": True,
    "notify_retract": True,
    "notify_delete": True,
    "notification_type": "headline",
}

# Nodes that must never leak to contacts when a client forgets its publish-options.
PRIVATE_NODES: dict[str, dict[str, Any]] = {
    NS_BOOKMARKS2: {"access_model": "whitelist", "max_items": MAX_ITEMS,
                             "send_last_published_item": "never"},
    NS_BOOKMARKS_LEGACY: {"access_model": "whitelist", "send_last_published_item": "never"},
}


def default_config(node: str) -> dict[str, Any]:
    cfg = dict(DEFAULTS)
    cfg.update(PRIVATE_NODES.get(node, {}))
    return cfg


def _text(values: list[str]) -> str:
    return values[0] if values else ""


def _bool(values: list[str]) -> bool:
    v = _text(values).strip().lower()
    if v in ("1", "true"):
        return True
    if v in ("0", "false"):
        return False
    raise ValueError(f"not a boolean: {v!r}")


def _choice(options: tuple[str, ...]) -> Callable[[list[str]], str]:
    def parse(values: list[str]) -> str:
        v = _text(values).strip()
        if v not in options:
            raise ValueError(f"{v!r} is not one of {', '.join(options)}")
        return v
    return parse


def _max_items(values: list[str]) -> int:
    v = _text(values).strip().lower()
    if v == "max":
        return MAX_ITEMS
    n = int(v)
    if n < 1:
        raise ValueError("max_items must be at least 1")
    return min(n, MAX_ITEMS)  # clamped on both sides of a comparison, so preconditions still match


# var (without "pubsub#") -> (form field type, label, parser, options for list-single)
FIELDS: dict[str, tuple[str, str, Callable[[list[str]], Any], tuple[str, ...]]] = {
    "title": ("text-single", "A friendly name for the node", _text, ()),
    "description": ("text-single", "A description of the node", _text, ()),
    "type": ("text-single", "The type of node data, usually the payload namespace", _text, ()),
    "access_model": ("list-single", "Who may subscribe and retrieve items",
                     _choice(ACCESS_MODELS), ACCESS_MODELS),
    "publish_model": ("list-single", "Who may publish items", _choice(PUBLISH_MODELS),
                      PUBLISH_MODELS),
    "persist_items": ("boolean", "Persist items to storage", _bool, ()),
    "max_items": ("text-single", f"Max number of items to persist (at most {MAX_ITEMS}, or 'max')",
                  _max_items, ()),
    "send_last_published_item": ("list-single", "When to send the last published item",
                                 _choice(SEND_LAST), SEND_LAST),
    "deliver_notifications": ("boolean", "Deliver event notifications", _bool, ()),
    "deliver_payloads": ("boolean", "Deliver payloads with event notifications", _bool, ()),
    "notify_retract": ("boolean", "Notify subscribers when items are removed", _bool, ()),
    "notify_delete": ("boolean", "Notify subscribers when the node is deleted", _bool, ()),
    "notification_type": ("list-single", "The message type of notifications",
                          _choice(NOTIFICATION_TYPES), NOTIFICATION_TYPES),
}


def pubsub_error(condition: str, app: str | None, text: str | None = None) -> StanzaError:
    return StanzaError(condition, text, app_condition=(NS_PUBSUB_ERRORS, app) if app else None)


class Unsupported(StanzaError):
    """XEP-0060 §7.1.3 etc.: <feature-not-implemented/> with
    ``<unsupported xmlns='...pubsub#errors' feature='...'/>`` (see :func:`error_iq`)."""

    def __init__(self, feature: str, text: str | None = None) -> None:
        super().__init__("feature-not-implemented", text,
                         app_condition=(NS_PUBSUB_ERRORS, "unsupported"))
        self.feature = feature


def error_iq(iq: Element, err: StanzaError) -> Element:
    """The error reply to ``iq``, with the 'feature' of an :class:`Unsupported` condition (the
    generic error builder knows only the condition's name)."""
    reply = error_reply(iq, err)
    if isinstance(err, Unsupported):
        e = reply.find("error", NS_CLIENT)
        u = None if e is None else e.find("unsupported", NS_PUBSUB_ERRORS)
        if u is not None:
            u.set("feature", err.feature)
    return reply


# -- XEP-0004 --------------------------------------------------------------------------------
def parse_form(x: Element) -> tuple[str | None, dict[str, list[str]]]:
    """(FORM_TYPE, {var: [values]}) of a submitted data form."""
    fields: dict[str, list[str]] = {}
    form_type = None
    for f in x.findall("field", NS_DATA):
        var = f.get("var")
        if not var:
            continue
        values = [v.text for v in f.findall("value", NS_DATA)]
        if var == "FORM_TYPE":
            form_type = values[0].strip() if values else ""
        else:
            fields[var] = values
    return form_type, fields


def find_form(parent: Element | None) -> Element | None:
    if parent is None:
        return None
    return parent.find("x", NS_DATA)


def _short(var: str) -> str:
    return var[7:] if var.startswith("pubsub#") else var


def parse_config(fields: dict[str, list[str]], strict_unknown: bool) -> dict[str, Any]:
    """Normalised values of the known fields; unknown ones raise ValueError when strict."""
    out: dict[str, Any] = {}
    for var, values in fields.items():
        spec = FIELDS.get(_short(var)) if var.startswith("pubsub#") else None
        if spec is None:
            if strict_unknown:
                raise KeyError(var)
            continue
        out[_short(var)] = spec[2](values)
    return out


def config_from_form(x: Element | None) -> dict[str, Any]:
    """A node_config form (create/configure) -> changes.

    not-acceptable (XEP-0060 §8.2.5.2, XEP-0004 §3.5) for a bad value or a field this service
    does not implement (applying the rest would silently ignore what the owner asked for), with
    <unsupported-access-model/> for an access model it lacks (§8.1.3.3)."""
    if x is None:
        return {}
    if x.get("type") == "cancel":
        return {}
    form_type, fields = parse_form(x)
    if form_type not in (None, NS_PUBSUB_NODE_CONFIG):
        raise StanzaError("bad-request", f"unexpected FORM_TYPE {form_type}")
    am = fields.get("pubsub#access_model")
    if am is not None and _text(am).strip() not in ACCESS_MODELS:
        raise pubsub_error("not-acceptable", "unsupported-access-model",
                           f"access model {_text(am).strip()!r} is not supported")
    try:
        return parse_config(fields, strict_unknown=True)
    except KeyError as e:
        raise StanzaError("not-acceptable", f"unsupported node configuration field {e.args[0]}"
                          ) from None
    except (ValueError, TypeError) as e:
        raise StanzaError("not-acceptable", str(e)) from None


def preconditions(x: Element | None) -> dict[str, Any]:
    """XEP-0060 §7.1.5: publish-options fields; unknown fields reject the publish."""
    if x is None:
        return {}
    form_type, fields = parse_form(x)
    if form_type != NS_PUBSUB_PUBLISH_OPTIONS:
        raise StanzaError("bad-request", "publish-options need FORM_TYPE " + NS_PUBSUB_PUBLISH_OPTIONS)
    try:
        return parse_config(fields, strict_unknown=True)
    except KeyError as e:
        raise pubsub_error("conflict", "precondition-not-met",
                           f"unsupported publish option {e.args[0]}") from None
    except (ValueError, TypeError) as e:
        raise pubsub_error("conflict", "precondition-not-met", str(e)) from None


def check_preconditions(config: dict[str, Any], pre: dict[str, Any]) -> None:
    for k, v in pre.items():
        if config.get(k) != v:
            raise pubsub_error("conflict", "precondition-not-met",
                               f"pubsub#{k} is {_fmt(config.get(k))}, not {_fmt(v)}")


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def build_form(config: dict[str, Any], form_type: str = NS_PUBSUB_NODE_CONFIG,
               type: str = "form") -> Element:
    x = Element("x", NS_DATA, {"type": type})
    ft = x.add("field", attrs={"var": "FORM_TYPE", "type": "hidden"})
    ft.add("value", text=form_type)
    for key, (ftype, label, _, options) in FIELDS.items():
        f = x.add("field", attrs={"var": "pubsub#" + key, "type": ftype, "label": label})
        value = config.get(key, DEFAULTS[key])
        f.add("value", text=_fmt(value) or None)
        for opt in options:
            f.add("option").add("value", text=opt)
    return x
