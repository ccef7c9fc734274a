"""Import from a Prosody data directory (``data_path``, the ``internal`` storage of Prosody 0.11/0.12).

Prosody keeps one file per account and store: ``DIR/<host>/<store>/<user>.dat`` holds ``return
{...};`` (keyval stores) and ``.list`` files hold ``item({...});`` lines (archive stores: offline,
archive, pep_<node>); host, user and store names are %-encoded (``example%2eorg``). The files are
Lua: here they are *parsed* as data (tables, strings, numbers, booleans) and never executed;
anything else in them (a function call other than ``item``, an operator, a variable) is an error.

Stores read: accounts (``password``, or SCRAM-SHA-1 ``stored_key``/``server_key`` in hex with
``salt`` and ``iteration_count``), roster (items, groups, ask, pending requests), vcard, private,
pep (node configuration) and pep_<node> (items), offline, archive (MAM).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

from ..errors import StanzaError
from ..jid import JID, JIDError
from ..modules.pep.forms import FIELDS as PEP_FIELDS
from ..modules.pep.forms import default_config
from ..modules.private import key_of
from ..modules.vcard import photo_hash
from ..stream.scram import ScramCredential
from ..xml.element import Element
from ..xml.ns import NS_CLIENT, NS_DELAY, NS_PUBSUB
from .account import AccountData, ArchivedMessage, PepNode, archive_id
from .xep0227 import AccountError, Rejected, _trim_pep, stamp


class LuaError(ValueError):
    pass


# == a parser for the Lua data that Prosody's util.serialization writes ===========================

_TOKEN = re.compile(rb"""
    (?P<ws>(?:\s+|--\[(?P<ceq>=*)\[.*?\](?P=ceq)\]|--[^\n]*)+)
  | (?P<long>\[(?P<eq>=*)\[(?P<lbody>.*?)\](?P=eq)\])
  | (?P<str>"(?:[^"\\\n]|\\.|\\\n)*"|'(?:[^'\\\n]|\\.|\\\n)*')
  | (?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>[{}\[\]=,;()/\-])
