"""Client State Indication (XEP-0352): what an inactive client gets at once, what is held back,
collapsing, flush order, the queue bound, and the session lifecycle."""

from __future__ import annotations

import pytest

from mbxmpp.jid import JID
from mbxmpp.modules.csi import COLLAPSE, CSI, HOLD, URGENT, classify
from mbxmpp.xml.element import Element
from mbxmpp.xml.ns import NS_CSI
from tests.harness import FakeClient, ServerHarness, parse_stanza
from tests.modules.test_mam_support import ALL_MODULES

MODULES = ["roster", "presence", "carbons", "csi"]
A = "alice@localhost"
AF = "alice@localhost/a1"


def inactive(h, c):
    assert h.server.handle_nonza(c, Element("inactive", NS_CSI))


def active(h, c):
    assert h.server.handle_nonza(c, Element("active", NS_CSI))


def inject(h, xml: str) -> None:
    """A stanza arriving for alice from elsewhere (as if from s2s)."""
    h.server.route(parse_stanza(xml))


def pres(frm: str, show: str | None = None, type_: str | None = None) -> str:
    t = f" type='{type_}'" if type_ else ""
    body = f"<show>{show}</show>" if show else ""
    return f"<presence from='{frm}' to='{AF}'{t}>{body}</presence>"


def msg(frm: str, id_: str, payload: str, type_: str = "chat") -> str:
    return f"<message from='{frm}' to='{AF}' type='{type_}' id='{id_}'>{payload}</message>"


def summary(stanzas):
    out = []
    for s in stanzas:
        if s.tag == "presence":
            out.append(("p", s.get("from"), s.get("type") or s.findtext("show")))
        else:
            out.append((s.tag[0], s.get("from"), s.get("id")))
    return out


async def setup(h):
    a = await h.login(A, "a1", presence=True)
    await a.settle()
    return a


COMPOSING = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
PAUSED = "<paused xmlns='http://jabber.org/protocol/chatstates'/>"


async def test_stream_feature_and_metadata():
    async with ServerHarness(modules=MODULES) as h:
        a = await setup(h)
        feats = h.server.post_auth_features(a)  # type: ignore[arg-type]
        assert any(f.tag == "csi" and f.ns == NS_CSI for f in feats)
        assert CSI.xeps == {"0352": "1.0.0"}


async def test_active_client_gets_everything_at_once():
    async with ServerHarness(modules=MODULES) as h:
        a = await setup(h)
        inject(h, pres("bob@remote.example/r", "away"))
        inject(h, msg("bob@remote.example/r", "c1", COMPOSING))
        assert len(await a.settle()) == 2
        # inactive then active again: back to normal
        inactive(h, a)
        active(h, a)
        inject(h, pres("bob@remote.example/r", "dnd"))
        assert len(await a.settle()) == 1


async def test_hold_collapse_and_flush_on_active():
    async with ServerHarness(modules=MODULES) as h:
        a = await setup(h)
        csi = h.server.module("csi")
        inactive(h, a)
        assert csi.is_inactive(a.session)
        inject(h, pres("bob@remote.example/r", "away"))
        inject(h, pres("carol@remote.example/r", "away"))
        inject(h, msg("bob@remote.example/r", "c1", COMPOSING))
        inject(h, pres("bob@remote.example/r", "xa"))          # supersedes bob's 'away'
        inject(h, msg("bob@remote.example/r", "c2", PAUSED))     # supersedes 'composing'
        inject(h, msg("bob@remote.example/r", "rc", "<received xmlns='urn:xmpp:receipts' id='1'/>"))
        inject(h, msg("bob@remote.example/r", "rd", "<received xmlns='urn:xmpp:receipts' id='2'/>"))
        inject(h, pres("dave@remote.example/r", type_="unavailable"))
        assert await a.settle() == []
        assert csi.queued(a.session) == 6
        active(h, a)
        # flushed synchronously by the nonza, in order; replaced items moved to their newest place
        assert summary(a.received) == [
            ("p", "carol@remote.example/r", "away"),
            ("p", "bob@remote.example/r", "xa"),
            ("m", "bob@remote.example/r", "c2"),
            ("m", "bob@remote.example/r", "rc"),
            ("m", "bob@remote.example/r", "rd"),
            ("p", "dave@remote.example/r", "unavailable"),
        ]
        await a.settle()
        assert csi.queued(a.session) == 0 and not csi.is_inactive(a.session)


async def test_presence_collapse_is_per_full_jid():
    async with ServerHarness(modules=MODULES) as h:
        a = await setup(h)
        inactive(h, a)
        inject(h, pres("bob@remote.example/r1", "away"))
        inject(h, pres("bob@remote.example/r2", "away"))
        inject(h, pres("bob@remote.example/r1", type_="unavailable"))
        active(h, a)
        assert summary(await a.settle()) == [
            ("p", "bob@remote.example/r2", "away"),
            ("p", "bob@remote.example/r1", "unavailable"),
        ]


