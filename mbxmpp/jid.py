"""XMPP addresses (RFC 7622): parsing, preparation of each part, and a bounded parse cache.

Localpart: PRECIS UsernameCaseMapped (RFC 8265) minus ``"&'/:<>@``; domainpart: RFC 7622 §3.2
mappings (lowercase, width, NFC, ideographic full stops) with IDNA2008-like checks per label, or an IP
literal; resourcepart: PRECIS OpaqueString. Pure-ASCII parts take a fast path that gives the same
result as PRECIS would (for ASCII the profiles reduce to a character check and, for the localpart and
domainpart, ``str.lower``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, NoReturn

import precis_i18n

from mbxmpp.errors import StanzaError
from mbxmpp.util.lru import LRU

__all__ = ["JID", "JIDError", "parse_jid", "parse_jid_cached", "nodeprep", "nameprep",
           "resourceprep", "set_cache_size"]

MAX_PART_BYTES = 1023  # RFC 7622 §3.1: each part 1..1023 octets of UTF-8
# Upper bound on input characters worth running PRECIS on: three full parts and two separators,
# with slack for sequences that NFC composes into fewer characters.
_MAX_INPUT_CHARS = 4 * (3 * MAX_PART_BYTES + 2)
DEFAULT_CACHE_SIZE = 10_000

_USERNAME = precis_i18n.get_profile("UsernameCaseMapped")
_OPAQUE = precis_i18n.get_profile("OpaqueString")

# RFC 7622 §3.3.1: characters that UsernameCaseMapped allows but a localpart must not contain.
_LOCAL_FORBIDDEN = frozenset("\"&'/:<>@")
# ASCII fast paths: PRECIS IdentifierClass allows exactly the printable ASCII range %x21-7E,
# FreeformClass additionally the space.
_LOCAL_ASCII = re.compile(r"[!#-%(-.0-9;=?A-~]+")
_RESOURCE_ASCII = re.compile(r"[ -~]+")
# COMPAT: "_" is not LDH, but stringprep nameprep (RFC 3920 servers) accepted it in domains.
_DOMAIN_ASCII = re.compile(r"[a-z0-9_.-]+")
_LABEL_ASCII = re.compile(r"[a-z0-9_-]+")
# RFC 7622 §3.2.2 / RFC 5895: ideographic full stops separate labels like ".".
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


class JIDError(StanzaError):
    """A malformed address (RFC 6120 §8.3.3.8 <jid-malformed/>)."""

    def __init__(self, text: str | None = None) -> None:
        super().__init__("jid-malformed", text)


def _fail(text: str) -> NoReturn:
    raise JIDError(text)


def _check_len(part: str, what: str) -> None:
    n = len(part) if part.isascii() else len(part.encode("utf-8"))
    if n == 0:
        _fail(f"empty {what}")
    if n > MAX_PART_BYTES:
        _fail(f"{what} longer than {MAX_PART_BYTES} bytes")


def nodeprep(s: str) -> str:
    """Prepare and enforce a localpart (RFC 7622 §3.3); raise JIDError if it is not one."""
    if s.isascii():
        if _LOCAL_ASCII.fullmatch(s) is None:
            _fail("empty localpart" if not s else "localpart contains a disallowed character")
        out = s.lower()
    else:
        try:
            out = _USERNAME.enforce(s)
        except UnicodeError as e:
            _fail(f"invalid localpart: {getattr(e, 'reason', e)}")
        # Checked after PRECIS: width mapping turns e.g. U+FF20 into "@".
        if not _LOCAL_FORBIDDEN.isdisjoint(out):
            _fail("localpart contains a disallowed character")
    _check_len(out, "localpart")
    return out


def resourceprep(s: str) -> str:
    """Prepare and enforce a resourcepart (RFC 7622 §3.4, OpaqueString, case preserved)."""
    if s.isascii():
        if _RESOURCE_ASCII.fullmatch(s) is None:
            _fail("empty resourcepart" if not s else "resourcepart contains a control character")
        out = s
    else:
        try:
            out = _OPAQUE.enforce(s)
        except UnicodeError as e:
            _fail(f"invalid resourcepart: {getattr(e, 'reason', e)}")
    _check_len(out, "resourcepart")
    return out


def _ip_literal(d: str) -> str:
    if not d.endswith("]"):
        _fail("unterminated IP literal in domainpart")
    try:
        addr = ipaddress.IPv6Address(d[1:-1])
    except ValueError:
        _fail("invalid IPv6 literal in domainpart")
    if addr.scope_id is not None:
        _fail("scoped IPv6 literal in domainpart")
    return f"[{addr.compressed}]"


def _prep_label(label: str) -> str:
    if label.isascii():
        label = label.lower()
        if _LABEL_ASCII.fullmatch(label) is None:
            _fail("domainpart contains a disallowed character" if label else "empty domain label")
        if len(label) > 63:
            _fail("domain label longer than 63 bytes")
        return label
    # UsernameCaseMapped = lowercase + width mapping + NFC + IdentifierClass (whose non-ASCII
    # repertoire follows IDNA2008's derivation) + the bidi rule: RFC 7622 §3.2.2 for one label.
    try:
        label = _USERNAME.enforce(label)
    except UnicodeError as e:
        _fail(f"invalid domainpart: {getattr(e, 'reason', e)}")
    # IdentifierClass allows all printable ASCII; a domain label only LDH (and "_", see above).
    if not _LABEL_CHARS.issuperset(c for c in label if c.isascii()):
        _fail("domainpart contains a disallowed character")
    if len(label.encode("punycode")) + 4 > 63:  # the A-label "xn--..." must fit in 63 octets
        _fail("domain label longer than 63 bytes")
    return label


def _a_to_u(label: str) -> str:
    """RFC 7622 §3.2.1: an A-label is converted to its U-label, so both spellings compare equal."""
    if not label.startswith("xn--"):
        return label
    try:
        u = label[4:].encode("ascii").decode("punycode")
    except UnicodeError:
        _fail("invalid A-label in domainpart")
    if not u or u.isascii():
        _fail("invalid A-label in domainpart")
    u = _prep_label(u)
    if "xn--" + u.encode("punycode").decode("ascii") != label:  # not the A-label of a valid U-label
        _fail("invalid A-label in domainpart")
    return u


def nameprep(s: str) -> str:
    """Prepare and enforce a domainpart (RFC 7622 §3.2); one trailing dot is removed."""
    if s.isascii():
        d = s.lower()
        if d.startswith("["):
            return _ip_literal(d)
        if d.endswith("."):
            d = d[:-1]
        if _DOMAIN_ASCII.fullmatch(d) is None:
            _fail("empty domainpart" if not d else "domainpart contains a disallowed character")
        for label in d.split("."):
            if not label:
                _fail("empty domain label")
            if len(label) > 63:
                _fail("domain label longer than 63 bytes")
        if "xn--" in d:
            d = ".".join([_a_to_u(label) for label in d.split(".")])
    else:
        d = s.translate(_DOTS)
        if d.endswith("."):
            d = d[:-1]
        d = ".".join([_prep_label(label) for label in d.split(".")])
    _check_len(d, "domainpart")
    return d


_set = object.__setattr__


class JID:
    """An immutable, prepared JID. Equality and hash are on the full string."""

    __slots__ = ("local", "domain", "resource", "bare", "full")
    local: str | None
    domain: str
    resource: str | None
    bare: str
    full: str

    def __init__(self, local: str | None, domain: str, resource: str | None = None) -> None:
        _init(self, None if local is None else nodeprep(local), nameprep(domain),
              None if resource is None else resourceprep(resource))

    @staticmethod
    def parse(s: str) -> JID:
        """Parse and prepare ``s`` (cached); raise JIDError."""
        return parse_jid_cached(s)

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    def bare_jid(self) -> JID:
        if self.resource is None:
            return self
        return _make(self.local, self.domain, None)

    def with_resource(self, resource: str) -> JID:
        return _make(self.local, self.domain, resourceprep(resource))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("JID is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("JID is immutable")

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (parse_jid_cached, (self.full,))

    def __str__(self) -> str:
        return self.full

    def __repr__(self) -> str:
        return f"JID({self.full!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JID):
            return self.full == other.full
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, JID):
            return self.full != other.full
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.full)


def _init(j: JID, local: str | None, domain: str, resource: str | None) -> None:
    bare = domain if local is None else f"{local}@{domain}"
    _set(j, "local", local)
    _set(j, "domain", domain)
    _set(j, "resource", resource)
    _set(j, "bare", bare)
    _set(j, "full", bare if resource is None else f"{bare}/{resource}")


def _make(local: str | None, domain: str, resource: str | None) -> JID:
    """Build a JID from parts that are already prepared."""
    j = object.__new__(JID)
    _init(j, local, domain, resource)
    return j


def parse_jid(s: str) -> JID:
    """Parse without the cache (RFC 7622 §3.1 split order); raise JIDError."""
    if len(s) > _MAX_INPUT_CHARS:
        _fail("JID too long")
    rest, slash, resource = s.partition("/")
    local, at, domain = rest.partition("@")
    if not at:
        local, domain = "", rest
    elif not local:
        _fail("empty localpart")
    if slash and not resource:
        _fail("empty resourcepart")
    return _make(nodeprep(local) if at else None, nameprep(domain),
                 resourceprep(resource) if slash else None)


class _Failure:
    """A cached parse failure: the text to raise a fresh JIDError with (re-raising one exception
    instance would grow its traceback on every hit)."""

    __slots__ = ("text",)

    def __init__(self, text: str | None) -> None:
        self.text = text


_cache: LRU[str, JID | _Failure] = LRU(DEFAULT_CACHE_SIZE)


def set_cache_size(maxsize: int) -> None:
    """Replace the parse cache (emptying it)."""
    global _cache
    _cache = LRU(maxsize)


def cache_info() -> LRU[str, JID | _Failure]:
    return _cache


def parse_jid_cached(s: str) -> JID:
    """parse_jid through the bounded LRU; failures are cached too."""
    r = _cache.get(s)
    if r is None:
        if len(s) > _MAX_INPUT_CHARS:  # do not let oversize garbage occupy the cache
            _fail("JID too long")
        try:
            r = parse_jid(s)
        except JIDError as e:
            r = _Failure(e.text)
        _cache.put(s, r)
    if isinstance(r, _Failure):
        raise JIDError(r.text)
    return r
