"""Review of the feature modules against the XEP texts: one test per finding, named after the
XEP section it checks (MAM/XEP-0359, Carbons, Blocking, PEP/XEP-0060, disco, vCard, CSI)."""

from __future__ import annotations

from mbxmpp.jid import JID
from mbxmpp.modules.csi import CSI
from mbxmpp.modules.mam import should_store
from mbxmpp.xml.element import Element
from mbxmpp.xml.ns import (NS_BLOCKING, NS_BLOCKING_ERRORS, NS_CARBONS, NS_CLIENT, NS_CSI,
                           NS_DATA, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_FORWARD, NS_MAM, NS_PUBSUB,
                           NS_PUBSUB_ERRORS, NS_PUBSUB_OWNER, NS_STANZA_ID, NS_STANZAS, NS_VCARD)
from tests.harness import FakeClient, ServerHarness, parse_stanza
from tests.modules.test_mam_support import A, B, C, iq, query, stanza_id
from tests.modules.test_pep import error_of, mutual, publish

MODULES = ["disco", "roster", "presence", "offline", "mam", "carbons", "blocking", "pep",
           "vcard", "private", "csi"]
NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"


def chat(to: str, body: str = "hi", id_: str = "m1", extra: str = "", type_: str = "chat") -> str:
    return f"<message to='{to}' type='{type_}' id='{id_}'><body>{body}</body>{extra}</message>"


def carbon(kind: str):
    return lambda s: s.tag == "message" and s.find(kind, NS_CARBONS) is not None


def inner(s: Element) -> Element:
    w = s.find("sent", NS_CARBONS) or s.find("received", NS_CARBONS)
    return w.find("forwarded", NS_FORWARD).find("message", NS_CLIENT)  # type: ignore[union-attr]


def unsupported_feature(s: Element) -> str | None:
    err = s.find("error", NS_CLIENT)
    u = None if err is None else err.find("unsupported", NS_PUBSUB_ERRORS)
    return None if u is None else u.get("feature")


async def carbons_on(h: ServerHarness, *clients: FakeClient) -> None:
    for c in clients:
        r = await iq(h, c, f"<enable xmlns='{NS_CARBONS}'/>", "set")
        assert r.get("type") == "result", r
        await c.settle()


# -- XEP-0313 / XEP-0359 ------------------------------------------------------------------------

async def test_xep0359_rule2_outgoing_own_stanza_id_stripped():
    """A client cannot plant a stanza-id of its own archive (by = its bare JID) in what it sends:
    neither its archive copy nor the recipient's message carries it."""
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        forged = f"<stanza-id xmlns='{NS_STANZA_ID}' by='{A}' id='forged'/>"
        other = f"<stanza-id xmlns='{NS_STANZA_ID}' by='muc.example' id='kept'/>"
        h.send(a, chat(B, extra=forged + other))
        got = await b.expect(lambda s: s.get("id") == "m1")
        bys = {(s.get("by"), s.get("id")) for s in got.findall("stanza-id", NS_STANZA_ID)}
        assert (A, "forged") not in bys and ("muc.example", "kept") in bys
        assert stanza_id(got).get("by") in (B, "muc.example")
        r = await query(h, a)
        ours = [s.get("id") for s in r.messages[0].find("result", NS_MAM)
                .find("forwarded", NS_FORWARD).find("message", NS_CLIENT)
                .findall("stanza-id", NS_STANZA_ID) if s.get("by") == A]
        assert ours == []


