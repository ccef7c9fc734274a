# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Incremental XMPP stream tokenizer: expat (through pyexpat's C API capsule) building Elements in C.

Behaviour is specified in, and tested against, the pure-Python twin mbxmpp/xml/_pytokenizer.py
(read its docstring). Here the expat callbacks are cdef functions: no Python call per token, one
Element object per element, and feed() returns the completed events once expat has returned.

The capsule has no XML_StopParser: a handler that finds a violation records it, sets `_stop` so
every later callback returns at once, and feed() raises after Parse() returns. Input is handed to
expat in slices of at most SLICE bytes so that a violation stops the work within one slice.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_SetItem
from cpython.object cimport PyObject
from cpython.pycapsule cimport PyCapsule_Import
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_DecodeASCII, PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, strcmp, strlen

cdef extern from "<string.h>" nogil:
    void* memmem(const void* haystack, size_t hlen, const void* needle, size_t nlen)

from expat_capi cimport *

import os

from mbxmpp.xml._pytokenizer import (FRAME_WRAPPER, PROLOG_SLICE, SLICE, XMLError, _expat_failure,
                                     check_xml_decl)
from mbxmpp.xml.element import SM_REQUEST, STREAM_END, Element, StreamHeader
from mbxmpp.xml.ns import NS_CLIENT, NS_SERVER, NS_XML


# -- element construction: allocate and fill the __slots__ of mbxmpp.xml.element.Element directly
cdef extern from *:
    """
    #include "structmember.h"
    /* Offset of a writable object slot (a __slots__ member), or -1 if `name` is not one. */
    static Py_ssize_t mbx_slot_offset(PyObject *type, const char *name) {
        Py_ssize_t off = -1;
        PyObject *d = PyObject_GetAttrString(type, name);
        if (d == NULL) { PyErr_Clear(); return -1; }
        if (Py_TYPE(d) == &PyMemberDescr_Type) {
            PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
            if (m->type == T_OBJECT_EX && !(m->flags & READONLY)) off = m->offset;
        }
        Py_DECREF(d);
        return off;
    }
    static PyObject *mbx_alloc(PyObject *type) {
        PyTypeObject *t = (PyTypeObject *)type;
        return t->tp_alloc(t, 0);
    }
    static void mbx_slot_init(PyObject *o, Py_ssize_t off, PyObject *v) {
        PyObject **p = (PyObject **)((char *)o + off);
        PyObject *old = *p;
        Py_INCREF(v);
        *p = v;
        Py_XDECREF(old);
    }
    """
    Py_ssize_t mbx_slot_offset(object type, const char* name)
    object mbx_alloc(object type)
    void mbx_slot_init(object o, Py_ssize_t off, object v)


cdef Py_ssize_t _off_tag = mbx_slot_offset(Element, "tag")
cdef Py_ssize_t _off_ns = mbx_slot_offset(Element, "ns")
cdef Py_ssize_t _off_attrs = mbx_slot_offset(Element, "attrs")
cdef Py_ssize_t _off_children = mbx_slot_offset(Element, "children")
cdef Py_ssize_t _off_bytes = mbx_slot_offset(Element, "_bytes")
# Only when Element is exactly the class we know: a new slot would be left unset (AttributeError)
# by this allocation, so any change to the class falls back to calling Element(...).
cdef bint _fast_el = (type(Element) is type and Element.__mro__ == (Element, object)
                      and set(Element.__slots__) == {"tag", "ns", "attrs", "children", "_bytes"}
                      and _off_tag >= 0 and _off_ns >= 0 and _off_attrs >= 0
                      and _off_children >= 0 and _off_bytes >= 0)
FAST_ELEMENT = _fast_el  # tests check it: the fallback is correct but slower


cdef inline object _new_element(object tag, object ns, dict attrs, list children):
    cdef object el
    if _fast_el:
        el = mbx_alloc(Element)
        mbx_slot_init(el, _off_tag, tag)
        mbx_slot_init(el, _off_ns, ns)
        mbx_slot_init(el, _off_attrs, attrs)
        mbx_slot_init(el, _off_children, children)
        mbx_slot_init(el, _off_bytes, None)
        return el
    return Element(tag, ns, attrs, children)


# -- the capsule ----------------------------------------------------------------------------------
cdef PyExpat_CAPI* capi = NULL
cdef mbx_reparse_deferral_fn _reparse_deferral = NULL
cdef unsigned long _hash_salt = <unsigned long>int.from_bytes(os.urandom(8), "little")

