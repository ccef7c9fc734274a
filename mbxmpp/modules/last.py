"""Last Activity (XEP-0012): server uptime, and when an account was last online.

An account's last logout is only told to itself and to contacts subscribed to its presence
(XEP-0012 §4: same rules as presence).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import time

from ..core import events as ev
from ..core.modules import BARE, HOST, SELF, Module, hook, iq_handler
from ..errors import StanzaError
from ..xml.element import Element
from ..xml.ns import NS_LAST
from .roster import Roster

if TYPE_CHECKING:
    from ..core.api import ModuleServer


class LastActivity(Module):
    name = "last"
    description = "Last Activity: server uptime and account last logout"
    xeps = {"0012": "2.0"}
    features = [NS_LAST]
    account_features = [NS_LAST]
    uses = (Roster,)  # who may see an account's last logout

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.started_at = time.monotonic()
        self.store = server.storage.keyval("lastlog")

    @iq_handler("get", NS_LAST, "query", scope=HOST)
    def uptime(self, iq, ctx):  # type: ignore[no-untyped-def]
        return Element("query", NS_LAST, {"seconds": str(int(time.monotonic() - self.started_at))})

    @iq_handler("get", NS_LAST, "query", scope=(SELF, BARE))
    def account_last(self, iq, ctx):  # type: ignore[no-untyped-def]
        owner = ctx.to.bare
        if ctx.scope != SELF:
            roster = self.optional(Roster)
            sub = roster.subscription(owner, ctx.frm.bare) if roster is not None else "none"
            if sub not in ("from", "both"):
                raise StanzaError("forbidden")
        if self.server.sessions.available(owner):
            return Element("query", NS_LAST, {"seconds": "0"})
        rec = self.store.get(owner)
        if rec is None:
            raise StanzaError("item-not-found")
        q = Element("query", NS_LAST, {"seconds": str(max(0, int(time.time() - rec["t"])))})
        if rec.get("status"):
            q.children.append(rec["status"])
        return q

    @hook(ev.SESSION_CLOSED, priority=-100)
    def logout(self, session) -> None:  # type: ignore[no-untyped-def]
        if not self.server.sessions.available(session.bare) or all(
                s is session for s in self.server.sessions.available(session.bare)):
            status = None
            if session.presence is not None:
                status = session.presence.findtext("status")
            self.store.set(session.bare, {"t": time.time(), "status": status})