""", re.DOTALL | re.VERBOSE)

_ESC = {ord("n"): b"\n", ord("t"): b"\t", ord("r"): b"\r", ord("a"): b"\a", ord("b"): b"\b",
        ord("f"): b"\f", ord("v"): b"\v", ord("\\"): b"\\", ord('"'): b'"', ord("'"): b"'",
        ord("\n"): b"\n"}


def _unescape(body: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c != 0x5C:
            out.append(c)
            i += 1
            continue
        i += 1
        e = body[i]
        if e in _ESC:
            out += _ESC[e]
            i += 1
        elif 0x30 <= e <= 0x39:
            m = re.match(rb"\d{1,3}", body[i:])
            assert m is not None
            v = int(m.group())
            if v > 255:
                raise LuaError("decimal escape over 255")
            out.append(v)
            i += len(m.group())
        elif e == ord("x"):
            out.append(int(body[i + 1:i + 3], 16))
            i += 3
        elif e == ord("z"):
            i += 1
            while i < n and body[i] in b" \t\r\n\v\f":
                i += 1
        elif e == ord("u"):
            m = re.match(rb"u\{([0-9a-fA-F]+)\}", body[i:])
            if m is None:
                raise LuaError("bad \\u escape")
            out += chr(int(m.group(1), 16)).encode("utf-8", "surrogatepass")
            i += len(m.group())
        else:
            raise LuaError(f"unknown escape \\{chr(e)}")
    return bytes(out)


def _text(b: bytes) -> str:
    """A Lua string (bytes) as text; bytes that are not UTF-8 survive the round trip."""
    return b.decode("utf-8", "surrogateescape")


class _Lua:
    def __init__(self, data: bytes) -> None:
        self.toks: list[tuple[str, Any]] = []
        pos = 0
        n = len(data)
        while pos < n:
            m = _TOKEN.match(data, pos)
            if m is None:
                line = data.count(b"\n", 0, pos) + 1
                raise LuaError(f"line {line}: unexpected {data[pos:pos + 20]!r}")
            pos = m.end()
            kind = m.lastgroup
            if m.group("ws") is not None:
                continue
            if m.group("long") is not None:
                body = m.group("lbody")
                self.toks.append(("str", _text(body[1:] if body.startswith(b"\n") else body)))
            elif m.group("str") is not None:
                self.toks.append(("str", _text(_unescape(m.group("str")[1:-1]))))
            elif m.group("num") is not None:
                s = m.group("num").decode()
                self.toks.append(("num", int(s, 16) if s[:2] in ("0x", "0X") else
                                  (float(s) if any(c in s for c in ".eE") else int(s))))
            elif m.group("name") is not None:
                self.toks.append(("name", m.group("name").decode()))
            else:
                self.toks.append(("op", m.group("op").decode()))
            del kind
        self.i = 0

    def peek(self) -> tuple[str, Any]:
        return self.toks[self.i] if self.i < len(self.toks) else ("eof", None)

    def take(self, kind: str, value: Any = None) -> Any:
        t = self.peek()
        if t[0] != kind or (value is not None and t[1] != value):
            raise LuaError(f"expected {value or kind}, found {t[1]!r}")
        self.i += 1
        return t[1]

    def value(self) -> Any:
        kind, v = self.peek()
        if kind in ("str", "num"):
            self.i += 1
            return v
        if kind == "name" and v in ("true", "false", "nil"):
            self.i += 1
            return {"true": True, "false": False, "nil": None}[v]
        if kind == "op" and v == "{":
            return self.table()
        if kind == "op" and v == "-":
            self.i += 1
            return -self.value()
        if kind == "op" and v == "(":  # (1/0), (-1/0), (0/0): how Prosody writes inf and NaN
            self.i += 1
            a = self.value()
            self.take("op", "/")
            b = self.value()
            self.take("op", ")")
            if not isinstance(a, (int, float)) or b != 0:
                raise LuaError("only (n/0) is accepted as an expression")
            return float("nan") if a == 0 else (float("inf") if a > 0 else float("-inf"))
        raise LuaError(f"unexpected {v!r} (only data is read, never code)")

    def table(self) -> dict[Any, Any]:
        self.take("op", "{")
        out: dict[Any, Any] = {}
        n = 1
        while True:
            kind, v = self.peek()
            if kind == "op" and v == "}":
                self.i += 1
                return out
            if kind == "op" and v == "[":
                self.i += 1
                key = self.value()
                self.take("op", "]")
                self.take("op", "=")
                out[key] = self.value()
            elif kind == "name" and self.i + 1 < len(self.toks) and self.toks[self.i + 1] == ("op", "="):
                self.i += 2
                out[v] = self.value()
            else:
                out[n] = self.value()
                n += 1
            kind, v = self.peek()
            if kind == "op" and v in (",", ";"):
                self.i += 1
            elif not (kind == "op" and v == "}"):
                raise LuaError(f"expected , or }} in a table, found {v!r}")


def parse_dat(data: bytes) -> Any:
    """A keyval file: ``return <value>;``."""
    p = _Lua(data)
    p.take("name", "return")
    v = p.value()
    if p.peek() == ("op", ";"):
        p.i += 1
    if p.peek()[0] != "eof":
        raise LuaError("data after the returned value")
    return v


def parse_list(data: bytes) -> Iterator[Any]:
    """An archive file: ``item(<value>);`` repeated."""
    p = _Lua(data)
    while p.peek()[0] != "eof":
        p.take("name", "item")
        p.take("op", "(")
        yield p.value()
        p.take("op", ")")
        if p.peek() == ("op", ";"):
            p.i += 1


# == Prosody's records -> AccountData ==============================================================

def decode_name(s: str) -> str:
    return re.sub(r"%([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


def encode_store(s: str) -> str:
    return re.sub(r"[^_A-Za-z0-9]", lambda m: f"%{ord(m.group()):02x}", s)


def _seq(t: Any) -> list[Any]:
    if not isinstance(t, dict):
        return []
    return [t[i] for i in range(1, len(t) + 1) if i in t]


def stanza(t: Any, parent_ns: str = NS_CLIENT) -> Element:
    """A stanza as util.stanza's preserialize() keeps it: {name=, attr={}, [1]=child...}."""
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise AccountError("a stored stanza is not a {name=..., attr=...} table")
    attr = t.get("attr") or {}
    ns = attr.get("xmlns", parent_ns) if isinstance(attr, dict) else parent_ns
    attrs: dict[str, str] = {}
    for k, v in (attr.items() if isinstance(attr, dict) else ()):
        if not isinstance(k, str) or k == "xmlns" or "\1" in k:
            continue
        attrs[k] = v if isinstance(v, str) else str(v)
    el = Element(t["name"], ns, attrs)
    for c in _seq(t):
        if isinstance(c, str):
            el.children.append(c)
        elif isinstance(c, dict):
            el.children.append(stanza(c, ns))
    return el


