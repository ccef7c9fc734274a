"""Stream Management sessions kept across a graceful restart (XEP-0198 resumption).

On SIGTERM the server sends its clients ``<system-shutdown/>``: their resumable sessions
hibernate, as on any lost connection. Instead of ending them, the sm module saves each one in
the ``sm_sessions`` store (owner: the bare JID; value: resumption id -> record) with what a
resumption needs: full JID, h counters, the unacknowledged queue, the last presence, carbons.
The next start brings them back as hibernated sessions: a client that reconnects and sends
``<resume previd h/>`` within the resume timeout gets ``<resumed/>`` and what it missed.

Choices:

* A restored session keeps its available presence, as a hibernated session does in Prosody's
  mod_smacks and in ejabberd: its contacts were never told it left, probes are answered with the
  saved presence, and a restart that the client bridges with a resumption does not show as
  offline-then-online. Never resumed, it ends as any hibernated session: unavailable presence
  to its contacts, the unacknowledged messages to offline storage.
* The resume window left at the stop counts again from the start: the client could not resume
  while the server was down (a reboot longer than what was left would otherwise end them all).
  But a server that was down longer than the whole window (``[sm] resume_timeout``, or the
  push one) brings none of them back resumable: they end at the start.
* ``kill -9``: a record stays stored until its session is resumed or ended. A record that a
  previous run restored but never saved again (that run did not stop gracefully) has stale
  counters: it is not resumable, its session ends at once and its saved queue goes to offline
  storage (what it held is not lost; what reached it in the crashed run was memory only, as for
  any hibernated session).
"""

from __future__ import annotations

import time
from collections import deque
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Iterator

from ..jid import JID, JIDError
from ..stream.smstate import MOD, SMState
from ..xml.fragment import parse_fragment
from .pep.caps import from_presence

if TYPE_CHECKING:
    from ..core.sessions import Session
    from ..storage.api import KeyValStore, Storage

STORE = "sm_sessions"
RECORD_VERSION = 1


def session_record(session: Session, sm: Any, remaining: float, carbons: bool,
                   pep: Any) -> dict[str, Any]:
    """What a resumption after the restart needs, as a msgpack-able dict."""
    return {
        "full": session.full,
        "h_in": sm.h_in, "h_out": sm.h_out, "acked": sm.acked,
        "queue": [bytes(d) for d in sm.queue],  # serialised stanzas, oldest first
        "max": sm.max, "request_every": sm.request_every,
        "remaining": remaining, "saved_at": time.time(),
        "available": session.available, "priority": session.priority,
        "presence": None if session.presence is None else session.presence.to_bytes(),
        "interested": session.interested, "directed": sorted(session.directed),
        "carbons": carbons, "created": session.created, "peer": session.mod.get("peer", ""),
        "caps_features": caps_features(pep, session),
        "restored": False,  # set once a start brought it back (see the module docstring)
    }


def sm_state(sm_id: str, rec: dict[str, Any]) -> SMState:
    """The counters and queue of a saved session. The pure-Python twin, whose counters are
    writable (the compiled one's are not); a restored session is rare enough for it."""
    sm = SMState(sm_id, True, int(rec["max"]), int(rec["request_every"]))
    sm.h_in = int(rec["h_in"])
    sm.h_out = int(rec["h_out"])
    sm.acked = int(rec["acked"])
    sm.queue = deque(rec["queue"])
    if not all(0 <= h < MOD for h in (sm.h_in, sm.h_out, sm.acked)) or \
            (sm.h_out - sm.acked) % MOD != len(sm.queue) or \
            not all(isinstance(d, bytes) for d in sm.queue):
        raise ValueError("inconsistent counters or queue")
    return sm


def presence_fields(rec: dict[str, Any]) -> dict[str, Any]:
    """The presence-side state of a saved session, read before a session is bound for it: a
    field of the wrong type raises (TypeError, ValueError) and the record is dropped whole. An
    unreadable presence counts as none."""
    pres = rec.get("presence")
    presence = None
    if pres is not None:
        try:
            presence = parse_fragment(pres)
        except Exception:
            presence = None
    directed = rec.get("directed") or ()
    if isinstance(directed, (str, bytes)) or not all(isinstance(j, str) for j in directed):
        raise ValueError("'directed' is not a list of JIDs")
    return {"available": bool(rec.get("available")), "priority": int(rec.get("priority") or 0),
            "presence": presence, "interested": bool(rec.get("interested")),
            "directed": set(directed), "created": float(rec.get("created") or 0.0),
            "peer": str(rec.get("peer") or "")}


def restore_fields(session: Session, fields: dict[str, Any]) -> None:
    """Give a restored session what presence_fields() read."""
    session.available = fields["available"]
    session.priority = fields["priority"]
    session.presence = fields["presence"]
    session.interested = fields["interested"]
    session.directed = fields["directed"]
    session.created = fields["created"] or session.created
    session.mod["peer"] = fields["peer"]


def down_too_long(rec: dict[str, Any]) -> bool:
    """Saved longer ago than the session's whole resume window."""
    try:
        return time.time() - float(rec["saved_at"]) > float(rec["max"])
    except (KeyError, TypeError, ValueError):
        return True


def caps_features(pep: Any, session: Session) -> list[str] | None:
    """The verified features behind the caps of the session's presence (XEP-0115), if PEP
    knows them: what tells PEP the session's "+notify" interests (XEP-0163 §4.3)."""
    caps = None if pep is None or session.presence is None else from_presence(session.presence)
    feats = None if caps is None else pep.caps.lookup(caps)
    return None if feats is None else sorted(feats)


def restore_pep_interest(pep: Any, session: Session, feats: list[str] | None) -> None:
    """Tell PEP again what the session's presence announced, its caps known without asking the
    absent client: contacts' PEP events reach the restored session (its queue) as before."""
    presence = session.presence
    caps = None if presence is None else from_presence(presence)
    if pep is None or feats is None or caps is None or caps.hash is None:
        return
    pep.caps.verified.put((caps.hash, caps.ver), frozenset(feats))
    pep._own_presence(SimpleNamespace(origin=session, stanza=presence))


def saved_jid(rec: dict[str, Any]) -> JID | None:
    try:
        jid = JID.parse(rec["full"])
    except (JIDError, KeyError, TypeError):
        return None
    return jid if jid.local and jid.resource else None


class SavedSessions:
    """The ``sm_sessions`` store: one dict per account, resumption id -> record."""

    def __init__(self, storage: Storage) -> None:
        self.store: KeyValStore = storage.keyval(STORE, RECORD_VERSION)

    def all(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(bare JID, resumption id, record) of every saved session."""
        for bare in list(self.store.owners()):
            for sm_id, rec in (self.store.get(bare) or {}).items():
                yield bare, sm_id, rec

    def replace_all(self, records: dict[str, dict[str, dict[str, Any]]]) -> None:
        """Store exactly ``records`` (bare -> id -> record): what is not there is forgotten."""
        for bare in list(self.store.owners()):
            if bare not in records:
                self.store.set(bare, None)
        for bare, recs in records.items():
            self.store.set(bare, recs)

    def mark_restored(self, bare: str, sm_id: str) -> None:
        recs = self.store.get(bare) or {}
        rec = recs.get(sm_id)
        if rec is not None:
            recs[sm_id] = dict(rec, restored=True)
            self.store.set(bare, recs)

    def forget(self, bare: str, sm_id: str) -> None:
        recs = self.store.get(bare) or {}
        if recs.pop(sm_id, None) is not None:
            self.store.set(bare, recs or None)
