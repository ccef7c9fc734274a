"""Entity Capabilities (XEP-0115): the verification string, its checks, and a cache of verified
hashes shared by every account (a verified ``(hash, ver)`` means the same features for anyone).

A ``<c/>`` whose ver is not in the cache is resolved by asking the announcing entity for
``disco#info`` on ``node#ver`` (§6.2); the answer is hashed again (§5.1) and cached globally only
if the hash matches and the answer is well formed (§5.4). A mismatching or legacy (no 'hash')
answer still tells what that one entity wants, so its features are used for it alone.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from typing import Awaitable, Callable, NamedTuple

from ...util.ids import new_id
from ...util.lru import LRU
from ...xml.element import Element
from ...xml.ns import NS_CAPS, NS_CLIENT, NS_DATA, NS_DISCO_INFO

log = logging.getLogger(__name__)

HASHES = {"sha-1": "sha1", "sha-224": "sha224", "sha-256": "sha256", "sha-384": "sha384",
          "sha-512": "sha512"}
QUERY_TIMEOUT = 10.0
MAX_PENDING = 1000  # caps queries in flight at once (a flood of fresh vers must not be a DoS)

Features = frozenset

Request = Callable[[Element, float], Awaitable[Element]]


class Caps(NamedTuple):
    node: str
    ver: str
    hash: str | None  # None: legacy caps (XEP-0115 < 1.5), never cached globally


def from_presence(presence: Element) -> Caps | None:
    c = presence.find("c", NS_CAPS)
    if c is None:
        return None
    node, ver, h = c.get("node"), c.get("ver"), c.get("hash")
    if not node or not ver:
        return None
    return Caps(node, ver, h.lower() if h else None)


class InvalidDisco(ValueError):
    """A disco#info answer that §5.4 says must not be used to validate a ver."""


def verification_string(query: Element) -> str:
    """XEP-0115 §5.1 on a disco#info <query/>; InvalidDisco for the §5.4 failures."""
    identities = []
    for i in query.findall("identity", NS_DISCO_INFO):
        identities.append("/".join((i.get("category") or "", i.get("type") or "",
                                    i.get("xml:lang") or "", i.get("name") or "")))
    if len(set(identities)) != len(identities):
        raise InvalidDisco("duplicate identity")
    features = [f.get("var") or "" for f in query.findall("feature", NS_DISCO_INFO)]
    if len(set(features)) != len(features):
        raise InvalidDisco("duplicate feature")
    forms: dict[str, str] = {}
    for x in query.findall("x", NS_DATA):
        form_type: str | None = None
        fields: list[tuple[str, list[str]]] = []
        for f in x.findall("field", NS_DATA):
            values = [v.text for v in f.findall("value", NS_DATA)]
            if f.get("var") == "FORM_TYPE":
                if len(values) != 1:
                    raise InvalidDisco("FORM_TYPE with several values")
                if f.get("type") != "hidden":
                    form_type = None
                    break
                form_type = values[0]
            else:
                fields.append((f.get("var") or "", values))
        if form_type is None:
            continue  # forms without a hidden FORM_TYPE are ignored
        if form_type in forms:
            raise InvalidDisco("two forms with the same FORM_TYPE")
        s = [form_type + "<"]
        for var, values in sorted(fields, key=lambda t: t[0]):
            s.append(var + "<")
            s.extend(v + "<" for v in sorted(values))
        forms[form_type] = "".join(s)
    out = [i + "<" for i in sorted(identities)]
    out += [f + "<" for f in sorted(features)]
    out += [forms[k] for k in sorted(forms)]
    return "".join(out)


def compute_ver(query: Element, algo: str = "sha-1") -> str:
    h = hashlib.new(HASHES[algo], verification_string(query).encode("utf-8"))
    return base64.b64encode(h.digest()).decode("ascii")


def features_of(query: Element) -> Features:
    return frozenset(f.get("var") or "" for f in query.findall("feature", NS_DISCO_INFO))


class CapsCache:
    """Verified ``(hash, ver)`` -> features, and the queries in flight (one per ver)."""

    def __init__(self, request: Request, maxsize: int = 20000) -> None:
        self._request = request
        self.verified: LRU[tuple[str, str], Features] = LRU(maxsize)
        self._pending: dict[tuple[str, str], asyncio.Future[Features | None]] = {}

    def lookup(self, caps: Caps) -> Features | None:
        if caps.hash is None:
            return None
        return self.verified.get((caps.hash, caps.ver))

    def learn(self, caps: Caps, query: Element) -> Features | None:
        """Check a disco#info answer against ``caps``; cache it when valid. Returns its features
        (also when not verified: they still describe the entity that answered)."""
        feats = features_of(query)
        if caps.hash is None:
            return feats
        algo = caps.hash
        if algo not in HASHES:
            return feats
        try:
            ok = compute_ver(query, algo) == caps.ver
        except InvalidDisco as e:
            log.info("caps %s: invalid disco#info (%s)", caps.ver, e)
            return feats
        if ok:
            self.verified.put((algo, caps.ver), feats)
        else:
            log.info("caps %s/%s: the hash of the disco#info does not match", caps.node, caps.ver)
        return feats

    async def resolve(self, caps: Caps, jid: str, frm: str) -> Features | None:
        """The features behind ``caps`` announced by ``jid``, asking it when needed (None when it
        does not answer usefully). Concurrent calls for one ver share one query."""
        feats = self.lookup(caps)
        if feats is not None:
            return feats
        key = (caps.hash or "", caps.ver) if caps.hash else None
        if key is not None:
            fut = self._pending.get(key)
            if fut is not None:
                feats = await asyncio.shield(fut)
                if feats is not None:
                    return feats
                # the other entity did not answer: ask this one
        if len(self._pending) >= MAX_PENDING:
            return None
        loop = asyncio.get_running_loop()
        own: asyncio.Future[Features | None] = loop.create_future()
        if key is not None and key not in self._pending:
            self._pending[key] = own
        try:
            feats = await self._query(caps, jid, frm)
        finally:
            if key is not None and self._pending.get(key) is own:
                del self._pending[key]
            if not own.done():
                own.set_result(self.lookup(caps))  # only a verified answer is shared
        return feats

    async def _query(self, caps: Caps, jid: str, frm: str) -> Features | None:
        iq = Element("iq", NS_CLIENT, {"type": "get", "to": jid, "from": frm, "id": new_id()})
        iq.add("query", NS_DISCO_INFO, {"node": f"{caps.node}#{caps.ver}"})
        try:
            reply = await self._request(iq, QUERY_TIMEOUT)
        except asyncio.TimeoutError:
            return None
        if reply.get("type") != "result":
            return None
        q = reply.find("query", NS_DISCO_INFO)
        if q is None:
            return None
        return self.learn(caps, q)
