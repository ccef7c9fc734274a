"""Message Archive Management (XEP-0313) with XEP-0359 stanza-ids, XEP-0441 preferences and a
retention sweep, on the storage layer's ArchiveStore.

Every one-to-one message that a local account sends or receives and that XEP-0313 §7.1.1 deems
worth keeping is appended to the account's archive (owner = bare JID, with = the other party's
full JID).  The recipient's copy gets ``<stanza-id by=bare id=archive-id/>`` before delivery (also
on its way to offline storage).  The archive is keyed by owner, so a MUC room reuses it with
owner = room JID (:meth:`MAM.archive_stanza`, :meth:`MAM.answer_query`).
"""

from __future__ import annotations

import asyncio
import functools
import re
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from ...core import events as ev
from ...core.iq import IQContext
from ...core.modules import BARE, SELF, Module, hook, iq_handler
from ...errors import StanzaError
from ...jid import JID
from ...storage.api import ArchiveItem, ArchiveStore
from ...xml.build import error_reply
from ...xml.element import Element
from ...xml.ns import (NS_CHAT_MARKERS, NS_CLIENT, NS_CONFERENCE, NS_EME, NS_HINTS, NS_JINGLE_MESSAGE_0,
                       NS_JINGLE_MESSAGE_1, NS_LEGACY_PGP, NS_MAM, NS_MAM_EXT, NS_MUC_USER, NS_OMEMO,
                       NS_OMEMO_LEGACY, NS_OPENPGP, NS_REACTIONS, NS_RETRACT, NS_STANZA_ID)
from ..roster import Roster
from .prefs import Prefs, PrefsStore, parse_prefs, prefs_element
from .query import (DEFAULT_MAX, MAX_MAX, Page, Query, fin_element, parse_query, query_form,
                    result_messages, run_query, stamp, stored_bytes)
from .quota import ONE_SENDER, OWN, Ledger, Tally, archive_bounds, sent_bound
from .retention import Sweeper, oldest_kept
from .options import MAMConfig

if TYPE_CHECKING:
    from ...core.router import RouteEvent
    from ...core.api import ModuleServer
    from ...storage.api import Storage

__all__ = ["MAM", "archive_report", "format_archive_report", "should_store", "ARCHIVE_STORE",
           "PREFS_STORE"]

ARCHIVE_STORE = "mam"
PREFS_STORE = "mam_prefs"
RECORD_VERSION = 1

# Archiving runs after filters that refuse a message (blocking, privacy: give them priority > 10)
# and before modules that copy or deliver it (carbons, at the default 0), so that copies of the
# recipient's message carry its stanza-id.
PRIORITY = 10

# The 'from' of a stored stanza's start tag (c2s and s2s stamp it): whose message it was.
_FROM = re.compile(rb"""\sfrom=(['"])([^'"/]*)""")

# Payloads that make a message worth archiving besides <body/> (XEP-0313 §7.1.1: a server MAY store
# more than messages with a body): (ns, name or None for any element in ns).
_KEEP: frozenset[tuple[str, str | None]] = frozenset((
    (NS_CLIENT, "body"),
    (NS_CLIENT, "subject"),
    (NS_EME, "encryption"),                 # XEP-0380
    (NS_OMEMO_LEGACY, "encrypted"),         # OMEMO (legacy)
    (NS_OMEMO, "encrypted"),                # XEP-0384
    (NS_OPENPGP, "openpgp"),                # XEP-0373
    (NS_LEGACY_PGP, "x"),                   # XEP-0027
    (NS_CONFERENCE, "x"),                   # XEP-0249 invitations
    (NS_MUC_USER, "x"),                     # XEP-0045 mediated invitations
    (NS_CHAT_MARKERS, "displayed"),         # XEP-0333 read state, synced
    (NS_CHAT_MARKERS, "acknowledged"),
    (NS_RETRACT, "retract"),                # XEP-0424
    (NS_REACTIONS, "reactions"),            # XEP-0444
    (NS_JINGLE_MESSAGE_0, None),            # XEP-0353 call log
    (NS_JINGLE_MESSAGE_1, None),
))


def _keeps(el: Element) -> bool:
    ns = el.ns
    if (ns, el.tag) in _KEEP or (ns, None) in _KEEP:
        # A muc#user <x/> counts only as an invitation (not the MUC presence/status payload).
        return ns != NS_MUC_USER or el.find("invite") is not None
    return False


