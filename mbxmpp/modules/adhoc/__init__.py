"""Ad-Hoc Commands (XEP-0050) on the server domain, carrying the XEP-0133 administration set.

Only the configured admins (``[server] admins``) may list or run them: disco#items of the
commands node shows a non-admin only the public ``ping`` command, and executing another answers
<forbidden/>. Every command is one
stage: ``execute`` returns the form (status ``executing``, a session id), the submission with
``complete`` (or ``execute``, the default action) runs it and answers ``completed`` with a note;
a command without input fields completes at once. Sessions are bound to the requesting full JID
and the command's node, and expire after SESSION_TTL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, ClassVar

from ...core.iq import IQContext
from ...core.modules import HOST, Module, iq_handler
from ...errors import StanzaError
from ...util.ids import new_id
from ...xml.element import Element
from ...xml.ns import NS_COMMANDS, NS_DATA, NS_DISCO_INFO
from ..disco import Disco
from ..roster import Roster
from .commands import COMMANDS, Admin, Command, Outcome, command_error

if TYPE_CHECKING:
    from ...core.api import ModuleServer

SESSION_TTL = 600.0     # seconds an admin may take to fill a form
MAX_SESSIONS = 256      # open sessions kept, all requesters together (the oldest go first)
ACTIONS = ("execute", "cancel", "complete", "next", "prev")


class _Pending:
    __slots__ = ("requester", "node", "expires")

    def __init__(self, requester: str, node: str) -> None:
        self.requester = requester
        self.node = node
        self.expires = time.monotonic() + SESSION_TTL


class AdHoc(Module):
    name = "adhoc"
    description = "Ad-hoc commands for the server's administrators (XEP-0050, XEP-0133)"
    xeps: ClassVar[dict[str, str]] = {"0050": "1.3.0", "0133": "1.3.1"}
    features: ClassVar[list[str]] = [NS_COMMANDS]
    depends = (Disco,)
    uses = (Roster,)  # (user statistics: roster size)

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.commands: dict[str, Command] = {c.node: c for c in COMMANDS}
        self.pending: OrderedDict[str, _Pending] = OrderedDict()

    async def start(self) -> None:
        self.admin = Admin(self.server, self.optional(Roster))
        disco = self.require(Disco)
        disco.items_nodes[NS_COMMANDS] = self._command_items
        disco.info_nodes[NS_COMMANDS] = self._commands_info
        for node in self.commands:
            disco.info_nodes[node] = self._command_info

    def is_admin(self, ctx: IQContext) -> bool:
        return ctx.frm.bare in self.server.config.server.admins

    # -- discovery (XEP-0050 §2.2, §2.3) ------------------------------------------------------
    def _command_items(self, ctx: IQContext, node: str) -> list[tuple[str, str | None, str | None]]:
        admin = self.is_admin(ctx)  # §2.2: only the commands the requester may run
        return [(ctx.to.domain, c.name, c.node) for c in self.commands.values()
                if c.public or admin]

    def _commands_info(self, ctx: IQContext, node: str) -> Element:
        q = Element("query", NS_DISCO_INFO, {"node": node})
        q.add("identity", attrs={"category": "automation", "type": "command-list",
                                 "name": "Administration"})
        return q

    def _command_info(self, ctx: IQContext, node: str) -> Element:
        if not self.commands[node].public and not self.is_admin(ctx):
            raise StanzaError("forbidden", "administrators only")
        q = Element("query", NS_DISCO_INFO, {"node": node})
        q.add("identity", attrs={"category": "automation", "type": "command-node",
                                 "name": self.commands[node].name})
        q.add("feature", attrs={"var": NS_COMMANDS})
        q.add("feature", attrs={"var": NS_DATA})
        return q

    # -- execution (XEP-0050 §3.4, §4.4) ------------------------------------------------------
    @iq_handler("set", NS_COMMANDS, "command", scope=HOST)
    async def command(self, iq: Element, ctx: IQContext) -> Element:
        req = iq.first_child()
        assert req is not None
        action = req.get("action") or "execute"
        if action not in ACTIONS:
            raise command_error("malformed-action", f"unknown action {action!r}")
        cmd = self.commands.get(req.get("node") or "")
        if cmd is None:
            raise StanzaError("item-not-found", "no such command")
        if not cmd.public and not self.is_admin(ctx):
            self.log.info("%s, not an administrator, tried %s", ctx.frm.bare, cmd.node)
            raise StanzaError("forbidden", "administrators only")
        sid = req.get("sessionid")
        if sid is None:
            if action != "execute":
                raise command_error("bad-sessionid", "a session starts with 'execute'")
            if not cmd.fields:
                return self._completed(cmd, new_id(), await cmd.run(self.admin, ctx, {}), ctx)
            return self._start(cmd, ctx)
        self._take(sid, cmd, ctx)
        if action == "cancel":
            return Element("command", NS_COMMANDS, {"node": cmd.node, "sessionid": sid,
                                                    "status": "canceled"})
        if action in ("next", "prev"):
            self._keep(sid, cmd, ctx)
            raise command_error("bad-action", "this command has a single stage: complete or cancel")
        try:
            values = cmd.parse(req.find("x", NS_DATA))
            outcome = await cmd.run(self.admin, ctx, values)
        except StanzaError as e:
            if e.type == "modify":
                self._keep(sid, cmd, ctx)  # the admin may correct the form and submit again
            raise
        return self._completed(cmd, sid, outcome, ctx)

    def _start(self, cmd: Command, ctx: IQContext) -> Element:
        sid = new_id()
        self._keep(sid, cmd, ctx)
        out = Element("command", NS_COMMANDS, {"node": cmd.node, "sessionid": sid,
                                               "status": "executing"})
        out.add("actions", attrs={"execute": "complete"}).add("complete")
        out.append(cmd.form())
        return out

    def _keep(self, sid: str, cmd: Command, ctx: IQContext) -> None:
        self.pending[sid] = _Pending(ctx.frm.full, cmd.node)
        while len(self.pending) > MAX_SESSIONS:
            self.pending.popitem(last=False)

    def _take(self, sid: str, cmd: Command, ctx: IQContext) -> None:
        """Remove the session ``sid`` of this requester and command, or raise the §4.6 error."""
        p = self.pending.get(sid)
        if p is None or p.requester != ctx.frm.full or p.node != cmd.node:
            raise command_error("bad-sessionid", "no such session of this command")
        del self.pending[sid]
        if time.monotonic() > p.expires:
            raise command_error("session-expired", "the session expired: execute the command again")

    def _completed(self, cmd: Command, sid: str, outcome: Outcome, ctx: IQContext) -> Element:
        self.log.info("%s ran %s: %s", ctx.frm.full, cmd.node.rpartition("#")[2], outcome.note)
        out = Element("command", NS_COMMANDS, {"node": cmd.node, "sessionid": sid,
                                               "status": "completed"})
        out.add("note", attrs={"type": outcome.note_type}, text=outcome.note)
        if outcome.form is not None:
            out.append(outcome.form)
        return out

