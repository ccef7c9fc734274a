"""Archiving preferences (XEP-0441, in the urn:xmpp:mam:2 namespace): parse, store, apply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ...errors import StanzaError
from ...jid import JID, JIDError
from ...storage.api import KeyValStore
from ...xml.element import Element
from ...xml.ns import NS_MAM
from ...util.lru import LRU

ALWAYS = "always"
NEVER = "never"
ROSTER = "roster"
DEFAULTS = (ALWAYS, NEVER, ROSTER)
MAX_JIDS = 1000  # per list


@dataclass(slots=True)
class Prefs:
    default: str = ALWAYS
    always: list[str] = field(default_factory=list)
    never: list[str] = field(default_factory=list)

    def is_plain(self) -> bool:
        return self.default == ALWAYS and not self.always and not self.never

    def decide(self, target: JID, in_roster: Callable[[str], bool]) -> bool:
        """Whether a message to/from ``target`` is archived (XEP-0441 §2.3).

        A listed full JID matches the target as is, a listed bare JID matches any resource;
        full-JID entries are more specific and win; in both lists, 'never' wins."""
        for key in ((target.full, target.bare) if target.resource is not None else (target.bare,)):
            if key in self.never:
                return False
            if key in self.always:
                return True
        if self.default == ALWAYS:
            return True
        if self.default == NEVER:
            return False
        return in_roster(target.bare)  # XEP-0441 §2.3.1: the bare target JID against the roster


def _jids(el: Element | None, what: str) -> list[str]:
    if el is None:
        return []
    out: list[str] = []
    for j in el.findall("jid", NS_MAM):
        try:
            s = JID.parse(j.text.strip()).full
        except JIDError as e:
            raise StanzaError("jid-malformed", f"not a JID in <{what}/>: {j.text!r}") from e
        if s not in out:
            out.append(s)
    if len(out) > MAX_JIDS:
        raise StanzaError("not-acceptable", f"at most {MAX_JIDS} JIDs in <{what}/>")
    return out


def parse_prefs(el: Element) -> Prefs:
    default = el.get("default")
    if default not in DEFAULTS:
        raise StanzaError("bad-request", "'default' must be one of always, never, roster")
    return Prefs(default, _jids(el.find("always", NS_MAM), ALWAYS),
                 _jids(el.find("never", NS_MAM), NEVER))


def prefs_element(p: Prefs) -> Element:
    el = Element("prefs", NS_MAM, {"default": p.default})
    for name, lst in ((ALWAYS, p.always), (NEVER, p.never)):
        sub = el.add(name)  # XEP-0441 §2.1: both MUST be present, even if empty
        for j in lst:
            sub.add("jid", text=j)
    return el


class PrefsStore:
    """Per-user preferences in a keyval store; the plain default is not stored at all.

    Every archived message asks for its owner's preferences, so they are cached (only this
    process writes them)."""

    def __init__(self, store: KeyValStore, cache_size: int = 10_000) -> None:
        self.store = store
        self._cache: LRU[str, Prefs] = LRU(cache_size)

    def get(self, owner: str) -> Prefs:
        p = self._cache.get(owner)
        if p is not None:
            return p
        rec = self.store.get(owner)
        if not isinstance(rec, dict):
            p = Prefs()
        else:
            p = Prefs(rec.get("default", ALWAYS), list(rec.get("always", ())),
                      list(rec.get("never", ())))
        self._cache.put(owner, p)
        return p

    def forget(self, owner: str) -> None:
        self._cache.pop(owner)

    def set(self, owner: str, p: Prefs) -> Any:
        value = None if p.is_plain() else {"default": p.default, "always": p.always,
                                           "never": p.never}
        self._cache.pop(owner)
        return self.store.set(owner, value)