EXPAT_BUILD_VERSION = (XML_MAJOR_VERSION, XML_MINOR_VERSION, XML_MICRO_VERSION)


cdef int _init_capi() except -1:
    global capi, _reparse_deferral
    cdef PyExpat_CAPI* c
    try:
        c = <PyExpat_CAPI*>PyCapsule_Import(PyExpat_CAPSULE_NAME, 0)
    except Exception as e:
        raise ImportError(f"pyexpat C API capsule unavailable: {e}") from e
    if c == NULL or c.magic == NULL or strcmp(c.magic, PyExpat_CAPI_MAGIC) != 0:
        raise ImportError("pyexpat C API capsule: unknown magic")
    if c.size < <int>sizeof(PyExpat_CAPI):
        raise ImportError("pyexpat C API capsule: smaller than the pyexpat.h we were built with")
    runtime = (c.MAJOR_VERSION, c.MINOR_VERSION, c.MICRO_VERSION)
    if runtime != EXPAT_BUILD_VERSION:
        raise ImportError(f"pyexpat uses expat {runtime}, mbxmpp._ext.tokenizer was built "
                          f"against expat.h {EXPAT_BUILD_VERSION}")
    capi = c
    _reparse_deferral = mbx_capi_reparse_deferral(c)
    return 0


_init_capi()
HAS_REPARSE_DEFERRAL = _reparse_deferral != NULL
cdef Py_ssize_t _SLICE = SLICE
# Before the root start tag, expat gets small slices: a DOCTYPE is reported when its internal subset
# starts, and the few bytes left in that slice cannot declare and expand entities (billion laughs).
cdef Py_ssize_t _PROLOG_SLICE = PROLOG_SLICE
cdef bytes _WRAPPER = FRAME_WRAPPER


# -- name cache: raw expat name ("uri\x01local" or "local") -> tag, ns, attribute key ------------
cdef struct NameEntry:
    char* key
    Py_ssize_t klen
    uint64_t hash
    PyObject* tag     # owned references
    PyObject* ns
    PyObject* akey

cdef enum:
    NAMES_SIZE = 4096   # a power of two
    NAMES_MAX = 3072    # cleared when this full
    NAMES_PROBES = 8    # a name that finds no slot within this many probes is not cached

cdef NameEntry _names[NAMES_SIZE]
cdef NameEntry _scratch
cdef Py_ssize_t _names_count = 0
cdef uint64_t _names_seed = <uint64_t>int.from_bytes(os.urandom(8), "little")


cdef void _entry_clear(NameEntry* e) noexcept:
    free(e.key)
    Py_XDECREF(e.tag)
    Py_XDECREF(e.ns)
    Py_XDECREF(e.akey)
    e.key = NULL
    e.klen = 0
    e.hash = 0
    e.tag = e.ns = e.akey = NULL


cdef void _names_clear() noexcept:
    global _names_count
    cdef Py_ssize_t i
    for i in range(NAMES_SIZE):
        if _names[i].key != NULL:
            _entry_clear(&_names[i])
    _names_count = 0


cdef int _entry_fill(NameEntry* e, const char* raw, Py_ssize_t n, uint64_t h, bint keep) except -1:
    cdef const char* sep = <const char*>memchr(raw, 1, <size_t>n)
    cdef Py_ssize_t ulen
    cdef char* key = NULL
    if sep == NULL:
        uri = ""
        local = PyUnicode_DecodeUTF8(raw, n, NULL)
    else:
        ulen = sep - raw
        uri = PyUnicode_DecodeUTF8(raw, ulen, NULL)
        local = PyUnicode_DecodeUTF8(sep + 1, n - ulen - 1, NULL)
    tag = intern(local)
    if not uri:
        ns = ""
        akey = tag
    else:
        ns = NS_CLIENT if (uri == NS_SERVER or uri == NS_CLIENT) else intern(uri)
        akey = "xml:" + tag if uri == NS_XML else "{" + uri + "}" + tag
    if keep:
        key = <char*>malloc(<size_t>n + 1)
        if key == NULL:
            raise MemoryError()
        memcpy(key, raw, <size_t>n + 1)
    _entry_clear(e)
    e.key = key
    e.klen = n
    e.hash = h
    Py_INCREF(tag)
    e.tag = <PyObject*>tag
    Py_INCREF(ns)
    e.ns = <PyObject*>ns
    Py_INCREF(akey)
    e.akey = <PyObject*>akey
    return 0


