"""The XEP-0133 Service Administration commands this server can answer truly.

Account changes go through the same operations as the control socket (mbxmpp/control.py), so a
deleted, disabled or re-keyed account's sessions end with the same stream errors. Left out: the
retracted get-user-password (no password is stored), the active/idle user lists and the
stanzas-per-second/logins-per-minute statistics (nothing measures them), and the motd, welcome,
blacklist, admin-list, restart and shutdown commands (no such features, or the config's business).

Lists, counts and the announcement concern the domain the command was sent to; the account
commands accept an account of any domain this server serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ...control import (ControlError, add_account, delete_account, disable_account,
                        enable_account, kick, set_password)
from ...core.iq import IQContext
from ...errors import StanzaError
from ...jid import JID, JIDError
from ...stream.scram import ScramCredential, make_credentials
from ...xml.element import Element
from ...xml.ns import NS_ADMIN, NS_CLIENT, NS_COMMANDS, NS_DATA

if TYPE_CHECKING:
    from ...core.api import ModuleServer, Operator
    from ..roster import Roster

Values = dict[str, list[str]]


class Admin:
    """What the commands act on: the module's view of the server, the operator's powers (the
    control socket's account operations) and the roster, when it is loaded."""

    __slots__ = ("accounts", "sessions", "is_local", "route", "operator", "roster")

    def __init__(self, server: ModuleServer, roster: Roster | None) -> None:
        self.accounts = server.accounts
        self.sessions = server.sessions
        self.is_local = server.is_local
        self.route = server.route
        self.operator: Operator = server.operator
        self.roster = roster


def command_error(app: str, text: str) -> StanzaError:
    """bad-request with the XEP-0050 §4.6 condition ``app`` (bad-action, bad-payload...)."""
    return StanzaError("bad-request", text, app_condition=(NS_COMMANDS, app))


def bad_payload(text: str) -> StanzaError:
    return command_error("bad-payload", text)


class Outcome:
    """What a completed command reports: a note and, for queries, a result form."""

    __slots__ = ("note", "note_type", "form")

    def __init__(self, note: str, form: Element | None = None, note_type: str = "info") -> None:
        self.note = note
        self.note_type = note_type
        self.form = form


class Field:
    __slots__ = ("var", "type", "label", "required", "options")

    def __init__(self, var: str, type: str, label: str, required: bool = True,
                 options: tuple[str, ...] = ()) -> None:
        self.var = var
        self.type = type
        self.label = label
        self.required = required
        self.options = options


Run = Callable[["Admin", IQContext, Values], Awaitable[Outcome]]


class Command:
    __slots__ = ("node", "name", "instructions", "fields", "run", "public")

    def __init__(self, action: str, name: str, instructions: str, fields: tuple[Field, ...],
                 run: Run, *, public: bool = False) -> None:
        # A public command is listed for and run by every user, under its bare name.
        self.node = action if public else f"{NS_ADMIN}#{action}"
        self.public = public
        self.name = name
        self.instructions = instructions
        self.fields = fields
        self.run = run

    def form(self) -> Element:
        x = _form("form")
        x.add("title", text=self.name)
        x.add("instructions", text=self.instructions)
        for f in self.fields:
            el = x.add("field", attrs={"var": f.var, "type": f.type, "label": f.label})
            for opt in f.options:
                el.add("option", attrs={"label": opt}).add("value", text=opt)
            if f.required:
                el.add("required")
        return x

    def parse(self, x: Element | None) -> Values:
        """The submitted values, every required field present (XEP-0004 §3.3, XEP-0050 §4.6)."""
        if x is None or x.get("type") != "submit":
            raise bad_payload("the command needs a submitted data form")
        values: Values = {}
        for el in x.findall("field", NS_DATA):
            var = el.get("var")
            if var:
                values[var] = [v.text for v in el.findall("value", NS_DATA)]
        form_type = values.pop("FORM_TYPE", None)
        if form_type is not None and [v.strip() for v in form_type] != [NS_ADMIN]:
            raise bad_payload(f"the form's FORM_TYPE must be {NS_ADMIN}")
        for f in self.fields:
            if f.required and not any(v.strip() for v in values.get(f.var, ())):
                raise bad_payload(f"the field {f.var!r} is required")
        return values


def _form(type: str) -> Element:
    x = Element("x", NS_DATA, {"type": type})
    x.add("field", attrs={"var": "FORM_TYPE", "type": "hidden"}).add("value", text=NS_ADMIN)
    return x


def _result(fields: list[tuple[str, str, str, list[str]]]) -> Element:
    """A result form of (var, type, label, values)."""
    x = _form("result")
    for var, type, label, values in fields:
        el = x.add("field", attrs={"var": var, "type": type, "label": label})
        for v in values:
            el.add("value", text=v)
    return x


# -- reading the submitted values -------------------------------------------------------------
def _jid(server: Admin, raw: str, *, full_ok: bool = False) -> JID:
    try:
        j = JID.parse(raw.strip())
    except JIDError:
        raise bad_payload(f"{raw!r} is not a valid JID") from None
    if j.local is None or (j.resource is not None and not full_ok):
        raise bad_payload(f"{raw!r} is not an account address (user@domain)")
    if not server.is_local(j.domain):
        raise bad_payload(f"{j.domain} is not a domain of this server")
    return j


def _existing(server: Admin, j: JID) -> None:
    if not server.accounts.exists(j.bare):
        raise StanzaError("item-not-found", f"no account {j.bare}")


def _account(server: Admin, values: Values) -> str:
    j = _jid(server, values["accountjid"][0])
    _existing(server, j)
    return j.bare


def _accounts(server: Admin, values: Values, *, full_ok: bool = False) -> list[JID]:
    """Every JID of the jid-multi 'accountjids', checked before anything is changed."""
    jids = [_jid(server, v, full_ok=full_ok) for v in values["accountjids"] if v.strip()]
    for j in jids:
        _existing(server, j)
    return list({j.full: j for j in jids}.values())


async def _credentials(server: Admin, values: Values, *, verify: bool
                       ) -> dict[str, ScramCredential]:
    password = values["password"][0]
    if verify and values.get("password-verify", [None])[0] != password:
        raise bad_payload("the passwords differ")
    loop = asyncio.get_running_loop()
    try:  # PBKDF2 takes milliseconds: never on the loop
        return await loop.run_in_executor(None, make_credentials, password,
                                          server.accounts.iterations)
    except ValueError:  # SASLprep refused it (RFC 4013 prohibited characters)
        raise bad_payload("the password contains characters that are not allowed") from None


def _max_items(values: Values) -> int | None:
    raw = (values.get("max_items") or ["none"])[0].strip()
    if raw in ("", "none"):
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise bad_payload("max_items must be a positive number or 'none'")
    return int(raw)


def _names(jids: list[JID]) -> str:
    return ", ".join(j.full for j in jids)


# -- the commands -------------------------------------------------------------------------------
async def add_user(server: Admin, ctx: IQContext, values: Values) -> Outcome:
    bare = _jid(server, values["accountjid"][0]).bare
    if server.accounts.get(bare) is not None:
        raise StanzaError("conflict", f"{bare} already exists")
    creds = await _credentials(server, values, verify=True)
    try:
        await add_account(server.operator, bare, creds)
    except ControlError as e:  # created meanwhile
        raise StanzaError("conflict", str(e)) from None
    return Outcome(f"Account {bare} created.")


def _ending(op: Callable[[Operator, str], Awaitable[int]], done: str) -> Run:
    """A command applying ``op`` (which ends the account's sessions) to each of 'accountjids'."""
    async def run(server: Admin, ctx: IQContext, values: Values) -> Outcome:
        jids = _accounts(server, values)
        ended = 0
        for j in jids:
            ended += await op(server.operator, j.bare)
        return Outcome(f"{done} {_names(jids)}; {ended} session(s) ended.")
    return run


async def reenable_user(server: Admin, ctx: IQContext, values: Values) -> Outcome:
    jids = _accounts(server, values)
    for j in jids:
        await enable_account(server.operator, j.bare)
    return Outcome(f"Re-enabled {_names(jids)}.")


async def end_user_session(server: Admin, ctx: IQContext, values: Values) -> Outcome:
    jids = _accounts(server, values, full_ok=True)
    ended = sum(kick(server.operator, j.full) for j in jids)
    if not ended:
        return Outcome(f"No session of {_names(jids)} was open.", note_type="warn")
    return Outcome(f"Ended {ended} session(s) of {_names(jids)}.")


async def change_user_password(server: Admin, ctx: IQContext, values: Values) -> Outcome:
    bare = _account(server, values)
    ended = await set_password(server.operator, bare, await _credentials(server, values, verify=False))
    return Outcome(f"Password of {bare} changed; {ended} session(s) ended.")


async def user_stats(server: Admin, ctx: IQContext, values: Values) -> Outcome:
    bare = _account(server, values)
    sessions = [s for s in server.operator.describe_sessions() if s["jid"].partition("/")[0] == bare]
    fields = [("ipaddresses", "text-multi", "IP addresses",
               sorted({s["ip"] for s in sessions if s["ip"]})),
              ("onlineresources", "text-multi", "Online resources",
               sorted(s["jid"].partition("/")[2] for s in sessions))]
    roster = server.roster
    if roster is not None:
        fields.insert(1, ("rostersize", "text-single", "Roster size", [str(len(roster.items(bare)))]))
    return Outcome(f"Statistics of {bare}.", _result(fields))


def _online(server: Admin, domain: str) -> list[str]:
    return sorted(b for b in server.sessions.by_bare if b.endswith("@" + domain))


def _registered(server: Admin, domain: str) -> list[str]:
    return sorted(server.accounts.list(domain))


def _disabled(server: Admin, domain: str) -> list[str]:
    return [b for b in _registered(server, domain) if (server.accounts.get(b) or {}).get("disabled")]


def _count(var: str, label: str, of: Callable[[Admin, str], list[str]]) -> Run:
    async def run(server: Admin, ctx: IQContext, values: Values) -> Outcome:
        n = len(of(server, ctx.to.domain))
        return Outcome(f"{label}: {n}.", _result([(var, "text-single", label, [str(n)])]))
    return run


def _listing(var: str, label: str, of: Callable[[Admin, str], list[str]]) -> Run:
    async def run(server: Admin, ctx: IQContext, values: Values) -> Outcome:
        limit = _max_items(values)
        jids = of(server, ctx.to.domain)
        shown = jids if limit is None else jids[:limit]
        note = f"{len(jids)} in all" + (f", the first {len(shown)} shown." if len(shown) < len(jids) else ".")
        return Outcome(note, _result([(var, "jid-multi", label, shown)]))
    return run


async def announce(server: Admin, ctx: IQContext, values: Values) -> Outcome:
    body = "\n".join(values["announcement"])
    domain = ctx.to.domain
    recipients = [full for full in list(server.sessions.full) if full.partition("/")[0].endswith("@" + domain)]
    for full in recipients:
        # headline: shown once, neither archived nor stored offline (RFC 6121 §5.2.2).
        msg = Element("message", NS_CLIENT, {"from": domain, "to": full, "type": "headline"})
        msg.add("body", text=body)
        server.route(msg)
    return Outcome(f"Announcement sent to {len(recipients)} session(s).")


_ONE = Field("accountjid", "jid-single", "The Jabber ID of the account")
_MANY = Field("accountjids", "jid-multi", "The Jabber ID(s) of the accounts")
_PASSWORD = Field("password", "text-private", "The new password")
_MAX_ITEMS = Field("max_items", "list-single", "Maximum number of items to show", False,
                   ("25", "50", "75", "100", "150", "200", "none"))

async def ping(_server: object, _ctx: IQContext, _values: Values) -> Outcome:
    return Outcome("Pong")


COMMANDS: tuple[Command, ...] = (
    # Every user's "is the server there" check (Prosody and ejabberd offer it too).
    Command("ping", "Ping", "", (), ping, public=True),
    Command("add-user", "Add a user", "Fill out this form to add a user.",
            (_ONE, Field("password", "text-private", "The password for this account"),
             Field("password-verify", "text-private", "Retype password")), add_user),
    Command("delete-user", "Delete users", "The accounts to delete, with all their data.",
            (_MANY,), _ending(delete_account, "Deleted")),
    Command("disable-user", "Disable users", "The accounts to disable: their sessions end and "
            "their logins are refused.", (_MANY,), _ending(disable_account, "Disabled")),
    Command("reenable-user", "Re-enable users", "The accounts to enable again.", (_MANY,),
            reenable_user),
    Command("end-user-session", "End user sessions", "Accounts (all their sessions) or full JIDs "
            "(one session).", (Field("accountjids", "jid-multi", "The Jabber ID(s) for which to end "
                                     "sessions"),), end_user_session),
    Command("change-user-password", "Change a user's password", "The account's sessions end; "
            "its clients log in again with the new password.", (_ONE, _PASSWORD),
            change_user_password),
    Command("user-stats", "Get user statistics", "The account to report on.", (_ONE,), user_stats),
    Command("get-registered-users-num", "Number of registered users", "", (),
            _count("registeredusersnum", "The number of registered users", _registered)),
    Command("get-disabled-users-num", "Number of disabled users", "", (),
            _count("disabledusersnum", "The number of disabled users", _disabled)),
    Command("get-online-users-num", "Number of online users", "", (),
            _count("onlineusersnum", "The number of online users", _online)),
    Command("get-registered-users-list", "List registered users", "How many to show.", (_MAX_ITEMS,),
            _listing("registereduserjids", "The list of all users", _registered)),
    Command("get-disabled-users-list", "List disabled users", "How many to show.", (_MAX_ITEMS,),
            _listing("disableduserjids", "The list of all disabled users", _disabled)),
    Command("get-online-users-list", "List online users", "How many to show.", (_MAX_ITEMS,),
            _listing("onlineuserjids", "The list of all online users", _online)),
    Command("announce", "Send an announcement to online users", "The message every online user "
            "of this domain receives.", (Field("announcement", "text-multi", "Announcement"),),
            announce),
)
