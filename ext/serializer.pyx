# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled Element serializer: byte-for-byte the output of mbxmpp.xml.element.py_serialize.

- ``xmlns`` is written only where an element's ns differs from its parent's (``parent_ns`` for
  the top element);
- attribute values are quoted with ``'`` and escape ``& < > ' "`` and ``\\n \\r \\t``; text
  escapes ``& < >``;
- namespaced attributes ``{uri}local`` are declared with generated prefixes ``a1``, ``a2``...
  (numbered per element).

Output is built in one C buffer (on the stack while it fits) and copied once into the result.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_AsUTF8String
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcpy

# `serialize` is defined before anything is imported from mbxmpp.xml: importing this module first
# runs mbxmpp/xml/__init__.py, which looks `serialize` up on this partially initialised module.
# Nothing calls it before the module has finished initialising.


def serialize(el, parent_ns="jabber:client"):  # NS_CLIENT
    """Serialise `el` to UTF-8 bytes; ``xmlns`` only where the ns differs from ``parent_ns``."""
    cdef char stack[STACK_BUF]
    cdef Buf b
    b.p = stack
    b.len = 0
    b.cap = STACK_BUF
    b.heap = False
    try:
        _ser(&b, el, parent_ns, 0)
        return PyBytes_FromStringAndSize(b.p, b.len)
    finally:
        if b.heap:
            free(b.p)


from mbxmpp.xml.element import Element  # noqa: E402


cdef extern from "Python.h":
    bint PyUnicode_Check(object o)
    bint PyUnicode_IS_ASCII(object o)


cdef extern from *:
    """
    #include "structmember.h"
    static Py_ssize_t mbx_ser_slot_offset(PyObject *type, const char *name) {
        Py_ssize_t off = -1;
        PyObject *d = PyObject_GetAttrString(type, name);
        if (d == NULL) { PyErr_Clear(); return -1; }
        if (Py_TYPE(d) == &PyMemberDescr_Type) {
            PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
            if (m->type == T_OBJECT_EX) off = m->offset;
        }
        Py_DECREF(d);
        return off;
    }
    /* New reference to the slot's value; AttributeError when it is unset. */
    static PyObject *mbx_ser_slot_get(PyObject *o, Py_ssize_t off, const char *name) {
        PyObject *v = *(PyObject **)((char *)o + off);
        if (v == NULL) {
            PyErr_Format(PyExc_AttributeError, "'%.50s' object has no attribute '%s'",
                         Py_TYPE(o)->tp_name, name);
            return NULL;
        }
        Py_INCREF(v);
        return v;
    }
    """
    Py_ssize_t mbx_ser_slot_offset(object type, const char* name)
    object mbx_ser_slot_get(object o, Py_ssize_t off, const char* name)


cdef Py_ssize_t _off_tag = mbx_ser_slot_offset(Element, "tag")
cdef Py_ssize_t _off_ns = mbx_ser_slot_offset(Element, "ns")
cdef Py_ssize_t _off_attrs = mbx_ser_slot_offset(Element, "attrs")
cdef Py_ssize_t _off_children = mbx_ser_slot_offset(Element, "children")
cdef Py_ssize_t _off_bytes = mbx_ser_slot_offset(Element, "_bytes")
cdef bint _fast_el = (type(Element) is type and _off_tag >= 0 and _off_ns >= 0 and _off_attrs >= 0
                      and _off_children >= 0 and _off_bytes >= 0)
cdef object _NS_CLIENT = "jabber:client"

cdef enum:
    STACK_BUF = 2048
    MAX_DEPTH = 2000    # deeper trees raise RecursionError (py_serialize does well before)

# Escape tables: 0 = copy, else the index of the replacement in _REPL.
cdef unsigned char _text_esc[256]
cdef unsigned char _attr_esc[256]
cdef const char* _REPL[9]
cdef Py_ssize_t _REPL_LEN[9]


