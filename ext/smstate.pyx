# cython: language_level=3, boundscheck=False, wraparound=False
"""Stream Management (XEP-0198) counters: compiled twin of mbxmpp/stream/smstate.py.

Counting runs for every stanza in and out of an SM-enabled session, so it is kept in C:
unsigned 32-bit arithmetic wraps by itself, as XEP-0198 §4 requires.
"""

from collections import deque

from libc.stdint cimport uint32_t


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
        cdef uint32_t hv = <uint32_t>(h & 0xFFFFFFFF)
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

    def unacked(self):
        return list(self.queue)
