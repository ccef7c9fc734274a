import copy
import pickle

import precis_i18n
import pytest

from mbxmpp import jid as jidmod
from mbxmpp.errors import StanzaError
from mbxmpp.jid import (JID, JIDError, nameprep, nodeprep, parse_jid, parse_jid_cached,
                        resourceprep, set_cache_size)

# RFC 7622 §3.5, valid examples: input -> (local, domain, resource)
VALID = [
    ("juliet@example.com", ("juliet", "example.com", None)),
    ("juliet@example.com/foo", ("juliet", "example.com", "foo")),
    ("juliet@example.com/foo bar", ("juliet", "example.com", "foo bar")),
    ("juliet@example.com/foo@bar", ("juliet", "example.com", "foo@bar")),
    ("foo\\20bar@example.com", ("foo\\20bar", "example.com", None)),
    ("fussball@example.com", ("fussball", "example.com", None)),
    ("fußball@example.com", ("fußball", "example.com", None)),
    ("π@example.com", ("π", "example.com", None)),
    ("Σ@example.com/foo", ("σ", "example.com", "foo")),
    ("σ@example.com/foo", ("σ", "example.com", "foo")),
    ("ς@example.com/foo", ("ς", "example.com", "foo")),  # RFC 8265 toLower keeps final sigma
    ("king@example.com/♚", ("king", "example.com", "♚")),
    ("example.com", (None, "example.com", None)),
    ("example.com/foobar", (None, "example.com", "foobar")),
    ("a.example.com/b@example.net", (None, "a.example.com", "b@example.net")),
]

# RFC 7622 §3.5, invalid examples (minus "juliet@example.com/ foo", see below) and more.
INVALID = [
    '"juliet"@example.com',
    "foo bar@example.com",
    "@example.com/",
    "henriⅣ@example.com",
    "♚@example.com",
    "juliet@",
    "/foobar",
    "",
    "@example.com",
    "example.com/",
    "juliet@example.com/",
    "a@b@example.com",
    "a\x00@example.com",
    "juliet@exa mple.com",
    "juliet@example.com/a\x00b",
    "juliet@example.com/a\x7fb",
    "juliet@example.com/a\u200bb",  # zero width space: not in FreeformClass
    "jul:iet@example.com",
    "jul<iet@example.com",
    "jul'iet@example.com",
    "jul&iet@example.com",
    "a＠b@example.com",  # fullwidth @ becomes "@" under width mapping
    "juliet@.",
    "juliet@.example.com",
    "juliet@example..com",
    "juliet@example.com..",
    "juliet@exam!ple.com",
    "juliet@exämp!le.com",
    "juliet@[::1",
    "juliet@[::g]",
    "juliet@[fe80::1%eth0]",
    "juliet@xn--zz.com",
]


@pytest.mark.parametrize("s,parts", VALID)
def test_rfc7622_valid(s, parts):
    j = JID.parse(s)
    assert (j.local, j.domain, j.resource) == parts
    assert JID.parse(j.full) == j  # preparation is idempotent


@pytest.mark.parametrize("s", INVALID)
def test_invalid(s):
    with pytest.raises(JIDError) as ei:
        JID.parse(s)
    assert ei.value.condition == "jid-malformed"
    assert isinstance(ei.value, StanzaError)
    with pytest.raises(JIDError):
        parse_jid(s)


def test_leading_space_in_resource_is_accepted():
    # RFC 7622 §3.5 lists "juliet@example.com/ foo" as invalid, but no rule of OpaqueString (which
    # allows spaces) forbids it; we accept, as other implementations do (e.g. mellium/xmpp jid).
    assert JID.parse("juliet@example.com/ foo").resource == " foo"


def test_case_mapping():
    j = JID.parse("JuLiEt@ExAmPlE.CoM/BaLcOnY")
    assert j.local == "juliet" and j.domain == "example.com" and j.resource == "BaLcOnY"
    assert j == JID.parse("juliet@example.com/BaLcOnY")
    assert j != JID.parse("juliet@example.com/balcony")


def test_unicode_mapping():
    # width mapping in localpart and domainpart; OpaqueString does no width mapping
    j = JID.parse("Ｊｕｌｉｅｔ@ＥＸＡＭＰＬＥ．ｃｏｍ/Ｒｅｓ")
    assert (j.local, j.domain, j.resource) == ("juliet", "example.com", "Ｒｅｓ")
    # ideographic full stops separate labels; one trailing dot goes
    assert JID.parse("a@example。com｡").domain == "example.com"
    # NFC
    assert JID.parse("e\u0301@example.com").local == "\u00e9"
    assert JID.parse("a@example.com/e\u0301").resource == "\u00e9"
    # non-ASCII spaces become U+0020 in resources
    assert JID.parse("a@example.com/x\u00a0y").resource == "x y"
    assert JID.parse("a@MÜNCHEN.de").domain == "münchen.de"


def test_a_label_equals_u_label():
    assert JID.parse("a@xn--mnchen-3ya.de") == JID.parse("a@münchen.de")
    assert JID.parse("a@XN--MNCHEN-3YA.DE").domain == "münchen.de"
    with pytest.raises(JIDError):
        JID.parse("a@xn--.de")


