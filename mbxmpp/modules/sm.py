"""Stream Management (XEP-0198): acks, resumption, hibernation.

The counters live in an SMState (compiled twin in mbxmpp._ext.smstate) that the stream calls for
every stanza in and out. A session whose connection drops without a clean close hibernates for
``[sm] resume_timeout`` (``push_resume_timeout`` when it registered for push); while hibernated,
stanzas for it are counted into the unacked queue and re-sent on resumption. When it finally
dies, unacked messages go to offline storage or bounce: never silently away. A graceful stop
saves the resumable sessions instead of ending them, and the next start restores them
(sm_restart.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from .sm_options import SMConfig
from ..core.modules import Module, hook, nonza
from ..core.router import RouteEvent
from ..errors import StanzaError, StreamError
from ..jid import JID, JIDError
from ..stream.c2s import SM_REQUEST_BYTES
from ..stream.smstate import ACK_INVALID, ACK_OK
from ..util.ids import new_id
from ..xml.element import Element
from ..xml.fragment import parse_fragment
from ..xml.ns import NS_CARBONS, NS_MAM, NS_SM, NS_STANZAS
from .carbons import Carbons
from .csi import CSI
from .pep import PEP
from .sm_restart import (SavedSessions, down_too_long, presence_fields, restore_fields, restore_pep_interest,
                         saved_jid, session_record, sm_state)

if TYPE_CHECKING:
    from ..core.api import ModuleServer

try:
    from .._ext.smstate import SMState  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - the extension is optional
    from ..stream.smstate import SMState


_ACK_FORMAT = f"<a xmlns='{NS_SM}' h='%d'/>".encode()


def _sm(tag: str, **attrs: str) -> bytes:
    return Element(tag, NS_SM, attrs).to_bytes("")


def _ack(h: int) -> bytes:
    return _ACK_FORMAT % h


def _failed(condition: str, h: int | None = None) -> bytes:
    f = Element("failed", NS_SM, {} if h is None else {"h": str(h)})
    f.add(condition, NS_STANZAS)
    return f.to_bytes("")


class Hibernated:
    """Stands in for the stream while the client is away: stanzas go to the unacked queue,
    up to ``max_unacked``; past that the session ends (its queue goes to offline storage)."""

    __slots__ = ("sm", "timer", "overflow", "sm_limit")

    def __init__(self, sm: Any, overflow: Any, limit: int) -> None:
        self.sm = sm
        self.timer: asyncio.TimerHandle | None = None
        self.overflow = overflow  # called once when the queue is over the limit
        self.sm_limit = limit

    def send_stanza(self, stanza: Element) -> None:
        self.sm.outbound(stanza.to_bytes())  # the unacked queue holds serialised stanzas
        if self.overflow is not None and len(self.sm.queue) > self.sm_limit:
            cb, self.overflow = self.overflow, None
            asyncio.get_event_loop().call_soon(cb)

    def close(self, error: Any = None) -> None:
        pass


class StreamManagement(Module[SMConfig]):
    name = "sm"
    description = "Stream Management: acks and resumption"
    xeps = {"0198": "1.6.1"}
    uses = (CSI, PEP)  # across a restart: what CSI held is saved, PEP learns the caps again

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.cfg = self.options
        self.by_id: dict[str, Any] = {}  # resumption id -> Session
        self._waiting: list[tuple[Any, int]] = []  # (stream, h) waiting for the next flush
        self._flusher: asyncio.Future[None] | None = None
        self._iq = server.router.iq
        self._storage = server.storage
        self._ack_delay = self.cfg.ack_delay
        self._saved = SavedSessions(server.storage)  # kept across a graceful restart
        self._restored: set[str] = set()  # resumption ids of sessions brought back at start
        # Whether this run has taken over the saved sessions (restore_sessions): until then a
        # stop must leave them stored (a start that fails before would otherwise wipe them).
        self._took_over_saved = False

    @hook(ev.STREAM_FEATURES)
    def offer(self, e) -> None:  # type: ignore[no-untyped-def]
        e.features.append(Element("sm", NS_SM))

    # -- nonzas -------------------------------------------------------------------------------
    @nonza(NS_SM, "enable")
    def enable(self, stream, el: Element) -> None:  # type: ignore[no-untyped-def]
        session = stream.session
        if session is None or stream.sm is not None:
            stream.write(_failed("unexpected-request"))
            return
        resume = el.get("resume") in ("true", "1")
        timeout = self._timeout(session)
        wanted = el.get("max")
        if wanted is not None and wanted.isascii() and wanted.isdigit():  # int('²') raises
            timeout = min(timeout, max(1, int(wanted)))
        sm = SMState(new_id(24), resume, int(timeout), self.cfg.request_every)
        stream.enable_sm(sm, self.answer)
        session.mod[StreamManagement] = sm
        attrs = {"id": sm.id, "resume": "true", "max": str(sm.max)} if resume else {}
        if resume:
            self.by_id[sm.id] = session
            if self.cfg.location:
                attrs["location"] = self.cfg.location  # XEP-0198 §5: where to reconnect
        stream.write(_sm("enabled", **attrs))

    @nonza(NS_SM, "r")
    def request(self, stream, el: Element) -> None:  # type: ignore[no-untyped-def]
        if stream.sm is None:
            raise StreamError("unsupported-stanza-type", "stream management is not enabled")
        self.answer(stream)

    def answer(self, stream) -> None:  # type: ignore[no-untyped-def]
        """Answer an <r/> on a stream with SM enabled. The stream calls this directly (its
        ``sm_request``) for the tokenizers' shared SM_REQUEST: the most frequent nonza skips
        the nonza dispatch."""
        # Ack only what is durably stored: the <a/> waits for a storage flush, unless every
        # write so far is committed already and no asynchronous IQ handler may still write.
        # Requests are batched: one flush answers every <r/> that arrived before it started;
        # while a flush is under way, later ones wait behind it, to keep the order.
        flusher = self._flusher
        if (not self._waiting and (flusher is None or flusher.done())
                and not self._iq.busy() and self._storage.idle()):
            stream.write_soon(stream.sm.ack_bytes(), self._ack_delay)
            return
        self._waiting.append((stream, stream.sm.h_in))
        if flusher is None or flusher.done():
            self._flusher = asyncio.ensure_future(self._answer_requests())

    async def _answer_requests(self) -> None:
        from ..stream.c2s import ST_CLOSED
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._storage.flush()
            except Exception:
                self.log.exception("storage flush failed: acks withheld")
                return
            for stream, h in batch:
                if stream.stage != ST_CLOSED:  # nothing may follow our </stream:stream>
                    stream.write(_ack(h))

    @nonza(NS_SM, "a")
    def ack(self, stream, el: Element) -> None:  # type: ignore[no-untyped-def]
        sm = stream.sm
        if sm is None:
            raise StreamError("unsupported-stanza-type", "stream management is not enabled")
        self._apply_ack(sm, el.get("h"))

    @staticmethod
    def _apply_ack(sm: Any, h_attr: str | None) -> None:
        result = sm.ack_attr(h_attr)
        if result == ACK_OK:
            return
        if result == ACK_INVALID:
            raise StreamError("invalid-xml", "'h' must be an unsigned 32-bit integer")
        h = (h_attr or "").lstrip("0") or "0"  # valid digits: only the value is wrong
        app = Element("handled-count-too-high", NS_SM, {"h": h, "send-count": str(sm.h_out)})
        raise StreamError("undefined-condition", "acknowledged more stanzas than were sent", app)

    @nonza(NS_SM, "resume")
    def resume(self, stream, el: Element) -> None:  # type: ignore[no-untyped-def]
        from ..stream.c2s import ST_BIND
        if stream.username is None or stream.stage != ST_BIND or stream.session is not None:
            stream.write(_failed("unexpected-request"))
            return
        session = self.by_id.get(el.get("previd") or "")
        me = f"{stream.username}@{stream.host}"
        # The id alone is not enough: it must belong to the account that just authenticated.
        if session is None or session.closed or session.bare != me:
            stream.write(_failed("item-not-found"))
            return
        sm = session.mod[StreamManagement]
        self._apply_ack(sm, el.get("h"))
        old = session.stream
        if isinstance(old, Hibernated):
            session.mod.pop(Hibernated, None)
            if old.timer is not None:
                old.timer.cancel()
        elif old is not None and old is not stream:
            old.session = None  # its close must not end the session we take over
            old.fail(StreamError("conflict", "the session was resumed on another connection"))
        stream.enable_sm(sm, self.answer)
        stream.attach_session(session)
        stream.write(_sm("resumed", previd=sm.id, h=str(sm.h_in)))
        self._forget_saved(session, sm)  # live again: a later stop saves it afresh
        for data in list(sm.queue):
            stream.write(data)
        # (CSI: a resumed stream starts active, XEP-0352 §5.2; what it held goes out now, after
        # <resumed/> and the re-sent stanzas, counted once, in that order.)
        self.server.hooks.fire_all(ev.SESSION_RESUMED, session)
        if sm.queue:
            stream.write(SM_REQUEST_BYTES)
            sm.requested = True

    # -- hibernation --------------------------------------------------------------------------
    def _timeout(self, session: Any) -> float:
        if self.server.hooks.fire(ev.HIBERNATE_LONGER, session):
            return self.cfg.push_resume_timeout
        return self.cfg.resume_timeout

    @hook(ev.STREAM_CLOSED)
    def hibernate(self, stream) -> bool | None:  # type: ignore[no-untyped-def]
        sm = stream.sm
        session = stream.session
        if sm is None or not sm.resume or stream.clean_close or session is None:
            return None
        # A session that registered for push after enabling Stream Management gets the longer
        # timeout now, unless the client asked for less.
        longer = int(self.cfg.push_resume_timeout)
        if int(self.cfg.resume_timeout) <= sm.max < longer and self.server.hooks.fire(ev.HIBERNATE_LONGER, session):
            sm.max = longer
        h = Hibernated(sm, lambda: self._expire(session), self.cfg.max_unacked)
        session.stream = h
        h.timer = asyncio.get_event_loop().call_later(sm.max, self._expire, session)
        session.mod[Hibernated] = h  # destroy_session() clears session.stream before our hook
        self.log.debug("%s hibernating for %ss", session.full, sm.max)
        self.server.hooks.fire_all(ev.SESSION_HIBERNATED, session)
        return True

    def _expire(self, session: Any) -> None:
        if isinstance(session.stream, Hibernated):
            self.server.destroy_session(session)

    def hibernating(self, session: Any) -> bool:
        return isinstance(session.stream, Hibernated)

    def was_restored(self, session: Any) -> bool:
        """Whether ``session`` is one this start brought back (sm_restart.py), not yet resumed."""
        sm = session.mod.get(StreamManagement)
        return sm is not None and sm.id in self._restored

    @hook(ev.SESSION_CLOSED, priority=100)
    def session_closed(self, session: Any) -> None:
        sm = session.mod.pop(StreamManagement, None)
        if sm is None:
            return
        self.by_id.pop(sm.id, None)
        h = session.mod.pop(Hibernated, None)
        if h is not None and h.timer is not None:
            h.timer.cancel()
        unacked = []
        for data in sm.queue:
            try:
                unacked.append(parse_fragment(data))
            except Exception:  # one bad item must not cost the others their offline storage
                self.log.exception("unacked stanza of %s could not be parsed back", session.full)
        sm.queue.clear()
        others = [s for s in self.server.sessions.available(session.bare) if s is not session]
        for st in unacked:
            self._undelivered(st, session, others)
        self._forget_saved(session, sm)  # (after the offline writes: nothing is lost between)

    def _undelivered(self, st: Element, session: Any, others: list) -> None:
        """XEP-0198 §5: what the client never acknowledged is treated as not delivered."""
        router = self.server.router
        if st.tag == "iq":
            if st.get("type") in ("get", "set"):
                router.bounce(st, StanzaError("service-unavailable"))
            return
        if st.tag != "message" or st.get("type") in ("error", "groupchat", "headline"):
            return
        if st.find_ns(NS_CARBONS) is not None or st.find("result", NS_MAM) is not None:
            return  # copies and archive results: the original is stored elsewhere
        try:
            to = JID.parse(st.get("to") or session.full)
            frm = JID.parse(st.get("from") or session.host)
        except JIDError:
            return
        if to.resource is None and others:
            return  # the other resources got it too
        e = RouteEvent(st, None, frm, session.jid.bare_jid(), router)
        if self.server.hooks.fire(ev.MESSAGE_OFFLINE, e) is None:
            router.bounce(st, StanzaError("recipient-unavailable", "the recipient's session ended"))

    # -- across a graceful restart (sm_restart.py) ----------------------------------------------
    def save_sessions_for_restart(self) -> int:
        """At a graceful stop, once every stream has had its <system-shutdown/>: end the sessions
        that cannot be resumed, then save the hibernated resumable ones and let them go without
        ending them (no unavailable presence, nothing to offline storage: the next start brings
        them back). Returns how many were saved."""
        if not self._took_over_saved:
            return 0  # the start failed before restore_sessions: the saved ones wait for the next
        server = self.server
        kept = [s for s in server.sessions.full.values()
                if isinstance(s.stream, Hibernated) and s.mod.get(StreamManagement) is not None
                and not s.closed]
        kept_ids = {id(s) for s in kept}
        for s in list(server.sessions.full.values()):
            if id(s) not in kept_ids:
                server.destroy_session(s)  # (their unavailable presence reaches the kept ones)
        csi = self.optional(CSI)
        pep = self.optional(PEP)
        loop = asyncio.get_event_loop()
        records: dict[str, dict[str, dict[str, Any]]] = {}
        saved = []
        for s in kept:
            h, sm = s.mod[Hibernated], s.mod[StreamManagement]
            remaining = float(sm.max) if h.timer is None else h.timer.when() - loop.time()
            try:
                if csi is not None:
                    csi.reset(s)  # what CSI held goes into the unacknowledged queue
                rec = session_record(s, sm, max(1.0, remaining), s.mod.get(Carbons) is True, pep)
            except Exception:  # not saved: it ends below like the others (queue to offline)
                self.log.exception("session %s could not be saved for the restart", s.full)
                continue
            records.setdefault(s.bare, {})[sm.id] = rec
            saved.append(s)
        self._saved.replace_all(records)
        for s in saved:
            h, sm = s.mod.pop(Hibernated), s.mod.pop(StreamManagement)
            if h.timer is not None:
                h.timer.cancel()
            self.by_id.pop(sm.id, None)
            s.stream = None
            server.sessions.unbind(s)  # gone without SESSION_CLOSED: it lives on in storage
        if saved:
            self.log.info("%d resumable session(s) saved for the restart", len(saved))
        return len(saved)

    async def restore_sessions(self) -> int:
        """At start, before the listeners: bring back, hibernated, the sessions that the last
        graceful stop saved. Returns how many may be resumed."""
        stale = []
        resumable = 0
        for bare, sm_id, rec in list(self._saved.all()):
            try:
                session = self._restore(sm_id, rec)
            except Exception:  # one bad record must not keep the server from starting
                self.log.exception("saved session %s of %s could not be restored", sm_id, bare)
                session = None
            if session is None:
                self.log.warning("saved session %s of %s dropped (its domain is no longer "
                                 "served, or the record is unreadable)", sm_id, bare)
                self._saved.forget(bare, sm_id)
            elif rec.get("restored") or down_too_long(rec):
                stale.append(session)
            else:
                self._saved.mark_restored(bare, sm_id)
                resumable += 1
        for session in stale:  # once all are back: contacts among them see these go
            self.server.destroy_session(session)
        self._took_over_saved = True  # (every record is back in memory, or forgotten)
        # Durable before any client may resume: after a kill -9 a record marked restored is
        # never resumed again (its counters may be stale), one not yet marked may be.
        await self._storage.flush()
        if resumable or stale:
            self.log.info("%d session(s) restored for resumption; %d ended (saved by a run that "
                          "did not stop gracefully, or the server was down longer than their "
                          "resume window)", resumable, len(stale))
        return resumable

    def _restore(self, sm_id: str, rec: Any) -> Any:
        server = self.server
        jid = saved_jid(rec)
        if jid is None or jid.domain not in server.hosts or server.sessions.get(jid.full):
            return None
        try:
            sm = sm_state(sm_id, rec)
            remaining = max(1.0, float(rec["remaining"]))
            fields = presence_fields(rec)  # (before binding: a bad record leaves no session)
        except (KeyError, TypeError, ValueError):
            return None
        h = Hibernated(sm, None, self.cfg.max_unacked)
        session = server.sessions.bind(jid.bare_jid(), h, jid.resource)
        restore_fields(session, fields)
        if rec.get("carbons"):
            session.mod[Carbons] = True
        restore_pep_interest(self.optional(PEP), session, rec.get("caps_features"))
        h.overflow = lambda: self._expire(session)
        h.timer = asyncio.get_event_loop().call_later(remaining, self._expire, session)
        session.mod[StreamManagement] = sm
        session.mod[Hibernated] = h
        self.by_id[sm_id] = session
        self._restored.add(sm_id)
        # As after a lost connection: push-registered clients hear of what waits for them.
        asyncio.get_event_loop().call_soon(self.server.hooks.fire_all, ev.SESSION_HIBERNATED, session)
        return session

    def _forget_saved(self, session: Any, sm: Any) -> None:
        if sm.id in self._restored:
            self._restored.discard(sm.id)
            self._saved.forget(session.bare, sm.id)
