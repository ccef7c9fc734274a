"""The XML stream tokenizer, compiled and pure Python (the `tokenizer` fixture), against each other
and against the stdlib parser: events, chunking, limits, restricted XML, encodings, framing."""

import time
import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mbxmpp.xml import CXMLParser, PyXMLParser, XMLError
from mbxmpp.xml.element import SM_REQUEST, STREAM_END, Element, StreamHeader, py_serialize
from mbxmpp.xml.ns import NS_CLIENT, NS_SERVER, NS_STREAMS, NS_XML
from mbxmpp.stream.smstate import SMState

HC = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0' "
          b"xml:lang='en'>")
S2S_HEADER = (b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
              b"xmlns:db='jabber:server:dialback' from='a.example' to='b.example' version='1.0'>")
END = b"</stream:stream>"

# Real-world c2s traffic (shapes seen from Conversations, Gajim, Dino, Prosody, ejabberd).
CORPUS = [
    b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>"
    b"biwsbj1qdWxpZXQscj1vTXNUQUF3QUFBQU1BQUFBTlAwVEFBQUFBQUJQVTBBQQ==</auth>",
    b"<iq type='set' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    b"<resource>balcony</resource></bind></iq>",
    b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>",
    b"<r xmlns='urn:xmpp:sm:3'/>",
    b"<a xmlns='urn:xmpp:sm:3' h='12'/>",
    b"<iq type='get' id='roster_1'><query xmlns='jabber:iq:roster' ver=''/></iq>",
    b"<presence><priority>5</priority><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
    b"node='http://conversations.im' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/>"
    b"<show>away</show><status>At the balcony \xf0\x9f\x8c\x99</status></presence>",
    b"<message to='romeo@example.net' from='juliet@example.com/balcony' type='chat' "
    b"id='ktx72v49' xml:lang='en'><body>Art thou not Romeo, and a Montague?</body>"
    b"<thread>e0ffe42b28561960c6b12b944a092794b9683a38</thread>"
    b"<active xmlns='http://jabber.org/protocol/chatstates'/>"
    b"<request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>"
    b"<origin-id xmlns='urn:xmpp:sid:0' id='de305d54-75b4-431b-adb2-eb6b9e546014'/></message>",
    b"<message type='chat' to='a@b'><body>\xe4\xbd\xa0\xe5\xa5\xbd \xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d "
    b"&lt;tag&gt; &amp; &quot;q&quot; &apos;a&apos; &#233;&#x1F600;</body>"
    b"<html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'>"
    b"<p>Hello <strong>bold</strong> and <em>em <a href='http://x/?a=1&amp;b=2'>link</a></em>!"
    b"</p></body></html></message>",
    b"<iq type='result' id='disco1' from='example.org' to='juliet@example.org/balcony'>"
    b"<query xmlns='http://jabber.org/protocol/disco#info'>"
    b"<identity category='server' type='im' name='mbxmpp'/>"
    b"<feature var='http://jabber.org/protocol/disco#info'/><feature var='urn:xmpp:ping'/>"
    b"<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
    b"<value>http://jabber.org/network/serverinfo</value></field></x></query></iq>",
    b"<message to='juliet@capulet.lit/chamber' id='aeb213'><result xmlns='urn:xmpp:mam:2' "
    b"queryid='f27' id='28482-98726-73623'><forwarded xmlns='urn:xmpp:forward:0'>"
    b"<delay xmlns='urn:xmpp:delay' stamp='2010-07-10T23:08:25Z'/>"
    b"<message xmlns='jabber:client' from='witch@shakespeare.lit' to='macbeth@shakespeare.lit'>"
    b"<body>Hail to thee</body></message></forwarded></result></message>",
    b"<presence from='coven@chat.shakespeare.lit/thirdwitch' id='n13mt3l' "
    b"to='hag66@shakespeare.lit/pda'><x xmlns='http://jabber.org/protocol/muc#user'>"
    b"<item affiliation='member' role='participant' jid='hag66@shakespeare.lit/pda'/>"
    b"<status code='100'/><status code='110'/><status code='210'/></x></presence>",
    b"<iq type='error' id='x1'><error type='cancel'>"
    b"<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
    b"<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>Nope\n  multi\tline</text>"
    b"</error></iq>",
    b"<message><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:avatar:metadata'>"
    b"<item id='111f4b3c50d7b0df729d299bc6f8e9ef9066971f'><metadata xmlns='urn:xmpp:avatar:metadata'>"
    b"<info bytes='12345' id='111f4b3c50d7b0df729d299bc6f8e9ef9066971f' height='64' type='image/png' "
    b"width='64'/></metadata></item></items></event></message>",
    b"<message><body><![CDATA[<not> a & tag]]> after</body></message>",
    b"<iq type='set' id='v1'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>"
    + b"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==\n" * 20
    + b"</BINVAL></PHOTO></vCard></iq>",
    b"<message to='a@b' attr='line1&#10;line2&#13;&#9;tab' q='&apos;&quot;&lt;&gt;&amp;'>"
    b"<x xmlns='urn:a' xmlns:p='urn:p' p:one='1' xml:lang='de' plain='y'>text</x></message>",
    b"<p:message xmlns:p='jabber:client' to='pref@ixed'><p:body>prefixed</p:body></p:message>",
    b"<message><body xmlns=''>no namespace</body></message>",
]
STREAM = HEADER + b"".join(c + b"\n  " for c in CORPUS) + END