cdef NameEntry* _name(const char* raw) except NULL:
    """The cache entry for `raw`; valid until the next call (copy what you need first)."""
    global _names_count
    cdef Py_ssize_t n = <Py_ssize_t>strlen(raw)
    cdef Py_ssize_t i
    cdef uint64_t h = _names_seed ^ <uint64_t>14695981039346656037ULL
    cdef NameEntry* e
    cdef NameEntry* free_slot = NULL
    for i in range(n):
        h = (h ^ <unsigned char>raw[i]) * <uint64_t>1099511628211ULL
    for i in range(NAMES_PROBES):
        e = &_names[(h + <uint64_t>i) & (NAMES_SIZE - 1)]
        if e.key == NULL:
            free_slot = e
            break
        if e.hash == h and e.klen == n and memcmp(e.key, raw, <size_t>n) == 0:
            return e
    if free_slot == NULL:
        _entry_fill(&_scratch, raw, n, h, False)
        return &_scratch
    if _names_count >= NAMES_MAX:
        _names_clear()
        free_slot = &_names[h & (NAMES_SIZE - 1)]
    _entry_fill(free_slot, raw, n, h, True)
    _names_count += 1
    return free_slot


cdef inline Py_ssize_t _local_len(const char* raw) noexcept:
    """Byte length of the local part of a raw expat name."""
    cdef size_t n = strlen(raw)
    cdef const char* sep = <const char*>memchr(raw, 1, n)
    if sep == NULL:
        return <Py_ssize_t>n
    return <Py_ssize_t>(n - <size_t>(sep - raw) - 1)


# -- Stream Management nonzas written as clients write them ---------------------------------------
cdef const char* _SM_R_NAME = b"urn:xmpp:sm:3\x01r"   # expat's names for <r xmlns='urn:xmpp:sm:3'>
cdef const char* _SM_A_NAME = b"urn:xmpp:sm:3\x01a"   # and <a xmlns='urn:xmpp:sm:3'>
cdef const char* _SM_NS = b"urn:xmpp:sm:3"
cdef enum:
    _SM_NS_AT = 10      # the namespace starts 10 bytes into <r xmlns='... and <a xmlns='...
    _SM_NS_LEN = 13
    _SM_H_MAX = 10      # digits of an 'h' below 2^32


cdef Py_ssize_t _sm_nonza_at(const unsigned char* buf, Py_ssize_t q, Py_ssize_t n,
                             Py_ssize_t* h_len) noexcept:
    """Length of the SM nonza spelled at buf[q:n] as clients write them, else 0:
    <r xmlns='urn:xmpp:sm:3'/> or <a xmlns='urn:xmpp:sm:3' h='DIGITS'/>, with ' or ", and
    with or without a space before '/>'. *h_len: the number of digits of an <a/> (0 for <r/>),
    which start 21 bytes after the namespace."""
    cdef unsigned char kind, quote
    cdef Py_ssize_t i, d
    if q < 0 or q + 26 > n or buf[q] != 60 or buf[q + 2] != 32:  # '<' and ' '
        return 0
    kind = buf[q + 1]
    quote = buf[q + 9]
    if (kind != 114 and kind != 97) or (quote != 39 and quote != 34):  # r a ' "
        return 0
    if (memcmp(buf + q + 3, b"xmlns=", 6) != 0 or buf[q + 23] != quote
            or memcmp(buf + q + _SM_NS_AT, _SM_NS, _SM_NS_LEN) != 0):
        return 0
    i = q + 24
    h_len[0] = 0
    if kind == 97:  # <a ... h='N'
        if (i + 4 > n or buf[i] != 32 or buf[i + 1] != 104 or buf[i + 2] != 61  # " h="
                or buf[i + 3] != quote):
            return 0
        i += 4
        d = 0
        while i + d < n and 48 <= buf[i + d] <= 57 and d <= _SM_H_MAX:
            d += 1
        if d == 0 or d > _SM_H_MAX or i + d >= n or buf[i + d] != quote:
            return 0
        h_len[0] = d
        i += d + 1
    if i < n and buf[i] == 32:
        i += 1
    if i + 2 > n or buf[i] != 47 or buf[i + 1] != 62:  # '/>'
        return 0
    return i + 2 - q


