"""Message Carbons (XEP-0280): every carbons-enabled resource of a user sees both sides of the
user's instant-messaging conversations.

- Sent carbons (§8, hook PRE_MESSAGE): a copy of what a resource sends, wrapped in
  ``<sent><forwarded>``, to the user's other enabled resources.
- Received carbons (§7, hooks MESSAGE_BARE / MESSAGE_FULL, before the router's default delivery):
  a copy wrapped in ``<received><forwarded>`` to each enabled resource that does not get the
  original under the RFC 6121 §8.5 delivery rules.
- Forged carbons (§11): copies are made by this server only, so a ``<sent/>``/``<received/>``
  wrapper inside a routed message is refused, whoever sent it. Server-made copies never go
  through routing (``router.deliver`` to the session), so they are never refused.

Per-session state: ``session.mod[Carbons]`` is True while carbons are enabled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core import events as ev
from ..core.modules import BARE, HOST, SELF, Module, hook, iq_handler
from ..errors import StanzaError
from ..util.lru import LRU
from ..xml.build import error_reply
from ..xml.element import Element
from ..xml.ns import (NS_CARBONS, NS_CHATSTATES, NS_CHAT_MARKERS, NS_CLIENT, NS_CONFERENCE, NS_FORWARD,
                      NS_HINTS, NS_MUC_USER, NS_RECEIPTS, NS_STANZA_ID)
from .mam import MAM

if TYPE_CHECKING:
    from ..core.iq import IQContext
    from ..core.router import RouteEvent
    from ..core.sessions import Session
    from ..core.api import ModuleServer


# XEP-0280 §6.1: payloads "typically used in IM" that make a body-less message eligible.
_IM_PAYLOADS = frozenset((NS_RECEIPTS, NS_CHATSTATES, NS_CHAT_MARKERS, NS_CONFERENCE))


def _has_muc_invite(x: Element) -> bool:
    return x.find("invite") is not None


def is_eligible(st: Element) -> bool:
    """XEP-0280 §6.1: is this message copied at all? (the sender/receiver rules come on top)."""
    t = st.attrs.get("type", "normal")
    # §6.1 (MUC rules): groupchat is replicated by the MUC service itself. Headlines are not IM.
    # Errors are eligible only "in response to an eligible message": the module tracks what was
    # sent (Carbons.answers_sent); on its own, an error is not copied.
    if t == "groupchat" or t == "headline" or t == "error":
        return False
    eligible = t == "chat"
    for c in st.children:
        if c.__class__ is str:
            continue
        ns = c.ns
        if ns == NS_CARBONS:
            # XEP-0280 §9: <private/> opts out; a nested carbon wrapper is never copied again.
            return False
        if ns == NS_HINTS and c.tag == "no-copy":
            # XEP-0334 §4.3: not to be copied to other addresses, e.g. by carbons.
            return False
        if eligible:
            continue
        if ns == NS_CLIENT:
            eligible = c.tag == "body"   # "normal" with a body
        elif ns in _IM_PAYLOADS:
            eligible = True
        elif ns == NS_MUC_USER:
            eligible = _has_muc_invite(c)  # §6.1: mediated invitation
    return eligible


def has_carbon_wrapper(st: Element) -> bool:
    for c in st.children:
        if c.__class__ is not str and c.ns == NS_CARBONS and (c.tag == "sent" or c.tag == "received"):
            return True
    return False


def _is_muc_pm_in(st: Element) -> bool:
    """§6.1: a private message from a MUC occupant carries <x xmlns='...muc#user'/>; those are
    replicated by the MUC service to each joined client and are not copied."""
    x = st.find("x", NS_MUC_USER)
    return x is not None and not _has_muc_invite(x)


class Carbons(Module):
    name = "carbons"
    description = "Message Carbons: copies of sent and received messages to all enabled resources"
    xeps = {"0280": "1.0.1"}
    features = [NS_CARBONS]
    uses = (MAM,)  # the archive id of a sent message goes into its copies

    # Eligible messages sent by a user with several resources, remembered so that an error
    # answering one of them is copied too (§6.1): (sender bare, recipient bare, stanza id).
    max_tracked = 20000

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.sessions = server.sessions
        self._sent: LRU[tuple[str, str, str], None] = LRU(self.max_tracked)
        self.mam: MAM | None = None

    async def start(self) -> None:
        self.mam = self.optional(MAM)

    # -- enable / disable (§4, §5, §10.1: repeated requests are not errors) ----------------
    # Usually sent without 'to' (the account); some clients address the server domain.
    @iq_handler("set", NS_CARBONS, "enable", scope=(SELF, HOST))
    def enable(self, iq: Element, ctx: IQContext) -> None:
        self._session(iq, ctx).mod[Carbons] = True
        return None

    @iq_handler("set", NS_CARBONS, "disable", scope=(SELF, HOST))
    def disable(self, iq: Element, ctx: IQContext) -> None:
        self._session(iq, ctx).mod.pop(Carbons, None)
        return None

    @iq_handler("set", NS_CARBONS, "enable", scope=BARE)
    @iq_handler("set", NS_CARBONS, "disable", scope=BARE)
    def other_account(self, iq: Element, ctx: IQContext) -> None:
        # §5.1: not-allowed when "trying to disable another client's Carbons".
        raise StanzaError("not-allowed", "carbons are a setting of one's own sessions")

    @staticmethod
    def _session(iq: Element, ctx: IQContext) -> Session:
        if ctx.origin is None:
            # §4.1: not-allowed "if the request is from a client that is not hosted on this server".
            raise StanzaError("not-allowed", "carbons are a setting of a local client session")
        return ctx.origin

    def enabled(self, session: Session) -> bool:
        return session.mod.get(Carbons, False) is True

    # -- forged carbons (§11) -----------------------------------------------------------------
    @hook(ev.PRE_MESSAGE, priority=200)
    def refuse_forged_outbound(self, e: RouteEvent) -> Any:
        if has_carbon_wrapper(e.stanza):
            self._refuse(e, "carbon copies are made by the server, not sent by clients")
            return True
        return None

    @hook(ev.MESSAGE_BARE, priority=200)
    @hook(ev.MESSAGE_FULL, priority=200)
    def refuse_forged_inbound(self, e: RouteEvent) -> Any:
        # Copies made here never pass through routing: a wrapper arriving here is forged (or a
        # copy someone bounced back), whoever it claims to come from.
        if has_carbon_wrapper(e.stanza):
            self._refuse(e, "carbon copies are only accepted from the account's own server")
            return True
        return None

    def _refuse(self, e: RouteEvent, text: str) -> None:
        st = e.stanza
        if st.attrs.get("type") == "error":
            return  # §10.3: an error about a copy is never sent back; errors are not answered
        err = StanzaError("not-allowed", text)
        if e.origin is not None:
            # Straight to the sending session: routing the error would fire the same checks.
            self.server.router.deliver(e.origin, error_reply(st, err))
        else:
            self.server.router.bounce(st, err)

    # -- sent carbons (§8) --------------------------------------------------------------------
    @hook(ev.PRE_MESSAGE, priority=-50)
    def sent(self, e: RouteEvent) -> None:
        origin = e.origin
        to = e.to
        if origin is None or to is None or to.bare == origin.bare:
            # To one's own account: the receiving side copies it (received carbons).
            return None
        res = self.sessions.by_bare.get(origin.bare)
        if res is None or len(res) < 2:
            return None
        st = e.stanza
        if not is_eligible(st):
            return None
        msg_id = st.attrs.get("id")
        if msg_id:
            self._sent.put((origin.bare, to.bare, msg_id), None)
        targets = [s for s in res.values() if s is not origin and s.mod.get(Carbons) is True]
        if targets:
            copy = st.copy()
            # XEP-0313 §3.5: the sender's archive id goes inside the forwarded copy.
            mam = self.mam
            sid = mam.sent_id(st) if mam is not None else None
            if sid is not None:
                copy.add("stanza-id", NS_STANZA_ID, {"id": sid, "by": origin.bare})
            self._copy(copy, "sent", origin.bare, targets, snapshot=False)
        return None

    def answers_sent(self, bare: str, frm: Any, st: Element) -> bool:
        """Is the error ``st`` (from ``frm``, to account ``bare``) a reply to an eligible message
        one of the account's resources sent (§6.1)?"""
        msg_id = st.attrs.get("id")
        return bool(msg_id) and (bare, frm.bare, msg_id) in self._sent

    # -- received carbons (§7) ----------------------------------------------------------------
    @hook(ev.MESSAGE_BARE, priority=-50)
    @hook(ev.MESSAGE_FULL, priority=-50)
    def received(self, e: RouteEvent) -> None:
        to = e.to
        if to is None:
            return None
        bare = to.bare
        res = self.sessions.by_bare.get(bare)
        if res is None or len(res) < 2:
            return None  # nobody else to copy to (and no session at all: offline, no carbons)
        st = e.stanza
        enabled = [s for s in res.values() if s.mod.get(Carbons) is True]
        if not enabled:
            return None
        is_error = st.attrs.get("type") == "error"
        if is_error:
            if not self.answers_sent(bare, e.frm, st):
                return None
        elif not is_eligible(st) or _is_muc_pm_in(st):
            return None
        # Who gets the original (RFC 6121 §8.5.2 / §8.5.3) does not get a copy.
        target = self.sessions.get(to.full) if to.resource is not None else None
        if target is not None:
            skip = {target}
        elif is_error:
            skip = set()  # an error is delivered to the addressed resource only, if at all
        else:
            # A bare JID, or an unknown resource of a chat/normal message, which the router
            # delivers as to the bare JID (§8.5.3.2.1).
            top = self.sessions.top_priority(bare)
            if not top:
                return None  # offline storage (or an error): no carbons
            skip = set(top)
        origin = e.origin
        if origin is not None and origin.bare == bare:
            skip.add(origin)  # a message to oneself: the sender knows what it sent
        targets = [s for s in enabled if s not in skip]
        if targets:
            self._copy(st, "received", bare, targets)
        return None

    # -- copies -------------------------------------------------------------------------------
    def _copy(self, st: Element, kind: str, bare: str, targets: list[Session],
              snapshot: bool = True) -> None:
        """Wrap ``st`` (XEP-0297) once and deliver the wrapper to each target (§7, §8)."""
        # A snapshot: later hooks may change the original (stanza-id, ...).
        fwd = Element("forwarded", NS_FORWARD, None, [st.copy() if snapshot else st])
        wrapper = Element(kind, NS_CARBONS, None, [fwd])
        t = st.attrs.get("type")
        deliver = self.server.router.deliver
        for s in targets:
            attrs = {"from": bare, "to": s.full}
            if t is not None:
                attrs["type"] = t  # §7/§8: the wrapper SHOULD keep the type
            deliver(s, Element("message", NS_CLIENT, attrs, [wrapper]))