def should_store(stanza: Element) -> bool:
    """XEP-0313 §7.1.1 and XEP-0334 hints: whether a one-to-one message belongs in an archive.

    Types normal and chat, and headline only with a store hint (never error; groupchat goes to
    the room's archive); a no-store or no-permanent-store hint wins, a store hint forces;
    otherwise a body or another conversation payload (not chat states or receipts alone)."""
    t = stanza.attrs.get("type", "normal")
    if t == "error" or t == "groupchat":
        return False
    # RFC 6121 §5.2.2: a message of an unknown type is handled as 'normal'.
    keep = False
    for c in stanza.children:
        if c.__class__ is str:
            continue
        if c.ns == NS_HINTS:
            if c.tag == "no-store" or c.tag == "no-permanent-store":
                return False  # XEP-0334 §4.2-4.3
            if c.tag == "store":
                keep = True  # XEP-0334 §4.4: SHOULD be stored
        elif not keep and t != "headline" and _keeps(c):
            keep = True
    return keep


def strip_stanza_ids(stanza: Element, by: str) -> None:
    """XEP-0359 §4 rule 2: remove stanza-ids claiming to be ours (``by`` is the archive's JID)."""
    for c in stanza.children:
        if c.__class__ is not str and c.tag == "stanza-id" and c.ns == NS_STANZA_ID:
            break
    else:
        return
    stanza.children = [c for c in stanza.children
                       if c.__class__ is str or c.tag != "stanza-id" or c.ns != NS_STANZA_ID
                       or not _same_jid(c.attrs.get("by"), by)]
    stanza.clear_cache()


def _same_jid(a: str | None, b: str) -> bool:
    if a is None:
        return False
    if a == b:
        return True
    try:
        return JID.parse(a).full == b
    except StanzaError:
        return False


