"""Client State Indication (XEP-0352): while a client says it is inactive, hold back what it
does not need at once and hand it over when it becomes active again.

Held while inactive: presence updates (available/unavailable; only the latest per sender full
JID is kept), chat-state-only messages (only the latest per conversation is kept), and other
body-less messages (receipts, markers, PEP events, headlines...). Delivered at once: messages
with a body, subject or encrypted payload, invitations, calls, errors, IQs, subscription
presence, MUC self-presence, and anything not recognised. Before an urgent stanza the queue is
flushed, so the client sees everything in order (RFC 6120 §10.1, XEP-0352 §5.1).

The filter is the last DELIVER handler (lowest priority): what it holds has passed every other
delivery filter, so flushing is a plain ``session.send``.

Per-session state: ``session.mod[CSI]`` is a ``_State`` once the client has sent <inactive/>.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from ..core.modules import Module, hook, nonza
from ..xml.element import Element
from ..xml.ns import (NS_CARBONS, NS_CHATSTATES, NS_CLIENT, NS_CONFERENCE, NS_CSI, NS_DELAY, NS_EME,
                      NS_FORWARD, NS_HINTS, NS_JINGLE_MESSAGE_0, NS_LEGACY_PGP, NS_MUC_USER, NS_OMEMO,
                      NS_OMEMO_LEGACY, NS_OPENPGP, NS_STANZA_ID)

if TYPE_CHECKING:
    from ..core.router import RouteEvent
    from ..core.sessions import Session
    from ..core.api import ModuleServer


# Message payloads that make a body-less message urgent (a person is waiting for it).
URGENT_PAYLOADS = frozenset((
    NS_CONFERENCE,          # XEP-0249 invitation
    NS_JINGLE_MESSAGE_0,    # XEP-0353 call
    NS_EME,                 # XEP-0380 (encrypted body)
    NS_OMEMO_LEGACY,
    NS_OMEMO,               # XEP-0384
    NS_OPENPGP,             # XEP-0373
    NS_LEGACY_PGP,          # XEP-0027
))
# Children that do not change what a chat-state message is about.
_CHATSTATE_COMPANIONS = frozenset((NS_CHATSTATES, NS_HINTS, NS_DELAY, NS_STANZA_ID))

# Classification results.
URGENT = 0
HOLD = 1
COLLAPSE = 2   # hold, and replace an earlier one with the same key


class _State:
    __slots__ = ("active", "stream", "queue", "seq")

    def __init__(self, stream: Any) -> None:
        self.active = True
        self.stream = stream          # the stream that sent the indication (XEP-0352 §5.2)
        # Insertion-ordered: a collapsible stanza is keyed by what it supersedes (re-inserted at
        # the end when replaced), any other by a sequence number.
        self.queue: dict[Any, Element] = {}
        self.seq = 0


def _message_kind(st: Element) -> tuple[int, Any]:
    t = st.attrs.get("type")
    if t == "error":
        return URGENT, None
    chatstate_only = False
    for c in st.children:
        if c.__class__ is str:
            continue
        ns = c.ns
        if ns == NS_CLIENT:
            if c.tag == "body" or c.tag == "subject":
                return URGENT, None
        elif ns == NS_CHATSTATES:
            chatstate_only = True
        elif ns in URGENT_PAYLOADS:
            return URGENT, None
        elif ns == NS_MUC_USER:
            if c.find("invite") is not None:
                return URGENT, None
        elif ns == NS_CARBONS and (c.tag == "sent" or c.tag == "received"):
            fwd = c.find("forwarded", NS_FORWARD)
            inner = fwd.find("message", NS_CLIENT) if fwd is not None else None
            if inner is None:
                return URGENT, None
            kind, key = _message_kind(inner)
            if kind == COLLAPSE:
                key = (c.tag, key)
            return kind, key
    if chatstate_only and all(c.__class__ is str or c.ns in _CHATSTATE_COMPANIONS
                              or (c.ns == NS_CLIENT and c.tag == "thread")
                              for c in st.children):
        # XEP-0085: only the latest state of a conversation matters.
        return COLLAPSE, ("cs", st.attrs.get("from"), st.attrs.get("to"))
    return HOLD, None


def classify(st: Element) -> tuple[int, Any]:
    """(URGENT | HOLD | COLLAPSE, collapse key) for a stanza about to go to an inactive client."""
    tag = st.tag
    if tag == "presence":
        t = st.attrs.get("type")
        if t is not None and t != "unavailable":
            return URGENT, None   # subscription handling, errors
        x = st.find("x", NS_MUC_USER)
        if x is not None:
            for s in x.findall("status", NS_MUC_USER):
                if s.attrs.get("code") == "110":
                    return URGENT, None   # our own room presence: a join/leave completes
        return COLLAPSE, ("p", st.attrs.get("from"))
    if tag == "message":
        return _message_kind(st)
    return URGENT, None   # IQs, and anything else


class CSI(Module):
    name = "csi"
    description = "Client State Indication: hold back unimportant traffic for inactive clients"
    xeps = {"0352": "1.0.0"}
    max_queue = 1000   # stanzas held per session; a full queue is flushed

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        # Streams that said <inactive/> after authentication but before binding: the state is
        # the stream's (XEP-0352 §3), so the session bound on it starts inactive.
        self._unbound_inactive: weakref.WeakSet[Any] = weakref.WeakSet()

    @hook(ev.STREAM_FEATURES)
    def stream_features(self, e: Any) -> None:
        e.features.append(Element("csi", NS_CSI))

    @nonza(NS_CSI, "inactive")
    def inactive(self, stream: Any, el: Element) -> None:
        session = getattr(stream, "session", None)
        if session is None:
            try:
                self._unbound_inactive.add(stream)
            except TypeError:
                pass  # not weakly referenceable: then the stream starts active
            return
        st = session.mod.get(CSI)
        if st is None:
            st = session.mod[CSI] = _State(stream)
        st.stream = stream
        st.active = False

    @nonza(NS_CSI, "active")
    def active(self, stream: Any, el: Element) -> None:
        session = getattr(stream, "session", None)
        if session is None:
            self._unbound_inactive.discard(stream)
            return
        st = session.mod.get(CSI)
        if st is not None:
            st.active = True
            self.flush(session)

    def is_inactive(self, session: Session) -> bool:
        st = session.mod.get(CSI)
        return st is not None and not st.active

    def queued(self, session: Session) -> int:
        st = session.mod.get(CSI)
        return 0 if st is None else len(st.queue)

    def flush(self, session: Session) -> None:
        """Write everything held for ``session``, in order."""
        st = session.mod.get(CSI)
        if st is None or not st.queue:
            return
        q = st.queue
        st.queue = {}
        send = session.send
        for stanza in q.values():
            send(stanza)

    @hook(ev.SESSION_RESUMED)
    def reset(self, session: Session) -> None:
        """Back to 'active' with the queue flushed (XEP-0352 §5.2: a resumed stream starts active)."""
        if session.mod.get(CSI) is not None:
            self.flush(session)
            del session.mod[CSI]

    @hook(ev.DELIVER, priority=-1000)
    def filter(self, e: RouteEvent) -> Any:
        session = e.session
        st = session.mod.get(CSI)  # type: ignore[union-attr]
        if st is None or st.active:
            return None
        stream = session.stream  # type: ignore[union-attr]
        if stream is not st.stream and getattr(stream, "session", None) is session:
            # A new (resumed) stream: CSI state is not carried over (XEP-0352 §5.2). While the
            # session hibernates (Stream Management's stand-in has no session), keep holding.
            self.reset(session)  # type: ignore[arg-type]
            return None
        stanza = e.stanza
        kind, key = classify(stanza)
        q = st.queue
        if kind == URGENT or len(q) >= self.max_queue:
            if q:
                self.flush(session)  # type: ignore[arg-type]
            return None
        if kind == COLLAPSE:
            q.pop(key, None)   # re-inserted at the end: the newest position
        else:
            st.seq += 1
            key = st.seq
        q[key] = stanza
        return True

    @hook(ev.SESSION_BOUND)
    def session_bound(self, session: Session) -> None:
        stream = session.stream
        if stream is not None and stream in self._unbound_inactive:
            self._unbound_inactive.discard(stream)
            st = session.mod[CSI] = _State(stream)
            st.active = False

    @hook(ev.SESSION_CLOSED)
    def session_closed(self, session: Session) -> None:
        # Nobody is left to read it: what was held is dropped with the session.
        session.mod.pop(CSI, None)
