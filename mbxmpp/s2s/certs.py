"""Peer certificates: PKIX path validation against the system store plus ``[s2s] ca_file``, and the
RFC 6125 / RFC 7590 identity rules for XMPP servers (DNS-ID, SRV-ID ``_xmpp-server.<domain>``,
XmppAddr), as XEP-0178 asks before SASL EXTERNAL is allowed."""

from __future__ import annotations

import datetime
import logging
import ssl
import warnings
from typing import Any

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification
from cryptography.x509.oid import ObjectIdentifier

log = logging.getLogger(__name__)

OID_SRVNAME = ObjectIdentifier("1.3.6.1.5.5.7.8.7")     # RFC 4985
OID_XMPPADDR = ObjectIdentifier("1.3.6.1.5.5.7.8.5")    # RFC 6120 §13.7.1.4
SRV_SERVICES = ("_xmpp-server.", "_xmpps-server.")


def _load_pem_bundle(path: str) -> list[x509.Certificate]:
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            # (a few roots in system bundles have non-positive serial numbers)
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            return x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError) as e:
        log.warning("s2s: cannot read CA certificates from %s: %s", path, e)
        return []


class TrustStore:
    """The CAs peers' certificates must chain to (loaded once; reloaded with the server)."""

    def __init__(self, extra_ca_file: str | None = None, system: bool = True) -> None:
        roots: list[x509.Certificate] = []
        if system:
            cafile = ssl.get_default_verify_paths().cafile
            if cafile:
                roots.extend(_load_pem_bundle(cafile))
        if extra_ca_file:
            roots.extend(_load_pem_bundle(extra_ca_file))
        self.extra_ca_file = extra_ca_file
        self.store = verification.Store(roots) if roots else None

    @classmethod
    def of(cls, roots: list[x509.Certificate]) -> TrustStore:
        """A store trusting exactly ``roots`` (a DANE-TA trust anchor)."""
        store = cls(None, system=False)
        store.store = verification.Store(roots)
        return store

    def verify_chain(self, chain_der: list[bytes], name: str) -> bool:
        """True if the chain (leaf first) is valid now and chains to a trusted root, checked as a
        TLS server certificate for the DNS name ``name`` (which the leaf must carry)."""
        if self.store is None or not chain_der:
            return False
        try:
            leaf = x509.load_der_x509_certificate(chain_der[0])
            inter = [x509.load_der_x509_certificate(d) for d in chain_der[1:]]
            verifier = (verification.PolicyBuilder().store(self.store)
                        .time(datetime.datetime.now(datetime.timezone.utc))
                        .build_server_verifier(verification.DNSName(name)))
            verifier.verify(leaf, inter)
            return True
        except (verification.VerificationError, ValueError) as e:
            log.debug("s2s: chain not valid for %s: %s", name, e)
            return False

    def authenticates(self, chain_der: list[bytes], domain: str) -> bool:
        """RFC 6125 for an XMPP server: the certificate is valid and names ``domain``."""
        if not chain_der:
            return False
        if self.verify_chain(chain_der, domain):
            return True  # DNS-ID (wildcards per RFC 6125 §6.4.3 included)
        try:
            leaf = x509.load_der_x509_certificate(chain_der[0])
        except ValueError:
            return False
        ids = identities(leaf)
        if domain not in ids["srv"] and domain not in ids["xmpp"]:
            return False
        # An SRV-ID or XmppAddr names the domain: the chain must still be valid, checked against
        # a DNS name the leaf does carry (path validation does not depend on the name).
        return any(self.verify_chain(chain_der, n) for n in ids["dns"][:1])


def identities(cert: x509.Certificate) -> dict[str, list[str]]:
    """The reference identities a certificate presents: dNSName, SRVName (for XMPP services),
    XmppAddr."""
    out: dict[str, list[str]] = {"dns": [], "srv": [], "xmpp": []}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return out
    out["dns"] = [n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]
    for other in san.get_values_for_type(x509.OtherName):
        value = _der_string(other.value)
        if value is None:
            continue
        if other.type_id == OID_SRVNAME:
            for svc in SRV_SERVICES:
                if value.lower().startswith(svc):
                    out["srv"].append(value[len(svc):].lower().rstrip("."))
        elif other.type_id == OID_XMPPADDR:
            out["xmpp"].append(value.lower())
    return out