@pytest.mark.parametrize("urgent", [
    msg("zed@remote.example/r", "u", "<body>hello</body>"),
    msg("zed@remote.example/r", "u", "<body>hello</body>", type_="normal"),
    msg("zed@remote.example/r", "u", "<subject>topic</subject>", type_="groupchat"),
    msg("zed@remote.example/r", "u", "<error type='cancel'/>", type_="error"),
    msg("zed@remote.example/r", "u", "<x xmlns='jabber:x:conference' jid='r@c.example'/>", type_="normal"),
    msg("zed@remote.example/r", "u", "<encrypted xmlns='eu.siacs.conversations.axolotl'/>"),
    msg("zed@remote.example/r", "u", "<propose xmlns='urn:xmpp:jingle-message:0' id='j'/>"),
    "<iq from='zed@remote.example/r' to='alice@localhost/a1' type='get' id='u'>"
    "<query xmlns='jabber:iq:version'/></iq>",
    "<presence from='zed@remote.example' to='alice@localhost/a1' type='subscribe' id='u'/>",
    "<presence from='zed@remote.example/r' to='alice@localhost/a1' type='error' id='u'/>",
    "<presence from='room@muc.example/me' to='alice@localhost/a1' id='u'>"
    "<x xmlns='http://jabber.org/protocol/muc#user'><status code='110'/></x></presence>",
])
async def test_urgent_flushes_queue_first(urgent):
    async with ServerHarness(modules=MODULES) as h:
        a = await setup(h)
        inactive(h, a)
        inject(h, pres("bob@remote.example/r", "away"))
        inject(h, msg("bob@remote.example/r", "c1", COMPOSING))
        assert await a.settle() == []
        inject(h, urgent)
        got = await a.settle()
        assert [s.get("id") for s in got][-1] == "u"
        assert summary(got[:2]) == [("p", "bob@remote.example/r", "away"),
                                    ("m", "bob@remote.example/r", "c1")]
        assert len(got) == 3
        # still inactive: the next unimportant stanza is held again
        inject(h, pres("bob@remote.example/r", "xa"))
        assert await a.settle() == []


async def test_urgent_with_empty_queue_and_still_inactive():
    async with ServerHarness(modules=MODULES) as h:
        a = await setup(h)
        inactive(h, a)
        inactive(h, a)   # repeated indications are harmless
        inject(h, msg("bob@remote.example/r", "m1", "<body>hi</body>"))
        assert summary(await a.settle()) == [("m", "bob@remote.example/r", "m1")]
        assert h.server.module("csi").is_inactive(a.session)


async def test_headline_and_pep_held_but_not_collapsed():
    async with ServerHarness(modules=MODULES) as h:
        a = await setup(h)
        inactive(h, a)
        ev = "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'/></event>"
        inject(h, msg("bob@remote.example", "e1", ev, type_="headline"))
        inject(h, msg("bob@remote.example", "e2", ev, type_="headline"))
        assert await a.settle() == []
        active(h, a)
        assert [s.get("id") for s in await a.settle()] == ["e1", "e2"]


async def test_queue_bound_flushes():
    async with ServerHarness(modules=MODULES) as h:
        a = await setup(h)
        csi = h.server.module("csi")
        csi.max_queue = 5
        inactive(h, a)
        for i in range(5):
            inject(h, pres(f"u{i}@remote.example/r", "away"))
        assert await a.settle() == []
        assert csi.queued(a.session) == 5
        inject(h, pres("u5@remote.example/r", "away"))   # the queue is full: everything goes
        got = await a.settle()
        assert [s.get("from") for s in got] == [f"u{i}@remote.example/r" for i in range(6)]
        assert csi.queued(a.session) == 0
        # collapsing into a full queue still flushes (bounded, in order)
        for i in range(5):
            inject(h, pres(f"u{i}@remote.example/r", "xa"))
        inject(h, pres("u0@remote.example/r", "dnd"))
        assert len(await a.settle()) == 6


async def test_default_bound_is_1000():
    assert CSI.max_queue == 1000


async def test_session_close_drops_queue():
    async with ServerHarness(modules=MODULES) as h:
        a = await setup(h)
        inactive(h, a)
        inject(h, pres("bob@remote.example/r", "away"))
        session = a.session
        h.disconnect(a)
        assert CSI not in session.mod
        assert [s for s in a.received
                if s.tag == "presence" and s.get("from") == "bob@remote.example/r"] == []


async def test_nonza_before_bind_is_ignored():
    async with ServerHarness(modules=MODULES) as h:
        stream = FakeClient(h, A)
        assert stream.session is None
        inactive(h, stream)
        active(h, stream)


async def test_new_stream_starts_active():
    """XEP-0352 §5.2: a resumed stream is 'active'; what was held is handed over."""
    async with ServerHarness(modules=MODULES) as h:
        a = await setup(h)
        inactive(h, a)
        inject(h, pres("bob@remote.example/r", "away"))
        # the session moves to a new stream (as Stream Management resumption does)
        b = FakeClient(h, a.jid)
        b.session = a.session
        a.session.stream = b
        inject(h, pres("carol@remote.example/r", "away"))
        assert summary(await b.settle()) == [("p", "bob@remote.example/r", "away"),
                                             ("p", "carol@remote.example/r", "away")]
        assert not h.server.module("csi").is_inactive(b.session)


