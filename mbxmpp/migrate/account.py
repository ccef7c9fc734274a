"""One account's data in a neutral form, and its mapping onto the stores the modules use.

Every reader (XEP-0227, Prosody's files) produces :class:`AccountData`; :class:`Stores` writes it
into one storage batch in the records the modules read (roster.py, vcard.py, private.py,
offline.py, pep/nodes.py, mam/, blocking.py, core/accounts.py) and reads it back for export.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..modules.mam import ARCHIVE_STORE, PREFS_STORE, RECORD_VERSION
from ..modules.pep.nodes import SEP
from ..modules.roster import VER_KEY
from ..storage import keys
from ..stream.scram import ScramCredential

ARCHIVE_PAGE = 1000


@dataclass
class ArchivedMessage:
    when: float
    with_: str | None
    stanza: bytes      # serialised as stored (Element.to_bytes(): no jabber:client xmlns)
    id: str | None = None  # our archive id when the source kept one (our own export)


@dataclass
class PepNode:
    config: dict[str, Any] = field(default_factory=dict)
    aff: dict[str, str] = field(default_factory=dict)
    subs: dict[str, str] = field(default_factory=dict)
    items: list[tuple[str, str, bytes]] = field(default_factory=list)  # (id, publisher, payload)


@dataclass
class AccountData:
    bare: str
    password: str | None = None
    scram: dict[str, ScramCredential] = field(default_factory=dict)
    plan: str | None = None
    created: float | None = None
    disabled: bool = False
    roster: dict[str, list[Any]] = field(default_factory=dict)   # contact -> RosterItem record
    pending: dict[str, bytes] = field(default_factory=dict)      # contact -> subscribe stanza
    vcard: tuple[bytes, str] | None = None                       # (vCard bytes, photo hash)
    private: dict[str, bytes] = field(default_factory=dict)      # "{ns}name" -> fragment
    pep: dict[str, PepNode] = field(default_factory=dict)
    offline: list[ArchivedMessage] = field(default_factory=list)
    archive: list[ArchivedMessage] = field(default_factory=list)
    blocklist: list[str] = field(default_factory=list)
    mam_prefs: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # what was skipped (told to the operator)

    def comparable(self) -> dict[str, Any]:
        """Everything a round trip must keep (not the derived roster version or PEP order keys)."""
        d = dict(self.__dict__)
        d.pop("notes")
        d["scram"] = {m: c.to_record() for m, c in sorted(self.scram.items())}
        d["pep"] = {n: node.__dict__ for n, node in sorted(self.pep.items())}
        d["blocklist"] = sorted(self.blocklist)
        return d


def archive_id(when: float, owner: str, source: str | bytes) -> str:
    """A stable archive id for an imported item: its time, then a hash of the owner and the
    source's id (or the stanza): importing the same file twice replaces instead of duplicating."""
    h = hashlib.blake2b(owner.encode() + b"\0" + (source if isinstance(source, bytes)
                                                  else source.encode()), digest_size=8).digest()
    return (keys.ts_us(max(when, 0.0)).to_bytes(8, "big") + h).hex()