def _der_string(der: bytes) -> str | None:
    """The text of a DER IA5String / UTF8String (the otherName values used here)."""
    if len(der) < 2 or der[0] not in (0x16, 0x0C):
        return None
    n = der[1]
    start = 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(der[2:2 + k], "big")
        start = 2 + k
    try:
        return der[start:start + n].decode("utf-8")
    except UnicodeDecodeError:
        return None


def peer_chain(sslobj: object) -> list[bytes]:
    """The certificate chain the peer sent, leaf first, as DER (empty: none)."""
    inner = getattr(sslobj, "_sslobj", None)
    chain: Any = None
    if inner is not None and hasattr(inner, "get_unverified_chain"):
        try:
            chain = inner.get_unverified_chain()
        except (ssl.SSLError, ValueError):
            chain = None
    chain = [c for c in chain or () if c is not None]  # (a peer without a certificate: [None])
    if chain:
        out = []
        for c in chain:
            pem = c.public_bytes()  # _ssl.Certificate: PEM by default
            out.append(ssl.PEM_cert_to_DER_cert(pem) if isinstance(pem, str) else pem)
        return out
    try:
        leaf = sslobj.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    except (ValueError, AttributeError):
        return []
    return [leaf] if leaf else []


# -- DANE (RFC 6698, RFC 7671, RFC 7673) -------------------------------------------------------

def tlsa_data(cert: x509.Certificate, selector: int, mtype: int) -> bytes | None:
    from cryptography.hazmat.primitives import hashes, serialization
    if selector == 0:
        data = cert.public_bytes(serialization.Encoding.DER)
    elif selector == 1:
        data = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        return None
    if mtype == 0:
        return data
    algo = {1: hashes.SHA256(), 2: hashes.SHA512()}.get(mtype)
    if algo is None:
        return None
    h = hashes.Hash(algo)
    h.update(data)
    return h.finalize()


def tlsa_matches(cert: x509.Certificate, record: tuple[int, int, int, bytes]) -> bool:
    want = tlsa_data(cert, record[1], record[2])
    return want is not None and want == record[3]


def tlsa_record(cert_der: bytes, usage: int = 3, selector: int = 1, mtype: int = 1) -> tuple[int, int, int, bytes]:
    """The TLSA record (usage, selector, matching type, data) for a certificate."""
    data = tlsa_data(x509.load_der_x509_certificate(cert_der), selector, mtype)
    assert data is not None
    return usage, selector, mtype, data


def dane_authenticates(chain_der: list[bytes], records: list[tuple[int, int, int, bytes]],
                       trust: TrustStore, domain: str) -> bool:
    """Does the peer's chain match one of the (DNSSEC-validated) TLSA records? DANE-EE (3): the
    leaf matches, names and dates aside (RFC 7671 §5.1); DANE-TA (2): a certificate of the chain
    matches and, taken as the only trust anchor, validates the chain for ``domain``; PKIX-EE (1)
    and PKIX-TA (0): a match and PKIX validation against the trust store."""
    if not chain_der:
        return False
    try:
        chain = [x509.load_der_x509_certificate(d) for d in chain_der]
    except ValueError:
        return False
    leaf = chain[0]
    for record in records:
        usage = record[0]
        if usage == 3 and tlsa_matches(leaf, record):
            return True
        if usage == 1 and tlsa_matches(leaf, record) and trust.authenticates(chain_der, domain):
            return True
        if usage in (0, 2):
            for cert in chain[1:] if usage == 2 else chain:
                if not tlsa_matches(cert, record):
                    continue
                if usage == 0 and trust.authenticates(chain_der, domain):
                    return True
                if usage == 2 and TrustStore.of([cert]).authenticates(chain_der, domain):
                    return True
    return False