async def test_carbons_classified_by_what_they_carry():
    async with ServerHarness(modules=MODULES) as h:
        a1 = await h.login(A, "a1", presence=True)
        a2 = await h.login(A, "a2", presence=True)
        b = await h.login("bob@localhost", "b1", presence=True)
        h.send(a2, "<iq type='set' id='cb'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        await a2.expect(lambda s: s.get("id") == "cb")
        for c in (a1, a2, b):
            await c.settle()
        inactive(h, a2)
        h.send(a1, f"<message to='bob@localhost' type='chat' id='cs'>{COMPOSING}</message>")
        assert await a2.settle() == []            # a copied chat state waits
        h.send(a1, "<message to='bob@localhost' type='chat' id='m'><body>hi</body></message>")
        got = await a2.settle()                   # a copied body does not
        assert len(got) == 2
        assert [s.find_ns("urn:xmpp:carbons:2").first_child().first_child().get("id")
                for s in got] == ["cs", "m"]


def test_classify():
    def k(xml):
        return classify(parse_stanza(xml))[0]
    assert k("<presence/>") == COLLAPSE
    assert k("<presence type='unavailable'/>") == COLLAPSE
    assert k("<presence type='subscribed'/>") == URGENT
    assert k("<presence type='probe'/>") == URGENT
    assert k(f"<message type='chat'>{COMPOSING}<thread>t</thread>"
             "<no-store xmlns='urn:xmpp:hints'/></message>") == COLLAPSE
    # a chat state together with another payload is held, but not collapsed
    assert k(f"<message>{COMPOSING}<received xmlns='urn:xmpp:receipts' id='x'/></message>") == HOLD
    assert k("<message/>") == HOLD
    assert k("<message type='headline'><body>news</body></message>") == URGENT
    assert k("<iq type='result'/>") == URGENT
    # a carbon wrapper without a forwarded message is passed on
    assert k("<message><sent xmlns='urn:xmpp:carbons:2'/></message>") == URGENT
    # carbons of the same chat state in different conversations do not replace each other
    wrap = ("<message><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
            "<message xmlns='jabber:client' from='{f}' to='alice@localhost' type='chat'>"
            f"{COMPOSING}</message></forwarded></received></message>")
    k1 = classify(parse_stanza(wrap.format(f="bob@x/r")))
    k2 = classify(parse_stanza(wrap.format(f="carol@x/r")))
    assert k1[0] == k2[0] == COLLAPSE and k1[1] != k2[1]


class _StandIn:
    """Like Stream Management's hibernation stand-in: takes stanzas, has no session."""

    def __init__(self) -> None:
        self.got: list = []

    def send_stanza(self, st) -> None:
        self.got.append(st)

    def close(self, error=None) -> None:
        pass


async def test_hibernated_session_keeps_holding():
    async with ServerHarness(modules=MODULES) as h:
        a = await setup(h)
        inactive(h, a)
        inject(h, pres("bob@remote.example/r", "away"))
        stand_in = _StandIn()
        a.session.stream = stand_in
        inject(h, pres("bob@remote.example/r", "xa"))
        inject(h, pres("carol@remote.example/r", "xa"))
        assert stand_in.got == []
        assert h.server.module("csi").queued(a.session) == 2
        inject(h, msg("bob@remote.example/r", "m", "<body>hi</body>"))
        assert [s.tag for s in stand_in.got] == ["presence", "presence", "message"]


async def test_inactive_again_on_new_stream_keeps_queue():
    async with ServerHarness(modules=MODULES) as h:
        a = await setup(h)
        inactive(h, a)
        inject(h, pres("bob@remote.example/r", "away"))
        b = FakeClient(h, a.jid)
        b.session = a.session
        a.session.stream = b
        inactive(h, b)     # the resumed stream goes inactive at once
        inject(h, pres("carol@remote.example/r", "away"))
        assert await b.settle() == []
        active(h, b)
        assert [s.get("from") for s in await b.settle()] == ["bob@remote.example/r",
                                                             "carol@remote.example/r"]


# -- XEP-0352 -------------------------------------------------------------------------------------

async def test_xep0352_inactive_before_bind_applies_to_the_bound_session():
    async with ServerHarness(modules=ALL_MODULES) as h:
        await h.create_user(A)
        stream = FakeClient(h, A)
        assert h.server.handle_nonza(stream, Element("inactive", NS_CSI))
        stream.session = h.server.bind(stream, JID.parse(A), "r1")
        stream.jid = stream.session.full
        csi = h.server.module("csi")
        assert csi.is_inactive(stream.session)
        # ... and <active/> before bind cancels it
        other = FakeClient(h, A)
        h.server.handle_nonza(other, Element("inactive", NS_CSI))
        h.server.handle_nonza(other, Element("active", NS_CSI))
        other.session = h.server.bind(other, JID.parse(A), "r2")
        assert not csi.is_inactive(other.session)
        assert CSI not in other.session.mod