class Stores:
    """The stores an account's data lives in, opened on one storage."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.accounts = storage.keyval("accounts")
        self.roster = storage.map("roster")
        self.pending = storage.map("roster_pending")
        self.vcard = storage.keyval("vcard")
        self.private = storage.map("private")
        self.pep_nodes = storage.map("pep_nodes")
        self.pep_items = storage.map("pep_items")
        self.offline = storage.archive("offline")
        self.mam = storage.archive(ARCHIVE_STORE, RECORD_VERSION)
        self.mam_prefs = storage.keyval(PREFS_STORE, 1)
        self.blocklist = storage.map("blocklist")
        self._seq = time.time_ns() // 1000

    # -- import -------------------------------------------------------------------------------
    def write(self, batch: Any, a: AccountData) -> None:
        """Queue every record of ``a`` into ``batch`` (one transaction: all or nothing).
        Existing data of the account is updated key by key (an import run twice is the same)."""
        owner = a.bare
        old = self.accounts.get(owner)
        rec: dict[str, Any] = dict(old) if old else {"created": time.time(), "plan": None}
        if a.created is not None:
            rec["created"] = a.created
        if a.plan is not None:
            rec["plan"] = a.plan
        if a.disabled:
            rec["disabled"] = True
        if a.scram:
            rec["scram"] = {m: c.to_record() for m, c in a.scram.items()}
        batch.set(self.accounts, owner, rec)
        if a.roster or a.pending:
            ver = self.roster.get(owner, VER_KEY)
            # A new version: clients' cached rosters (XEP-0237) must not look current.
            ver = [ver[0], ver[1] + 1] if ver else [format(int(time.time()), "x"), 1]
            batch.map_set_many(self.roster, owner, {**a.roster, VER_KEY: ver})
        if a.pending:
            batch.map_set_many(self.pending, owner, dict(a.pending))
        if a.vcard is not None:
            batch.set(self.vcard, owner, list(a.vcard))
        if a.private:
            batch.map_set_many(self.private, owner, dict(a.private))
        for name, node in a.pep.items():
            batch.map_set(self.pep_nodes, owner, name,
                          {"config": node.config, "aff": node.aff, "subs": node.subs})
            items = {}
            for item_id, publisher, payload in node.items:  # oldest first: increasing seq
                self._seq += 1
                items[name + SEP + item_id] = [self._seq, publisher, payload]
            if items:
                batch.map_set_many(self.pep_items, owner, items)
        for m in a.offline:
            batch.append(self.offline, owner, m.stanza, with_=m.with_,
                         id=m.id or archive_id(m.when, owner, m.stanza))
        for m in a.archive:
            batch.append(self.mam, owner, [m.stanza], with_=m.with_,
                         id=m.id or archive_id(m.when, owner, m.stanza))
        if a.blocklist:
            batch.map_set_many(self.blocklist, owner, dict.fromkeys(a.blocklist, 1))
        if a.mam_prefs is not None:
            batch.set(self.mam_prefs, owner, a.mam_prefs)

    # -- export -------------------------------------------------------------------------------
    def owners(self, domains: list[str] | None) -> Iterator[str]:
        for owner in self.accounts.owners():
            if domains is None or owner.rpartition("@")[2] in domains:
                yield owner

    def read(self, owner: str, with_archives: bool = True) -> AccountData:
        """The account's data (archives and offline messages: see :meth:`archive_items`)."""
        rec = self.accounts.get(owner) or {}
        a = AccountData(owner, plan=rec.get("plan"), created=rec.get("created"),
                        disabled=bool(rec.get("disabled")))
        a.scram = {m: ScramCredential.from_record(r) for m, r in (rec.get("scram") or {}).items()}
        a.roster = {c: r for c, r in self.roster.get_all(owner).items() if c != VER_KEY}
        a.pending = self.pending.get_all(owner)
        v = self.vcard.get(owner)
        a.vcard = (v[0], v[1]) if v else None
        a.private = self.private.get_all(owner)
        items: dict[str, list[tuple[int, str, str, bytes]]] = {}
        for key, r in self.pep_items.get_all(owner).items():
            name, _, item_id = key.partition(SEP)
            items.setdefault(name, []).append((r[0], item_id, r[1], r[2]))
        for name, r in self.pep_nodes.get_all(owner).items():
            a.pep[name] = PepNode(r.get("config") or {}, r.get("aff") or {}, r.get("subs") or {},
                                  [(i, p, d) for _s, i, p, d in sorted(items.get(name, []))])
        a.blocklist = sorted(self.blocklist.get_all(owner))
        prefs = self.mam_prefs.get(owner)
        a.mam_prefs = prefs if isinstance(prefs, dict) else None
        if with_archives:
            a.offline = list(self.archive_items(self.offline, owner))
            a.archive = list(self.archive_items(self.mam, owner))
        return a

    @staticmethod
    def archive_items(store: Any, owner: str) -> Iterator[ArchivedMessage]:
        """An archive oldest first, a page at a time (an archive need not fit in memory)."""
        after = None
        while True:
            page = store.query(owner, after_id=after, limit=ARCHIVE_PAGE)
            for it in page:
                v = it.value
                data = bytes(v[0]) if isinstance(v, list) else bytes(v)
                yield ArchivedMessage(it.when, it.with_, data, it.id)
            if len(page) < ARCHIVE_PAGE:
                return
            after = page[-1].id