class MAM(Module[MAMConfig]):
    name = "mam"
    description = "Message Archive Management: server-side history of one-to-one messages"
    xeps = {"0313": "1.1.3", "0359": "0.7.0", "0441": "0.2.0", "0059": "1.0"}
    account_features = [NS_MAM, NS_MAM_EXT, NS_STANZA_ID]
    uses = (Roster,)  # the 'roster' preference (XEP-0441)

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        cfg = self.options
        self.archive: ArchiveStore = server.storage.archive(ARCHIVE_STORE, RECORD_VERSION)
        self.prefs = PrefsStore(server.storage.keyval(PREFS_STORE, 1))
        self.retention = cfg.retention
        self.sweeper = Sweeper(self.archive, cfg.retention, cfg.sweep_interval)
        self.own_bound, self.sender_bound, self.others_bound = archive_bounds(cfg)
        self.ledger = Ledger(self._seed, cfg.quota_window)
        # What each sender put into other accounts' archives (only its total is used).
        self.sent_bound = sent_bound(cfg)
        self.sent = Ledger(self._seed_sent, cfg.quota_window)
        self._last_sent: tuple[Element, str, int] | None = None  # (stanza, archive id, size)
        # The recipient's copy of the message being routed: (route event, owner, id, sender,
        # size), to be withdrawn if this routing bounces it after all (offline storage full).
        self._last_received: tuple[RouteEvent, str, str, str, int] | None = None
        self._pending: dict[str, asyncio.Future[None]] = {}
        self.archived_bytes = 0  # stanza bytes appended since start (metrics)
        self.default_max = DEFAULT_MAX
        self.max_max = MAX_MAX
        self.roster: Roster | None = None

    async def start(self) -> None:
        self.roster = self.optional(Roster)
        self.sweeper.start()

    async def stop(self) -> None:
        await self.sweeper.stop()

    @hook(ev.ACCOUNT_DELETED)
    def account_deleted(self, e: Any) -> None:
        # The archive and the preferences go with the account's data (storage.delete_owner);
        # the cached preferences must not outlive them into a re-created account.
        self.prefs.forget(e.bare)

    # -- archiving ----------------------------------------------------------------------------
    def archive_stanza(self, owner: str, stanza: Element, with_: str | None,
                       id: str | None = None) -> str:
        """Append ``stanza`` to ``owner``'s archive; returns the archive id (= stanza-id).

        ``id`` is one from ``self.archive.new_id()`` when the caller needed it first.  The record's
        value is ``[stanza_bytes]`` (a list: room archives may append fields); durability: the
        write is in the next group commit, ``storage.flush()`` waits for it."""
        raw = stanza.to_bytes()
        self.archived_bytes += len(raw)  # (metrics)
        id_, fut = self.archive.append(owner, [raw], with_=with_, id=id)
        if isinstance(fut, asyncio.Future) and not fut.done() and self._pending.get(owner) is not fut:
            # Writes commit in call order: the owner's latest append settles all earlier ones
            # (appends of one loop iteration share a future: one callback per owner).
            self._pending[owner] = fut
            fut.add_done_callback(functools.partial(self._settled, owner))
        return id_

    def _settled(self, owner: str, fut: asyncio.Future[None]) -> None:
        if self._pending.get(owner) is fut:
            del self._pending[owner]

    def settled(self, owner: str) -> asyncio.Future[None] | None:
        """The owner's last archive write if it is not committed yet (queries only see committed
        items: a query waits for it, so that what was delivered is in the results)."""
        fut = self._pending.get(owner)
        return None if fut is None or fut.done() else fut

    def _in_roster(self, owner: str) -> Callable[[str], bool]:
        roster = self.roster

        def check(contact: str) -> bool:
            # (no roster module: nobody is in it)
            return roster is not None and roster.get_item(owner, contact) is not None
        return check

    def wants(self, owner: str, contact: JID) -> bool:
        """The owner's preferences for messages to/from ``contact`` (XEP-0441)."""
        p = self.prefs.get(owner)
        return p.is_plain() or p.decide(contact, self._in_roster(owner))

    # -- quotas ------------------------------------------------------------------------------
    def _seed(self, owner: str, since: float | None) -> Tally:
        """The owner's tally rebuilt from its archive (after a restart or an eviction)."""
        t = Tally()
        for it in self.archive.query(owner, start=since):
            raw = stored_bytes(it.value)
            if raw is None:
                continue
            m = _FROM.search(raw, 0, raw.find(b">"))
            frm = m.group(2).decode("utf-8", "replace") if m is not None else owner
            t.add(owner if frm == owner else (it.with_ or "").split("/", 1)[0], len(raw))
        return t

    def _seed_sent(self, sender: str, since: float | None) -> Tally:
        """What ``sender`` put into others' archives, rebuilt from its own archive's copies of
        what it sent (a remote sender, or one that archives nothing of its own, starts at 0)."""
        t = Tally()
        for it in self.archive.query(sender, start=since):
            raw = stored_bytes(it.value)
            if raw is None or (it.with_ or "").split("/", 1)[0] == sender:
                continue
            m = _FROM.search(raw, 0, raw.find(b">"))
            if m is not None and m.group(2).decode("utf-8", "replace") == sender:
                t.total[0] += len(raw)
                t.total[1] += 1
        return t

    def charge(self, owner: str, sender: str, size: int) -> str | None:
        """Count one more item of ``size`` bytes from ``sender`` into ``owner``'s archive in this
        quota window; if a bound refuses it, count nothing and return why."""
        sent = None
        if sender != owner and self.sent_bound.bytes:
            sent = self.sent.get(sender).total
            if sent[0] + size > self.sent_bound.bytes:
                return "the archives of others take no more messages from you" + self._until()
        refused = self.ledger.get(owner).charge(owner, sender, size, self.own_bound,
                                                self.sender_bound, self.others_bound)
        if not refused:
            if sent is not None:
                sent[0] += size
                sent[1] += 1
            return None
        if refused == OWN:
            return "your message archive's quota is used up" + self._until()
        if refused == ONE_SENDER:
            return "the recipient's archive takes no more messages from you" + self._until()
        return "the recipient's archive takes no more messages" + self._until()

    def _until(self) -> str:
        return " until " + stamp(self.ledger.window_end())[:19] + "Z"

    def _unarchive(self, owner: str, id_: str, sender: str, size: int) -> None:
        self.archive.delete(owner, ids=[id_])  # same commit as the append: never visible
        self.ledger.get(owner).add(sender, -size, -1)
        if sender != owner and self.sent_bound.bytes:
            sent = self.sent.get(sender).total
            sent[0] -= size
            sent[1] -= 1

    def withdraw(self, e: RouteEvent) -> None:
        """The message being routed (``e``) was bounced after all: remove the recipient's copy
        (and its stanza-id from the stanza, which goes back to the sender in the error).  Only
        within the routing that archived it: a message delivered, then bounced when its session
        ended unacknowledged (Stream Management: another event), keeps its copy."""
        last = self._last_received
        if last is None or last[0] is not e:
            return
        self._last_received = None
        _, owner, id_, sender, size = last
        self._unarchive(owner, id_, sender, size)
        strip_stanza_ids(e.stanza, owner)

    @hook(ev.ACCOUNT_DELETED)
    @hook(ev.ACCOUNT_CREATED)
    def _account_changed(self, arg: Any) -> None:
        bare = getattr(arg, "bare", arg)
        if isinstance(bare, str):
            self.ledger.reset(bare)  # its archive is gone (or new)

    @hook(ev.MESSAGE_OFFLINE, priority=-1000)
    def unstored(self, e: RouteEvent) -> None:
        """Runs only when no module took the message for an absent recipient: the router
        bounces it, so it is not kept in the recipient's archive either."""
        self.withdraw(e)

    # RFC 6120 §8.3.3.18 <resource-constraint/> (type wait): XEP-0313 names no error for a full
    # archive, and the condition is temporary (the next quota window); the sender learns that
    # nothing was delivered or stored, rather than having it dropped silently.
    def _refuse(self, e: RouteEvent, text: str) -> None:
        err = StanzaError("resource-constraint", text)
        if e.origin is not None:
            # Straight to the sending session: routing the error would fire the same checks.
            self.server.router.deliver(e.origin, error_reply(e.stanza, err))
        else:
            self.server.router.bounce(e.stanza, err)

    @hook(ev.PRE_MESSAGE, priority=PRIORITY)
    def outgoing(self, e: RouteEvent) -> Any:
        """The sender's copy (XEP-0313 §3: 'outgoing' in the context of the sender's archive)."""
        to = e.to
        # XEP-0359 §4 rule 2: a client's stanza-id claiming to be from its own archive is never
        # stored there, nor shown to its other resources (carbons) or to the recipient.
        strip_stanza_ids(e.stanza, e.frm.bare)
        if to is None or to.bare == e.frm.bare:
            return None  # to oneself: archived once, as it arrives (incoming)
        if not should_store(e.stanza):
            return None
        owner = e.frm.bare
        if self.wants(owner, to):  # XEP-0441 §2.3.2: outgoing messages match on 'to'
            size = len(e.stanza.to_bytes())
            why = self.charge(owner, owner, size)
            if why is not None:
                self._refuse(e, why)
                return True
            self._last_sent = (e.stanza, self.archive_stanza(owner, e.stanza, to.full), size)
        return None

    def sent_id(self, stanza: Element) -> str | None:
        """The sender's archive id of ``stanza`` while its PRE_MESSAGE chain runs (carbons:
        XEP-0313 §3.5 wants it inside the sent copy's forwarded message, not the original)."""
        last = self._last_sent
        return last[1] if last is not None and last[0] is stanza else None

    @hook(ev.MESSAGE_BARE, priority=PRIORITY)
    @hook(ev.MESSAGE_FULL, priority=PRIORITY)
    def incoming(self, e: RouteEvent) -> Any:
        """The recipient's copy, stanza-id added before delivery or offline storage."""
        st = e.stanza
        owner = e.to.bare  # type: ignore[union-attr]
        # XEP-0359 §4 rule 2: also from messages that are not archived (errors included).
        strip_stanza_ids(st, owner)
        if st.attrs.get("type") == "error":
            return None
        if not should_store(st) or not self.server.router.user_exists(owner):
            return None
        if not self.wants(owner, e.frm):  # XEP-0441 §2.3.3: incoming messages match on 'from'
            return None
        # The stored copy carries its stanza-id too: one serialisation serves archive and delivery.
        id_ = self.archive.new_id()
        st.add("stanza-id", NS_STANZA_ID, {"id": id_, "by": owner})
        size = len(st.to_bytes())
        sender = e.frm.bare
        why = self.charge(owner, sender, size)
        if why is not None:
            strip_stanza_ids(st, owner)
            sent = self._last_sent
            if sent is not None and sent[0] is st:
                # Refused as a whole: not kept in the sender's archive either.
                self._last_sent = None
                self._unarchive(sender, sent[1], sender, sent[2])
            self.server.router.bounce(st, StanzaError("resource-constraint", why))
            return True
        self.archive_stanza(owner, st, e.frm.full, id_)
        self._last_received = (e, owner, id_, sender, size)
        return None

    # -- queries ------------------------------------------------------------------------------
    def answer_query(self, owner: str, query: Element, requester: str,
                     send: Callable[[Element], None],
                     transform: Callable[[Element, ArchiveItem], Element | None] | None = None,
                     retention: float | None = None) -> Element:
        """Run a ``<query/>`` on ``owner``'s archive: send the results, return the ``<fin/>``.

        For reuse by archives other than users' (a MUC room passes its JID, and its retention if
        it has its own; its access check has been done by then).  Nothing older than the
        retention is shown, swept or not."""
        q: Query = parse_query(query, self.default_max, self.max_max)
        cut = oldest_kept(self.retention if retention is None else retention)
        page: Page = run_query(self.archive, owner, q, cut)
        for msg in result_messages(owner, requester, q, page, transform):
            send(msg)
        return fin_element(q, page)

    def _sender(self, ctx: IQContext) -> Callable[[Element], None]:
        if ctx.origin is not None:
            return ctx.origin.send  # straight to the session: before the IQ result, unfiltered
        return self.server.route

    @iq_handler("set", NS_MAM, "query", scope=SELF)
    def query(self, iq: Element, ctx: IQContext) -> Element | Awaitable[Element]:
        q = iq.first_child()
        assert q is not None
        owner = ctx.to.bare
        pending = self.settled(owner)
        if pending is not None:
            return self._after(pending, self.answer_query, owner, q, ctx.frm.full,
                               self._sender(ctx))
        return self.answer_query(owner, q, ctx.frm.full, self._sender(ctx))

    @staticmethod
    async def _after(pending: asyncio.Future[None], fn: Callable[..., Element],
                     *args: Any) -> Element:
        await asyncio.wait((pending,))  # not `await pending`: never cancel the storage's future
        return fn(*args)

    @iq_handler("get", NS_MAM, "query", scope=SELF)
    def form(self, iq: Element, ctx: IQContext) -> Element:
        return query_form()

    @iq_handler("get", NS_MAM, "metadata", scope=SELF)
    def metadata(self, iq: Element, ctx: IQContext) -> Element | Awaitable[Element]:
        pending = self.settled(ctx.to.bare)
        if pending is not None:
            return self._after(pending, self._metadata, ctx.to.bare)
        return self._metadata(ctx.to.bare)

    def _metadata(self, owner: str) -> Element:
        """XEP-0313 §6: first and last items, or an empty element for an empty archive."""
        md = Element("metadata", NS_MAM)
        first, last = self.archive.first_last(owner)
        cut = oldest_kept(self.retention)
        if last is not None and last.when < cut:
            first = last = None  # all expired, not swept yet
        elif first is not None and first.when < cut:
            first = next(iter(self.archive.query(owner, start=cut, limit=1)), last)
        if first is not None and last is not None:
            md.add("start", attrs={"id": first.id, "timestamp": stamp(first.when)})
            md.add("end", attrs={"id": last.id, "timestamp": stamp(last.when)})
        return md

    @iq_handler("get", NS_MAM, "prefs", scope=SELF)
    def get_prefs(self, iq: Element, ctx: IQContext) -> Element:
        return prefs_element(self.prefs.get(ctx.to.bare))

    @iq_handler("set", NS_MAM, "prefs", scope=SELF)
    async def set_prefs(self, iq: Element, ctx: IQContext) -> Element:
        p: Prefs = parse_prefs(iq.first_child())  # type: ignore[arg-type]
        await self.prefs.set(ctx.to.bare, p)  # the result says it is stored: wait for the commit
        return prefs_element(p)

    # XEP-0313 §9.1: someone else's archive.
    @iq_handler("set", NS_MAM, "query", scope=BARE)
    @iq_handler("get", NS_MAM, "query", scope=BARE)
    @iq_handler("get", NS_MAM, "metadata", scope=BARE)
    @iq_handler("get", NS_MAM, "prefs", scope=BARE)
    @iq_handler("set", NS_MAM, "prefs", scope=BARE)
    def forbidden(self, iq: Element, ctx: IQContext) -> None:
        raise StanzaError("forbidden", "this archive is not yours")