cdef Py_ssize_t _next_sm_nonza(const unsigned char* buf, Py_ssize_t start, Py_ssize_t n,
                               Py_ssize_t* length, Py_ssize_t* h_len) noexcept:
    """Offset of the first SM nonza in buf[start:n] as _sm_nonza_at() knows them (its length
    in *length), else -1. Found through the namespace, which ordinary stanzas rarely hold."""
    cdef const unsigned char* hit
    cdef Py_ssize_t q, at = start + _SM_NS_AT
    while at < n:
        hit = <const unsigned char*>memmem(buf + at, <size_t>(n - at), _SM_NS, _SM_NS_LEN)
        if hit == NULL:
            return -1
        q = (hit - buf) - _SM_NS_AT
        length[0] = _sm_nonza_at(buf, q, n, h_len)
        if length[0]:
            return q
        at = q + _SM_NS_AT + 1
    return -1


# -- UTF-8 validation (Unicode Table 3-7, the same verdicts as Python's strict decoder) -----------
cdef Py_ssize_t _utf8_valid(const unsigned char* s, Py_ssize_t n, bint* invalid) noexcept nogil:
    """Length of the valid prefix of s[:n]; *invalid tells whether what follows is ill-formed
    (else it is an incomplete but so far valid sequence at the end)."""
    cdef Py_ssize_t i = 0, k, need
    cdef unsigned char c, c1, lo, hi
    cdef uint64_t w
    invalid[0] = False
    while i < n:
        while i + 8 <= n:
            memcpy(&w, s + i, 8)
            if w & <uint64_t>0x8080808080808080ULL:
                break
            i += 8
        if i >= n:
            break
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        lo = 0x80
        hi = 0xBF
        if 0xC2 <= c <= 0xDF:
            need = 1
        elif c == 0xE0:
            need = 2
            lo = 0xA0
        elif c == 0xED:
            need = 2
            hi = 0x9F
        elif 0xE1 <= c <= 0xEF:
            need = 2
        elif c == 0xF0:
            need = 3
            lo = 0x90
        elif c == 0xF4:
            need = 3
            hi = 0x8F
        elif 0xF1 <= c <= 0xF3:
            need = 3
        else:
            invalid[0] = True
            return i
        if i + 1 >= n:
            return i
        c1 = s[i + 1]
        if c1 < lo or c1 > hi:
            invalid[0] = True
            return i
        for k in range(2, need + 1):
            if i + k >= n:
                return i
            if (s[i + k] & 0xC0) != 0x80:
                invalid[0] = True
                return i
        i += need + 1
    return n


# -- expat callbacks ------------------------------------------------------------------------------
cdef void _on_start(void* ud, const XML_Char* name, const XML_Char** atts) noexcept:
    cdef XMLParser self = <XMLParser>ud
    if self._stop:
        return
    self._progress = True
    try:
        self._start(name, atts)
    except BaseException as e:
        self._internal(e)


cdef void _on_end(void* ud, const XML_Char* name) noexcept:
    cdef XMLParser self = <XMLParser>ud
    if self._stop:
        return
    self._progress = True
    try:
        self._end()
    except BaseException as e:
        self._internal(e)


cdef inline bint _blank(const XML_Char* s, int length) noexcept:
    cdef int i
    for i in range(length):
        if s[i] != 32 and s[i] != 9 and s[i] != 10 and s[i] != 13:
            return False
    return True


cdef void _on_chars(void* ud, const XML_Char* s, int length) noexcept:
    cdef XMLParser self = <XMLParser>ud
    if self._stop:
        return
    self._progress = True
    if self._depth < 2:
        # between stanzas (whitespace keepalives): dropped; in a frame only whitespace may
        # surround the element (RFC 7395 §3.3.3)
        if self.framed and not _blank(s, length):
            self._fail("not-well-formed", "text outside the element of a frame")
        return
    try:
        self._chars(s, length)
    except BaseException as e:
        self._internal(e)


cdef void _on_nsdecl(void* ud, const XML_Char* prefix, const XML_Char* uri) noexcept:
    cdef XMLParser self = <XMLParser>ud
    if self._stop:
        return
    self._progress = True
    try:
        self._nsdecl(prefix, uri)
    except BaseException as e:
        self._internal(e)


