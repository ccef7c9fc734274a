"""Push Notifications (XEP-0357): tell a client's app server when a message arrives for a user
whose sessions are all hibernated (Stream Management) or gone.

Registrations are per account, each remembering the session (full JID) that made it, as
Conversations and Monal expect. Map store ``push`` (owner = the account's bare JID):
``"<app server jid>\\0<node>"`` -> ``[1, jid, node, publish_options, session_full | None]``
where ``publish_options`` is ``[[var, [values]], ...]`` or None; key ``"summary"`` ->
``[1, message_count, last_sender, last_body | None]``, the count since the user was last online.
``storage.delete_owner`` removes both with the account.

Notifications are published through the router (local or remote app servers alike), at most one
per ``min_interval`` per registration; counts coalesce in between. An error reply other than
type 'wait' disables the registration (XEP-0357 §7.1); a timeout does not. A push-registered
session hibernates for ``[sm] push_resume_timeout`` and gets a wake-up push shortly before its
hibernation expires.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from .push_options import PushConfig
from ..core.modules import SELF, Module, hook, iq_handler
from ..errors import StanzaError
from ..jid import JID, JIDError
from ..util.ids import new_id
from ..xml.element import Element
from ..xml.fragment import parse_fragment
from ..xml.ns import (NS_CLIENT, NS_DATA, NS_LEGACY_PGP, NS_OMEMO, NS_OMEMO_LEGACY, NS_OPENPGP, NS_PUBSUB,
                      NS_PUBSUB_PUBLISH_OPTIONS, NS_PUSH, NS_PUSH_SUMMARY)
from .sm import StreamManagement

if TYPE_CHECKING:
    from ..core.iq import IQContext
    from ..core.router import RouteEvent
    from ..core.sessions import Session
    from ..core.api import ModuleServer

SUMMARY_KEY = "summary"

# Payloads that make a body-less message worth a notification (end-to-end encrypted bodies).
ENCRYPTED_PAYLOADS = frozenset((
    NS_OMEMO_LEGACY,
    NS_OMEMO,               # XEP-0384
    NS_OPENPGP,             # XEP-0373
    NS_LEGACY_PGP,          # XEP-0027
))


def worth_pushing(st: Element) -> bool:
    """A chat/normal message with a body or an encrypted payload (not chat states, receipts,
    carbons copies, archive results, groupchat, headlines or errors)."""
    if st.tag != "message" or st.attrs.get("type", "normal") not in ("normal", "chat"):
        return False
    for c in st.children:
        if c.__class__ is str:
            continue
        if (c.ns == NS_CLIENT and c.tag == "body") or c.ns in ENCRYPTED_PAYLOADS:
            return True
    return False


def _form(x: Element) -> tuple[str | None, list[list[Any]]]:
    """(FORM_TYPE, [[var, [values]], ...]) of a submitted XEP-0004 form."""
    form_type = None
    fields: list[list[Any]] = []
    for f in x.findall("field", NS_DATA):
        var = f.get("var")
        if not var:
            continue
        values = [v.text for v in f.findall("value", NS_DATA)]
        if var == "FORM_TYPE":
            form_type = values[0].strip() if values else ""
        else:
            fields.append([var, values])
    return form_type, fields


def _add_form(parent: Element, form_type: str, fields: list[tuple[str, list[str]]]) -> Element:
    x = parent.add("x", NS_DATA, {"type": "submit"})
    x.add("field", attrs={"var": "FORM_TYPE", "type": "hidden"}).add("value", text=form_type)
    for var, values in fields:
        f = x.add("field", attrs={"var": var})
        for v in values:
            f.add("value", text=v)
    return x


class _Limit:
    """Rate limiting of one registration: when it last published, and a pending publish."""

    __slots__ = ("last", "timer")

    def __init__(self) -> None:
        self.last = float("-inf")
        self.timer: asyncio.TimerHandle | None = None


class _Hib:
    """Per-session state while hibernated: the wake-up push timer."""

    __slots__ = ("hib", "timer")

    def __init__(self, hib: Any, timer: asyncio.TimerHandle | None) -> None:
        self.hib = hib
        self.timer = timer


class Push(Module[PushConfig]):
    name = "push"
    description = "Push Notifications to the app servers of hibernated or offline clients"
    xeps = {"0357": "0.4.1"}
    account_features = [NS_PUSH]
    uses = (StreamManagement,)  # whether a session hibernates

    max_node_length = 1024
    max_option_bytes = 4096
    max_body_chars = 256

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        cfg = self.options
        self.include_body = cfg.include_body  # XEP-0357 §9: bodies reach third parties only if wanted
        self.min_interval = cfg.min_interval
        self.publish_timeout = cfg.publish_timeout
        self.wake_margin = cfg.wake_before     # capped at 10% of the hibernation timeout
        self.max_registrations = cfg.max_registrations
        self.store = server.storage.map("push")
        self._sm: StreamManagement | None = None
        self._summary: dict[str, list[Any]] = {}        # bare -> [count, sender, body] (cache)
        self._limits: dict[tuple[str, str], _Limit] = {}
        self._tasks: set[asyncio.Task] = set()
        self._closing: set[str] = set()   # accounts whose session is being destroyed
        self._last: Element | None = None  # the last message counted (one count per stanza)

    async def start(self) -> None:
        self._sm = self.optional(StreamManagement)

    async def stop(self) -> None:
        for lim in self._limits.values():
            if lim.timer is not None:
                lim.timer.cancel()
        self._limits.clear()
        for t in list(self._tasks):
            t.cancel()

    # -- registrations ------------------------------------------------------------------------
    def registrations(self, bare: str) -> dict[str, list[Any]]:
        return {k: v for k, v in self.store.get_all(bare).items() if "\0" in k and v and v[0] == 1}

    @staticmethod
    def _key(jid: str, node: str) -> str:
        key = f"{jid}\0{node}"
        if len(key.encode()) > 200:  # storage keys are bounded (storage/keys.py MAX_KEY)
            key = "#" + hashlib.sha256(key.encode()).hexdigest() + "\0"
        return key

    def is_registered(self, session: Session) -> bool:
        """True if the session (or an account-wide registration) asked for push: Stream
        Management then hibernates it for ``push_resume_timeout``."""
        return any(r[4] is None or r[4] == session.full
                   for r in self.registrations(session.bare).values())

    @iq_handler("set", NS_PUSH, "enable", scope=SELF)
    async def enable(self, iq: Element, ctx: IQContext) -> None:
        el = iq.first_child()
        jid = self._service_jid(el)
        node = el.get("node")  # type: ignore[union-attr]
        if not node:
            raise StanzaError("bad-request", "missing 'node'")
        if len(node) > self.max_node_length:
            raise StanzaError("not-acceptable", "node too long")
        options = None
        for x in el.findall("x", NS_DATA):  # type: ignore[union-attr]
            form_type, fields = _form(x)
            if form_type != NS_PUBSUB_PUBLISH_OPTIONS:
                raise StanzaError("bad-request", "the form must be " + NS_PUBSUB_PUBLISH_OPTIONS)
            if len(x.to_bytes()) > self.max_option_bytes:
                raise StanzaError("not-acceptable", "publish-options too large")
            options = fields
        bare = ctx.frm.bare
        key = self._key(jid.full, node)
        regs = self.registrations(bare)
        if key not in regs and len(regs) >= self.max_registrations:
            raise StanzaError("resource-constraint", "too many push registrations")
        session = ctx.frm.full if ctx.frm.resource is not None else None
        # XEP-0357 §5: enabling the same JID and node again replaces the publish options.
        await self.store.set(bare, key, [1, jid.full, node, options, session])

    @iq_handler("set", NS_PUSH, "disable", scope=SELF)
    async def disable(self, iq: Element, ctx: IQContext) -> None:
        el = iq.first_child()
        jid = self._service_jid(el)
        node = el.get("node")  # type: ignore[union-attr]
        bare = ctx.frm.bare
        # XEP-0357 §6: without a node, every node of that service.
        keys = [k for k, r in self.registrations(bare).items()
                if r[1] == jid.full and (node is None or r[2] == node)]
        await self._remove(bare, keys)

    @staticmethod
    def _service_jid(el: Element | None) -> JID:
        s = None if el is None else el.get("jid")
        if not s:
            raise StanzaError("bad-request", "missing 'jid'")
        try:
            return JID.parse(s)
        except JIDError:
            raise StanzaError("jid-malformed", "invalid push service JID") from None

    async def _remove(self, bare: str, keys: list[str]) -> None:
        for k in keys:
            lim = self._limits.pop((bare, k), None)
            if lim is not None and lim.timer is not None:
                lim.timer.cancel()
        if keys:
            await self.store.set_many(bare, {k: None for k in keys})

    # -- the summary: messages since the user was last online --------------------------------
    def summary(self, bare: str) -> list[Any]:
        s = self._summary.get(bare)
        if s is None:
            rec = self.store.get(bare, SUMMARY_KEY)
            s = [rec[1], rec[2], rec[3]] if rec and rec[0] == 1 else [0, None, None]
            self._summary[bare] = s
        return s

    def _count(self, bare: str, st: Element) -> None:
        s = self.summary(bare)
        s[0] += 1
        s[1] = st.attrs.get("from")
        body = st.findtext("body", NS_CLIENT) if self.include_body else None
        s[2] = body[:self.max_body_chars] if body else None
        self.store.set(bare, SUMMARY_KEY, [1, *s])

    def _online(self, bare: str) -> None:
        s = self.summary(bare)
        if s[0]:
            s[0], s[1], s[2] = 0, None, None
            self.store.set(bare, SUMMARY_KEY, None)

    # -- triggers -------------------------------------------------------------------------------
    def _hibernating(self, session: Session) -> bool:
        sm = self._sm
        return sm is not None and sm.hibernating(session)

    def _message_for_absent(self, bare: str, st: Element) -> None:
        """A message for ``bare`` that no live session will show now: count it and notify."""
        if st is self._last or not worth_pushing(st):
            return
        self._last = st
        regs = self.registrations(bare)
        if not regs:
            return
        sessions = self.server.sessions.resources(bare)
        live = {s.full for s in sessions if not self._hibernating(s)}
        if any(s.available and s.full in live for s in sessions):
            return  # the user is online on another resource
        self._count(bare, st)
        for key, rec in regs.items():
            if rec[4] is None or rec[4] not in live:
                self._schedule(bare, key)

    @hook(ev.MESSAGE_OFFLINE, priority=10)
    def offline_message(self, e: RouteEvent) -> None:
        # Runs before offline storage, which still takes the message (we return None).
        bare = e.to.bare  # type: ignore[union-attr]
        if bare not in self._closing:  # unacked stanzas of an ending session were pushed already
            self._message_for_absent(bare, e.stanza)

    @hook(ev.DELIVER, priority=50)
    def deliver(self, e: RouteEvent) -> None:
        # Above CSI (-1000), which may hold stanzas for an inactive session; we return None so
        # the stanza still goes to the hibernated session's queue, redelivered on resumption.
        session: Session = e.session  # type: ignore[assignment]
        if self._hibernating(session):
            self._message_for_absent(session.bare, e.stanza)
        else:
            self._online(session.bare)

    @hook(ev.PRE_MESSAGE, priority=1000)
    @hook(ev.PRE_PRESENCE, priority=1000)
    @hook(ev.PRE_IQ, priority=1000)
    def client_active(self, e: RouteEvent) -> None:
        if e.origin is not None:
            self._online(e.origin.bare)

    @hook(ev.SESSION_AVAILABLE)
    def session_available(self, session: Session) -> None:
        self._online(session.bare)

    # -- hibernation -------------------------------------------------------------------------
    @hook(ev.HIBERNATE_LONGER)
    def hibernate_longer(self, session: Session) -> bool | None:
        """A push-registered session may hibernate for [sm] push_resume_timeout."""
        return True if self.is_registered(session) else None

    @hook(ev.SESSION_HIBERNATED)
    def _hibernated(self, session: Session) -> None:
        if session.closed or not self._hibernating(session) or not self.registrations(session.bare):
            return
        hib = session.stream
        old = session.mod.pop(Push, None)
        if old is not None and old.timer is not None:
            old.timer.cancel()
        timer = None
        loop = asyncio.get_running_loop()
        if self.is_registered(session) and hib.timer is not None:  # type: ignore[union-attr]
            margin = min(self.wake_margin, 0.1 * hib.sm.max)  # type: ignore[union-attr]
            when = hib.timer.when() - margin  # type: ignore[union-attr]
            timer = loop.call_at(when, self._wake, session, hib)
        session.mod[Push] = _Hib(hib, timer)
        # Messages the client had not acknowledged when the connection died may never have
        # been seen: notify for them now. A session restored by this start had them counted
        # before the stop (the count is stored): notify again without counting them twice.
        messages = [d for d in hib.sm.queue if d.startswith(b"<message")]  # type: ignore[union-attr]
        if messages and self._sm is not None and self._sm.was_restored(session) \
                and self.summary(session.bare)[0]:
            for key in self.registrations(session.bare):
                self._schedule(session.bare, key)
            return
        for data in messages:
            self._message_for_absent(session.bare, parse_fragment(data))

    def _wake(self, session: Session, hib: Any) -> None:
        """The hibernation is about to expire: a last push so that the client resumes it."""
        if session.closed or session.stream is not hib:
            return
        for key, rec in self.registrations(session.bare).items():
            if rec[4] is None or rec[4] == session.full:
                self._fire(session.bare, key, wake=True)

    @hook(ev.SESSION_CLOSED, priority=200)
    def session_closing(self, session: Session) -> None:
        st = session.mod.pop(Push, None)
        if st is not None and st.timer is not None:
            st.timer.cancel()
        self._closing.add(session.bare)

    @hook(ev.SESSION_CLOSED, priority=-200)
    def session_closed(self, session: Session) -> None:
        # After Stream Management (100) has handed the unacked stanzas to offline storage.
        self._closing.discard(session.bare)
        if not any(s is not session for s in self.server.sessions.resources(session.bare)):
            self._summary.pop(session.bare, None)  # it is in storage

    @hook(ev.ACCOUNT_DELETED)
    def account_deleted(self, arg: Any) -> None:
        bare = getattr(arg, "bare", arg)
        if isinstance(bare, str):
            self._summary.pop(bare, None)
            for k in [k for k in self._limits if k[0] == bare]:
                lim = self._limits.pop(k)
                if lim.timer is not None:
                    lim.timer.cancel()

    # -- publishing --------------------------------------------------------------------------
    def _schedule(self, bare: str, key: str) -> None:
        """Publish now, or once ``min_interval`` has passed since the last one (coalescing)."""
        lim = self._limits.get((bare, key))
        if lim is None:
            lim = self._limits[(bare, key)] = _Limit()
        if lim.timer is not None:
            return  # a publish is pending; it will carry the latest summary
        loop = asyncio.get_running_loop()
        wait = lim.last + self.min_interval - loop.time()
        if wait <= 0:
            self._fire(bare, key)
        else:
            lim.timer = loop.call_later(wait, self._fire, bare, key)

    def _fire(self, bare: str, key: str, wake: bool = False) -> None:
        lim = self._limits.get((bare, key))
        if lim is None:
            lim = self._limits[(bare, key)] = _Limit()
        if lim.timer is not None:
            lim.timer.cancel()
            lim.timer = None
        rec = self.store.get(bare, key)
        if rec is None:
            del self._limits[(bare, key)]
            return  # XEP-0357 §6: disabled meanwhile: never publish to it
        count, sender, body = self.summary(bare)
        if not count and not wake:
            return  # the user came online meanwhile
        lim.last = asyncio.get_running_loop().time()
        iq = self.notification(bare, rec, count, sender, body)
        task = asyncio.ensure_future(self._publish(bare, key, rec, iq))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def notification(self, bare: str, rec: list[Any], count: int, sender: str | None,
                     body: str | None) -> Element:
        """The XEP-0357 §7 publish, with the summary form and the stored publish-options."""
        _, jid, node, options, _ = rec
        iq = Element("iq", NS_CLIENT, {"type": "set", "from": bare, "to": jid, "id": new_id()})
        ps = iq.add("pubsub", NS_PUBSUB)
        n = ps.add("publish", attrs={"node": node}).add("item").add("notification", NS_PUSH)
        fields = [("message-count", [str(count)])]
        if sender:
            fields.append(("last-message-sender", [sender]))
        if body and self.include_body:
            fields.append(("last-message-body", [body]))
        _add_form(n, NS_PUSH_SUMMARY, fields)
        if options is not None:
            _add_form(ps.add("publish-options"), NS_PUBSUB_PUBLISH_OPTIONS, [(v, vals) for v, vals in options])
        return iq

    async def _publish(self, bare: str, key: str, rec: list[Any], iq: Element) -> None:
        try:
            reply = await self.server.router.iq.request(iq, self.publish_timeout)
        except asyncio.TimeoutError:
            self.log.info("push to %s for %s: no reply", rec[1], bare)
            return  # may be transient: keep the registration
        if reply.get("type") != "error":
            return
        if self.server.stopping:
            return  # the server is stopping: its own links failed, not the app server (restart)
        err = reply.find("error", NS_CLIENT)
        etype = err.get("type") if err is not None else None
        if etype == "wait":
            return  # XEP-0357 §7.1: a transient error keeps the service enabled
        self.log.info("push to %s for %s failed (%s): disabling it", rec[1], bare, etype)
        if self.store.get(bare, key) == rec:  # not re-enabled with other options meanwhile
            await self._remove(bare, [key])
