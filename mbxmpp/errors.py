"""Protocol errors: raised by handlers and the stream layer, turned into XMPP errors in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .xml import Element

# RFC 6120 §8.3.3: each defined condition and its usual error type.
STANZA_ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "wait",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}

# RFC 6120 §4.9.3
STREAM_ERROR_CONDITIONS = frozenset((
    "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone",
    "host-unknown", "improper-addressing", "internal-server-error", "invalid-from",
    "invalid-namespace", "invalid-xml", "not-authorized", "not-well-formed", "policy-violation",
    "remote-connection-failed", "reset", "resource-constraint", "restricted-xml", "see-other-host",
    "system-shutdown", "undefined-condition", "unsupported-encoding", "unsupported-feature",
    "unsupported-stanza-type", "unsupported-version",
))


class StanzaError(Exception):
    """A stanza-level error (RFC 6120 §8.3); the dispatcher turns it into an error reply."""

    def __init__(self, condition: str, text: str | None = None, type: str | None = None,
                 app_condition: tuple[str, str] | None = None) -> None:
        if condition not in STANZA_ERROR_TYPES:
            raise ValueError(f"unknown stanza error condition {condition!r}")
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text
        self.type = type or STANZA_ERROR_TYPES[condition]
        self.app_condition = app_condition  # (ns, name) of an application-specific child


class StreamError(Exception):
    """A stream-level error (RFC 6120 §4.9): the stream is closed after it is sent."""

    def __init__(self, condition: str, text: str | None = None, app: object = None) -> None:
        if condition not in STREAM_ERROR_CONDITIONS:
            raise ValueError(f"unknown stream error condition {condition!r}")
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text
        self.app = app  # an application-specific condition Element (e.g. XEP-0198's)


class RemoteProtocolError(StreamError):
    """The peer violated the protocol (h11's split)."""


class LocalProtocolError(Exception):
    """We misused the protocol: a bug, logged and never sent to the peer as is."""


def iq_shape_error(iq: Element) -> StanzaError | None:
    """RFC 6120 §8.2.3, as the c2s stream checks its clients' IQs (here: those of components and
    peer servers): an id, one of the four types, exactly one payload in a get or set."""
    t = iq.attrs.get("type")
    if "id" not in iq.attrs or t not in ("get", "set", "result", "error"):
        return StanzaError("bad-request", "IQ needs an id and a valid type")
    if t in ("get", "set") and sum(1 for _ in iq.elements()) != 1:
        return StanzaError("bad-request", "IQ get/set needs exactly one payload")
    return None
