"""Ask an incoming peer for its certificate without letting OpenSSL refuse the handshake when
the certificate does not verify.

SASL EXTERNAL (XEP-0178) needs the peer's certificate, so the server side must request one
(``CERT_OPTIONAL``); but then OpenSSL aborts the handshake when the peer presents a certificate
that does not chain to a trusted CA, and such peers (self-signed, private CAs) are exactly those
that authenticate with dialback. Python offers no verify callback, so one is installed on the
context's ``SSL_CTX`` through ctypes: it accepts every certificate, and the server decides after
the handshake (certs.TrustStore, DANE, dialback). Where that is not possible, the context falls
back to not requesting certificates (SASL EXTERNAL is then not offered to incoming peers).

Why a ctypes hack (reviewed for Python 3.11, still true up to 3.13): ``ssl`` has no verify
callback and no flag that accepts an unknown issuer; ``verify_mode`` only chooses between not
asking (CERT_NONE) and aborting on any failure (CERT_OPTIONAL/REQUIRED). Reading the chain after
the handshake is supported (``getpeercert(binary_form=True)``, and ``get_unverified_chain``,
public in 3.13, used by certs.peer_chain), but with CERT_NONE there is no chain to read, and with
CERT_OPTIONAL there is no handshake. pyOpenSSL has ``set_verify`` but is not an ``ssl.SSLContext``:
asyncio's TLS transport (start_tls, create_server(ssl=...)) would have to be replaced by one of
our own. Guards: CPython only; the SSL_CTX pointer is used only when OpenSSL reads back both the
verify mode and the option bits Python set through its own API (the layout, PyObject_HEAD then
the SSL_CTX pointer, is that of Modules/_ssl.c from 3.7 to 3.13; were it to change, the pointer
would be read through, never written to); a missing symbol or a failed check takes the fallback.
tests/unit/test_s2s_peercert.py covers a real handshake with an untrusted certificate and the
fallback.
"""

from __future__ import annotations

import ctypes
import logging
import ssl
import sys

log = logging.getLogger(__name__)

SSL_VERIFY_PEER = 0x01
_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


@_VERIFY_CB
def _accept_any(preverify_ok: int, store_ctx: int) -> int:
    return 1


def _libssl() -> ctypes.CDLL | None:
    try:
        import _ssl
        lib = ctypes.CDLL(_ssl.__file__)  # resolves libssl's symbols through _ssl's dependencies
        lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CB]
        lib.SSL_CTX_set_verify.restype = None
        lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        return lib
    except (OSError, AttributeError, ImportError):
        return None


_LIB = _libssl() if sys.implementation.name == "cpython" else None


def _ssl_ctx_pointer(ctx: ssl.SSLContext) -> int:
    # CPython's PySSLContext: PyObject_HEAD, then the SSL_CTX pointer (Modules/_ssl.c).
    return ctypes.c_void_p.from_address(id(ctx) + sys.getsizeof(object())).value or 0


def request_any_peer_certificate(ctx: ssl.SSLContext) -> bool:
    """Make ``ctx`` (a server context) ask for the peer's certificate and accept whatever comes;
    True on success, else the context asks for none (False)."""
    ctx.verify_mode = ssl.CERT_OPTIONAL
    if _LIB is not None:
        ptr = _ssl_ctx_pointer(ctx)
        # The pointer is trusted only if OpenSSL reads back what Python just set.
        if ptr and _LIB.SSL_CTX_get_verify_mode(ptr) == SSL_VERIFY_PEER \
                and _LIB.SSL_CTX_get_options(ptr) == int(ctx.options):
            _LIB.SSL_CTX_set_verify(ptr, SSL_VERIFY_PEER, _accept_any)
            return True
    log.warning("s2s: cannot install a certificate verify callback here; incoming peers are "
                "not asked for certificates (SASL EXTERNAL inbound is off, dialback still works)")
    ctx.verify_mode = ssl.CERT_NONE
    return False
