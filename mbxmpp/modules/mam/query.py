"""MAM queries (XEP-0313 §4-6), sans-IO: parse the ``<query/>`` (data form + RSM), run it against
an ArchiveStore, and build the result messages and the ``<fin/>``.

Nothing here sends: the module (or a MUC room reusing it) passes each result message to its own
``send``.  Errors are raised as StanzaError with the condition XEP-0313 names.
"""

from __future__ import annotations

import datetime
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ...errors import StanzaError
from ...jid import JID, JIDError
from ...storage.api import ArchiveItem, ArchiveStore, ItemNotFound
from ...util.ids import new_id
from ...xml import XMLError, XMLParser
from ...xml.element import Element
from ...xml.ns import NS_CLIENT, NS_DATA, NS_DATA_VALIDATE, NS_DELAY, NS_FORWARD, NS_MAM, NS_RSM, NS_STREAMS

log = logging.getLogger(__name__)

# The start tag of a stored message given its xmlns back (it is stored without one).
_MESSAGE_IN_CLIENT_NS = f"<message xmlns='{NS_CLIENT}'".encode()

DEFAULT_MAX = 50     # page size when the client sends no RSM <max/>
MAX_MAX = 250        # a larger <max/> is clamped (XEP-0313 §4.3.1: the server MAY return fewer)
MAX_IDS = 1000       # values of the 'ids' field in one query

# var -> field type, in the order the form lists them (XEP-0313 §4.1.4).
FIELDS: dict[str, str] = {
    "with": "jid-single",
    "start": "text-single",
    "end": "text-single",
    "before-id": "text-single",
    "after-id": "text-single",
    "ids": "list-multi",
}

_DATETIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)\Z",
                       re.ASCII)


_UTC = datetime.timezone.utc


def stamp(ts: float) -> str:
    """XEP-0082 DateTime with microseconds, so that a result's stamp used as 'start' or 'end'
    still includes that result (milliseconds would cut it off)."""
    d = datetime.datetime.fromtimestamp(ts, _UTC)
    return d.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" -> "Z"; 2x strftime's speed


def parse_datetime(s: str) -> float:
    """XEP-0082 DateTime -> POSIX seconds; StanzaError bad-request if it is not one."""
    m = _DATETIME.match(s.strip())
    if m is None:
        raise StanzaError("bad-request", f"not a XEP-0082 date-time: {s!r}")
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    try:
        if tz == "Z":
            tzinfo = datetime.timezone.utc
        else:
            sign = 1 if tz[0] == "+" else -1
            th, tm = int(tz[1:3]), int(tz[4:6])
            if th > 23 or tm > 59:
                raise ValueError("bad offset")
            tzinfo = datetime.timezone(sign * datetime.timedelta(hours=th, minutes=tm))
        us = int((frac or "0")[:6].ljust(6, "0"))
        dt = datetime.datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec), us, tzinfo)
    except ValueError as e:
        raise StanzaError("bad-request", f"not a XEP-0082 date-time: {s!r}") from e
    ts = dt.timestamp()
    # The archive only holds times from the epoch on; clamp so that storage never sees a bad bound.
    return min(max(ts, 0.0), 2.0 ** 62 / 1e6)


@dataclass(slots=True)
class Query:
    queryid: str | None = None
    with_: str | None = None
    start: float | None = None
    end: float | None = None
    after_id: str | None = None        # form 'after-id' (part of the result set's definition)
    before_id: str | None = None       # form 'before-id'
    ids: list[str] | None = None
    max: int = DEFAULT_MAX
    rsm_after: str | None = None       # RSM cursor
    rsm_before: str | None = None      # RSM cursor; "" = the last page
    flip: bool = False

    @property
    def backward(self) -> bool:
        """RSM <before/> present: page backwards from the end (or from that id)."""
        return self.rsm_before is not None


@dataclass(slots=True)
class Page:
    items: list[ArchiveItem]           # chronological
    complete: bool
    count: int
    first_index: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _values(f: Element) -> list[str]:
    return [v.text for v in f.findall("value", NS_DATA)]


def _single(var: str, f: Element) -> str | None:
    vals = _values(f)
    if len(vals) > 1:
        raise StanzaError("bad-request", f"field {var!r} takes one value")
    v = vals[0].strip() if vals else ""
    return v or None  # XEP-0004: an empty field is as good as an absent one


