"""XEP-0227 (Portable Import/Export Format for XMPP-IM Servers): a streaming reader and writer.

What the real programs write, and what is read here:

* Prosody (``prosody-migrator`` to ``xep0227``, mod_storage_xep0227): one ``<server-data>`` file
  per account with ``<scram-credentials xmlns='urn:xmpp:pie:0#scram'>`` (or a ``password``
  attribute), the roster with pending requests as ``<presence type='subscribe'/>``, vCard, private
  XML, PEP as ``<pubsub xmlns='...#owner'>`` (configure forms, affiliations, subscriptions) and
  ``<pubsub xmlns='...pubsub'>`` (items), the MAM archive as ``<archive xmlns='urn:xmpp:pie:0#mam'>``
  of ``<result xmlns='urn:xmpp:mam:2'>``.
* ejabberd (``ejabberdctl export_piefxis DIR``): a main file that XIncludes one file per host
  (``<host>`` with ``<user name password>``; a SCRAM-stored password is written as
  ``scram:...``), roster, offline messages, private XML, vCard.
* mbxmpp: the above, plus ``<account xmlns='urn:mbxmpp:pie:0' plan created disabled/>``, MAM
  preferences and the blocklist, so that an export imports back identical.

The reader never holds more than one ``<user>`` element: expat is fed in chunks and each account
is handed on as soon as its end tag is read. DTDs (and so entity declarations) are refused, text
nodes and nesting are bounded.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import IO, Any
from xml.parsers import expat

from ..errors import StanzaError
from ..jid import JID, JIDError
from ..modules.mam.prefs import parse_prefs
from ..modules.pep import MAX_PAYLOAD
from ..modules.pep.forms import FIELDS as PEP_FIELDS
from ..modules.pep.forms import NS_PUBSUB_NODE_CONFIG, build_form, default_config, parse_form
from ..modules.pep.nodes import valid_name
from ..modules.private import MAX_FRAGMENT, RESERVED, key_of
from ..modules.roster import MAX_GROUP, MAX_GROUPS, MAX_NAME, SUBSCRIPTIONS
from ..modules.vcard import MAX_VCARD, photo_hash
from ..storage import keys
from ..stream.scram import DIGEST_SIZES, HASHES, ScramCredential
from ..xml.element import Element
from ..xml.fragment import parse_fragment
from ..xml.ns import (
    NS_BLOCKING,
    NS_CLIENT,
    NS_DATA,
    NS_DELAY,
    NS_FORWARD,
    NS_MAM,
    NS_MBXMPP_PIE,
    NS_PIE,
    NS_PIE_MAM,
    NS_PIE_OLD,
    NS_PIE_SCRAM,
    NS_PRIVACY,
    NS_PRIVATE,
    NS_PUBSUB,
    NS_PUBSUB_OWNER,
    NS_ROSTER,
    NS_VCARD,
    NS_XINCLUDE,
    NS_XML,
)
from .account import AccountData, ArchivedMessage, PepNode, Stores, archive_id

PIE_NAMESPACES = (NS_PIE, NS_PIE_OLD)
# Namespaces whose elements this reader knows: an unknown element in one of them is an error,
# an element of any other namespace is skipped with a note (XEP-0227 §4: SHOULD ignore).
KNOWN_NAMESPACES = frozenset((NS_PIE, NS_PIE_OLD, NS_PIE_SCRAM, NS_PIE_MAM, NS_ROSTER, NS_VCARD,
                              NS_PRIVATE, NS_PUBSUB, NS_PUBSUB_OWNER, NS_MBXMPP_PIE, NS_CLIENT))

MAX_TEXT = 4 * 1024 * 1024   # one text node (a vCard photo is far below)
MAX_DEPTH = 64
MAX_INCLUDE_DEPTH = 4
CHUNK = 256 * 1024


class FileError(Exception):
    """The file cannot be read on (not XML, a DTD, a broken include): the import stops."""


class AccountError(Exception):
    """One account cannot be imported; nothing of it is written."""

    def __init__(self, text: str, line: int | None = None) -> None:
        super().__init__(text)
        self.line = line


class Rejected:
    """An account the reader refused, for the report."""

    __slots__ = ("line", "reason", "source", "who")

    def __init__(self, who: str, line: int | None, reason: str, source: str) -> None:
        self.who, self.line, self.reason, self.source = who, line, reason, source

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: account {self.who}: {self.reason}"


# == reading ======================================================================================

class _Builder:
    """expat callbacks that build ``<user>`` elements and report structure (sans I/O)."""

    def __init__(self, source: str, root_kind: str, host: str | None) -> None:
        self.source = source
        self.out: list[tuple[str, Any]] = []   # ("user", (host, el, line, error)) / ("include", ...)
        self.kinds: list[str] = []             # per open element: server-data/host/user/data/skip
        self.host = host
        self.root_kind = root_kind
        self.stack: list[Element] = []         # the user element and its open descendants
        self.user_line = 0
        self.user_error: str | None = None
        self.text_len = 0
        p = expat.ParserCreate(namespace_separator=" ")
        p.buffer_text = True
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartDoctypeDeclHandler = self._doctype
        p.EntityDeclHandler = self._entity
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._text
        self.parser = p

    def _where(self) -> str:
        return f"{self.source}:{self.parser.CurrentLineNumber}"

    def _doctype(self, *a: Any) -> None:
        raise FileError(f"{self._where()}: a DTD (<!DOCTYPE>) is not allowed in a XEP-0227 file")

    def _entity(self, *a: Any) -> None:
        raise FileError(f"{self._where()}: entity declarations are not allowed")

    @staticmethod
    def _split(name: str) -> tuple[str, str]:
        ns, _, tag = name.rpartition(" ")
        return ns, tag

    @staticmethod
    def _attrs(raw: dict[str, str]) -> dict[str, str]:
        out = {}
        for k, v in raw.items():
            if " " in k:
                ns, _, local = k.rpartition(" ")
                if ns == NS_XML:
                    out["xml:" + local] = v
                continue  # other namespaced attributes (Prosody's extended-xep0227 ones)
            out[k] = v
        return out

    def _start(self, name: str, raw: dict[str, str]) -> None:
        ns, tag = self._split(name)
        depth = len(self.kinds)
        if depth >= MAX_DEPTH:
            raise FileError(f"{self._where()}: elements nested deeper than {MAX_DEPTH}")
        self.text_len = 0
        parent = self.kinds[-1] if self.kinds else None
        if parent in ("user", "data"):
            self.kinds.append("data")
            if self.user_error is None:
                el = Element(tag, ns, self._attrs(raw))
                self.stack[-1].children.append(el)
                self.stack.append(el)
            return
        if parent == "skip":
            self.kinds.append("skip")
            return
        if ns == NS_XINCLUDE and tag == "include" and parent in ("server-data", "host"):
            self.out.append(("include", (raw.get("href"), parent, self.host,
                                         self.parser.CurrentLineNumber, raw)))
            self.kinds.append("skip")
            return
        expected = {None: self.root_kind, "server-data": "host", "host": "user"}[parent]
        if ns not in PIE_NAMESPACES or tag != expected:
            if ns in PIE_NAMESPACES or (parent is None):
                raise FileError(f"{self._where()}: <{tag}> (namespace {ns or 'none'}) where "
                                f"<{expected} xmlns='{NS_PIE}'> was expected")
            self.out.append(("note", f"{self._where()}: skipped <{tag} xmlns='{ns}'>"))
            self.kinds.append("skip")
            return
        self.kinds.append(tag)
        if tag == "host":
            self.host = raw.get("jid")
            if not self.host:
                raise FileError(f"{self._where()}: <host> without a 'jid' attribute")
        elif tag == "user":
            if self.host is None:
                raise FileError(f"{self._where()}: <user> outside a <host>")
            self.user_line = self.parser.CurrentLineNumber
            self.user_error = None
            self.stack = [Element(tag, ns, self._attrs(raw))]

    def _end(self, name: str) -> None:
        kind = self.kinds.pop()
        self.text_len = 0
        if kind == "data":
            if self.user_error is None:
                self.stack.pop()
        elif kind == "user":
            self.out.append(("user", (self.host, self.stack[0], self.user_line, self.user_error)))
            self.stack = []
            self.user_error = None

    def _text(self, data: str) -> None:
        if not self.kinds or self.kinds[-1] not in ("user", "data") or self.user_error is not None:
            return
        self.text_len += len(data)
        if self.text_len > MAX_TEXT:
            self.user_error = (f"a text node over {MAX_TEXT} characters at line "
                               f"{self.parser.CurrentLineNumber}")
            user = self.stack[0]
            user.children = []  # free it: nothing of this account is imported
            self.stack = [user]
            return
        children = self.stack[-1].children
        if children and children[-1].__class__ is str:
            children[-1] += data
        else:
            children.append(data)


def _open(path: str) -> IO[bytes]:
    import sys
    return sys.stdin.buffer if path == "-" else open(path, "rb")


def read_file(path: str, domains: list[str] | set[str],
              notes: Callable[[str], None] | None = None) -> Iterator[AccountData | Rejected]:
    """The accounts of a XEP-0227 file (or of a directory of them, as prosody-migrator writes),
    one at a time. FileError stops the reading; a bad account is yielded as :class:`Rejected`."""
    if path != "-" and os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            if name.endswith(".xml"):
                yield from _read(os.path.join(path, name), domains, notes, "server-data", None, 0,
                                 os.path.realpath(path))
        return
    base = os.path.dirname(os.path.realpath(path)) if path != "-" else os.getcwd()
    yield from _read(path, domains, notes, "server-data", None, 0, base)


def _read(path: str, domains: Any, notes: Any, root_kind: str, host: str | None, depth: int,
          base: str) -> Iterator[AccountData | Rejected]:
    b = _Builder(path if path != "-" else "<stdin>", root_kind, host)
    try:
        f = _open(path)
    except OSError as e:
        raise FileError(f"cannot read {path}: {e.strerror}") from None
    try:
        while True:
            chunk = f.read(CHUNK)
            try:
                b.parser.Parse(chunk, not chunk)
            except expat.ExpatError as e:
                raise FileError(f"{b.source}:{e.lineno}:{e.offset + 1}: not well-formed XML "
                                f"({expat.errors.messages[e.code]})") from None
            yield from _drain(b, domains, notes, depth, base)
            if not chunk:
                break
    finally:
        if f is not getattr(__import__("sys").stdin, "buffer", None):
            f.close()


def _drain(b: _Builder, domains: Any, notes: Any, depth: int,
           base: str) -> Iterator[AccountData | Rejected]:
    out, b.out = b.out, []
    for kind, v in out:
        if kind == "note":
            if notes:
                notes(v)
        elif kind == "user":
            host, el, line, error = v
            who = f"{el.get('name')}@{host}"
            if error is not None:
                yield Rejected(who, line, error, b.source)
                continue
            try:
                a = account_from_element(host, el, domains)
            except AccountError as e:
                yield Rejected(who, e.line or line, str(e), b.source)
                continue
            if notes:
                for n in a.notes:
                    notes(f"{b.source}:{line}: {a.bare}: {n}")
            yield a
        elif kind == "include":
            href, parent, host, line, _raw = v
            if depth >= MAX_INCLUDE_DEPTH:
                raise FileError(f"{b.source}:{line}: XIncludes nested deeper than {MAX_INCLUDE_DEPTH}")
            if not href or "://" in href or href.startswith("/"):
                raise FileError(f"{b.source}:{line}: only a relative 'href' is supported in "
                                f"<xi:include/>, not {href!r}")
            target = os.path.realpath(os.path.join(base, href))
            if not target.startswith(base + os.sep):
                raise FileError(f"{b.source}:{line}: <xi:include href={href!r}/> leaves the folder "
                                f"of the main file")
            child_kind = "host" if parent == "server-data" else "user"
            yield from _read(target, domains, notes, child_kind, host, depth + 1, base)


# -- one <user> -> AccountData ---------------------------------------------------------------------

def _b64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise AccountError(f"{what} is not base64") from None


def _bare_jid(s: str | None, what: str) -> str:
    try:
        j = JID.parse(s or "")
    except JIDError as e:
        raise AccountError(f"{what} {s!r} is not a valid JID ({e.text})") from None
    return j.bare


_STAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def parse_stamp(s: str | None) -> float:
    """XEP-0082 DateTime -> POSIX seconds; AccountError if it is not one."""
    m = _STAMP.match((s or "").strip())
    if m is None:
        raise AccountError(f"{s!r} is not a XEP-0082 date-time")
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    try:
        t = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(sec), 0, 0, 0))
    except (ValueError, OverflowError):
        raise AccountError(f"{s!r} is not a XEP-0082 date-time") from None
    if tz != "Z":
        off = int(tz[1:3]) * 3600 + int(tz[4:6]) * 60
        t -= off if tz[0] == "+" else -off
    return t + (float(frac) if frac else 0.0)


def stamp(ts: float) -> str:
    us = keys.ts_us(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1_000_000)) + \
        f".{us % 1_000_000:06d}Z"


def _scram(el: Element) -> ScramCredential | None:
    mech = el.get("mechanism") or ""
    if mech not in HASHES:
        return None
    it = (el.findtext("iter-count", el.ns) or "").strip()
    if not re.fullmatch(r"[1-9][0-9]{0,9}", it):
        raise AccountError(f"{mech}: <iter-count> {it!r} is not a positive integer")
    salt = _b64(el.findtext("salt", el.ns), f"{mech} <salt>")
    stored = _b64(el.findtext("stored-key", el.ns), f"{mech} <stored-key>")
    server = _b64(el.findtext("server-key", el.ns), f"{mech} <server-key>")
    n = DIGEST_SIZES[mech]
    if len(stored) != n and len(server) != n:
        # ejabberd 23.01's export_piefxis base64-encodes its already base64-encoded fields:
        # keys that decode to base64 of the right length mark the salt as encoded twice too.
        try:
            twice = [base64.b64decode(x, validate=True) for x in (stored, server, salt)]
        except (binascii.Error, ValueError):
            twice = []
        if twice and len(twice[0]) == n and len(twice[1]) == n:
            stored, server, salt = twice
    if not salt or len(stored) != n or len(server) != n:
        raise AccountError(f"{mech}: empty salt, or keys not of {n} bytes")
    return ScramCredential(mech, salt, int(it), stored, server)


def _ejabberd_scram(password: str) -> ScramCredential:
    """ejabberd writes a SCRAM-stored password as ``scram:StoredKey,ServerKey,Salt,Iter``
    (base64, SHA-1) or ``scram:HASH:...`` in newer versions."""
    body = password[len("scram:"):]
    parts = re.split(r"[,:]", body)
    mech = "SCRAM-SHA-1"
    if parts and parts[0].upper() in ("SHA", "SHA1", "SHA-1", "SCRAM-SHA-1", "SHA256", "SHA-256",
                                      "SCRAM-SHA-256"):
        mech = "SCRAM-SHA-256" if "256" in parts[0] else "SCRAM-SHA-1"
        parts = parts[1:]
    if len(parts) != 4:
        raise AccountError("unrecognised ejabberd SCRAM password format")
    stored, server, salt = (_b64(p, "ejabberd SCRAM field") for p in parts[:3])
    if not parts[3].isdigit() or int(parts[3]) < 1:
        raise AccountError("ejabberd SCRAM iteration count is not a positive integer")
    n = DIGEST_SIZES[mech]
    if len(stored) != n or len(server) != n:
        raise AccountError(f"ejabberd {mech} keys are not of {n} bytes")
    return ScramCredential(mech, salt, int(parts[3]), stored, server)


def _roster(a: AccountData, q: Element) -> None:
    for item in q.elements():
        if item.ns != NS_ROSTER or item.tag != "item":
            raise AccountError(f"unknown element <{item.tag}> in the roster")
        contact = _bare_jid(item.get("jid"), "roster item")
        if contact == a.bare:
            continue  # RFC 6121: no self-contacts (Prosody skips them too)
        sub = item.get("subscription") or "none"
        if sub not in SUBSCRIPTIONS:
            raise AccountError(f"roster item {contact}: subscription {sub!r} is not one of "
                               f"{', '.join(SUBSCRIPTIONS)}")
        ask = item.get("ask")
        if ask not in (None, "subscribe"):
            raise AccountError(f"roster item {contact}: ask {ask!r} is not 'subscribe'")
        name = item.get("name") or None
        if name is not None and len(name) > MAX_NAME:
            raise AccountError(f"roster item {contact}: the name is over {MAX_NAME} characters")
        groups: list[str] = []
        for g in item.elements():
            if g.ns != NS_ROSTER or g.tag != "group":
                raise AccountError(f"roster item {contact}: unknown element <{g.tag}>")
            t = g.text
            if not t or len(t) > MAX_GROUP:
                raise AccountError(f"roster item {contact}: empty or too long group name")
            if t not in groups:
                groups.append(t)
        if len(groups) > MAX_GROUPS:
            raise AccountError(f"roster item {contact}: more than {MAX_GROUPS} groups")
        approved = item.get("approved") in ("true", "1")
        a.roster[contact] = [name, sub, ask, groups, approved]


def _pending(a: AccountData, p: Element) -> None:
    if p.get("type") != "subscribe":
        a.notes.append(f"skipped a <presence type={p.get('type')!r}> (only subscription "
                       "requests are kept)")
        return
    frm = _bare_jid(p.get("from"), "subscription request from")
    attrs = {"from": frm, "to": a.bare, "type": "subscribe"}
    if p.get("id"):
        attrs["id"] = p.attrs["id"]
    a.pending[frm] = Element("presence", NS_CLIENT, attrs,
                             [c for c in p.children if c.__class__ is not str]).to_bytes()


def _private(a: AccountData, q: Element) -> None:
    for c in q.elements():
        if c.ns in RESERVED:
            raise AccountError(f"private XML <{c.tag}> in the reserved namespace {c.ns!r}")
        data = c.to_bytes()
        if len(data) > MAX_FRAGMENT:
            raise AccountError(f"private XML {{{c.ns}}}{c.tag} is over {MAX_FRAGMENT} bytes")
        a.private[key_of(c.ns, c.tag)] = data


def _node_name(el: Element) -> str:
    name = el.get("node")
    if not valid_name(name):
        raise AccountError(f"<{el.tag}> with an invalid PEP node name {name!r}")
    return name  # type: ignore[return-value]


def _config(a: AccountData, node: str, x: Element | None) -> dict[str, Any]:
    config = default_config(node)
    if x is None:
        return config
    form_type, fields = parse_form(x)
    if form_type not in (None, "", NS_PUBSUB_NODE_CONFIG):
        raise AccountError(f"PEP node {node}: a configure form of FORM_TYPE {form_type!r}")
    for var, values in fields.items():
        spec = PEP_FIELDS.get(var[7:]) if var.startswith("pubsub#") else None
        if spec is None:
            a.notes.append(f"PEP node {node}: ignored the configuration field {var}")
            continue
        try:
            config[var[7:]] = spec[2](values)
        except (ValueError, TypeError, StanzaError) as e:
            a.notes.append(f"PEP node {node}: kept the default {var} ({e})")
    return config


def _pep_owner(a: AccountData, ps: Element) -> None:
    for el in ps.elements():
        node = a.pep.setdefault(_node_name(el), PepNode())
        name = el.get("node") or ""
        if el.tag == "configure":
            node.config = _config(a, name, el.find("x", NS_DATA))
        elif el.tag == "affiliations":
            for af in el.findall("affiliation"):
                value = af.get("affiliation")
                if value in ("member", "publisher", "outcast"):
                    node.aff[_bare_jid(af.get("jid"), "PEP affiliation")] = value
        elif el.tag == "subscriptions":
            for sub in el.findall("subscription"):
                # Prosody 0.12 writes subscribed='subscribed' for subscription='subscribed'
                if "subscribed" in (sub.get("subscription"), sub.get("subscribed")):
                    try:
                        jid = JID.parse(sub.get("jid") or "").full
                    except JIDError:
                        raise AccountError(f"PEP subscription {sub.get('jid')!r} is not a JID"
                                           ) from None
                    node.subs[jid] = "subscribed"
        else:
            raise AccountError(f"unknown element <{el.tag}> in the PEP node configuration")


def _pep_items(a: AccountData, ps: Element) -> None:
    for items in ps.elements():
        if items.tag != "items":
            raise AccountError(f"unknown element <{items.tag}> among the PEP items")
        name = _node_name(items)
        node = a.pep.get(name)
        if node is None:  # no configuration exported: the defaults (as Prosody does)
            node = a.pep[name] = PepNode(default_config(name))
        for item in items.elements():
            if item.tag != "item":
                raise AccountError(f"PEP node {name}: unknown element <{item.tag}>")
            item_id = item.get("id")
            if not valid_name(item_id):
                raise AccountError(f"PEP node {name}: invalid item id {item_id!r}")
            payload = item.first_child()
            if payload is None:
                continue
            data = payload.to_bytes()
            if len(data) > MAX_PAYLOAD:
                raise AccountError(f"PEP node {name} item {item_id}: payload over "
                                   f"{MAX_PAYLOAD} bytes")
            node.items = [i for i in node.items if i[0] != item_id]
            node.items.append((item_id, item.get("publisher") or a.bare, data))  # type: ignore[arg-type]


def _trim_pep(a: AccountData) -> None:
    for name, node in a.pep.items():
        if not node.config:
            node.config = default_config(name)
        keep = int(node.config.get("max_items", 1))
        if len(node.items) > keep:
            a.notes.append(f"PEP node {name}: kept the newest {keep} of {len(node.items)} items "
                           "(its max_items)")
            node.items = node.items[-keep:]


def _message(m: Element, what: str) -> Element:
    if m.tag != "message" or m.ns != NS_CLIENT:
        raise AccountError(f"{what}: <{m.tag} xmlns='{m.ns}'> is not a jabber:client message")
    return m


def _offline(a: AccountData, el: Element) -> None:
    for m in el.elements():
        _message(m, "offline message")
        delay = m.find("delay", NS_DELAY)
        when = parse_stamp(delay.get("stamp")) if delay is not None else time.time()
        sender = _bare_jid(m.get("from"), "offline message from") if m.get("from") else None
        a.offline.append(ArchivedMessage(when, sender, m.to_bytes()))


def _archive(a: AccountData, el: Element) -> None:
    for r in el.elements():
        if r.tag != "result" or r.ns != NS_MAM:
            raise AccountError(f"unknown element <{r.tag} xmlns='{r.ns}'> in the archive")
        fwd = r.find("forwarded", NS_FORWARD)
        m = fwd.find("message", NS_CLIENT) if fwd is not None else None
        delay = fwd.find("delay", NS_DELAY) if fwd is not None else None
        if m is None or delay is None:
            raise AccountError(f"archive result {r.get('id')!r}: no <forwarded> with a <delay> "
                               "and a <message>")
        when = parse_stamp(delay.get("stamp"))
        to, frm = m.get("to") or "", m.get("from") or ""
        try:
            other = to if (JID.parse(frm).bare if frm else a.bare) == a.bare else frm
            with_ = JID.parse(other).full if other else None
        except JIDError as e:
            raise AccountError(f"archive result {r.get('id')!r}: a bad address ({e.text})") from None
        rid = r.get("id") or ""
        ours = keys.id_str_to_bytes(rid) is not None and keys.id_ts_us(bytes.fromhex(rid)) == \
            keys.ts_us(when)
        data = m.to_bytes()
        a.archive.append(ArchivedMessage(when, with_, data,
                                         rid if ours else archive_id(when, a.bare, rid or data)))


def _mbxmpp(a: AccountData, el: Element) -> None:
    if el.tag != "account":
        raise AccountError(f"unknown element <{el.tag} xmlns='{NS_MBXMPP_PIE}'>")
    a.plan = el.get("plan") or None
    a.disabled = el.get("disabled") == "true"
    if el.get("created"):
        try:
            a.created = float(el.attrs["created"])
        except ValueError:
            raise AccountError(f"created={el.get('created')!r} is not a number") from None


def account_from_element(host: str, user: Element, domains: Any) -> AccountData:
    """A ``<user>`` element (under ``<host jid=host>``) as AccountData; AccountError if it cannot
    be imported as a whole."""
    name = user.get("name")
    if not name:
        raise AccountError("<user> without a 'name'")
    try:
        j = JID.parse(f"{name}@{host}")
    except JIDError as e:
        raise AccountError(f"'{name}@{host}' is not a valid JID ({e.text})") from None
    if j.local is None or j.resource is not None or "@" in name or "/" in name:
        raise AccountError(f"'{name}@{host}' is not an account address")
    if j.domain not in domains:
        raise AccountError(f"the host {j.domain!r} is not one of this server's domains "
                           f"({', '.join(sorted(domains))})")
    a = AccountData(j.bare)
    pw = user.get("password")
    if pw and pw.startswith("scram:"):
        cred = _ejabberd_scram(pw)
        a.scram[cred.mech] = cred
    elif pw:
        a.password = pw
    for el in user.elements():
        ns, tag = el.ns, el.tag
        if ns == NS_PIE_SCRAM and tag == "scram-credentials":
            c = _scram(el)
            if c is None:
                a.notes.append(f"skipped {el.get('mechanism')} credentials (not offered here)")
            else:
                a.scram[c.mech] = c
        elif ns == NS_ROSTER and tag == "query":
            _roster(a, el)
        elif tag == "presence" and (ns == NS_CLIENT or ns in PIE_NAMESPACES):
            # Prosody 0.12 writes these without xmlns='jabber:client' (in the pie namespace)
            _pending(a, el)
        elif ns == NS_VCARD and tag == "vCard":
            data = el.to_bytes()
            if len(data) > MAX_VCARD:
                raise AccountError(f"the vCard is over {MAX_VCARD} bytes")
            try:
                a.vcard = (data, photo_hash(el))
            except StanzaError as e:
                raise AccountError(f"vCard: {e.text}") from None
        elif ns == NS_PRIVATE and tag == "query":
            _private(a, el)
        elif ns == NS_PUBSUB_OWNER and tag == "pubsub":
            _pep_owner(a, el)
        elif ns == NS_PUBSUB and tag == "pubsub":
            _pep_items(a, el)
        elif ns in PIE_NAMESPACES and tag == "offline-messages":
            _offline(a, el)
        elif ns == NS_PIE_MAM and tag == "archive":
            _archive(a, el)
        elif ns == NS_MBXMPP_PIE:
            _mbxmpp(a, el)
        elif ns == NS_MAM and tag == "prefs":
            try:
                p = parse_prefs(el)
            except StanzaError as e:
                raise AccountError(f"MAM preferences: {e.text}") from None
            a.mam_prefs = None if p.is_plain() else {"default": p.default, "always": p.always,
                                                     "never": p.never}
        elif ns == NS_BLOCKING and tag == "blocklist":
            for it in el.findall("item", NS_BLOCKING):
                try:
                    a.blocklist.append(JID.parse(it.get("jid") or "").full)
                except JIDError:
                    raise AccountError(f"blocklist item {it.get('jid')!r} is not a JID") from None
        elif ns == NS_PRIVACY:
            a.notes.append("skipped the privacy lists (XEP-0016; not supported here)")
        elif ns in KNOWN_NAMESPACES:
            raise AccountError(f"unknown element <{tag} xmlns='{ns}'> in <user>")
        else:
            a.notes.append(f"skipped <{tag} xmlns='{ns}'> (not understood)")
    _trim_pep(a)
    if not a.scram and a.password is None:
        a.notes.append("no password or SCRAM credentials: the account cannot log in until "
                       "'user passwd' sets one")
    return a


# == writing ======================================================================================

def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;").replace(">", "&gt;")


def _reparent(data: bytes, ns: str) -> bytes:
    """A stored stanza (no jabber:client xmlns) serialised as a child of an element in ``ns``."""
    return parse_fragment(data).to_bytes(ns)


def user_bytes(stores: Stores, owner: str) -> Iterator[bytes]:
    """One account's ``<user>`` element in pieces (archives a page at a time)."""
    a = stores.read(owner, with_archives=False)
    local = owner.rpartition("@")[0]
    yield f"<user name='{_esc(local)}'>".encode()
    extra = Element("account", NS_MBXMPP_PIE)
    if a.plan:
        extra.set("plan", a.plan)
    if a.created is not None:
        extra.set("created", repr(a.created))
    if a.disabled:
        extra.set("disabled", "true")
    parts = [extra]
    for mech, c in sorted(a.scram.items()):
        s = Element("scram-credentials", NS_PIE_SCRAM, {"mechanism": mech})
        s.add("iter-count", text=str(c.iterations))
        s.add("salt", text=base64.b64encode(c.salt).decode())
        s.add("server-key", text=base64.b64encode(c.server_key).decode())
        s.add("stored-key", text=base64.b64encode(c.stored_key).decode())
        parts.append(s)
    if a.roster:
        q = Element("query", NS_ROSTER)
        for contact, rec in a.roster.items():
            name, sub, ask, groups, approved = rec[:5]
            it = q.add("item", attrs={"jid": contact, "subscription": sub})
            if name:
                it.set("name", name)
            if ask:
                it.set("ask", ask)
            if approved:
                it.set("approved", "true")
            for g in groups:
                it.add("group", text=g)
        parts.append(q)
    for data in a.pending.values():
        parts.append(parse_fragment(data))
    if a.vcard is not None:
        parts.append(parse_fragment(a.vcard[0]))
    if a.private:
        q = Element("query", NS_PRIVATE, {}, [parse_fragment(d) for d in a.private.values()])
        parts.append(q)
    if a.pep:
        owner_el = Element("pubsub", NS_PUBSUB_OWNER)
        items_el = Element("pubsub", NS_PUBSUB)
        for name, node in a.pep.items():
            owner_el.add("configure", attrs={"node": name}).append(
                build_form(node.config, type="submit"))
            if node.aff:
                af = owner_el.add("affiliations", attrs={"node": name})
                for jid, value in node.aff.items():
                    af.add("affiliation", attrs={"jid": jid, "affiliation": value})
            if node.subs:
                ss = owner_el.add("subscriptions", attrs={"node": name})
                for jid in node.subs:
                    ss.add("subscription", attrs={"jid": jid, "subscription": "subscribed"})
            its = items_el.add("items", attrs={"node": name})
            for item_id, publisher, payload in node.items:
                its.add("item", attrs={"id": item_id, "publisher": publisher}).append(
                    parse_fragment(payload))
        parts += [owner_el, items_el]
    if a.blocklist:
        bl = Element("blocklist", NS_BLOCKING)
        for jid in a.blocklist:
            bl.add("item", attrs={"jid": jid})
        parts.append(bl)
    if a.mam_prefs:
        from ..modules.mam.prefs import Prefs, prefs_element
        parts.append(prefs_element(Prefs(a.mam_prefs.get("default", "always"),
                                         list(a.mam_prefs.get("always", ())),
                                         list(a.mam_prefs.get("never", ())))))
    yield b"".join(p.to_bytes(NS_PIE) for p in parts)
    first = True
    for m in stores.archive_items(stores.offline, owner):
        if first:
            yield b"<offline-messages>"
            first = False
        yield _reparent(m.stanza, NS_PIE)
    if not first:
        yield b"</offline-messages>"
    first = True
    for m in stores.archive_items(stores.mam, owner):
        if first:
            yield f"<archive xmlns='{NS_PIE_MAM}'>".encode()
            first = False
        yield (f"<result xmlns='{NS_MAM}' id='{m.id}'><forwarded xmlns='{NS_FORWARD}'>"
               f"<delay xmlns='{NS_DELAY}' stamp='{stamp(m.when)}'/>").encode()
        yield _reparent(m.stanza, NS_FORWARD)
        yield b"</forwarded></result>"
    if not first:
        yield b"</archive>"
    yield b"</user>\n"


def export(stores: Stores, out: IO[bytes], domains: list[str],
           progress: Callable[[int], None] | None = None) -> int:
    """Write the accounts of ``domains`` as one XEP-0227 document; returns how many."""
    out.write(f"<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='{NS_PIE}'>\n".encode())
    n = 0
    by_domain: dict[str, list[str]] = {d: [] for d in domains}
    for owner in stores.owners(domains):
        by_domain[owner.rpartition("@")[2]].append(owner)
    for domain in domains:
        out.write(f"<host jid='{_esc(domain)}'>\n".encode())
        for owner in by_domain[domain]:
            for piece in user_bytes(stores, owner):
                out.write(piece)
            n += 1
            if progress is not None:
                progress(n)
        out.write(b"</host>\n")
    out.write(b"</server-data>\n")
    return n
