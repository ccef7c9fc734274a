"""Who may see a PEP node (XEP-0060 §4.5 access models, XEP-0163 §4 presence sharing).

- owner: the account itself, always.
- outcast affiliation: never.
- open: anyone.
- presence: contacts with a presence subscription to the owner ('from' or 'both').
- whitelist: the owner and the JIDs the owner affiliated (member, publisher).
"""

from __future__ import annotations

from typing import Callable

from ...errors import StanzaError
from .forms import pubsub_error
from .nodes import Node

Subscription = Callable[[str, str], str]  # (owner bare, contact bare) -> none/to/from/both

SHARES_PRESENCE = ("from", "both")
WHITELISTED = ("owner", "member", "publisher")
AFFILIATIONS = ("member", "publisher", "outcast", "none")


def affiliation(owner: str, node: Node, bare: str) -> str:
    if bare == owner:
        return "owner"
    return node.aff.get(bare, "none")


def denial(owner: str, node: Node, bare: str, subscription: Subscription) -> StanzaError | None:
    """The XEP-0060 §6.5.9 error for ``bare`` retrieving from ``node``, or None if allowed."""
    aff = affiliation(owner, node, bare)
    if aff == "owner":
        return None
    if aff == "outcast":
        return StanzaError("forbidden")
    model = node.config.get("access_model", "presence")
    if model == "open":
        return None
    if model == "whitelist":
        if aff in WHITELISTED:
            return None
        return pubsub_error("not-allowed", "closed-node")
    # presence (and anything unknown, the safe default)
    if aff in WHITELISTED or subscription(owner, bare) in SHARES_PRESENCE:
        return None
    return pubsub_error("not-authorized", "presence-subscription-required")


def may_access(owner: str, node: Node, bare: str, subscription: Subscription) -> bool:
    return denial(owner, node, bare, subscription) is None


def check_access(owner: str, node: Node, bare: str, subscription: Subscription) -> None:
    err = denial(owner, node, bare, subscription)
    if err is not None:
        raise err
