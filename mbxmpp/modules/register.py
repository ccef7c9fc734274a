"""In-Band Registration (XEP-0077) for a server whose accounts come from the mail system.

There is no sign-up: no <register/> stream feature (§8), and before authentication a request for
the registration fields is <service-unavailable/> (§3.1: the host does not offer in-band
registration), an attempt to register <not-allowed/>, a removal <registration-required/> (§3.2),
each with a text that says where accounts come from. Only on a stream secure enough for SASL; any
other IQ before authentication still ends the stream (RFC 6120 §4.9.3.12). After authentication
an account may, on its own home server (§3.2, §3.3):

- read its registration: <registered/> and its username;
- change its password (internal store only): the same steps as ``python -m mbxmpp user passwd``
  (control.set_password), so every other session of the account ends with <reset/> and logs in
  again; the session that asked stays;
- cancel its registration (internal store only): the same steps as ``user del``
  (control.delete_account): the IQ result, then <not-authorized/> on every stream of the account
  (§3.2), then its data is deleted through ACCOUNT_DELETED.

With an external backend (Dovecot, LDAP) the mail system owns the password and the account: both
are <not-allowed/> with a text that sends the user to the mail provider, and ``jabber:iq:register``
is not advertised, so that clients do not offer a password change that always fails. Errors of
this module never echo the request (§3.3: it carries the password), and carry the legacy
code of §9 (XEP-0086).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..control import delete_account, set_password
from ..core import events as ev
from ..core.iq import IQContext
from ..core.modules import BARE, HOST, SELF, Module, hook, iq_handler
from ..errors import StanzaError
from ..jid import JID, JIDError, nodeprep
from ..stream.scram import make_credentials
from ..xml.build import error_reply, iq_result
from ..xml.element import Element
from ..xml.ns import NS_REGISTER

if TYPE_CHECKING:
    from ..core.api import ModuleServer
    from ..core.sessions import Session

log = logging.getLogger(__name__)

NO_SIGNUP = ("There is no sign-up here: chat accounts come from the mail service. Log in with "
             "your mail address and mail password.")
MAIL_PASSWORD = ("Your chat password is your mail password: change it with your mail provider.")
MAIL_ACCOUNT = ("Your chat account is your mail account: close it with your mail provider.")
REGISTERED = "You are registered: you may change your password or delete your account here."
REGISTERED_EXTERNAL = ("You are registered through your mail account: its password and the "
                       "account itself are managed by your mail provider.")

# XEP-0077 §9 / XEP-0086: the HTTP-style code beside each condition.
LEGACY_CODES = {"bad-request": "400", "unexpected-request": "400", "not-authorized": "401",
                "forbidden": "403", "not-allowed": "405", "not-acceptable": "406",
                "registration-required": "407", "internal-server-error": "500",
                "service-unavailable": "503"}


def error(iq: Element, err: StanzaError) -> Element:
    """The error reply, without the request (it may carry a password) and with the legacy code."""
    reply = error_reply(iq, err, include_payload=False)
    reply.children[-1].set("code", LEGACY_CODES.get(err.condition, "500"))  # type: ignore[union-attr]
    return reply


def unregistered(iq: Element, query: Element) -> StanzaError:
    """The answer to an entity that has no account here (before login, another server's user):
    §3.1 for the fields, no sign-up, and §3.2's 'not previously registered' for a removal."""
    if iq.get("type") == "get":
        return StanzaError("service-unavailable", NO_SIGNUP)
    if query.find("remove", NS_REGISTER) is not None:
        return StanzaError("registration-required", "there is no account to remove")
    return StanzaError("not-allowed", NO_SIGNUP)


def _to_stream_host(to: str | None, host: str | None) -> bool:
    """Before authentication only the server the stream is with is asked (no 'to' is it too)."""
    if to is None:
        return True
    try:
        jid = JID.parse(to)
    except JIDError:
        return False
    return jid.local is None and jid.resource is None and jid.domain == host


class Register(Module):
    name = "register"
    description = "In-band registration: password change and account removal, no sign-up"
    xeps = {"0077": "2.4"}

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        # The backend is fixed at start-up (changing [auth] needs a restart).
        self.internal = server.config.auth.backend == "internal"
        if self.internal:
            # Served on the server domain only (as Prosody's mod_register): where the account
            # can change its password. (vars(): `features` is otherwise a class-level list.)
            vars(self)["features"] = [NS_REGISTER]

    # -- before authentication -------------------------------------------------------------------
    @hook(ev.PREAUTH_IQ)
    def before_login(self, e: Any) -> bool | None:
        iq: Element = e.iq
        query = iq.first_child()
        if query is None or query.ns != NS_REGISTER or query.tag != "query" \
                or iq.get("type") not in ("get", "set"):
            return None  # not ours: the stream ends with <not-authorized/>
        if not _to_stream_host(iq.get("to"), e.stream.host):
            return None  # another server's (or user's) registration: not ours to answer for
        if not iq.get("id"):
            e.reply(error(iq, StanzaError("bad-request", "IQ needs an id")))
        elif sum(1 for _ in iq.elements()) != 1:
            # RFC 6120 §8.2.3, as after authentication (stream/c2s.py)
            e.reply(error(iq, StanzaError("bad-request", "IQ get/set needs exactly one payload")))
        else:
            e.reply(error(iq, unregistered(iq, query)))
        return True

    # -- after authentication --------------------------------------------------------------------
    @iq_handler("get", NS_REGISTER, "query", scope=BARE)
    @iq_handler("set", NS_REGISTER, "query", scope=BARE)
    def other_account(self, iq: Element, ctx: IQContext) -> Element:
        return error(iq, StanzaError("forbidden", "only the account itself may do that"))

    @iq_handler("get", NS_REGISTER, "query", scope=(HOST, SELF))
    def registration(self, iq: Element, ctx: IQContext) -> Element:
        query: Element = iq.first_child()  # type: ignore[assignment]
        session = self._own_session(ctx)
        if session is None:
            return error(iq, unregistered(iq, query))
        q = Element("query", NS_REGISTER)
        q.add("registered")
        q.add("username", text=session.username)
        if self.internal:
            q.add("password")  # (§3.1: MAY be empty)
        q.add("instructions", text=REGISTERED if self.internal else REGISTERED_EXTERNAL)
        return iq_result(iq, q)

    @iq_handler("set", NS_REGISTER, "query", scope=(HOST, SELF))
    async def change(self, iq: Element, ctx: IQContext) -> Element | bool | None:
        query: Element = iq.first_child()  # type: ignore[assignment]
        try:
            session = self._own_session(ctx)
            if session is None:
                raise unregistered(iq, query)
            if query.find("remove", NS_REGISTER) is not None:
                return await self._remove(iq, query, session)
            await self._change_password(query, session)
            return None  # the result
        except StanzaError as e:
            return error(iq, e)
        except Exception:
            # (logged without the stanza: it carries a password)
            log.exception("in-band registration request of %s failed", ctx.frm.bare)
            return error(iq, StanzaError("internal-server-error"))

    def _own_session(self, ctx: IQContext) -> Session | None:
        """The requesting session when it asks its own home server (a local client of the
        addressed domain); None for anyone else (another server's user, a component)."""
        session = ctx.origin
        if session is None or session.host != ctx.to.domain:
            return None
        return session

    async def _remove(self, iq: Element, query: Element, session: Session) -> bool:
        if sum(1 for _ in query.elements()) != 1:
            raise StanzaError("bad-request", "<remove/> must be the only child of <query/>")
        if not self.internal:
            raise StanzaError("not-allowed", MAIL_ACCOUNT)
        # §3.2: the result, then <not-authorized/> on every stream of the account (this one
        # too) and the account's data deleted: the same steps as `user del`.
        session.send(iq_result(iq))
        await delete_account(self.server.operator, session.bare)
        return False  # (replied above)

    async def _change_password(self, query: Element, session: Session) -> None:
        username = query.findtext("username", NS_REGISTER)
        password = query.findtext("password", NS_REGISTER)
        if not username or not username.strip():
            raise StanzaError("bad-request", "the <username/> of the account is required")
        if not password:
            # §3.3: an empty password never replaces the current one.
            raise StanzaError("bad-request", "a non-empty <password/> is required")
        if not self._is_own_username(username.strip(), session):
            raise StanzaError("bad-request", "<username/> is not this account's")
        if not self.internal:
            raise StanzaError("not-allowed", MAIL_PASSWORD)
        stream = session.stream
        if stream is not None and not getattr(stream, "secure", True):
            # §3.3: a deployment may refuse a password sent over an unencrypted stream.
            raise StanzaError("not-authorized", "the stream is not encrypted")
        accounts = self.server.accounts
        try:  # PBKDF2 takes milliseconds: never on the loop
            creds = await asyncio.get_running_loop().run_in_executor(
                None, make_credentials, password, accounts.iterations)
        except ValueError:  # SASLprep refused it (RFC 4013 prohibited characters)
            raise StanzaError("not-acceptable",
                              "the password contains characters that are not allowed") from None
        if accounts.get(session.bare) is None or session.closed:
            # Deleted (or the session ended) while the credentials were derived.
            raise StanzaError("registration-required", "the account no longer exists")
        await set_password(self.server.operator, session.bare, creds, keep=session)

    @staticmethod
    def _is_own_username(username: str, session: Session) -> bool:
        """The account's localpart (what clients send), or its bare JID."""
        local, at, domain = username.rpartition("@")
        if at and domain.lower() != session.host:
            return False
        try:
            return nodeprep(local if at else username) == session.username
        except JIDError:
            return False