def _files(host_dir: str, store: str, ext: str) -> dict[str, str]:
    d = os.path.join(host_dir, encode_store(store))
    if not os.path.isdir(d):
        return {}
    return {decode_name(f[:-len(ext)]): os.path.join(d, f) for f in os.listdir(d)
            if f.endswith(ext)}


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _dat(path: str | None) -> Any:
    if path is None:
        return None
    try:
        return parse_dat(_read_bytes(path))
    except LuaError as e:
        raise AccountError(f"{path}: {e}") from None


def _list(path: str | None) -> list[Any]:
    if path is None:
        return []
    try:
        return list(parse_list(_read_bytes(path)))
    except LuaError as e:
        raise AccountError(f"{path}: {e}") from None


def _credentials(a: AccountData, rec: Any) -> None:
    if not isinstance(rec, dict):
        raise AccountError("the accounts record is not a table")
    if isinstance(rec.get("password"), str) and rec["password"]:
        a.password = rec["password"]
    if all(k in rec for k in ("stored_key", "server_key", "salt", "iteration_count")):
        try:
            stored = bytes.fromhex(rec["stored_key"])
            server = bytes.fromhex(rec["server_key"])
        except (ValueError, TypeError):
            raise AccountError("stored_key/server_key are not hex") from None
        it = rec["iteration_count"]
        if not isinstance(it, int) or it < 1 or len(stored) != 20 or len(server) != 20:
            raise AccountError("SCRAM-SHA-1 keys or iteration count out of range")
        salt = rec["salt"].encode("utf-8", "surrogateescape")
        a.scram["SCRAM-SHA-1"] = ScramCredential("SCRAM-SHA-1", salt, it, stored, server)


def _bare(s: Any, what: str) -> str:
    try:
        return JID.parse(s if isinstance(s, str) else "").bare
    except JIDError as e:
        raise AccountError(f"{what} {s!r} is not a valid JID ({e.text})") from None


def _roster(a: AccountData, rec: Any) -> None:
    if not isinstance(rec, dict):
        return
    for contact, item in rec.items():
        if contact is False:
            for jid in (item.get("pending") or {}) if isinstance(item, dict) else ():
                frm = _bare(jid, "subscription request from")
                a.pending[frm] = Element("presence", NS_CLIENT, {"from": frm, "to": a.bare,
                                                                "type": "subscribe"}).to_bytes()
            continue
        c = _bare(contact, "roster item")
        if c == a.bare or not isinstance(item, dict):
            continue
        sub = item.get("subscription") or "none"
        if sub not in ("none", "to", "from", "both"):
            raise AccountError(f"roster item {c}: subscription {sub!r}")
        groups = sorted(g for g, on in (item.get("groups") or {}).items() if on and isinstance(g, str))
        ask = "subscribe" if item.get("ask") == "subscribe" else None
        a.roster[c] = [item.get("name") or None, sub, ask, groups, bool(item.get("approved"))]


def _pep_config(a: AccountData, name: str, cfg: Any) -> dict[str, Any]:
    config = default_config(name)
    for k, v in (cfg.items() if isinstance(cfg, dict) else ()):
        spec = PEP_FIELDS.get(k) if isinstance(k, str) else None
        if spec is None:
            continue
        value = ("true" if v else "false") if isinstance(v, bool) else str(v)
        try:
            config[k] = spec[2]([value])
        except (ValueError, TypeError, StanzaError) as e:
            a.notes.append(f"PEP node {name}: kept the default {k} ({e})")
    return config


def _item(t: Any, ns: str = NS_CLIENT) -> Element:
    """An archive store's item: a stanza to which the internal storage added attr.stamp."""
    if not isinstance(t, dict):
        raise AccountError("an archive item is not a stanza table")
    attr = t.get("attr")
    if isinstance(attr, dict):
        t = {**t, "attr": {k: v for k, v in attr.items() if k != "stamp"}}
    return stanza(t, ns)


def _message(t: Any, what: str) -> tuple[Element, float, str | None]:
    el = _item(t)
    when = t.get("when")
    if not isinstance(when, (int, float)):
        when = time.time()
    if el.tag != "message":
        raise AccountError(f"{what}: a <{el.tag}> instead of a message")
    with_ = t.get("with") if isinstance(t.get("with"), str) and t.get("with") else None
    return el, float(when), with_


