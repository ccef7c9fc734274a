"""Spam and abuse reports (XEP-0377) that come with a Blocking Command (XEP-0191): recorded for
the operator (``python -m mbxmpp reports list``), never shown to the reported.

A report is ``<report xmlns='urn:xmpp:reporting:1' reason='urn:xmpp:reporting:spam'/>`` inside a
``<block><item/>``, with optional ``<text/>``, the offending messages' ``<stanza-id/>`` (XEP-0359)
and their bodies (``<body xmlns='jabber:client'/>``, §Example 5). The reason is required (§4);
a report without one fails the whole block with <bad-request/>. Unknown reasons are kept as
given (the registry may grow).

Storage: archive store "abuse_reports", owner = the reported JID, with = the reporter, value = a
dict (reason, text, stanza_ids, bodies). Bounded: the text and bodies are cut, and one account's
reports are rate limited ([limits] reports_per_account): over it the JID is still blocked, the
report is not recorded.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import StanzaError
from ..xml.ns import NS_CLIENT, NS_REPORTING, NS_STANZA_ID

if TYPE_CHECKING:
    from ..storage.api import ArchiveStore, Storage
    from ..xml.element import Element

REASONS = ("urn:xmpp:reporting:spam", "urn:xmpp:reporting:abuse")  # reason URIs, not namespaces
STORE = "abuse_reports"
MAX_TEXT = 2000       # characters of the reporter's text kept
MAX_BODIES = 5        # offending messages' bodies kept per report
MAX_BODY = 2000       # characters per body
MAX_IDS = 50          # stanza-ids kept per report


def parse_report(item: Element) -> dict[str, Any] | None:
    """The report inside a <block><item/>, or None; <bad-request/> if it has no reason."""
    rep = item.find("report", NS_REPORTING)
    if rep is None:
        return None
    reason = (rep.get("reason") or "").strip()
    if not reason:
        raise StanzaError("bad-request", "a report needs a 'reason' (XEP-0377)")
    ids = [[c.get("by") or "", c.get("id") or ""] for c in rep.elements()
           if c.tag == "stanza-id" and c.ns == NS_STANZA_ID and c.get("id")]
    bodies = [c.text[:MAX_BODY] for c in rep.elements()
              if c.tag == "body" and c.ns == NS_CLIENT and c.text]
    text = rep.findtext("text", NS_REPORTING) or ""
    return {"reason": reason[:200], "text": text[:MAX_TEXT], "stanza_ids": ids[:MAX_IDS],
            "bodies": bodies[:MAX_BODIES]}


class Reports:
    def __init__(self, storage: Storage) -> None:
        self.store: ArchiveStore = storage.archive(STORE, 1)

    def record(self, reporter: str, reported: str, report: dict[str, Any]) -> None:
        """Durable with the next group commit (the block's IQ result waits for its own)."""
        self.store.append(reported, report, with_=reporter)

    def all(self, jid: str | None = None) -> Iterator[tuple[float, str, str, dict[str, Any]]]:
        """(when, reported, reporter, report), oldest first per reported JID."""
        owners = [jid] if jid else [o for o, _ in self.store.owners_sizes()]
        for owner in owners:
            for it in self.store.query(owner):
                yield it.when, owner, it.with_ or "", it.value


def format_reports(rows: list[tuple[float, str, str, dict[str, Any]]]) -> str:
    """The operator's listing, newest first."""
    if not rows:
        return "no reports"
    out = []
    for when, reported, reporter, r in sorted(rows, key=lambda x: -x[0]):
        t = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        reason = r.get("reason", "")
        short = reason.rsplit(":", 1)[-1] if reason in REASONS else reason
        out.append(f"{t}  {reported}  reported by {reporter}  {short}")
        if r.get("text"):
            out.append(f"    text: {r['text']}")
        for by, id_ in r.get("stanza_ids", []):
            out.append(f"    message: {id_} (archive of {by})")
        for body in r.get("bodies", []):
            out.append(f"    body: {body}")
    out.append(f"{len(rows)} reports")
    return "\n".join(out)
