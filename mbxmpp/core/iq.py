"""IQ dispatch: a table keyed by (type, payload ns, payload name, scope), and outgoing IQs."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any, Callable

from ..errors import StanzaError
from ..jid import JID, JIDError
from ..util.ids import new_id
from ..util.logjson import loggable
from ..xml.build import error_reply, iq_result
from ..xml.element import Element
from .modules import BARE, HOST, SELF

if TYPE_CHECKING:
    from .hosts import ComponentHost
    from .sessions import Session

log = logging.getLogger(__name__)


class IQContext:
    """What a handler knows about an IQ besides the stanza."""

    __slots__ = ("frm", "to", "origin", "scope", "host")

    def __init__(self, frm: JID, to: JID, origin: Session | None, scope: str,
                 host: ComponentHost | None = None) -> None:
        self.frm = frm          # the sender (full JID for a local client)
        self.to = to            # the addressee (the user's bare JID for SELF, the domain for HOST)
        self.origin = origin    # the sending local session, if any
        self.scope = scope
        self.host = host        # the component host an IQ to a component arrived at


class IQDispatcher:
    def __init__(self, send: Callable[[Element], None]) -> None:
        self._send = send  # routes a reply
        self._table: dict[tuple[str, str, str, str], Callable] = {}
        self._pending: dict[str, tuple[asyncio.Future, str | None]] = {}  # id -> (future, addressee)
        self._tasks: set[asyncio.Task] = set()

    def register(self, type: str, ns: str, tag: str, scope: str, fn: Callable) -> None:
        key = (type, ns, tag, scope)
        if key in self._table:
            raise ValueError(f"two handlers for IQ {key}")
        self._table[key] = fn

    def lookup(self, type: str, ns: str, tag: str, scope: str) -> Callable | None:
        t = self._table
        fn = t.get((type, ns, tag, scope))
        if fn is None and scope == SELF:
            fn = t.get((type, ns, tag, BARE))
        return fn

    def has_namespace(self, ns: str, scope: str = HOST) -> bool:
        return any(k[1] == ns and k[3] == scope for k in self._table)

    def dispatch(self, iq: Element, ctx: IQContext) -> None:
        """Handle an IQ addressed to the server or to a user's bare JID."""
        type_ = iq.attrs.get("type")
        if type_ == "result" or type_ == "error":
            iq_id = iq.attrs.get("id", "")
            entry = self._pending.get(iq_id)
            # RFC 6120 §8.2.3: a response comes from the entity the request went to; anyone
            # else who learned or guessed the id must not be able to answer for it.
            if entry is not None and _answers(iq.attrs.get("from"), entry[1]):
                del self._pending[iq_id]
                if not entry[0].done():
                    entry[0].set_result(iq)
            return
        if "to" not in iq.attrs and ctx.scope == SELF:
            # RFC 6120 §10.3.3: handled as addressed to the account's bare JID; the reply is
            # from it, so it can be routed (and clients match it).
            iq.attrs["to"] = ctx.to.bare
            iq._bytes = None
        payload = iq.first_child()
        if payload is None:
            self._send(error_reply(iq, StanzaError("bad-request", "IQ without payload")))
            return
        fn = self.lookup(type_, payload.ns, payload.tag, ctx.scope)  # type: ignore[arg-type]
        if fn is None:
            self._send(error_reply(iq, StanzaError("service-unavailable")))
            return
        try:
            result = fn(iq, ctx)
        except StanzaError as e:
            self._send(error_reply(iq, e))
            return
        except Exception:
            log.exception("IQ handler %r failed", fn)
            self._send(error_reply(iq, StanzaError("internal-server-error")))
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._finish(iq, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._reply(iq, result)

    def busy(self) -> bool:
        """Whether an asynchronous handler is still running (its writes may not be queued yet)."""
        return bool(self._tasks)

    async def _finish(self, iq: Element, aw: Any) -> None:
        try:
            result = await aw
        except StanzaError as e:
            self._send(error_reply(iq, e))
            return
        except Exception:
            log.exception("IQ handler failed for %s", loggable(iq))
            self._send(error_reply(iq, StanzaError("internal-server-error")))
            return
        self._reply(iq, result)

    def _reply(self, iq: Element, result: Any) -> None:
        if result is False:  # the handler replied itself
            return
        if isinstance(result, Element) and result.tag == "iq":
            self._send(result)
        else:
            self._send(iq_result(iq, result))

    async def request(self, iq: Element, timeout: float = 30.0) -> Element:
        """Send an IQ get/set from the server and wait for its result or error."""
        iq_id = iq.attrs.get("id")
        if not iq_id:
            iq_id = new_id()
            iq.set("id", iq_id)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[iq_id] = (fut, iq.attrs.get("to"))
        self._send(iq)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            entry = self._pending.get(iq_id)
            if entry is not None and entry[0] is fut:
                del self._pending[iq_id]


def _answers(frm: str | None, to: str | None) -> bool:
    """Is a response from ``frm`` one to a request sent to ``to``? A request to a bare JID or a
    domain may be answered by it or by one of its resources."""
    if to is None:
        return True
    if frm is None:
        return False
    try:
        f, t = JID.parse(frm), JID.parse(to)
    except JIDError:
        return False
    return f.full == t.full or (t.resource is None and f.bare == t.bare)


__all__ = ["IQDispatcher", "IQContext", "HOST", "SELF", "BARE"]