# -- operator report ------------------------------------------------------------------------------

def archive_report(server_or_storage: ModuleServer | Storage, *, domain: str | None = None,
                   top: int | None = None) -> list[tuple[str, int]]:
    """(owner, item count) of every non-empty archive, largest first (ties by owner).

    ``domain`` keeps owners of that domain (users ``x@domain`` and rooms ``room@domain``);
    ``top`` keeps the N largest.  Reads only; works on a running server or on a storage opened
    by the CLI (``open_storage("lmdb", data_dir)``)."""
    storage: Any = getattr(server_or_storage, "storage", None) or server_or_storage
    archive = storage.archive(ARCHIVE_STORE, RECORD_VERSION)
    rows: Iterable[tuple[str, int]] = archive.owners_sizes()
    if domain is not None:
        rows = (r for r in rows if r[0] == domain or r[0].endswith("@" + domain))
    out = sorted(rows, key=lambda r: (-r[1], r[0]))
    return out if top is None else out[:top]


def format_archive_report(rows: list[tuple[str, int]]) -> str:
    """The report as a text table with a total line."""
    width = max([len(o) for o, _ in rows] + [5])
    lines = [f"{'owner':<{width}}  {'messages':>10}"]
    lines += [f"{o:<{width}}  {n:>10}" for o, n in rows]
    lines.append(f"{'total':<{width}}  {sum(n for _, n in rows):>10}  ({len(rows)} archives)")
    return "\n".join(lines)