cdef void _init_tables() noexcept:
    cdef int i
    for i in range(256):
        _text_esc[i] = 0
        _attr_esc[i] = 0
    _REPL[1] = "&amp;"
    _REPL[2] = "&lt;"
    _REPL[3] = "&gt;"
    _REPL[4] = "&apos;"
    _REPL[5] = "&quot;"
    _REPL[6] = "&#10;"
    _REPL[7] = "&#13;"
    _REPL[8] = "&#9;"
    for i in range(1, 9):
        _REPL_LEN[i] = 0
        while _REPL[i][_REPL_LEN[i]] != 0:
            _REPL_LEN[i] += 1
    _text_esc[ord("&")] = _attr_esc[ord("&")] = 1
    _text_esc[ord("<")] = _attr_esc[ord("<")] = 2
    _text_esc[ord(">")] = _attr_esc[ord(">")] = 3
    _attr_esc[ord("'")] = 4
    _attr_esc[ord('"')] = 5
    _attr_esc[ord("\n")] = 6
    _attr_esc[ord("\r")] = 7
    _attr_esc[ord("\t")] = 8


_init_tables()


cdef struct Buf:
    char* p
    Py_ssize_t len
    Py_ssize_t cap
    bint heap


cdef int _grow(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap = b.cap * 2
    cdef char* np
    while cap < b.len + extra:
        cap *= 2
    if b.heap:
        np = <char*>realloc(b.p, <size_t>cap)
    else:
        np = <char*>malloc(<size_t>cap)
        if np != NULL:
            memcpy(np, b.p, <size_t>b.len)
    if np == NULL:
        raise MemoryError()
    b.p = np
    b.cap = cap
    b.heap = True
    return 0


cdef inline int _put(Buf* b, const char* s, Py_ssize_t n) except -1:
    if b.len + n > b.cap:
        _grow(b, n)
    memcpy(b.p + b.len, s, <size_t>n)
    b.len += n
    return 0


cdef int _put_esc(Buf* b, const char* s, Py_ssize_t n, const unsigned char* table) except -1:
    cdef Py_ssize_t i, start = 0
    cdef unsigned char r
    if b.len + n > b.cap:
        _grow(b, n)
    for i in range(n):
        r = table[<unsigned char>s[i]]
        if r:
            _put(b, s + start, i - start)
            _put(b, _REPL[r], _REPL_LEN[r])
            start = i + 1
    _put(b, s + start, n - start)
    return 0


cdef int _put_str(Buf* b, object s, const unsigned char* table) except -1:
    """Write a str as UTF-8, escaped with `table` (NULL: as is)."""
    cdef Py_ssize_t n
    cdef const char* p
    cdef bytes tmp
    if not PyUnicode_Check(s):
        raise TypeError(f"can only serialize str, not {type(s).__name__}")
    if PyUnicode_IS_ASCII(s):
        p = PyUnicode_AsUTF8AndSize(s, &n)  # no copy for ASCII strings
    else:
        tmp = PyUnicode_AsUTF8String(s)     # not cached on the str: no lasting memory cost
        p = PyBytes_AS_STRING(tmp)
        n = PyBytes_GET_SIZE(tmp)
    if table == NULL:
        return _put(b, p, n)
    return _put_esc(b, p, n, table)


cdef int _put_int(Buf* b, Py_ssize_t v) except -1:
    cdef char digits[24]
    cdef int i = 24
    while True:
        i -= 1
        digits[i] = <char>(48 + v % 10)
        v //= 10
        if v == 0:
            break
    return _put(b, digits + i, 24 - i)


cdef int _put_attr(Buf* b, object k, object v, Py_ssize_t* nns) except -1:
    cdef Py_ssize_t n
    cdef const char* p
    cdef const char* close
    if PyUnicode_Check(k) and PyUnicode_IS_ASCII(k):
        p = PyUnicode_AsUTF8AndSize(k, &n)
        if n and p[0] != c'{':
            _put(b, " ", 1)
            _put(b, p, n)
            _put(b, "='", 2)
            _put_str(b, v, _attr_esc)
            return _put(b, "'", 1)
    if not PyUnicode_Check(k):
        raise TypeError(f"attribute names must be str, not {type(k).__name__}")
    if not (len(k) and k[0] == "{"):
        _put(b, " ", 1)
        _put_str(b, k, NULL)
        _put(b, "='", 2)
        _put_str(b, v, _attr_esc)
        return _put(b, "'", 1)
    uri, _, local = k[1:].partition("}")
    nns[0] += 1
    _put(b, " xmlns:a", 8)
    _put_int(b, nns[0])
    _put(b, "='", 2)
    _put_str(b, uri, _attr_esc)
    _put(b, "' a", 3)
    _put_int(b, nns[0])
    _put(b, ":", 1)
    _put_str(b, local, NULL)
    _put(b, "='", 2)
    _put_str(b, v, _attr_esc)
    return _put(b, "'", 1)


cdef int _put_cached(Buf* b, object c, object parent_ns, bint client) except -1:
    """Write the child Element ``c``'s cached ``_bytes`` when they are exactly what serialising it
    under a parent in ``parent_ns`` gives; 1 if written, 0 if it must be serialised.

    ``_bytes`` is the serialisation under a ``jabber:client`` parent. Under another parent only
    the child's own ``xmlns`` can differ (its descendants depend on its ns alone): it is written
    in both cases when the child's ns is neither ``jabber:client`` nor the parent's ns.
    ``element._serialize_into`` applies the same rule."""
    if _fast_el:
        cb = mbx_ser_slot_get(c, _off_bytes, "_bytes")
    else:
        cb = c._bytes
    if cb is None or type(cb) is not bytes:
        return 0
    if not client:
        if _fast_el:
            cns = mbx_ser_slot_get(c, _off_ns, "ns")
        else:
            cns = c.ns
        if cns == _NS_CLIENT or cns == parent_ns:
            return 0
    _put(b, PyBytes_AS_STRING(cb), PyBytes_GET_SIZE(cb))
    return 1


cdef int _ser(Buf* b, object el, object parent_ns, int depth) except -1:
    cdef Py_ssize_t pos = 0, nns = 0, i
    cdef bint client
    cdef PyObject* pk
    cdef PyObject* pv
    if depth > MAX_DEPTH:
        raise RecursionError("element tree too deep to serialize")
    if _fast_el and type(el) is Element:
        tag = mbx_ser_slot_get(el, _off_tag, "tag")
        ns = mbx_ser_slot_get(el, _off_ns, "ns")
        attrs = mbx_ser_slot_get(el, _off_attrs, "attrs")
        children = mbx_ser_slot_get(el, _off_children, "children")
    else:
        tag = el.tag
        ns = el.ns
        attrs = el.attrs
        children = el.children
    _put(b, "<", 1)
    _put_str(b, tag, NULL)
    if ns is not parent_ns and ns != parent_ns:
        _put(b, " xmlns='", 8)
        _put_str(b, ns, _attr_esc)
        _put(b, "'", 1)
    if type(attrs) is dict:
        while PyDict_Next(attrs, &pos, &pk, &pv):
            _put_attr(b, <object>pk, <object>pv, &nns)
    else:
        for k, v in attrs.items():
            _put_attr(b, k, v, &nns)
    if not children:
        return _put(b, "/>", 2)
    _put(b, ">", 1)
    client = ns is _NS_CLIENT or ns == _NS_CLIENT
    if type(children) is list:
        i = 0
        while i < len(<list>children):  # re-read: a property getter could mutate the list
            c = (<list>children)[i]
            if type(c) is str:
                _put_str(b, c, _text_esc)
            elif not (type(c) is Element and _put_cached(b, c, ns, client)):
                _ser(b, c, ns, depth + 1)
            i += 1
    else:
        for c in children:
            if type(c) is str:
                _put_str(b, c, _text_esc)
            elif not (type(c) is Element and _put_cached(b, c, ns, client)):
                _ser(b, c, ns, depth + 1)
    _put(b, "</", 2)
    _put_str(b, tag, NULL)
    return _put(b, ">", 1)