async def test_xep0359_rule2_stripped_from_error_messages_too():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        h.server.route(parse_stanza(
            f"<message from='x@remote.example/r' to='{A}/r1' type='error' id='e1'>"
            f"<stanza-id xmlns='{NS_STANZA_ID}' by='{A}' id='forged'/>"
            "<error type='cancel'><service-unavailable "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"))
        got = await a.expect(lambda s: s.get("id") == "e1")
        assert got.find("stanza-id", NS_STANZA_ID) is None


def test_rfc6121_unknown_message_type_archived_as_normal():
    st = parse_stanza(f"<message to='{B}' type='bogus'><body>x</body></message>")
    assert should_store(st) is True


async def test_xep0313_sent_carbon_carries_senders_stanza_id():
    """XEP-0313 §3.5: the sender's archive id inside the forwarded message of the sent carbon,
    and never on the message the contact gets."""
    async with ServerHarness(modules=MODULES) as h:
        a1 = await h.login(A, "r1", presence=True)
        a2 = await h.login(A, "r2", presence=True)
        b = await h.login(B, "r1", presence=True)
        await carbons_on(h, a1, a2)
        h.send(a1, chat(B))
        c = await a2.expect(carbon("sent"))
        sid = inner(c).find("stanza-id", NS_STANZA_ID)
        assert sid is not None and sid.get("by") == A
        got = await b.expect(lambda s: s.get("id") == "m1")
        assert [s.get("by") for s in got.findall("stanza-id", NS_STANZA_ID)] == [B]
        r = await query(h, a2)
        assert r.ids == [sid.get("id")]


# -- XEP-0280 -------------------------------------------------------------------------------------

async def test_xep0280_enable_addressed_to_the_server_domain():
    async with ServerHarness(modules=MODULES) as h:
        a1 = await h.login(A, "r1", presence=True)
        a2 = await h.login(A, "r2", presence=True)
        b = await h.login(B, "r1", presence=True)
        r = await iq(h, a2, f"<enable xmlns='{NS_CARBONS}'/>", "set", to="localhost")
        assert r.get("type") == "result", r
        h.send(a1, chat(B))
        await a2.expect(carbon("sent"))
        r = await iq(h, a2, f"<disable xmlns='{NS_CARBONS}'/>", "set", to="localhost")
        assert r.get("type") == "result", r
        h.send(b, chat(A, id_="m2"))
        await a1.expect(lambda s: s.get("id") == "m2")
        assert [s for s in await a2.settle() if s.find("received", NS_CARBONS) is not None] == []


async def test_xep0280_other_accounts_carbons_not_allowed():
    async with ServerHarness(modules=MODULES) as h:
        await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        for what in ("enable", "disable"):
            r = await iq(h, b, f"<{what} xmlns='{NS_CARBONS}'/>", "set", to=A)
            assert r.get("type") == "error"
            assert error_of(r)[0] == "not-allowed"


async def test_xep0280_6_1_error_answering_an_eligible_message_is_copied():
    async with ServerHarness(modules=MODULES) as h:
        a1 = await h.login(A, "r1", presence=True)
        a2 = await h.login(A, "r2", presence=True)
        await carbons_on(h, a1, a2)
        h.send(a1, chat("nobody@localhost", id_="lost"))
        err = await a1.expect(lambda s: s.get("type") == "error" and s.get("id") == "lost")
        assert error_of(err)[0] == "service-unavailable"
        await a2.expect(carbon("sent"))
        c = await a2.expect(carbon("received"))
        assert c.get("type") == "error" and c.get("from") == A
        assert inner(c).get("type") == "error" and inner(c).get("id") == "lost"
        # An error that answers nothing the account sent is not copied.
        h.server.route(parse_stanza(
            f"<message from='x@remote.example' to='{A}/r1' type='error' id='unrelated'>"
            "<error type='cancel'><service-unavailable "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"))
        await a1.expect(lambda s: s.get("id") == "unrelated")
        assert await a2.settle() == []


# -- XEP-0191 -------------------------------------------------------------------------------------

async def test_xep0191_blocked_error_is_cancel_with_app_condition():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        await h.login(B, "r1", presence=True)
        r = await iq(h, a, f"<block xmlns='{NS_BLOCKING}'><item jid='{B}'/></block>", "set")
        assert r.get("type") == "result"
        await a.settle()
        h.send(a, chat(B, id_="x"))
        err = (await a.expect(lambda s: s.get("id") == "x")).find("error", NS_CLIENT)
        assert err.get("type") == "cancel"
        assert err.find("not-acceptable", NS_STANZAS) is not None
        assert err.find("blocked", NS_BLOCKING_ERRORS) is not None


# -- XEP-0060 / XEP-0163 / XEP-0223 ---------------------------------------------------------------

def ps(xml: str, owner: bool = False) -> str:
    return f"<pubsub xmlns='{NS_PUBSUB_OWNER if owner else NS_PUBSUB}'>{xml}</pubsub>"


def config_form(**fields: str) -> str:
    out = (f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
           f"<value>{NODE_CONFIG}</value></field>")
    for k, v in fields.items():
        out += f"<field var='pubsub#{k}'><value>{v}</value></field>"
    return out + "</x>"


async def test_xep0060_6_4_default_subscription_options_unsupported():
    """<default/> in the pubsub namespace asks for subscription options, not node config."""
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        for xml in ("<default/>", "<default node='n'/>"):
            r = await iq(h, a, ps(xml), "get")
            assert error_of(r) == ("feature-not-implemented", "unsupported")
            assert unsupported_feature(r) == "subscription-options"
        # the node configuration defaults stay in the #owner namespace
        r = await iq(h, a, ps("<default/>", owner=True), "get")
        assert r.get("type") == "result"
        x = r.find("pubsub", NS_PUBSUB_OWNER).find("default").find("x", NS_DATA)
        assert x.find("field", NS_DATA).findtext("value", NS_DATA) == NODE_CONFIG


async def test_xep0060_6_3_subscription_options_unsupported():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        h.send(a, publish("n", "<x xmlns='urn:x'/>"))
        await a.expect(lambda s: s.get("id") == "pub")
        for t in ("get", "set"):
            r = await iq(h, a, ps(f"<options node='n' jid='{A}'/>"), t)
            assert error_of(r) == ("feature-not-implemented", "unsupported")
            assert unsupported_feature(r) == "subscription-options"


async def test_xep0060_unknown_owner_action_unsupported():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        r = await iq(h, a, ps("<frobnicate node='n'/>", owner=True), "set")
        assert error_of(r) == ("feature-not-implemented", "unsupported")
        assert unsupported_feature(r) == "frobnicate"


async def test_xep0060_8_1_create_without_node_not_acceptable():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        r = await iq(h, a, ps("<create/>"), "set")
        assert error_of(r) == ("not-acceptable", "nodeid-required")


async def test_xep0060_8_1_3_configure_of_create_takes_no_node():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        r = await iq(h, a, ps(f"<create node='n'/><configure node='n'>{config_form()}</configure>"),
                     "set")
        assert error_of(r)[0] == "bad-request"
        r = await iq(h, a, ps(f"<create node='n'/><configure>{config_form(max_items='5')}"
                              "</configure>"), "set")
        assert r.get("type") == "result", r


async def test_xep0060_unsupported_access_model_and_unknown_config_fields():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        form = config_form(access_model="authorize")
        r = await iq(h, a, ps(f"<create node='n'/><configure>{form}</configure>"), "set")
        assert error_of(r) == ("not-acceptable", "unsupported-access-model")
        r = await iq(h, a, ps("<create node='n'/>"), "set")
        assert r.get("type") == "result"
        # §8.2.5.2 / XEP-0004 §3.5: a field the service does not implement is not silently dropped
        r = await iq(h, a, ps(f"<configure node='n'>{config_form(bogus_field='1', max_items='3')}"
                              "</configure>", owner=True), "set")
        assert error_of(r)[0] == "not-acceptable"
        r = await iq(h, a, ps("<configure node='n'/>", owner=True), "get")
        x = r.find("pubsub", NS_PUBSUB_OWNER).find("configure").find("x", NS_DATA)
        mi = [f for f in x.findall("field", NS_DATA) if f.get("var") == "pubsub#max_items"][0]
        assert mi.findtext("value", NS_DATA) == "1"  # nothing of the refused form applied
        r = await iq(h, a, ps(f"<configure node='n'>{config_form(access_model='roster')}"
                              "</configure>", owner=True), "set")
        assert error_of(r) == ("not-acceptable", "unsupported-access-model")


async def test_xep0060_5_3_node_disco_info_and_5_5_items():
    async with ServerHarness(modules=MODULES) as h:
        await mutual(h, A, B)
        a = await h.login(A, "r1", presence=True)
        c = await h.login(C, "r1", presence=True)
        h.send(a, publish("n", "<x xmlns='urn:x'/>", item_id="i1"))
        await a.expect(lambda s: s.get("id") == "pub")
        r = await iq(h, a, f"<query xmlns='{NS_DISCO_INFO}' node='n'/>", to=A)
        q = r.find("query", NS_DISCO_INFO)
        assert q is not None and q.get("node") == "n"
        assert ("pubsub", "leaf") in {(i.get("category"), i.get("type"))
                                      for i in q.findall("identity", NS_DISCO_INFO)}
        assert NS_PUBSUB in {f.get("var") for f in q.findall("feature", NS_DISCO_INFO)}
        r = await iq(h, a, f"<query xmlns='{NS_DISCO_ITEMS}' node='n'/>", to=A)
        assert [i.get("name") for i in r.find("query", NS_DISCO_ITEMS).elements()] == ["i1"]
        # unknown node, and a node carol may not see (presence access): item-not-found
        for who, node in ((a, "nope"), (c, "n")):
            for ns in (NS_DISCO_INFO, NS_DISCO_ITEMS):
                r = await iq(h, who, f"<query xmlns='{ns}' node='{node}'/>", to=A)
                assert error_of(r)[0] == "item-not-found", (ns, node, r)


async def test_xep0223_server_disco_has_pep_identity_and_publish_options():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        r = await iq(h, a, f"<query xmlns='{NS_DISCO_INFO}'/>", to="localhost")
        q = r.find("query", NS_DISCO_INFO)
        assert ("pubsub", "pep") in {(i.get("category"), i.get("type"))
                                     for i in q.findall("identity", NS_DISCO_INFO)}
        assert NS_PUBSUB + "#publish-options" in {f.get("var")
                                                  for f in q.findall("feature", NS_DISCO_INFO)}


async def test_xep0060_7_1_3_5_payload_must_match_node_type():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        r = await iq(h, a, ps(f"<create node='typed'/><configure>{config_form(type='urn:y')}"
                              "</configure>"), "set")
        assert r.get("type") == "result", r
        h.send(a, publish("typed", "<x xmlns='urn:x'/>", iq_id="bad"))
        assert error_of(await a.expect(lambda s: s.get("id") == "bad")) == (
            "bad-request", "invalid-payload")
        h.send(a, publish("typed", "<x xmlns='urn:y'/>", iq_id="good"))
        assert (await a.expect(lambda s: s.get("id") == "good")).get("type") == "result"


async def test_xep0191_3_3_outbound_directed_presence_refused():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        b = await h.login(B, "r1", presence=True)
        await iq(h, a, f"<block xmlns='{NS_BLOCKING}'><item jid='{B}'/></block>", "set")
        await a.settle()
        await b.settle()
        h.send(a, f"<presence to='{B}/r1' id='dp'><show>chat</show></presence>")
        err = await a.expect(lambda s: s.get("id") == "dp")
        assert err.get("type") == "error" and error_of(err)[0] == "not-acceptable"
        assert err.find("error", NS_CLIENT).find("blocked", NS_BLOCKING_ERRORS) is not None
        assert await b.settle() == []


# -- XEP-0054 -------------------------------------------------------------------------------------

async def test_xep0054_3_3_no_vcard_is_service_unavailable_like_no_user():
    async with ServerHarness(modules=MODULES) as h:
        a = await h.login(A, "r1", presence=True)
        await h.login(B, "r1", presence=True)
        conds = []
        for to in (B, "nobody@localhost"):
            r = await iq(h, a, f"<vCard xmlns='{NS_VCARD}'/>", to=to)
            conds.append(error_of(r)[0])
        assert conds == ["service-unavailable", "service-unavailable"]


# -- XEP-0352 -------------------------------------------------------------------------------------

async def test_xep0352_inactive_before_bind_applies_to_the_bound_session():
    async with ServerHarness(modules=MODULES) as h:
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