def feed_chunks(cls, chunks, **kw):
    p = cls(**kw)
    out = []
    for c in chunks:
        out.extend(p.feed(c))
    return out


def canon(ev):
    """A comparable, printable form of an event."""
    if ev is STREAM_END:
        return "END"
    if isinstance(ev, StreamHeader):
        return ("HEADER", ev.tag, ev.ns, ev.attrs, ev.default_ns, ev.prefix)
    assert type(ev) is Element
    assert ev._bytes is None
    kids = []
    for c in ev.children:
        if type(c) is str:
            assert c, "empty text child"
            assert not (kids and type(kids[-1]) is str), "adjacent text not merged"
            kids.append(c)
        else:
            kids.append(canon(c))
    return (ev.tag, ev.ns, ev.attrs, kids)


def canon_all(events):
    return [canon(e) for e in events]


def et_canon(e):
    """The same canonical form from xml.etree (our conventions applied)."""
    def split(name):
        if name[0] == "{":
            ns, _, local = name[1:].partition("}")
            return local, ns
        return name, ""

    tag, ns = split(e.tag)
    if ns == NS_SERVER:
        ns = NS_CLIENT
    attrs = {}
    for k, v in e.attrib.items():
        local, ans = split(k)
        attrs[local if not ans else ("xml:" + local if ans == NS_XML else k)] = v
    kids = []
    if e.text:
        kids.append(e.text)
    for c in e:
        kids.append(et_canon(c))
        if c.tail:
            kids.append(c.tail)
    return (tag, ns, attrs, kids)


def expect_error(cls, chunks, condition, **kw):
    p = cls(**kw)
    events = []
    t0 = time.perf_counter()
    with pytest.raises(XMLError) as ei:
        for c in chunks:
            events.extend(p.feed(c))
    elapsed = time.perf_counter() - t0
    assert ei.value.condition == condition, ei.value
    # the parser stays failed
    with pytest.raises(XMLError) as again:
        p.feed(b"<x/>")
    assert again.value.condition == condition
    assert again.value.events == []
    return ei.value, events + ei.value.events, elapsed


# -- events -----------------------------------------------------------------------------------------
def test_stream_events(tokenizer):
    events = tokenizer().feed(STREAM)
    assert isinstance(events[0], StreamHeader)
    h = events[0]
    assert (h.tag, h.ns, h.default_ns, h.prefix) == ("stream", NS_STREAMS, NS_CLIENT, "stream")
    assert h.attrs == {"to": "example.org", "version": "1.0", "xml:lang": "en"}
    assert events[-1] is STREAM_END
    assert len(events) == len(CORPUS) + 2
    assert all(type(e) is Element for e in events[1:-1])


def test_differential_against_elementtree(tokenizer):
    events = tokenizer().feed(STREAM)
    root = ET.fromstring(STREAM)
    assert canon_all(events[1:-1]) == [et_canon(c) for c in root]
    assert events[0].attrs == {"to": "example.org", "version": "1.0", "xml:lang": "en"}


def test_c_and_python_agree_on_corpus():
    if CXMLParser is None:
        pytest.skip("the compiled tokenizer is not built")
    assert canon_all(CXMLParser().feed(STREAM)) == canon_all(PyXMLParser().feed(STREAM))


def test_roundtrip_corpus_through_serializer(tokenizer):
    events = tokenizer().feed(STREAM)
    again = tokenizer().feed(HEADER + b"".join(py_serialize(e) for e in events[1:-1]) + END)
    assert canon_all(again) == canon_all(events)


def test_every_byte_split(tokenizer):
    data = HEADER + b"".join(CORPUS[7:12]) + END
    want = canon_all(tokenizer().feed(data))
    for i in range(len(data) + 1):
        assert canon_all(feed_chunks(tokenizer, [data[:i], data[i:]])) == want, i


def test_one_byte_at_a_time(tokenizer):
    want = canon_all(tokenizer().feed(STREAM))
    assert canon_all(feed_chunks(tokenizer, [STREAM[i:i + 1] for i in range(len(STREAM))])) == want


@settings(max_examples=80, deadline=None, suppress_health_check=HC)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=60))
def test_random_splits(tokenizer, cuts):
    cuts = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0] + cuts, cuts + [len(STREAM)])]
    assert canon_all(feed_chunks(tokenizer, chunks)) == canon_all(tokenizer().feed(STREAM))


def test_split_inside_utf8_sequences(tokenizer):
    text = "é€😀"
    data = HEADER + f"<message><body>{text}</body></message>".encode() + END
    want = canon_all(tokenizer().feed(data))
    start = data.index(text.encode())
    for i in range(start, start + len(text.encode()) + 1):
        for j in range(i, start + len(text.encode()) + 1):
            got = feed_chunks(tokenizer, [data[:i], data[i:j], data[j:]])
            assert canon_all(got) == want
    assert want[1][3][0][3] == [text]


def test_mixed_content_merged(tokenizer):
    ev = tokenizer().feed(HEADER + b"<message><body>a &amp; b&#10;c<![CDATA[<d>]]>e<br/>f\ng</body></message>")
    body = ev[1].children[0]
    assert body.children == ["a & b\nc<d>e", Element("br", NS_CLIENT), "f\ng"]