def test_domains():
    assert JID.parse("example.net.").domain == "example.net"
    assert JID.parse("A.Example.nEt.").domain == "a.example.net"
    assert JID.parse("127.0.0.1").domain == "127.0.0.1"
    assert JID.parse("[::1]").domain == "[::1]"
    assert JID.parse("u@[0:0:0:0::1]/r").full == "u@[::1]/r"
    assert JID.parse("u@[2001:DB8::1]").domain == "[2001:db8::1]"
    assert JID.parse("_xmpp.example.com").domain == "_xmpp.example.com"  # COMPAT


def test_lengths():
    assert JID.parse("a" * 1023 + "@example.com").local == "a" * 1023
    for bad in ("a" * 1024 + "@example.com", "é" * 512 + "@example.com",
                "a@example.com/" + "r" * 1024, "a@example.com/" + "é" * 512):
        with pytest.raises(JIDError):
            JID.parse(bad)
    assert JID.parse("a@example.com/" + "r" * 1023).resource == "r" * 1023
    label63 = "l" * 63
    assert JID.parse(f"a@{label63}.com").domain == f"{label63}.com"
    with pytest.raises(JIDError):
        JID.parse(f"a@l{label63}.com")
    long_domain = ".".join(["d" * 63] * 16)  # 1023 bytes
    assert JID.parse(long_domain).domain == long_domain
    with pytest.raises(JIDError):
        JID.parse(long_domain + "x")
    with pytest.raises(JIDError):  # U-label whose A-label is longer than 63
        JID.parse("a@" + "ü" * 60 + ".de")
    with pytest.raises(JIDError):
        JID.parse("a" * 100_000)


def test_constructor_and_helpers():
    j = JID("Juliet", "Example.COM", "Balcony")
    assert j.full == "juliet@example.com/Balcony" and str(j) == j.full
    assert j.bare == "juliet@example.com"
    assert not j.is_bare
    b = j.bare_jid()
    assert b.is_bare and b.full == "juliet@example.com" and b.resource is None
    assert b.bare_jid() is b
    assert j.with_resource("x\u00a0y").full == "juliet@example.com/x y"
    assert JID(None, "example.com").full == "example.com"
    assert JID(None, "example.com", "r").bare == "example.com"
    assert repr(j) == "JID('juliet@example.com/Balcony')"
    for args in (("", "example.com"), ("a", ""), ("a", "example.com", ""), ("a b", "x")):
        with pytest.raises(JIDError):
            JID(*args)
    with pytest.raises(JIDError):
        j.with_resource("")


def test_eq_hash_immutable():
    a = JID.parse("Juliet@example.com/r")
    b = JID("juliet", "EXAMPLE.com", "r")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != JID.parse("juliet@example.com/R")
    assert a != "juliet@example.com/r"
    assert {a: 1}[b] == 1
    with pytest.raises(AttributeError):
        a.local = "romeo"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del a.local  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(a)) == a
    assert copy.copy(a) == a and copy.deepcopy(a) == a


def test_helpers():
    assert nodeprep("JULIET") == "juliet"
    assert nodeprep("Ｊuliet") == "juliet"
    assert nameprep("Example.COM.") == "example.com"
    assert resourceprep("Res") == "Res"
    for f, bad in ((nodeprep, "a@b"), (nodeprep, ""), (nodeprep, "♚"), (nameprep, "a/b"),
                   (nameprep, ""), (resourceprep, ""), (resourceprep, "\x01")):
        with pytest.raises(JIDError):
            f(bad)


_USERNAME = precis_i18n.get_profile("UsernameCaseMapped")
_OPAQUE = precis_i18n.get_profile("OpaqueString")
_ASCII_SAMPLES = [chr(c) for c in range(128)] + [
    "Juliet", "a.b-c_d", "x!y#z", "A~B", "a b", " lead", "trail ", "a\tb", "MiXeD123", "x=y", "a\\b"]


def _oracle(profile, s, extra_forbidden=""):
    try:
        out = profile.enforce(s)
    except UnicodeError:
        return None
    return None if any(c in extra_forbidden for c in out) else out


@pytest.mark.parametrize("s", _ASCII_SAMPLES)
def test_ascii_fast_path_matches_precis(s):
    """The ASCII fast paths must give what PRECIS gives (the oracle)."""
    for fast, profile, extra in ((nodeprep, _USERNAME, "\"&'/:<>@"), (resourceprep, _OPAQUE, "")):
        expected = _oracle(profile, s, extra)
        try:
            got = fast(s)
        except JIDError:
            got = None
        assert got == expected, (fast.__name__, s)


def test_cache_hits_and_failures():
    set_cache_size(4)
    try:
        a = parse_jid_cached("romeo@example.net/x")
        assert JID.parse("romeo@example.net/x") is a
        with pytest.raises(JIDError) as e1:
            JID.parse("@bad")
        assert "@bad" in jidmod.cache_info()
        with pytest.raises(JIDError) as e2:
            JID.parse("@bad")
        assert e1.value is not e2.value and e1.value.text == e2.value.text
        for i in range(10):
            JID.parse(f"u{i}@example.net")
        assert len(jidmod.cache_info()) == 4
        assert "@bad" not in jidmod.cache_info()
        assert JID.parse("romeo@example.net/x") is not a  # evicted, parsed again
        assert JID.parse("romeo@example.net/x") == a
        with pytest.raises(JIDError):
            JID.parse("x" * 100_000)
        assert "x" * 100_000 not in jidmod.cache_info()
    finally:
        set_cache_size(jidmod.DEFAULT_CACHE_SIZE)
