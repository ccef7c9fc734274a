"""Stream Management counters: the compiled SMState and its Python twin behave the same."""

from __future__ import annotations

import pytest

from mbxmpp.stream.smstate import SMState as PySMState

try:
    from mbxmpp._ext.smstate import SMState as CSMState
except ImportError:  # pragma: no cover
    CSMState = None

IMPLS = [pytest.param(PySMState, id="py"),
         pytest.param(CSMState, id="c", marks=pytest.mark.skipif(CSMState is None, reason="not built"))]


@pytest.fixture(params=IMPLS)
def SM(request):
    return request.param


def test_counts_and_acks(SM):
    s = SM("id", True, 300, request_every=3)
    assert [s.outbound(i) for i in range(4)] == [False, False, True, False]
    s.inbound()
    s.inbound()
    assert (s.h_in, s.h_out) == (2, 4)
    assert s.ack(3) and list(s.queue) == [3] and s.acked == 3
    assert not s.requested
    assert s.ack(3)  # the same h again acks nothing more
    assert not s.ack(5)  # more than was sent
    assert list(s.queue) == [3]


def test_ack_modulo_2_32(SM):
    # XEP-0198 §4: h wraps; an ack of (acked + n) mod 2^32 drops n stanzas.
    s = SM("id", True, 300)
    for i in range(3):
        s.outbound(i)
    assert s.ack(2) and list(s.queue) == [2]
    assert not s.ack(2 + (1 << 32) - 1)  # would mean 2^32-1 more than sent


def test_h_in_wraps(SM):
    s = SM("id", True, 300)
    if SM is PySMState:
        s.h_in = (1 << 32) - 1
        s.inbound()
        assert s.h_in == 0
    else:
        for _ in range(3):
            s.inbound()
        assert s.h_in == 3


def test_unacked_copy(SM):
    s = SM("id", False, 60)
    s.outbound("a")
    u = s.unacked()
    u.append("b")
    assert list(s.queue) == ["a"]


@pytest.mark.parametrize("h, want", [
    ("2", 0), ("0002", 0), ("0" * 5000 + "2", 0),  # xs:unsignedInt: leading zeros are fine
    ("", 1), ("+2", 1), (" 2", 1), ("2 ", 1), ("²", 1), ("٢", 1), ("-1", 1), ("0x2", 1),
    ("4294967296", 1), ("1" * 5000, 1), (None, 1), (2, 1), (b"2", 1),
    ("3", 2), ("4294967295", 2),  # more than the two stanzas sent
])
def test_ack_attr(SM, h, want):
    import sys
    consts = sys.modules[SM.__module__]  # each twin exports the results it returns
    assert (consts.ACK_OK, consts.ACK_INVALID, consts.ACK_TOO_HIGH) == (0, 1, 2)
    s = SM("id", True, 300)
    s.outbound("a")
    s.outbound("b")
    assert s.ack_attr(h) == want
    assert list(s.queue) == ([] if want == 0 else ["a", "b"])  # a refused ack changes nothing
    assert s.acked == (2 if want == 0 else 0)


def test_ack_bytes(SM):
    s = SM("id", True, 300)
    assert s.ack_bytes() == b"<a xmlns='urn:xmpp:sm:3' h='0'/>"
    for _ in range(12):
        s.inbound()
    assert s.ack_bytes() == b"<a xmlns='urn:xmpp:sm:3' h='12'/>"
    for n in range(13, 1201):  # every digit count up to four, each boundary of a digit crossed
        s.inbound()
        assert s.ack_bytes() == b"<a xmlns='urn:xmpp:sm:3' h='%d'/>" % n


def test_ack_attr_takes_str_subclasses(SM):
    class S(str):
        pass
    s = SM("id", True, 300)
    s.outbound("a")
    assert s.ack_attr(S("1")) == 0 and s.acked == 1