def test_events_are_yielded_as_soon_as_complete(tokenizer):
    p = tokenizer()
    assert [type(e) for e in p.feed(HEADER[:-1])] == []
    assert [type(e) for e in p.feed(b">")] == [StreamHeader]
    assert p.feed(b"<message><body>hi</body>") == []
    assert [e.tag for e in p.feed(b"</message><presence/><iq")] == ["message", "presence"]
    assert [e.tag for e in p.feed(b"/>")] == ["iq"]
    assert p.feed(END) == [STREAM_END]


def test_whitespace_between_stanzas_dropped(tokenizer):
    ev = tokenizer().feed(HEADER + b" \n\t <presence/>\n\n stray text <presence/>  ")
    assert [canon(e) for e in ev[1:]] == [("presence", NS_CLIENT, {}, [])] * 2


def test_stream_end_and_junk_after(tokenizer):
    p = tokenizer()
    ev = p.feed(HEADER + b"<presence/>" + END + b"<junk><!-- c --><?pi?>\xff")
    assert ev[-1] is STREAM_END and len(ev) == 3
    assert p.feed(b"more junk</x>") == []


def test_header_without_prefix_and_without_default_ns(tokenizer):
    h = tokenizer().feed(b"<stream xmlns='http://etherx.jabber.org/streams' to='x'>")[0]
    assert (h.tag, h.ns, h.default_ns, h.prefix, h.attrs) == ("stream", NS_STREAMS, NS_STREAMS, "", {"to": "x"})
    h = tokenizer().feed(b"<s:stream xmlns:s='http://etherx.jabber.org/streams'>")[0]
    assert (h.tag, h.ns, h.default_ns, h.prefix, h.attrs) == ("stream", NS_STREAMS, "", "s", {})
    h = tokenizer().feed(b"<stream>")[0]
    assert (h.tag, h.ns, h.default_ns, h.prefix, h.attrs) == ("stream", "", "", "", {})


def test_xml_lang_and_namespaced_attributes(tokenizer):
    ev = tokenizer().feed(HEADER + b"<message xml:lang='fr' xmlns:u='urn:u' u:x='1' y='2'>"
                          b"<b xml:space='preserve' xmlns:v='urn:v' v:z='3'/></message>")
    m = ev[1]
    assert m.attrs == {"xml:lang": "fr", "{urn:u}x": "1", "y": "2"}
    assert list(m.attrs) == ["xml:lang", "{urn:u}x", "y"]
    assert m.children[0].attrs == {"xml:space": "preserve", "{urn:v}z": "3"}


def test_jabber_server_normalised(tokenizer):
    ev = tokenizer().feed(S2S_HEADER + b"<message from='a@a.example' to='b@b.example'>"
                          b"<body>x</body><body xmlns='jabber:server'>y</body></message>"
                          b"<db:result from='a.example' to='b.example'>key</db:result>")
    h, msg, db = ev
    assert h.default_ns == NS_SERVER  # the stream kind stays visible on the header
    assert msg.ns == NS_CLIENT and msg.ns is NS_CLIENT
    assert [c.ns for c in msg.children] == [NS_CLIENT, NS_CLIENT]
    assert (db.tag, db.ns) == ("result", "jabber:server:dialback")


def test_utf8_bom_and_utf8_declaration_accepted(tokenizer):
    for decl in (b"<?xml version='1.0' encoding='UTF-8'?>", b'<?xml version="1.0" encoding="utf-8"?>',
                 b"\xef\xbb\xbf<?xml version='1.0'?>", b"\xef\xbb\xbf", b""):
        data = decl + HEADER[HEADER.index(b"?>") + 2:] + b"<presence/>"
        for chunks in ([data], [data[i:i + 1] for i in range(len(data))]):
            ev = feed_chunks(tokenizer, chunks)
            assert [type(e) for e in ev] == [StreamHeader, Element], decl