def parse_form(x: Element, q: Query) -> None:
    if x.get("type", "submit") != "submit":
        raise StanzaError("bad-request", "the query form must be of type 'submit'")
    seen: set[str] = set()
    form_type = None
    for f in x.findall("field", NS_DATA):
        var = f.get("var")
        if not var:
            raise StanzaError("bad-request", "form field without 'var'")
        if var in seen:
            raise StanzaError("bad-request", f"field {var!r} given twice")
        seen.add(var)
        if var == "FORM_TYPE":
            form_type = _single(var, f)
        elif var not in FIELDS:
            # XEP-0313 §4.1.4: a field the server does not recognise -> feature-not-implemented.
            raise StanzaError("feature-not-implemented", f"unsupported query field {var!r}")
        elif var == "ids":
            ids = [v.strip() for v in _values(f) if v.strip()]
            if len(ids) > MAX_IDS:
                raise StanzaError("policy-violation", f"at most {MAX_IDS} ids per query")
            q.ids = ids or None
        else:
            v = _single(var, f)
            if v is None:
                continue
            if var == "with":
                try:
                    q.with_ = JID.parse(v).full
                except JIDError as e:
                    raise StanzaError("bad-request", f"'with' is not a valid JID: {v!r}") from e
            elif var == "start":
                q.start = parse_datetime(v)
            elif var == "end":
                q.end = parse_datetime(v)
            elif var == "after-id":
                q.after_id = v
            else:
                q.before_id = v
    if form_type != NS_MAM:
        raise StanzaError("bad-request", f"the query form's FORM_TYPE must be {NS_MAM}")


def parse_rsm(s: Element, q: Query, max_max: int) -> None:
    mx = s.find("max", NS_RSM)
    if mx is not None:
        t = mx.text.strip()
        if not t.isdigit() or not t.isascii():
            raise StanzaError("bad-request", "RSM <max/> must be a non-negative integer")
        q.max = min(int(t), max_max)
    if s.find("index", NS_RSM) is not None:
        # XEP-0059 §2.5: jumping to an index MAY be refused.
        raise StanzaError("feature-not-implemented", "RSM <index/> is not supported")
    after = s.find("after", NS_RSM)
    if after is not None and after.text.strip():
        q.rsm_after = after.text.strip()
    before = s.find("before", NS_RSM)
    if before is not None:
        q.rsm_before = before.text.strip()


def parse_query(el: Element, default_max: int = DEFAULT_MAX, max_max: int = MAX_MAX) -> Query:
    """The query as given; raises StanzaError (bad-request, feature-not-implemented)."""
    q = Query(queryid=el.get("queryid"), max=min(default_max, max_max))
    if el.get("node") is not None:
        raise StanzaError("item-not-found", "this archive has no nodes")
    x = el.find("x", NS_DATA)
    if x is not None:
        parse_form(x, q)
    s = el.find("set", NS_RSM)
    if s is not None:
        parse_rsm(s, q, max_max)
    q.flip = el.find("flip-page", NS_MAM) is not None
    return q


def _known(archive: ArchiveStore, owner: str, id_: str, not_before: float | None) -> str:
    it = archive.get(owner, id_)
    if it is None or (not_before is not None and it.when < not_before):
        raise StanzaError("item-not-found", f"no item {id_!r} in this archive")
    return id_


def visible_start(archive: ArchiveStore, owner: str, start: float | None,
                  not_before: float | None) -> tuple[float | None, float | None]:
    """The query's 'start' with the retention applied (items older than ``not_before`` are never
    shown, swept or not), and the time up to which (inclusive) items are hidden by it (None when
    the retention hides nothing: the owner's oldest item is recent enough, or 'start' is later).
    Both on whole microseconds, the archive ids' precision."""
    if not_before is None or (start is not None and start >= not_before):
        return start, None
    oldest = archive.query(owner, limit=1)
    if not oldest or oldest[0].when >= not_before:
        return start, None
    cut_us = round(not_before * 1e6)  # as the storage rounds bounds (keys.clamp_us)
    return cut_us / 1e6, (cut_us - 1) / 1e6


def run_query(archive: ArchiveStore, owner: str, q: Query, not_before: float | None = None) -> Page:
    """Fetch one page; item-not-found for any unknown id (XEP-0313 §4.1.3, §4.3.2).

    ``not_before``: the retention's cut-off (``retention.oldest_kept``); older items are not
    shown, nor counted, nor known as ids."""
    for id_ in (q.after_id, q.before_id, q.rsm_after, q.rsm_before or None, *(q.ids or ())):
        if id_ is not None:
            _known(archive, owner, id_, not_before)
    # Lower and upper id bounds: the form's and the RSM cursor's (ids sort in archive order).
    lower = max((i for i in (q.after_id, q.rsm_after) if i), default=None)
    upper = min((i for i in (q.before_id, q.rsm_before) if i), default=None)
    start, hidden_until = visible_start(archive, owner, q.start, not_before)
    filt: dict[str, Any] = {"start": start, "end": q.end, "with_": q.with_, "ids": q.ids}
    try:
        if hidden_until is not None and (q.end, q.with_, q.ids, q.after_id, q.before_id) == \
                (None,) * 5:
            # The whole archive but the few expired items the sweep has not reached: the stored
            # counter minus a short scan, not a scan of everything.
            count = archive.count(owner) - archive.count(owner, end=hidden_until)
        else:
            count = archive.count(owner, after_id=q.after_id, before_id=q.before_id, **filt)
        if q.max == 0:  # XEP-0059 §2.6: just the count
            return Page([], count == 0, count)
        items = archive.query(owner, after_id=lower, before_id=upper, limit=q.max + 1,
                              reverse=q.backward, **filt)
    except ItemNotFound as e:  # deleted between the check and the query
        raise StanzaError("item-not-found", f"no item {e.args[0]!r} in this archive") from e
    complete = len(items) <= q.max
    del items[q.max:]
    if q.backward:
        items.reverse()
    # XEP-0059 <first index/>, only where it costs nothing: a page at the start of the set, or the
    # last one forwards.  COMPAT: slixmpp stops paging once index + page size == count, even when
    # paging backwards, so the last page fetched with <before/> carries no index.
    index = None
    if q.rsm_after is None and (complete or not q.backward):
        index = 0
    elif not q.backward and complete:
        index = count - len(items)
    return Page(items, complete, count, index if items else None)