def read_account(host: str, host_dir: str, user: str, stores: dict[str, dict[str, str]],
                 pep_stores: dict[str, dict[str, str]]) -> AccountData:
    try:
        bare = JID.parse(f"{user}@{host}").bare
    except JIDError as e:
        raise AccountError(f"'{user}@{host}' is not a valid JID ({e.text})") from None
    a = AccountData(bare)
    _credentials(a, _dat(stores["accounts"].get(user)))
    _roster(a, _dat(stores["roster"].get(user)))
    v = _dat(stores["vcard"].get(user))
    if isinstance(v, dict) and v.get("name"):
        el = stanza(v)
        try:
            a.vcard = (el.to_bytes(), photo_hash(el))
        except StanzaError as e:
            raise AccountError(f"vCard: {e.text}") from None
    priv = _dat(stores["private"].get(user))
    for t in (priv.values() if isinstance(priv, dict) else ()):
        el = stanza(t)
        a.private[key_of(el.ns, el.tag)] = el.to_bytes()
    nodes = _dat(stores["pep"].get(user))
    for name, nd in (nodes.items() if isinstance(nodes, dict) else ()):
        if not isinstance(name, str):
            continue
        nd = nd if isinstance(nd, dict) else {}
        node = a.pep[name] = PepNode(_pep_config(a, name, nd.get("config")))
        for jid, aff in (nd.get("affiliations") or {}).items():
            if aff in ("member", "publisher", "outcast"):
                node.aff[_bare(jid, "PEP affiliation")] = aff
        for jid in (nd.get("subscribers") or {}):
            node.subs[_bare(jid, "PEP subscriber")] = "subscribed"
        for t in _list(pep_stores.get(name, {}).get(user)):
            el = _item(t, NS_PUBSUB)
            item_id = t.get("key") or el.get("id")
            payload = el.first_child() if el.tag == "item" else el
            if payload is None or not isinstance(item_id, str):
                continue
            publisher = t.get("with") if isinstance(t.get("with"), str) else a.bare
            node.items = [i for i in node.items if i[0] != item_id]
            node.items.append((item_id, publisher or a.bare, payload.to_bytes()))
    _trim_pep(a)
    for t in _list(stores["offline"].get(user)):
        el, when, _w = _message(t, "offline message")
        if el.find("delay", NS_DELAY) is None:
            el.add("delay", NS_DELAY, {"from": host, "stamp": stamp(when)})
        frm = el.get("from")
        a.offline.append(ArchivedMessage(when, _bare(frm, "offline message from") if frm else None,
                                         el.to_bytes()))
    for t in _list(stores["archive"].get(user)):
        el, when, with_ = _message(t, "archived message")
        # Prosody keeps the bare JID; mbxmpp the other party's full JID (as in the stanza).
        to, frm = el.get("to") or "", el.get("from") or ""
        with_ = (to if frm.partition("/")[0] in ("", bare) else frm) or with_
        try:
            with_ = JID.parse(with_).full if with_ else None
        except JIDError:
            with_ = None
        key = t.get("key") if isinstance(t.get("key"), str) else None
        data = el.to_bytes()
        a.archive.append(ArchivedMessage(when, with_, data, archive_id(when, bare, key or data)))
    if not a.scram and a.password is None:
        a.notes.append("no password or SCRAM credentials")
    return a


STORES = ("accounts", "roster", "vcard", "private", "pep", "offline", "archive")


def read_dir(path: str, domains: Any, only_hosts: list[str] | None = None
             ) -> Iterator[AccountData | Rejected]:
    """Every account of every host in Prosody's data directory ``path`` (one folder per host)."""
    if not os.path.isdir(path):
        raise OSError(f"{path} is not a folder")
    for enc_host in sorted(os.listdir(path)):
        host_dir = os.path.join(path, enc_host)
        if not os.path.isdir(os.path.join(host_dir, "accounts")):
            continue
        host = decode_name(enc_host)
        if only_hosts and host not in only_hosts:
            continue
        stores = {s: _files(host_dir, s, ".list" if s in ("offline", "archive") else ".dat")
                  for s in STORES}
        pep_stores = {}
        for d in os.listdir(host_dir):
            if d.startswith("pep_") and os.path.isdir(os.path.join(host_dir, d)):
                pep_stores[decode_name(d[4:])] = _files(host_dir, decode_name(d), ".list")
        for user in sorted(stores["accounts"]):
            src = stores["accounts"][user]
            if host not in domains:
                yield Rejected(f"{user}@{host}", None, f"the host {host!r} is not one of this "
                               f"server's domains ({', '.join(sorted(domains))})", src)
                continue
            try:
                yield read_account(host, host_dir, user, stores, pep_stores)
            except AccountError as e:
                yield Rejected(f"{user}@{host}", None, str(e), src)