cdef void _on_comment(void* ud, const XML_Char* data) noexcept:
    cdef XMLParser self = <XMLParser>ud
    if not self._stop:
        self._fail("restricted-xml", "comments are not allowed")


cdef void _on_pi(void* ud, const XML_Char* target, const XML_Char* data) noexcept:
    cdef XMLParser self = <XMLParser>ud
    if not self._stop:
        self._fail("restricted-xml", "processing instructions are not allowed")


cdef void _on_doctype(void* ud, const XML_Char* name, const XML_Char* sysid, const XML_Char* pubid,
                      int has_internal_subset) noexcept:
    cdef XMLParser self = <XMLParser>ud
    if not self._stop:
        self._fail("restricted-xml", "DTDs are not allowed")


cdef class XMLParser:
    """Incremental XMPP stream tokenizer (compiled); see mbxmpp.xml._pytokenizer for the contract."""

    cdef XML_Parser _p
    cdef readonly Py_ssize_t max_stanza_size
    cdef readonly int max_depth
    cdef readonly int max_attrs
    cdef readonly bint framed
    cdef public object sm  # the stream's SMState once SM is on: see _parse_answering_sm
    cdef readonly Py_ssize_t nonzas_without_expat  # how many (tests read it)
    cdef int _depth
    cdef int _ndecls
    cdef bint _stop          # a failure was recorded or the stream ended: ignore every callback
    cdef bint _ended
    cdef bint _progress      # a callback fired during the current Parse()
    cdef bint _decl_done
    cdef bint _sm_r          # the stanza being built is an <r xmlns='urn:xmpp:sm:3'>, no attributes
    cdef bint _sm_a          # ... is an <a xmlns='urn:xmpp:sm:3'>
    cdef bint _ack_reported  # an <a xmlns='urn:xmpp:sm:3'> is among this feed's events: later acks
                             # must follow it as events too, or they would be applied before it
    # expat has consumed every byte fed so far and sits in the root's content: its last Parse()
    # was one byte, the '>' that completed the stream header or a depth-1 element. Then the
    # bytes of an SM request that follow can be answered without expat (its state would not change).
    cdef bint _clean
    cdef Py_ssize_t _size    # bytes counted for the current stanza
    cdef Py_ssize_t _pending  # bytes fed since the last Parse() that fired a callback
    cdef object _failure     # None or (condition, text)
    cdef object _exc         # an exception raised inside a callback
    cdef list _events
    cdef list _stack         # children lists of the open ancestors of _cur (inside the stanza)
    cdef list _cur           # children of the innermost open element of the stanza
    cdef list _decls         # namespace declarations seen for the root start tag
    cdef object _root        # the stanza being built
    cdef bytes _tail         # incomplete UTF-8 sequence held back from the last feed
    cdef bytes _head         # stream start held back until the XML declaration is checked
    cdef char* _tbuf         # character data not yet added to _cur (UTF-8)
    cdef Py_ssize_t _tlen
    cdef Py_ssize_t _tcap

    def __cinit__(self):
        self._p = NULL
        self._tbuf = NULL
        self._tlen = self._tcap = 0

    def __init__(self, Py_ssize_t max_stanza_size=262144, int max_depth=64, int max_attrs=64,
                 framed=False):
        self.max_stanza_size = max_stanza_size
        self.max_depth = max_depth
        self.max_attrs = max_attrs
        self.framed = bool(framed)
        self.sm = None
        self.reset()

    def __dealloc__(self):
        if self._p != NULL:
            capi.ParserFree(self._p)
            self._p = NULL
        free(self._tbuf)
        self._tbuf = NULL

    def reset(self):
        """Start a new stream: a fresh expat parser and cleared state (failures included)."""
        cdef XML_Parser p
        if self._p != NULL:
            capi.ParserFree(self._p)
            self._p = NULL
        self._depth = 0
        self._ndecls = 0
        self._stop = self._ended = self._progress = False
        self._sm_r = self._sm_a = self._clean = self._ack_reported = False
        self._decl_done = self.framed
        self._size = self._pending = 0
        self._failure = self._exc = None
        self._events = []
        self._stack = []
        self._cur = None
        self._decls = []
        self._root = None
        self._tail = self._head = None
        self._tlen = 0
        p = capi.ParserCreate_MM("UTF-8", NULL, "\x01")
        if p == NULL:
            raise MemoryError()
        capi.SetUserData(p, <void*>self)
        capi.SetElementHandler(p, _on_start, _on_end)
        capi.SetCharacterDataHandler(p, _on_chars)
        capi.SetNamespaceDeclHandler(p, _on_nsdecl, NULL)
        capi.SetCommentHandler(p, _on_comment)
        capi.SetProcessingInstructionHandler(p, _on_pi)
        capi.SetStartDoctypeDeclHandler(p, _on_doctype)
        if capi.SetHashSalt != NULL:
            capi.SetHashSalt(p, _hash_salt)
        if _reparse_deferral != NULL:
            _reparse_deferral(p, 0)
        self._p = p
        if self.framed:
            capi.Parse(p, _WRAPPER, <int>len(_WRAPPER), 0)

    def feed(self, data):
        """Parse more bytes; returns the completed events (StreamHeader, Element, STREAM_END)."""
        cdef bytes b
        cdef const unsigned char* buf
        cdef Py_ssize_t n, valid
        cdef bint invalid = False
        cdef list events
        if self._failure is not None:
            raise XMLError(*self._failure)
        if self._ended or not data:
            return []
        if self._p == NULL:
            raise RuntimeError("XMLParser.__init__ was not called")
        b = data if type(data) is bytes else bytes(data)
        events = []
        self._events = events
        self._ack_reported = False
        if self._tail is not None:
            b = self._tail + b
            self._tail = None
        if not self._decl_done:
            head = b if self._head is None else self._head + b
            res = check_xml_decl(head)
            if res is None:
                self._head = head
                return events
            self._head = None
            self._decl_done = True
            b = head
            if res is not True:
                self._raise(res[0], res[1], events)
        buf = <const unsigned char*>PyBytes_AS_STRING(b)
        n = PyBytes_GET_SIZE(b)
        valid = _utf8_valid(buf, n, &invalid)
        if self.sm is not None and not self.framed:
            if self._parse_answering_sm(buf, valid, valid == n, events):
                return events
        else:
            self._clean = False  # known only while SM nonzas are looked for
            if self._parse(buf, 0, valid, events):
                return events
        if valid < n:
            if invalid:
                self._raise("unsupported-encoding", "invalid UTF-8", events)
            if self.framed:
                self._raise("unsupported-encoding", "incomplete UTF-8 sequence at the end of a frame",
                            events)
            self._tail = b[valid:]
        if self.framed:
            if self._depth != 1:
                self._raise("not-well-formed", "a frame must hold one complete element", events)
            if len(events) > 1:
                self._raise("not-well-formed", "a frame must hold only one element", events)
        return events

    # -- internals ------------------------------------------------------------------------------
    cdef int _parse_answering_sm(self, const unsigned char* buf, Py_ssize_t n, bint whole,
                                 list events) except -1:
        """_parse(buf, 0, n) for a stream with Stream Management on: the SM nonzas that clients
        send most, spelled as they spell them and at a stanza boundary, skip expat (which
        spends thousands of instructions on each). An <r/> is reported as SM_REQUEST; an <a/>
        is applied to `sm` at once and reports nothing (the ack of a stanza can only follow its
        sending, so the order against the events before it does not matter); an <a/> that
        `sm` refuses goes through expat after all, to fail in order, and so does every later
        <a/> of the same feed (an ack must not overtake one reported before it). An ack applied
        here is applied before the events ahead of it are handled; that is harmless, since it
        can only acknowledge stanzas sent before this feed. Expat's positions in later error
        texts do not count the bytes it never saw. A boundary is certain
        only when expat has just been handed a '>' alone and completed an element of depth 1
        (or the stream header) with it: see _clean.
        `whole`: buf[:n] is all of the input so far (no incomplete UTF-8 held back)."""
        cdef Py_ssize_t pos = 0, q, m = 0, h_len = 0
        while True:
            q = _next_sm_nonza(buf, pos, n, &m, &h_len)
            if q < 0:
                break
            if q > pos:
                if buf[q - 1] != 62:  # not after a '>': cannot be a nonza at a boundary
                    if self._parse_to_gt(buf, pos, q + m, events):
                        return 1
                    pos = q + m
                    continue
                if self._parse_to_gt(buf, pos, q, events):
                    return 1
            if self._clean and self._sm_nonza(buf, q, h_len, events):
                self.nonzas_without_expat += 1  # expat never sees it: its state is as it was
            elif self._parse_to_gt(buf, q, q + m, events):
                return 1
            pos = q + m
        if pos < n:
            if whole and buf[n - 1] == 62:  # learn whether the next input starts at a boundary
                return self._parse_to_gt(buf, pos, n, events)
            self._clean = False
            return self._parse(buf, pos, n, events)
        return 0

    cdef bint _sm_nonza(self, const unsigned char* buf, Py_ssize_t q, Py_ssize_t h_len,
                        list events) except -1:
        """Handle the nonza at buf[q:] without expat; False: leave it to expat."""
        if h_len == 0:
            events.append(SM_REQUEST)
            return True
        if self._ack_reported:
            return False
        h = PyUnicode_DecodeASCII(<const char*>buf + q + _SM_NS_AT + _SM_NS_LEN + 5, h_len, NULL)
        return self.sm.ack_attr(h) == 0  # applied (else too high: the stream error comes in order)

    cdef int _parse_to_gt(self, const unsigned char* buf, Py_ssize_t off, Py_ssize_t end,
                          list events) except -1:
        """_parse() of buf[off:end], which ends with '>': that byte alone, to set _clean."""
        cdef Py_ssize_t before
        # The bytes before the '>' may be one token the '>' completes: their "no progress" is
        # judged with it (as if they had been parsed together), not before.
        if self._parse(buf, off, end - 1, events, True):
            return 1
        before = len(events)
        if self._parse(buf, end - 1, end, events):
            return 1
        self._clean = self._depth == 1 and len(events) > before
        return 0

    cdef int _parse(self, const unsigned char* buf, Py_ssize_t off, Py_ssize_t end,
                    list events, bint defer_last=False) except -1:
        """Hand buf[off:end] to expat in slices; 1 if the stream ended (ignore the rest).
        `defer_last`: the last slice's bytes count towards the one-token limit, but the limit
        is checked by the next _parse()."""
        cdef Py_ssize_t chunk, lim
        cdef XML_Status st
        while off < end:
            chunk = end - off
            lim = _SLICE if self._depth else _PROLOG_SLICE
            if chunk > lim:
                chunk = lim
            self._progress = False
            st = capi.Parse(self._p, <const char*>(buf + off), <int>chunk, 0)
            if self._stop:
                if self._exc is not None:
                    exc = self._exc
                    self._exc = None
                    self._failure = ("internal-server-error", f"tokenizer: {exc!r}")
                    if not isinstance(exc, Exception):
                        raise exc  # KeyboardInterrupt, SystemExit: as the Python twin
                    raise XMLError(*self._failure, events) from exc
                if self._failure is not None:
                    raise XMLError(*self._failure, events)
                return 1  # the stream ended: what follows is ignored
            if st == XML_STATUS_ERROR:
                cond, text = _expat_failure(<int>capi.GetErrorCode(self._p),
                                            <unsigned long>capi.GetErrorLineNumber(self._p),
                                            <unsigned long>capi.GetErrorColumnNumber(self._p))
                self._raise(cond, text, events)
            if self._progress:
                self._pending = 0
            else:
                self._pending += chunk
                if self._pending > self.max_stanza_size and not (defer_last and off + chunk >= end):
                    self._raise("policy-violation",
                                f"more than {self.max_stanza_size} bytes in one token", events)
            off += chunk
        return 0

    cdef int _raise(self, condition, text, list events) except -1:
        self._failure = (condition, text)
        self._stop = True
        raise XMLError(condition, text, events)

    cdef void _fail(self, condition, text) noexcept:
        self._failure = (condition, text)
        self._stop = True

    cdef void _internal(self, exc) noexcept:
        self._exc = exc
        self._stop = True

    cdef int _flush_text(self) except -1:
        s = PyUnicode_DecodeUTF8(self._tbuf, self._tlen, NULL)
        self._tlen = 0
        self._cur.append(s)
        return 0

    cdef int _start(self, const char* name, const char** atts) except -1:
        cdef int level = self._depth
        cdef Py_ssize_t nattrs = 0, i, size
        cdef NameEntry* e
        cdef const char* v
        cdef dict attrs
        cdef list children
        if level > self.max_depth:
            self._fail("policy-violation", f"elements nested deeper than {self.max_depth}")
            return 0
        while atts[2 * nattrs] != NULL:
            nattrs += 1
        if nattrs + self._ndecls > self.max_attrs:
            self._fail("policy-violation", f"more than {self.max_attrs} attributes on an element")
            return 0
        if level >= 1:
            size = self._size + 2 * _local_len(name) + 5
            for i in range(nattrs):
                size += _local_len(atts[2 * i]) + <Py_ssize_t>strlen(atts[2 * i + 1]) + 4
            self._size = size
            if size > self.max_stanza_size:
                self._fail("policy-violation", f"stanza larger than {self.max_stanza_size} bytes")
                return 0
        e = _name(name)
        tag = <object>e.tag
        ns = <object>e.ns
        attrs = {}
        for i in range(nattrs):
            e = _name(atts[2 * i])
            key = <object>e.akey
            v = atts[2 * i + 1]
            PyDict_SetItem(attrs, key, PyUnicode_DecodeUTF8(v, <Py_ssize_t>strlen(v), NULL))
        self._ndecls = 0
        if level == 0:
            self._depth = 1
            decls = self._decls
            self._decls = []
            if not self.framed:
                self._events.append(self._header(name, tag, ns, attrs, decls))
            return 0
        children = []
        el = _new_element(tag, ns, attrs, children)
        if level == 1:
            self._root = el
            self._sm_r = nattrs == 0 and strcmp(name, _SM_R_NAME) == 0
            self._sm_a = strcmp(name, _SM_A_NAME) == 0
        else:
            if self._tlen:
                self._flush_text()
            self._cur.append(el)
            self._stack.append(self._cur)
        self._cur = children
        self._depth = level + 1
        return 0

    cdef object _header(self, const char* name, tag, ns, dict attrs, list decls):
        cdef const char* sep = <const char*>memchr(name, 1, strlen(name))
        uri = "" if sep == NULL else PyUnicode_DecodeUTF8(name, sep - name, NULL)
        default_ns = prefix = ""
        for pfx, u in decls:
            if pfx is None:
                default_ns = u
            elif u == uri and not prefix:
                prefix = pfx
        return StreamHeader(tag, ns, attrs, default_ns, prefix)

    cdef int _end(self) except -1:
        cdef int level = self._depth - 1
        self._depth = level
        if level >= 1:
            if self._tlen:
                self._flush_text()
            if level == 1:
                self._events.append(SM_REQUEST if self._sm_r and not self._cur else self._root)
                if self._sm_a:
                    self._ack_reported = True
                self._root = None
                self._cur = None
                self._size = 0
                if self._tcap > 65536:  # do not keep a large buffer per idle connection
                    free(self._tbuf)
                    self._tbuf = NULL
                    self._tcap = 0
            else:
                self._cur = self._stack.pop()
        elif self.framed:
            self._fail("not-well-formed", "end tag without a start tag in the frame")
        else:
            self._events.append(STREAM_END)
            self._ended = True
            self._stop = True
        return 0

    cdef int _chars(self, const char* s, int length) except -1:
        cdef Py_ssize_t need, cap
        cdef char* nbuf
        self._size += length
        if self._size > self.max_stanza_size:
            self._fail("policy-violation", f"stanza larger than {self.max_stanza_size} bytes")
            return 0
        need = self._tlen + length
        if need > self._tcap:
            cap = self._tcap * 2 if self._tcap else 256
            while cap < need:
                cap *= 2
            nbuf = <char*>realloc(self._tbuf, <size_t>cap)
            if nbuf == NULL:
                raise MemoryError()
            self._tbuf = nbuf
            self._tcap = cap
        memcpy(self._tbuf + self._tlen, s, <size_t>length)
        self._tlen = need
        return 0

    cdef int _nsdecl(self, const char* prefix, const char* uri) except -1:
        self._ndecls += 1
        if self._ndecls > self.max_attrs:
            self._fail("policy-violation", f"more than {self.max_attrs} attributes on an element")
            return 0
        if self._depth == 0:
            self._decls.append((
                None if prefix == NULL else PyUnicode_DecodeUTF8(prefix, <Py_ssize_t>strlen(prefix), NULL),
                "" if uri == NULL else PyUnicode_DecodeUTF8(uri, <Py_ssize_t>strlen(uri), NULL)))
        else:
            self._size += 10
            if prefix != NULL:
                self._size += <Py_ssize_t>strlen(prefix)
            if uri != NULL:
                self._size += <Py_ssize_t>strlen(uri)
            if self._size > self.max_stanza_size:
                self._fail("policy-violation", f"stanza larger than {self.max_stanza_size} bytes")
        return 0
