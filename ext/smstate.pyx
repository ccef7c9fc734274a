# cython: language_level=3, boundscheck=False, wraparound=False
"""Stream Management (XEP-0198) counters: compiled twin of mbxmpp/stream/smstate.py.

Counting runs for every stanza in and out of an SM-enabled session, so it is kept in C:
unsigned 32-bit arithmetic wraps by itself, as XEP-0198 §4 requires.
"""

from collections import deque

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, strlen

# ack_attr() results: C constants inside (no module-dict lookup per ack), Python names outside
cdef enum:
    _OK = 0
    _INVALID = 1    # 'h' is not an xs:unsignedInt
    _TOO_HIGH = 2   # more than was sent: <handled-count-too-high/>
ACK_OK, ACK_INVALID, ACK_TOO_HIGH = _OK, _INVALID, _TOO_HIGH


cdef const char* _A_HEAD = b"<a xmlns='urn:xmpp:sm:3' h='"
cdef size_t _A_HEAD_LEN = strlen(_A_HEAD)


cdef bytes _ack_bytes(uint32_t h):
    """b"<a xmlns='urn:xmpp:sm:3' h='%u'/>" without printf (which costs ten times as much)."""
    cdef char digits[10]
    cdef int n = 0, i
    cdef bytes out
    cdef char* p
    while True:
        digits[n] = <char>(48 + h % 10)
        n += 1
        h //= 10
        if h == 0:
            break
    out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>_A_HEAD_LEN + n + 3)
    p = PyBytes_AS_STRING(out)
    memcpy(p, _A_HEAD, _A_HEAD_LEN)
    p += _A_HEAD_LEN
    for i in range(n):
        p[i] = digits[n - 1 - i]
    memcpy(p + n, b"'/>", 3)
    return out


cdef class SMState:
    cdef public str id
    cdef public bint resume
    cdef public int max
    cdef public int request_every
    cdef public bint requested
    cdef public object queue
    cdef uint32_t _h_in, _h_out, _acked
    cdef object __weakref__

    def __init__(self, str id, bint resume, int max, int request_every=5):
        self.id = id
        self.resume = resume
        self.max = max
        self.request_every = request_every
        self.requested = False
        self.queue = deque()
        self._h_in = 0
        self._h_out = 0
        self._acked = 0

    @property
    def h_in(self):
        return self._h_in

    @property
    def h_out(self):
        return self._h_out

    @property
    def acked(self):
        return self._acked

    cpdef inbound(self):
        self._h_in += 1

    cpdef bint outbound(self, stanza):
        self._h_out += 1
        q = self.queue
        q.append(stanza)
        if not self.requested and len(q) >= self.request_every:
            self.requested = True
            return True
        return False

    cpdef bint ack(self, object h):
        return self._ack(<uint32_t>(h & 0xFFFFFFFF))

    cdef bint _ack(self, uint32_t hv):
        cdef uint32_t n = hv - self._acked
        q = self.queue
        if n > <uint32_t>len(q):
            return False
        popleft = q.popleft
        for _ in range(n):
            popleft()
        self._acked = hv
        self.requested = False
        return True

    cpdef int ack_attr(self, object attr):
        """Apply the 'h' of an <a/> or <resume/> as the client wrote it: digits only (int()
        would take '+1', ' 1' or '²'), below 2^32. One of the ACK_* results."""
        cdef Py_ssize_t i, n
        cdef Py_UCS4 c
        cdef uint64_t v = 0
        cdef str h
        if not isinstance(attr, str):
            return _INVALID
        h = <str>attr
        n = len(h)
        if n == 0:
            return _INVALID
        for i in range(n):
            c = h[i]
            if c < 48 or c > 57:  # '0'..'9'
                return _INVALID
            v = v * 10 + (<uint64_t>c - 48)  # Py_UCS4 in arithmetic would become a str
            if v >= 4294967296:  # leading zeros are fine, 2^32 is not
                return _INVALID
        return _OK if self._ack(<uint32_t>v) else _TOO_HIGH

    cpdef bytes ack_bytes(self):
        """The <a/> that answers an <r/>: what was received so far."""
        return _ack_bytes(self._h_in)

    def unacked(self):
        return list(self.queue)
