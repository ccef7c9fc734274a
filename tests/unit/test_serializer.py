"""The compiled serializer must produce exactly what element.py_serialize produces."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbxmpp.xml import c_serialize
from mbxmpp.xml import element as element_module
from mbxmpp.xml.element import Element, py_serialize
from mbxmpp.xml.ns import NS_CLIENT

HC = [HealthCheck.function_scoped_fixture]


@pytest.fixture(params=["c", "py"])
def serialize(request):
    if request.param == "py":
        return py_serialize
    if c_serialize is None:
        pytest.skip("the compiled serializer is not built")
    return c_serialize


def both(el, *args):
    """Serialise with both implementations and check they agree."""
    want = py_serialize(el, *args)
    if c_serialize is not None:
        assert c_serialize(el, *args) == want
    return want


def test_simple(serialize):
    el = Element("message", NS_CLIENT, {"to": "a@b", "type": "chat"})
    el.add("body", text="hi")
    assert serialize(el) == b"<message to='a@b' type='chat'><body>hi</body></message>"
    assert serialize(el, "jabber:server") == (
        b"<message xmlns='jabber:client' to='a@b' type='chat'><body>hi</body></message>")


def test_xmlns_only_where_it_changes(serialize):
    el = Element("iq", NS_CLIENT, {"type": "result"})
    q = el.add("query", "jabber:iq:roster")
    q.add("item", attrs={"jid": "x@y"}).add("group", text="Friends")
    q.add("other", NS_CLIENT)
    assert serialize(el) == (b"<iq type='result'><query xmlns='jabber:iq:roster'><item jid='x@y'>"
                             b"<group>Friends</group></item><other xmlns='jabber:client'/></query></iq>")
    assert serialize(Element("x", ""), NS_CLIENT) == b"<x xmlns=''/>"


def test_escaping(serialize):
    el = Element("m", NS_CLIENT, {"a": "<&>'\"\n\r\t z"}, ["1 < 2 && 3 > 2 'q' \"d\" \n\r\t"])
    assert serialize(el) == (b"<m a='&lt;&amp;&gt;&apos;&quot;&#10;&#13;&#9; z'>"
                             b"1 &lt; 2 &amp;&amp; 3 &gt; 2 'q' \"d\" \n\r\t</m>")
    assert serialize(Element("x", "urn:a'b&c")) == b"<x xmlns='urn:a&apos;b&amp;c'/>"


def test_namespaced_attributes(serialize):
    el = Element("x", "urn:x", {"xml:lang": "en", "{urn:p}a": "1", "b": "2", "{urn:q'}c": "&"})
    el.add("y", attrs={"{urn:p}a": "3"})
    assert serialize(el, "urn:x") == (
        b"<x xml:lang='en' xmlns:a1='urn:p' a1:a='1' b='2' xmlns:a2='urn:q&apos;' a2:c='&amp;'>"
        b"<y xmlns:a1='urn:p' a1:a='3'/></x>")


def test_mixed_content_and_empty_text(serialize):
    el = Element("p", "urn:x", {}, ["a", Element("b", "urn:x", {}, ["c"]), "", "d"])
    assert serialize(el, "urn:x") == b"<p>a<b>c</b>d</p>"
    assert serialize(Element("p", "urn:x", {}, [""]), "urn:x") == b"<p></p>"


def test_non_ascii(serialize):
    el = Element("\u540d", "urn:\u00e9", {"k\u00e9": "\u05e9\u05dc\u05d5\u05dd", "e": "\U0001F600"},
                 ["\u4f60\u597d & \U0001F319"])
    assert serialize(el) == ("<\u540d xmlns='urn:\u00e9' k\u00e9='\u05e9\u05dc\u05d5\u05dd' "
                             "e='\U0001F600'>\u4f60\u597d &amp; \U0001F319</\u540d>").encode()


def test_large_and_deep(serialize):
    el = Element("r", NS_CLIENT)
    for i in range(2000):
        el.add("item", attrs={"id": str(i)}, text="x" * (i % 50) + "<&>")
    out = serialize(el)
    assert len(out) > 100_000 and out == py_serialize(el)
    deep = leaf = Element("d", "urn:d")
    for _ in range(300):
        leaf = leaf.add("d")
    assert serialize(deep, "urn:d") == b"<d>" * 300 + b"<d/>" + b"</d>" * 300


def test_duck_typed_and_subclassed_elements():
    class Sub(Element):
        __slots__ = ("extra",)

    class Duck:
        tag, ns, attrs, children = "duck", "urn:d", {"q": "1"}, ["quack"]

    el = Element("x", NS_CLIENT, {}, [Sub("s", "urn:s", {"a": "b"}), Duck()])
    assert both(el) == b"<x><s xmlns='urn:s' a='b'/><duck xmlns='urn:d' q='1'>quack</duck></x>"


def test_errors_match():
    if c_serialize is None:
        pytest.skip("the compiled serializer is not built")
    for bad in (Element("x", NS_CLIENT, {"a": 1}), Element("x", NS_CLIENT, {}, [object()]),
                Element("x", NS_CLIENT, {}, ["\ud800"]), Element(None, NS_CLIENT)):
        with pytest.raises(Exception) as e_py:
            py_serialize(bad)
        with pytest.raises(Exception) as e_c:
            c_serialize(bad)
        assert isinstance(e_c.value, (TypeError, AttributeError, UnicodeEncodeError))
        assert type(e_c.value) is type(e_py.value) or isinstance(e_c.value, TypeError)
    unset = Element.__new__(Element)
    with pytest.raises(AttributeError):
        c_serialize(unset)


def test_to_bytes_uses_the_installed_serializer():
    el = Element("presence", NS_CLIENT)
    assert el.to_bytes() == b"<presence/>"
    if c_serialize is not None:
        assert element_module.serialize is c_serialize


_chars = st.characters(blacklist_categories=("Cs",))
_names = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Lo")), min_size=1, max_size=8)
_nss = st.sampled_from([NS_CLIENT, "urn:x", "", "urn:'&<"]) | st.text(_chars, max_size=10)
_keys = _names | st.sampled_from(["xml:lang", "{urn:q}k", "{urn:r}", "{}k"])


def _tree(children):
    return st.builds(lambda t, n, a, c: Element(t, n, a, c), _names, _nss,
                     st.dictionaries(_keys, st.text(_chars, max_size=20), max_size=4), children)


_elements = st.recursive(
    _tree(st.just([])),
    lambda inner: _tree(st.lists(inner | st.text(_chars, max_size=30), max_size=5)),
    max_leaves=25)


@settings(max_examples=150, deadline=None, suppress_health_check=HC)
@given(_elements, _nss)
def test_random_trees_identical(el, parent_ns):
    both(el, parent_ns)
