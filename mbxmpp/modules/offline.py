"""Offline message storage (XEP-0160): messages for an account without an available resource are
kept, stamped with XEP-0203 delay, and delivered when a resource comes online.

Archive store ``offline`` (owner = recipient bare JID, with_ = sender bare JID): the stanza bytes
(versioned by the storage layer). Per account at most ``[offline] max_messages`` and ``max_bytes``
wait, of which at most ``max_messages_per_sender`` / ``max_bytes_per_sender`` from one sender (one
sender cannot take the storage of everyone else's messages). Beyond that the sender gets
<service-unavailable/> with a text: XEP-0160 §2 step 3 names that error for a full offline queue
(RFC 6121 §8.5.2.2.1 too, for a message not stored), and the recipient's archive does not keep it.
Offline storage has no expiry: what waits is delivered at the next login.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from .offline_options import OfflineConfig
from ..core.modules import Module, hook
from ..errors import StanzaError
from ..xml.element import Element
from ..xml.ns import NS_CHATSTATES, NS_CLIENT, NS_DELAY, NS_HINTS, NS_OFFLINE, NS_STANZA_ID
from ..xml.fragment import parse_fragment
from .mam import MAM
from .mam.quota import Ledger, Tally, offline_bounds
from .time import xep82_datetime

if TYPE_CHECKING:
    from ..core.router import RouteEvent
    from ..core.sessions import Session
    from ..core.api import ModuleServer

# Children that alone do not make a message worth keeping (XEP-0160 §3, XEP-0085 §5.6:
# standalone chat states are not stored).
_NOISE_NS = frozenset((NS_CHATSTATES, NS_HINTS, NS_STANZA_ID, NS_DELAY))
_NOISE_CLIENT_TAGS = frozenset(("thread",))


def worth_storing(msg: Element) -> bool:
    """True for a message with content: a body, subject, or any extension payload other than
    chat states, hints, ids and delays (receipts, encrypted payloads, invitations ...)."""
    for c in msg.elements():
        if c.ns in _NOISE_NS or (c.ns == NS_CLIENT and c.tag in _NOISE_CLIENT_TAGS):
            continue
        if c.ns == NS_CLIENT and c.tag == "error":
            continue
        return True
    return False


class Offline(Module[OfflineConfig]):
    name = "offline"
    description = "Offline message storage"
    xeps = {"0160": "1.0.1"}
    features = [NS_OFFLINE]
    uses = (MAM,)  # a message refused here is withdrawn from the archive

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.store = server.storage.archive("offline")
        # Appends not yet durable, which an archive query may not show yet (api.py): owner ->
        # {id: (stanza bytes, sender)}. Without this, a message stored a few ms before its
        # recipient logs in would wait for the next login, and a burst could overshoot the cap.
        self._unflushed: dict[str, dict[str, tuple[bytes, str]]] = {}
        self.bound, self.sender_bound = offline_bounds(self.options)
        self.ledger = Ledger(self._seed)  # what waits per account, per sender
        self.mam: MAM | None = None

    async def start(self) -> None:
        self.mam = self.optional(MAM)

    @property
    def max_messages(self) -> int:
        return self.options.max_messages

    def _seed(self, owner: str, since: float | None) -> Tally:
        t = Tally()
        seen = set()
        for it in self.store.query(owner):
            seen.add(it.id)
            t.add(it.with_ or "", len(it.value))
        for id_, (data, sender) in self._unflushed.get(owner, {}).items():
            if id_ not in seen:
                t.add(sender, len(data))
        return t

    def refusal(self, owner: str, sender: str, size: int) -> str | None:
        """Why a message of ``size`` bytes from ``sender`` cannot wait for ``owner``, or None."""
        if self.max_messages == 0:
            return "the recipient's offline storage is full"
        t = self.ledger.get(owner)
        if not self.bound.admits(t.total, size):
            return "the recipient's offline storage is full"
        if not self.sender_bound.admits(t.sender(sender), size):
            return "the recipient's offline storage holds too many messages from you"
        return None

    @hook(ev.MESSAGE_OFFLINE)
    def store_message(self, e: RouteEvent) -> Any:
        st = e.stanza
        t = st.attrs.get("type") or "normal"
        if t not in ("normal", "chat"):
            return None
        if st.find("store", NS_HINTS) is None and not worth_storing(st):
            return True  # XEP-0085: a standalone chat state to an offline user is dropped silently
        if st.find("no-store", NS_HINTS) is not None:
            return None  # XEP-0334: the sender does not want it kept; the router bounces it
        owner = e.to.bare  # type: ignore[union-attr]
        sender = e.frm.bare
        now = time.time()
        stored = Element(st.tag, st.ns, dict(st.attrs), list(st.children))
        # XEP-0203: when the server received it.
        stored.add("delay", NS_DELAY, {"from": e.to.domain,  # type: ignore[union-attr]
                                       "stamp": xep82_datetime(now)})
        data = stored.to_bytes()
        why = self.refusal(owner, sender, len(data))
        if why is not None:
            if self.mam is not None:
                self.mam.withdraw(e)  # bounced: not kept in the recipient's archive either
            e.router.bounce(st, StanzaError("service-unavailable", why))
            return True
        id_, fut = self.store.append(owner, data, when=now, with_=sender)
        self._unflushed.setdefault(owner, {})[id_] = (data, sender)
        self.ledger.get(owner).add(sender, len(data))
        fut.add_done_callback(lambda _f: self._flushed(owner, id_))
        return True

    @hook(ev.ACCOUNT_DELETED)
    def account_deleted(self, e: Any) -> None:
        # The stored messages go with the account's data; those not yet durable are forgotten
        # here, so that a re-created account's count starts at zero.
        self._unflushed.pop(e.bare, None)

    def _flushed(self, owner: str, id_: str) -> None:
        pend = self._unflushed.get(owner)
        if pend is not None:
            pend.pop(id_, None)
            if not pend:
                del self._unflushed[owner]

    def count(self, owner: str) -> int:
        """Messages waiting for ``owner``, durable or not yet."""
        return self.ledger.get(owner).total[1]

    @hook(ev.ACCOUNT_DELETED)
    @hook(ev.ACCOUNT_CREATED)
    def _account_changed(self, arg: Any) -> None:
        bare = getattr(arg, "bare", arg)
        if isinstance(bare, str):
            self.ledger.reset(bare)  # nothing waits for a new or deleted account

    @hook(ev.SESSION_AVAILABLE)
    def session_available(self, session: Session) -> None:
        if session.priority >= 0:
            self.deliver_to(session)

    def deliver_to(self, session: Session) -> int:
        """Deliver the stored messages in order to ``session`` and delete them; returns how many."""
        owner = session.bare
        items = [(it.id, it.value) for it in self.store.query(owner)]
        pend = self._unflushed.pop(owner, None)
        if pend:
            seen = {i for i, _ in items}
            items.extend((i, v[0]) for i, v in pend.items() if i not in seen)
            items.sort()  # ids sort in time order
        if not items:
            return 0
        deliver = self.server.router.deliver
        for id_, value in items:
            try:
                msg = parse_fragment(value)
            except Exception:
                self.log.warning("dropping an unreadable offline message %s of %s", id_, owner)
                continue
            deliver(session, msg)
        # Writes apply in call order, so this also deletes appends not yet committed.
        # Deleting now is safe with Stream Management: what the client never acknowledges goes
        # back to offline storage when its session ends (modules/sm.py).
        self.store.delete(owner, ids=[i for i, _ in items])
        self.ledger.reset(owner)
        return len(items)