def test_reset_starts_a_new_stream(tokenizer):
    p = tokenizer()
    ev = p.feed(HEADER + b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert ev[1].tag == "starttls"
    p.reset()
    ev = p.feed(HEADER + b"<presence/>")  # a new document: the XML declaration is fine again
    assert [type(e) for e in ev] == [StreamHeader, Element]
    p.feed(END)
    assert p.feed(b"<x/>") == []
    p.reset()
    assert [type(e) for e in p.feed(HEADER)] == [StreamHeader]


def test_reset_clears_a_failure(tokenizer):
    p = tokenizer()
    with pytest.raises(XMLError):
        p.feed(HEADER + b"<a></b>")
    p.reset()
    assert [type(e) for e in p.feed(HEADER)] == [StreamHeader]


def test_memoryview_and_bytearray_input(tokenizer):
    p = tokenizer()
    assert len(p.feed(bytearray(HEADER))) == 1
    assert p.feed(memoryview(b"<presence/>"))[0].tag == "presence"
    assert p.feed(b"") == []


# -- framed mode (RFC 7395) -------------------------------------------------------------------------
OPEN = b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.org' version='1.0'/>"


def test_framed_mode(tokenizer):
    p = tokenizer(framed=True)
    (o,) = p.feed(OPEN)
    assert (o.tag, o.ns, o.attrs["to"]) == ("open", "urn:ietf:params:xml:ns:xmpp-framing", "example.org")
    (m,) = p.feed(b"<message to='a@b'><body>hi</body></message>")
    assert (m.tag, m.ns, m.children[0].ns) == ("message", NS_CLIENT, NS_CLIENT)
    (m,) = p.feed(b" <iq xmlns='jabber:client' type='get' id='1'/>\n")
    assert m.ns == NS_CLIENT
    assert p.feed(b"  ") == []
    (c,) = p.feed(b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
    assert c.tag == "close"
    p.reset()
    assert p.feed(OPEN)[0].tag == "open"


@pytest.mark.parametrize("frame", [
    b"<message/><presence/>",                    # two elements
    b"<message><body>cut",                       # incomplete element
    b"</frames>",                                # closes the wrapper
    b"<?xml version='1.0'?><open/>",             # XML declaration inside a frame
    b"just text",                                # no element at all
    b"<message/>tail",                           # text after the element
    b"lead <message/>",                          # text before it
])
def test_framed_mode_rejects_bad_frames(tokenizer, frame):
    _, events, _ = expect_error(tokenizer, [OPEN, frame], "not-well-formed", framed=True)
    assert events[0].tag == "open"


def test_framed_mode_incomplete_utf8(tokenizer):
    expect_error(tokenizer, [b"<message><body>\xc3</body></message>"[:16]], "unsupported-encoding",
                 framed=True)


def test_framed_mode_restrictions_apply(tokenizer):
    expect_error(tokenizer, [b"<message><!-- x --></message>"], "restricted-xml", framed=True)
    expect_error(tokenizer, [b"<message>" + b"x" * 300_000 + b"</message>"], "policy-violation",
                 framed=True)


# -- restricted XML (RFC 6120 §11.1) ----------------------------------------------------------------
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>
<message><body>&lol9;&lol9;&lol9;&lol9;</body></message>"""

XXE = (b"<?xml version='1.0'?><!DOCTYPE foo [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>"
       b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
       b"<message><body>&xxe;</body></message>")


@pytest.mark.parametrize("name,chunks", [
    ("billion laughs", [BILLION_LAUGHS]),
    ("billion laughs in 7-byte chunks", [BILLION_LAUGHS[i:i + 7] for i in range(0, len(BILLION_LAUGHS), 7)]),
    ("xxe", [XXE]),
    ("doctype", [b"<!DOCTYPE stream>" + HEADER[HEADER.index(b"?>") + 2:]]),
    ("comment before root", [b"<!-- hi -->" + HEADER[HEADER.index(b"?>") + 2:]]),
    ("comment in stanza", [HEADER + b"<message><!-- hi --></message>"]),
    ("comment between stanzas", [HEADER + b"<presence/><!-- hi -->"]),
    ("processing instruction", [HEADER + b"<message><?php echo 1 ?></message>"]),
    ("stylesheet PI", [b"<?xml-stylesheet href='x'?>" + HEADER[HEADER.index(b"?>") + 2:]]),
    ("undefined entity in text", [HEADER + b"<message><body>&foo;</body></message>"]),
    ("undefined entity in attribute", [HEADER + b"<message to='&foo;'/>"]),
    ("entity split over feeds", [HEADER + b"<message><body>&fo", b"o;</body></message>"]),
])
def test_restricted_xml(tokenizer, name, chunks):
    err, events, elapsed = expect_error(tokenizer, chunks, "restricted-xml")
    assert elapsed < 0.05, (name, elapsed)  # never expanded: microseconds, not the 8 MiB expat allows
    assert STREAM_END not in events


def test_predefined_entities_and_character_references_allowed(tokenizer):
    ev = tokenizer().feed(HEADER + b"<message a='&lt;&#x41;&#66;'>"
                          b"<body>&amp;&lt;&gt;&quot;&apos;&#x1F600;</body></message>")
    assert ev[1].attrs == {"a": "<AB"}
    assert ev[1].children[0].children == ["&<>\"'\U0001F600"]


def test_events_before_an_error_are_kept(tokenizer):
    p = tokenizer()
    p.feed(HEADER)
    with pytest.raises(XMLError) as ei:
        p.feed(b"<presence/><message><body>x</body></message><iq><!-- no --></iq><presence/>")
    assert ei.value.condition == "restricted-xml"
    assert [e.tag for e in ei.value.events] == ["presence", "message"]


# -- encodings ------------------------------------------------------------------------------------
@pytest.mark.parametrize("decl", [
    b"<?xml version='1.0' encoding='ISO-8859-1'?>",
    b'<?xml version="1.0" encoding="latin-1"?>',
    b"<?xml version='1.0' encoding = 'UTF-16'?>",
    b"<?xml version='1.0' encoding='US-ASCII' standalone='yes'?>",
])
def test_non_utf8_declaration(tokenizer, decl):
    data = decl + b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><message>\xe9</message>"
    err, events, _ = expect_error(tokenizer, [data], "unsupported-encoding")
    assert events == []
    expect_error(tokenizer, [data[i:i + 3] for i in range(0, len(data), 3)], "unsupported-encoding")


@pytest.mark.parametrize("bad", [
    b"\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80",
    b"\x80", b"\xc3(", b"\xe2\x82(",
])
def test_invalid_utf8(tokenizer, bad):
    data = HEADER + b"<presence/><message><body>ok " + bad + b" ko</body></message>"
    err, events, _ = expect_error(tokenizer, [data], "unsupported-encoding")
    assert [type(e) for e in err.events] == [StreamHeader, Element]
    # the same when the bad bytes are split over feeds
    i = data.index(bad) + 1
    expect_error(tokenizer, [data[:i], data[i:]], "unsupported-encoding")


def test_utf16_document_refused(tokenizer):
    data = ("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>").encode("utf-16")
    with pytest.raises(XMLError) as ei:
        tokenizer().feed(data)
    assert ei.value.condition in ("unsupported-encoding", "not-well-formed")


# -- limits -----------------------------------------------------------------------------------------
def test_deep_nesting(tokenizer):
    data = HEADER + b"<message>" + b"<a>" * 10_000 + b"</a>" * 10_000 + b"</message>"
    _, _, elapsed = expect_error(tokenizer, [data], "policy-violation")
    assert elapsed < 0.5
    expect_error(tokenizer, [HEADER, b"<message>", b"<a>" * 10_000], "policy-violation")


def test_depth_limit_boundary(tokenizer):
    # the root is depth 0, the stanza depth 1: max_depth=4 allows three nested children
    ok = HEADER + b"<m><a><b><c/></b></a></m>"
    assert tokenizer(max_depth=4).feed(ok)[1].tag == "m"
    expect_error(tokenizer, [HEADER + b"<m><a><b><c><d/></c></b></a></m>"], "policy-violation",
                 max_depth=4)


def test_big_attribute_fails_before_it_is_buffered(tokenizer):
    p = tokenizer()
    p.feed(HEADER + b"<message to='")
    fed = 0
    with pytest.raises(XMLError) as ei:
        for _ in range(1024):
            p.feed(b"a" * 1024)
            fed += 1024
    assert ei.value.condition == "policy-violation"
    assert fed <= 262144 + 65536, fed


def test_big_attribute_in_one_feed(tokenizer):
    t0 = time.perf_counter()
    expect_error(tokenizer, [HEADER + b"<message to='" + b"a" * 1_000_000 + b"'/>"], "policy-violation")
    assert time.perf_counter() - t0 < 0.5


def test_unterminated_comment_is_bounded(tokenizer):
    expect_error(tokenizer, [HEADER + b"<message><!--"] + [b"x" * 4096] * 100, "policy-violation")


@pytest.mark.parametrize("chunk", [4096, 300_000 + 100])
def test_big_text_body(tokenizer, chunk):
    data = HEADER + b"<message><body>" + b"x" * 300_000 + b"</body></message>"
    _, events, _ = expect_error(tokenizer, [data[i:i + chunk] for i in range(0, len(data), chunk)],
                                "policy-violation")
    assert [type(e) for e in events] == [StreamHeader]


def test_stanza_size_counted_per_stanza(tokenizer):
    p = tokenizer(max_stanza_size=1000)
    p.feed(HEADER)
    body = b"<message><body>" + b"x" * 900 + b"</body></message>"
    for _ in range(50):
        assert len(p.feed(body)) == 1
    with pytest.raises(XMLError) as ei:
        p.feed(b"<message><body>" + b"x" * 1001 + b"</body></message>")
    assert ei.value.condition == "policy-violation"


def test_stanza_size_counts_attributes_and_children(tokenizer):
    big_attrs = HEADER + b"<message " + b" ".join(b"a%d='%s'" % (i, b"v" * 100) for i in range(20)) + b"/>"
    expect_error(tokenizer, [big_attrs], "policy-violation", max_stanza_size=1500)
    many_kids = HEADER + b"<message>" + b"<x y='zzzzzzzzzz'/>" * 200 + b"</message>"
    expect_error(tokenizer, [many_kids], "policy-violation", max_stanza_size=2000)
    assert len(tokenizer(max_stanza_size=5000).feed(many_kids)) == 2


def test_too_many_attributes(tokenizer):
    data = HEADER + b"<message " + b" ".join(b"a%d='1'" % i for i in range(100)) + b"/>"
    expect_error(tokenizer, [data], "policy-violation")
    ok = HEADER + b"<message " + b" ".join(b"a%d='1'" % i for i in range(64)) + b"/>"
    assert len(tokenizer().feed(ok)[1].attrs) == 64


def test_too_many_namespace_declarations(tokenizer):
    data = HEADER + b"<message " + b" ".join(b"xmlns:p%d='urn:%d'" % (i, i) for i in range(100)) + b"/>"
    expect_error(tokenizer, [data], "policy-violation")


def test_header_limits(tokenizer):
    data = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' " + \
        b" ".join(b"a%d='1'" % i for i in range(100)) + b">"
    expect_error(tokenizer, [data], "policy-violation")


def test_long_xml_declaration(tokenizer):
    expect_error(tokenizer, [b"<?xml version='1.0' " + b" " * 2000], "not-well-formed")


# -- not well-formed --------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [
    HEADER + b"<message><body></message>",
    HEADER + b"<message><foo:bar/></message>",
    HEADER + b"<message a='1' a='2'/>",
    HEADER + b"<message>a < b</message>",
    HEADER + b"<message>\x00</message>",
    HEADER + b"<message><body>\x01</body></message>",
    b"junk" + HEADER,
    HEADER + b"</stream:foo>",
])
def test_not_well_formed(tokenizer, data):
    err, _, _ = expect_error(tokenizer, [data], "not-well-formed")
    assert "line" in err.text


def test_error_text_identical():
    if CXMLParser is None:
        pytest.skip("the compiled tokenizer is not built")
    for data in (HEADER + b"<a></b>", HEADER + b"<a>&x;</a>", BILLION_LAUGHS, HEADER + b"<a>\xff</a>",
                 HEADER + b"<x:a/>", HEADER + b"<a><b><c><d/></c></b></a>"):
        errs = []
        for cls in (CXMLParser, PyXMLParser):
            with pytest.raises(XMLError) as ei:
                cls(max_depth=3).feed(data)
            errs.append((ei.value.condition, ei.value.text, canon_all(ei.value.events)))
        assert errs[0] == errs[1]


# -- Stream Management nonzas: <r/> one shared event, both handled without expat where that is safe
SM_R_SPELLINGS = [b"<r xmlns='urn:xmpp:sm:3'/>", b'<r xmlns="urn:xmpp:sm:3"/>',
                  b"<r xmlns='urn:xmpp:sm:3' />", b'<r xmlns="urn:xmpp:sm:3" />',
                  b"<r xmlns='urn:xmpp:sm:3'></r>", b"<sm:r xmlns:sm='urn:xmpp:sm:3'/>",
                  b"<r xmlns = 'urn:xmpp:sm:3'/>"]
MSG = b"<message to='a@b' id='1'><body>hi</body></message>"


def _kinds(events):
    return ["R" if e is SM_REQUEST else canon(e) for e in events]


def sent(n):
    """An SMState that has sent n stanzas (so acks up to n are valid)."""
    sm = SMState("id", True, 300, request_every=10**6)
    for _ in range(n):
        sm.outbound(b"x")
    return sm


def with_sm(cls, on=True, sm_sent=0):
    """The tokenizer of a stream with SM enabled (the compiled one then handles the usual <r/>
    and <a/> without expat) or not."""
    def make(**kw):
        p = cls(**kw)
        p.sm = sent(sm_sent) if on else None
        return p
    return make


@pytest.fixture(params=[True, False], ids=["sm-on", "sm-off"])
def sm_tokenizer(tokenizer, request):
    return with_sm(tokenizer, request.param)


@pytest.mark.parametrize("r", SM_R_SPELLINGS)
def test_sm_request_is_the_shared_event(sm_tokenizer, r):
    for chunks in ([HEADER + r], [HEADER, r], [HEADER + MSG + r], [HEADER + MSG, r, r],
                   [HEADER, MSG[:-1], MSG[-1:] + r], [HEADER + MSG + b" " + r],
                   [HEADER] + [bytes([c]) for c in r]):
        events = feed_chunks(sm_tokenizer, chunks)
        assert events[-1] is SM_REQUEST, chunks
        assert all(e is not SM_REQUEST for e in events[:-1] if canon(e) != canon(SM_REQUEST))
    assert SM_REQUEST.attrs == {} and SM_REQUEST.children == [], "the shared event was modified"


@pytest.mark.parametrize("other", [
    b"<r xmlns='urn:xmpp:sm:3' h='1'/>", b"<r xmlns='urn:xmpp:sm:3'> </r>",
    b"<r xmlns='urn:xmpp:sm:3'><x/></r>", b"<r xmlns='urn:xmpp:sm:2'/>", b"<r/>",
    b"<a xmlns='urn:xmpp:sm:3' h='1'/>"])
def test_other_elements_are_not_sm_requests(sm_tokenizer, other):
    for chunks in ([HEADER + other], [HEADER + MSG, other], [HEADER + MSG + other]):
        events = feed_chunks(sm_tokenizer, chunks)
        assert events[-1] is not SM_REQUEST and type(events[-1]) is Element


def test_sm_request_inside_a_stanza_is_a_child(sm_tokenizer):
    r = SM_R_SPELLINGS[0]
    for chunks in ([HEADER + b"<message>" + r + b"</message>"],
                   [HEADER + b"<message>", r, b"</message>"],
                   [HEADER + b"<message><body>x</body>", r + b"</message>"]):
        events = feed_chunks(sm_tokenizer, chunks)
        assert events[-1].tag == "message" and events[-1].find("r", "urn:xmpp:sm:3") is not None


@pytest.mark.parametrize("chunks", [
    [HEADER + b"<message a='>" + SM_R_SPELLINGS[0]],   # '<' in an attribute value
    [HEADER + b"<message a='>", SM_R_SPELLINGS[0]],
    [HEADER + b"<message a='x' ", SM_R_SPELLINGS[0] + b">"],  # inside a start tag
    [HEADER + b"<message a='x'", b">" + SM_R_SPELLINGS[0][:-1], b"/>'/>"],
    [HEADER + b"<message>text>" + SM_R_SPELLINGS[0] + b"</mess>"],
])
def test_sm_request_bytes_in_the_wrong_place_are_still_errors(sm_tokenizer, chunks):
    expect_error(sm_tokenizer, chunks, "not-well-formed")


def test_sm_request_after_the_stream_end_is_ignored(sm_tokenizer):
    assert _kinds(feed_chunks(sm_tokenizer, [HEADER + END + SM_R_SPELLINGS[0]]))[-1] == "END"
    assert _kinds(feed_chunks(sm_tokenizer, [HEADER + END, SM_R_SPELLINGS[0]]))[-1] == "END"


SM_A_SPELLINGS = [b"<a xmlns='urn:xmpp:sm:3' h='%d'/>", b'<a xmlns="urn:xmpp:sm:3" h="%d"/>',
                  b"<a xmlns='urn:xmpp:sm:3' h='%d' />", b'<a xmlns="urn:xmpp:sm:3" h="%d" />',
                  b"<a h='%d' xmlns='urn:xmpp:sm:3'/>", b"<a xmlns='urn:xmpp:sm:3' h='%d'></a>"]


def _outcome(make, chunks):
    """Events (<a/> elements applied to the parser's SMState, as the sm module would), the
    error if any, and what the SMState ended with."""
    p = make()
    out: list = []

    def apply(events):  # what the stream does with each read's events before the next read
        for e in events:
            if type(e) is Element and e.tag == "a" and e.ns == "urn:xmpp:sm:3" and p.sm is not None:
                out.append(("a", p.sm.ack_attr(e.get("h"))))  # the compiled twin applied valid ones
                if out[-1][1] == 0:
                    out.pop()
            else:
                out.append(e if type(e) is str else _kinds([e])[0])
    try:
        for c in chunks:
            apply(p.feed(c))
    except XMLError as e:
        apply(e.events)
        out.append("error " + e.condition)
    return out, (p.sm.acked, len(p.sm.queue)) if p.sm is not None else None


@pytest.mark.parametrize("a", SM_A_SPELLINGS)
def test_sm_acks_applied_in_every_spelling(tokenizer, a):
    """Either twin, either spelling, wherever the ack falls: once the sm module has applied
    what the tokenizer reported, the SMState holds the same."""
    msg = canon(tokenizer().feed(HEADER + MSG)[1])
    for h in (0, 3, 5):
        for chunks, n_msgs in (([HEADER + a % h], 0), ([HEADER + MSG + a % h + MSG], 2),
                               ([HEADER, MSG, a % h], 1), ([HEADER + MSG + b" " + a % h], 1),
                               ([HEADER] + [bytes([c]) for c in a % h], 0)):
            events, state = _outcome(with_sm(tokenizer, True, 5), chunks)
            assert events[1:] == [msg] * n_msgs, chunks
            assert state == (h, 5 - h), (chunks, state)


@pytest.mark.parametrize("a", [b"<a xmlns='urn:xmpp:sm:3' h='6'/>",          # more than sent
                               b"<a xmlns='urn:xmpp:sm:3' h='4294967296'/>",  # not 32-bit
                               b"<a xmlns='urn:xmpp:sm:3' h='99999999999'/>",
                               b"<a xmlns='urn:xmpp:sm:3' h='-1'/>", b"<a xmlns='urn:xmpp:sm:3' h=''/>",
                               b"<a xmlns='urn:xmpp:sm:3'/>"])
def test_refused_sm_acks_reach_the_stream_in_order(tokenizer, a):
    """What the SMState refuses is an ordinary element after the events before it: the sm
    module answers it with the stream error, in order."""
    p = with_sm(tokenizer, True, 5)()
    events = [*p.feed(HEADER + MSG + a + MSG)]
    assert [e.tag for e in events[1:]] == ["message", "a", "message"]
    assert p.sm.acked == 0 and len(p.sm.queue) == 5


@pytest.mark.parametrize("chunks", [
    [HEADER, b"\n" + SM_A_SPELLINGS[0] % 3 + SM_A_SPELLINGS[0] % 5],  # the first not at a boundary
    [HEADER, b" ", SM_A_SPELLINGS[0] % 3 + SM_A_SPELLINGS[0] % 5],
    [HEADER, SM_A_SPELLINGS[4] % 3 + SM_A_SPELLINGS[0] % 5],            # the first spelled otherwise
    [HEADER, b" <a xmlns='urn:xmpp:sm:3' h='3'", b"/>" + SM_A_SPELLINGS[0] % 5],  # completed later
])
def test_sm_acks_never_overtake_an_earlier_ack(tokenizer, chunks):
    """An ack reported as an event is applied by the sm module after the feed: a later ack in
    the same feed must not be applied before it (h would go backwards: a stream error)."""
    events, state = _outcome(with_sm(tokenizer, True, 5), chunks)
    assert events[1:] == [] and state == (5, 0)


def test_one_token_limit_unchanged_by_sm(tokenizer):
    """A token completed by the '>' that ends a read is within the limit as without SM (the
    compiled twin hands that '>' to expat alone)."""
    for on in (True, False):
        p = with_sm(tokenizer, on)()
        p.feed(HEADER)
        assert [e.tag for e in p.feed(b"<message" + b" " * 262200 + b"/>")] == ["message"]
    expect_error(with_sm(tokenizer, True), [HEADER, b"<message" + b" " * 262200], "policy-violation")


def test_sm_off_again_forgets_the_boundary(tokenizer):
    p = with_sm(tokenizer, True)()
    p.feed(HEADER + MSG)
    sm, p.sm = p.sm, None
    p.feed(b"<message")
    p.sm = sm
    with pytest.raises(XMLError) as ei:
        p.feed(SM_R_SPELLINGS[0] + b"/>")
    assert ei.value.condition == "not-well-formed"


def test_stored_fragment_is_never_the_shared_request():
    from mbxmpp.xml.fragment import parse_fragment
    el = parse_fragment(SM_R_SPELLINGS[0])
    assert el is not SM_REQUEST and (el.tag, el.ns) == ("r", "urn:xmpp:sm:3")


_sm_pieces = st.sampled_from([MSG, b"<presence/>", b" ", b"\n", b"<iq type='get' id='p'/>",
                              b"<a xmlns='urn:xmpp:sm:3' h='2'/>", b'<a xmlns="urn:xmpp:sm:3" h="4"/>',
                              b"<a xmlns='urn:xmpp:sm:3' h='9'/>", b"<message a='>'/>"]
                             + SM_R_SPELLINGS)
# pieces that put the bytes of a nonza where no element may start, or inside a stanza
_bad_pieces = st.sampled_from([b"<message a='", b"'/>", b"<message a='x' ", b"/>", b"<message>",
                               b"</message>", b"<message>x>", b">"])


@settings(max_examples=300, deadline=None, suppress_health_check=HC)
@given(st.lists(_sm_pieces | _bad_pieces, max_size=12),
       st.lists(st.integers(min_value=0, max_value=400), max_size=8), st.booleans())
@example(pieces=[b" ", b"<a xmlns='urn:xmpp:sm:3' h='2'/>", b'<a xmlns="urn:xmpp:sm:3" h="4"/>'],
         cuts=[184], end=False)  # an ack reported in one read, the next applied in the next read
def test_sm_nonzas_c_and_python_agree(pieces, cuts, end):
    """Any mix of SM nonzas, stanzas, whitespace and broken markup, split anywhere: the same
    events, the same error and the same acks applied, whether the compiled twin skips expat
    for SM nonzas or not."""
    if CXMLParser is None:
        pytest.skip("the compiled tokenizer is not built")
    data = HEADER + b"".join(pieces) + (END + SM_R_SPELLINGS[0] if end else b"")
    cuts = sorted({c for c in cuts if c < len(data)})
    chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    got = [_outcome(with_sm(cls, True, 5), chunks) for cls in (CXMLParser, PyXMLParser)]
    assert got[0] == got[1]
    off = [_outcome(with_sm(cls, False), chunks)[0] for cls in (CXMLParser, PyXMLParser)]
    assert off[0] == off[1]


def test_sm_nonzas_skip_expat_only_when_enabled():
    if CXMLParser is None:
        pytest.skip("the compiled tokenizer is not built")
    r, a = SM_R_SPELLINGS[0], SM_A_SPELLINGS[0]
    for on, want in ((True, 5), (False, 0)):
        p = with_sm(CXMLParser, on, 5)()
        events = [*p.feed(HEADER + r), *p.feed(MSG + r + MSG + b" " + r), *p.feed(r + r),
                  *p.feed(a % 2), *p.feed(MSG + a % 9)]
        assert _kinds(events).count("R") == 5
        assert p.nonzas_without_expat == want  # the request after the space went through expat
        assert [e.get("h") for e in events if type(e) is Element and e.tag == "a"] == (
            ["9"] if on else ["2", "9"])  # applied by the tokenizer, or refused and reported


# -- round trips with random trees ------------------------------------------------------------------
_xml_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\ufffe\uffff",
                           min_codepoint=0x20) | st.sampled_from("\t\n")
_names = st.sampled_from(["a", "body", "x", "item", "query", "n-1", "\u00e9l\u00e9ment", "\u540d"])
_nss = st.sampled_from([NS_CLIENT, "urn:x", "urn:y:1", "", "http://jabber.org/protocol/muc#user"])
_attr_keys = st.sampled_from(["to", "from", "id", "type", "xml:lang", "{urn:q}k", "{urn:r}k", "v"])
_attr_vals = st.text(_xml_chars | st.sampled_from(["\r", "&", "'", '"', "<", ">"]), max_size=20)


def _tree(children):
    return st.builds(lambda tag, ns, attrs, kids: Element(tag, ns, attrs, kids), _names, _nss,
                     st.dictionaries(_attr_keys, _attr_vals, max_size=5), children)


_elements = st.recursive(
    _tree(st.just([])),
    lambda inner: _tree(st.lists(inner | st.text(_xml_chars, min_size=1, max_size=30), max_size=5)),
    max_leaves=12)


def _merged(el):
    kids = []
    for c in el.children:
        if type(c) is str:
            if kids and type(kids[-1]) is str:
                kids[-1] += c
            else:
                kids.append(c)
        else:
            kids.append(_merged(c))
    return Element(el.tag, el.ns, dict(el.attrs), kids)


@settings(max_examples=60, deadline=None, suppress_health_check=HC)
@given(st.lists(_elements, min_size=1, max_size=4), st.integers(min_value=1, max_value=64))
def test_random_trees_roundtrip(tokenizer, elements, chunk):
    data = HEADER + b"".join(py_serialize(e) for e in elements) + END
    got = feed_chunks(tokenizer, [data[i:i + chunk] for i in range(0, len(data), chunk)])
    assert got[1:-1] == [_merged(e) for e in elements]
    assert canon_all(got[1:-1]) == [et_canon(c) for c in ET.fromstring(data)]


# -- build and selection ----------------------------------------------------------------------------
def test_capsule_checks():
    if CXMLParser is None:
        pytest.skip("the compiled tokenizer is not built")
    import pyexpat

    from mbxmpp._ext import tokenizer as ctok
    assert ctok.EXPAT_BUILD_VERSION == pyexpat.version_info
    assert ctok.FAST_ELEMENT  # Element changed? update the slot list in tokenizer.pyx
    if ctok.HAS_REPARSE_DEFERRAL:  # cpython gh-115398 added both at once
        assert hasattr(pyexpat.ParserCreate(), "SetReparseDeferralEnabled")


@pytest.mark.parametrize("setup,want", [
    ("import os; os.environ['MBXMPP_NO_EXTENSIONS'] = '1'", "PyXMLParser py_serialize"),
    ("import sys; sys.modules['mbxmpp._ext.tokenizer'] = None", "PyXMLParser *"),
])
def test_fallback_to_python(setup, want):
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = f"{setup}\nimport mbxmpp.xml as X\nprint(X.XMLParser.__name__, X.serialize.__name__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": root}, check=True).stdout.split()
    a, b = want.split()
    assert out[0] == a and (b == "*" or out[1] == b)