def fin_element(q: Query, page: Page) -> Element:
    fin = Element("fin", NS_MAM)
    if page.complete:
        fin.set("complete", "true")
    s = fin.add("set", NS_RSM)
    if page.items:
        first = s.add("first", text=page.items[0].id)
        if page.first_index is not None:
            first.set("index", str(page.first_index))
        s.add("last", text=page.items[-1].id)
    s.add("count", text=str(page.count))
    return fin


def query_form() -> Element:
    """The reply to an IQ get <query/>: every field the server supports (XEP-0313 §4.1.4)."""
    q = Element("query", NS_MAM)
    x = q.add("x", NS_DATA, {"type": "form"})
    ft = x.add("field", attrs={"type": "hidden", "var": "FORM_TYPE"})
    ft.add("value", text=NS_MAM)
    for var, typ in FIELDS.items():
        f = x.add("field", attrs={"type": typ, "var": var})
        if var == "ids":
            v = f.add("validate", NS_DATA_VALIDATE, {"datatype": "xs:string"})
            v.add("open")
    return q


class StanzaDecoder:
    """Turns stored stanza bytes back into elements (one parser per query, fed stanza by stanza)."""

    __slots__ = ("_p",)

    _HEADER = f"<stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'>".encode()

    def __init__(self) -> None:
        self._p: Any = None

    def decode(self, raw: bytes) -> Element | None:
        if self._p is None:
            self._p = XMLParser()
            self._p.feed(self._HEADER)
        try:
            events = self._p.feed(raw)
        except XMLError:
            self._p = None
            events = []
        if len(events) == 1 and isinstance(events[0], Element):
            return events[0]
        self._p = None  # out of step: start over with a fresh parser
        log.warning("undecodable archived stanza (%d bytes)", len(raw))
        return None


def stored_bytes(value: Any) -> bytes | None:
    """The stanza bytes of an archive record's value (``[stanza_bytes, ...]``)."""
    if isinstance(value, list) and value and isinstance(value[0], (bytes, bytearray)):
        return bytes(value[0])
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return None


_TAIL = b"</forwarded></result></message>"


def result_messages(owner: str, to: str, q: Query, page: Page,
                    transform: Callable[[Element, ArchiveItem], Element | None] | None = None
                    ) -> Iterator[Element]:
    """One ``<message><result><forwarded>`` per item, in chronological order (or flipped).

    ``transform`` may rewrite the archived stanza for this requester (a MUC room hides real
    JIDs)."""
    dec = StanzaDecoder()
    items = reversed(page.items) if q.flip else iter(page.items)
    prefix = new_id(9) + "-"  # unique per query; a counter within it
    for n, it in enumerate(items):
        msg = Element("message", NS_CLIENT, {"to": to, "from": owner, "id": prefix + str(n)})
        res = msg.add("result", NS_MAM, {"id": it.id})
        if q.queryid is not None:
            res.set("queryid", q.queryid)
        fwd = res.add("forwarded", NS_FORWARD)
        fwd.add("delay", NS_DELAY, {"stamp": stamp(it.when)})
        raw = stored_bytes(it.value)
        if transform is None and raw is not None and raw[:9] in (b"<message ", b"<message>"):
            # Fast path: splice the stored bytes into the wrapper instead of parsing them back
            # (the stored form was written with jabber:client as the parent namespace, so only
            # the top element needs its xmlns). The element keeps the wrapper for inspection;
            # its cached bytes are what goes on the wire.
            wrapper = msg.to_bytes()
            head_end = raw.find(b">")
            if b" xmlns=" not in raw[:head_end]:  # our serializer escapes quotes in values
                raw = _MESSAGE_IN_CLIENT_NS + raw[8:]
            msg._bytes = wrapper[:-len(_TAIL)] + raw + _TAIL
            yield msg
            continue
        orig = None if raw is None else dec.decode(raw)
        if orig is not None and transform is not None:
            orig = transform(orig, it)
        if orig is not None:
            fwd.append(orig)
        yield msg
