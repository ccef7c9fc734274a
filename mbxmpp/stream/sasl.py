"""Server side of SASL (RFC 6120 §6): SCRAM-SHA-1/-256 and their -PLUS variants (RFC 5802, RFC 7677)
and PLAIN (RFC 4616). Sans-IO: the caller base64-decodes <auth/>/<response/> payloads, feeds them in,
and turns the returned ("challenge" | "success", data) or a raised SaslFailure into XML.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
from typing import Any, Callable

from mbxmpp.errors import LocalProtocolError
from mbxmpp.jid import JID, JIDError, nameprep, nodeprep
from mbxmpp.stream.scram import DEFAULT_ITERATIONS, HASHES, SALT_BYTES, ScramCredential, saslprep

__all__ = ["SaslFailure", "SaslServer", "mechanisms", "cb_data_from_ssl", "tls_server_end_point",
           "cert_der_from_pem", "channel_binding_element_types", "load_fake_secret", "CONDITIONS",
           "CB_TYPES", "FAKE_SECRET_FILE"]

log = logging.getLogger(__name__)

# RFC 6120 §6.5
CONDITIONS = frozenset((
    "aborted", "account-disabled", "credentials-expired", "encryption-required",
    "incorrect-encoding", "invalid-authzid", "invalid-mechanism", "malformed-request",
    "mechanism-too-weak", "not-authorized", "temporary-auth-failure",
))
# Strongest first (the advertised order).
SCRAM_MECHS = ("SCRAM-SHA-256", "SCRAM-SHA-1")
# Channel-binding types we can produce, most preferred first (RFC 9266 prefers tls-exporter).
CB_TYPES = ("tls-exporter", "tls-server-end-point", "tls-unique")

GetCredential = Callable[[str, str], "ScramCredential | None"]
CheckPassword = Callable[[str, str], bool]

# Key for the fake salts of unknown users; per process unless the server passes a stable one.
_PROCESS_SECRET = secrets.token_bytes(32)
# In data_dir: the stable key, so an unknown user's salt survives a restart as a real one does.
FAKE_SECRET_FILE = "sasl-fake-salt.key"

_CB_NAME = re.compile(r"[A-Za-z0-9.-]+")
_NONCE = re.compile(r"[!-+\--~]+")  # RFC 5802 §7 printable: %x21-2B / %x2D-7E
_BAD_ESCAPE = re.compile(r"=(?!2C|3D)")
_EXT_ATTR = re.compile(r"[A-Za-z]=[^,]*")

_INIT, _FIRST, _FINAL, _DONE, _FAILED = range(5)


class SaslFailure(Exception):
    """Authentication failed: send <failure><condition/><text/></failure> (RFC 6120 §6.5)."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        if condition not in CONDITIONS:
            raise ValueError(f"unknown SASL failure condition {condition!r}")
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text


def mechanisms(tls: bool, cb_types: list[str]) -> list[str]:
    """The mechanisms to advertise, strongest first; -PLUS only with TLS and channel binding,
    PLAIN only over TLS."""
    out = [m + "-PLUS" for m in SCRAM_MECHS] if tls and cb_types else []
    out.extend(SCRAM_MECHS)
    if tls:
        out.append("PLAIN")
    return out


def channel_binding_element_types(cb_data: dict[str, bytes]) -> list[str]:
    """Types to list in XEP-0440 <sasl-channel-binding/>, most preferred first."""
    return [t for t in CB_TYPES if t in cb_data]


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslFailure("malformed-request", "not UTF-8") from None


def _b64decode(s: str, what: str) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("malformed-request", f"{what} is not base64") from None


def _unescape_saslname(s: str) -> str:
    """RFC 5802 §5.1: "=2C" is ",", "=3D" is "="; any other "=" is invalid."""
    if "=" not in s:
        return s
    if _BAD_ESCAPE.search(s):
        raise SaslFailure("malformed-request", "invalid-encoding of saslname")
    # Every "=" now starts an escape, so sequential replacement cannot mix two of them up.
    return s.replace("=2C", ",").replace("=3D", "=")


class SaslServer:
    """One SASL negotiation. ``start(initial)`` once, then ``respond(data)`` per <response/>.

    Both return ("challenge", data) or ("success", additional data or None) and raise SaslFailure;
    after a failure or success the object is finished. The constructor raises SaslFailure for a
    mechanism that cannot be used (invalid-mechanism, encryption-required).
    ``get_credential(username, mech)`` gets a nodeprep'd localpart and a SCRAM mech without -PLUS;
    it may raise SaslFailure itself (e.g. account-disabled). ``check_password(username, password)``
    is for PLAIN. ``server_nonce`` fixes the nonce (tests only); ``fake_secret`` keys the fake salts
    of unknown users and should be stable across restarts.
    """

    __slots__ = ("mechanism", "username", "claimed", "authzid", "cb_type", "_domain", "_get_credential",
                 "_check_password", "_cb_data", "_plus", "_plus_advertised", "_hash", "_state",
                 "_server_nonce", "_fake_secret", "_user", "_authzid_raw", "_gs2_header",
                 "_first_bare", "_server_first", "_nonce", "_cred", "_fake", "_pending_user")

    def __init__(self, mechanism: str, domain: str, get_credential: GetCredential,
                 check_password: CheckPassword, cb_data: dict[str, bytes], tls: bool,
                 plus_advertised: bool, *, server_nonce: str | None = None,
                 fake_secret: bytes | None = None) -> None:
        self.mechanism = mechanism
        self.username: str | None = None
        self.claimed: str | None = None  # the username tried, known before the verdict
        self.authzid: str | None = None
        self.cb_type: str | None = None
        self._domain = nameprep(domain)
        self._get_credential = get_credential
        self._check_password = check_password
        self._cb_data = cb_data
        self._plus = mechanism.endswith("-PLUS")
        self._plus_advertised = plus_advertised
        self._state = _INIT
        self._server_nonce = server_nonce
        self._fake_secret = fake_secret or _PROCESS_SECRET
        self._user = ""
        self._authzid_raw: str | None = None
        self._gs2_header = self._first_bare = self._server_first = self._nonce = ""
        self._cred: ScramCredential | None = None
        self._fake = False
        self._pending_user: str | None = None  # PLAIN awaiting an external backend's verdict
        base = mechanism[:-5] if self._plus else mechanism
        if mechanism == "PLAIN":
            if not tls:
                raise SaslFailure("encryption-required", "PLAIN needs TLS")
            self._hash = ""
        elif base in HASHES:
            if self._plus and not (tls and cb_data and plus_advertised):
                raise SaslFailure("invalid-mechanism", f"{mechanism} was not offered")
            self._hash = base
        else:
            raise SaslFailure("invalid-mechanism")

    # -- driving ---------------------------------------------------------------------------------

    def start(self, initial: bytes | None) -> tuple[str, bytes | None]:
        """Handle <auth/>; ``initial`` is None when it carried no initial response."""
        if self._state != _INIT:
            raise LocalProtocolError("SaslServer.start() called twice")
        self._state = _FIRST
        if initial is None:
            return ("challenge", b"")  # RFC 6120 §6.4.2: ask for the initial response
        return self.respond(initial)

    def respond(self, data: bytes) -> tuple[str, bytes | None]:
        """Handle a <response/>."""
        state = self._state
        if state not in (_FIRST, _FINAL):
            raise LocalProtocolError(f"SaslServer.respond() in state {state}")
        try:
            if not self._hash:
                result = self._plain(data)
            elif state == _FIRST:
                result = self._client_first(data)
            else:
                result = self._client_final(data)
        except BaseException:
            self._state = _FAILED
            raise
        self._state = _DONE if result[0] == "success" else _FINAL
        return result

    # -- shared ----------------------------------------------------------------------------------

    def _prep_username(self, raw: str) -> str:
        try:
            self.claimed = nodeprep(raw)
            return self.claimed
        except JIDError:
            raise SaslFailure("not-authorized") from None

    def _check_authzid(self, username: str) -> None:
        raw = self._authzid_raw
        if raw is not None:
            try:
                authzid = JID.parse(raw).full
            except JIDError:
                raise SaslFailure("invalid-authzid") from None
            if authzid != f"{username}@{self._domain}":
                raise SaslFailure("invalid-authzid")
            self.authzid = authzid

    # -- PLAIN (RFC 4616) ------------------------------------------------------------------------

    def _plain(self, data: bytes) -> tuple[str, bytes | None]:
        parts = _utf8(data).split("\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SaslFailure("malformed-request", "expected authzid NUL authcid NUL password")
        authz, authcid, password = parts
        if authz:
            self._authzid_raw = authz
        username = self._prep_username(authcid)
        try:
            saslprep(password)
        except ValueError as e:
            # A password no account can have (RFC 7613/8265 OpaqueString): a failed attempt.
            log.info("SASL PLAIN for %r@%s refused: %s", username, self._domain, e)
            raise SaslFailure("not-authorized") from None
        ok = self._check_password(username, password)
        if ok is not True and ok is not False:
            # An awaitable verdict (an external account backend): the caller waits for it,
            # then calls plain_succeeded() (or refuses).
            self._pending_user = username
            return ("pending", ok)
        if not ok:
            raise SaslFailure("not-authorized")
        self._check_authzid(username)
        self.username = username
        return ("success", None)

    def plain_succeeded(self) -> tuple[str, bytes | None]:
        """The external backend accepted the PLAIN password given to ``_plain``."""
        username = self._pending_user
        if username is None:
            raise SaslFailure("not-authorized")
        self._pending_user = None
        self._check_authzid(username)
        self.username = username
        return ("success", None)

    # -- SCRAM (RFC 5802 §5, §7) -----------------------------------------------------------------

    def _gs2(self, flag: str, authz: str) -> None:
        if flag == "n" or flag == "y":
            if self._plus:
                raise SaslFailure("malformed-request", f"{self.mechanism} requires channel binding")
            if flag == "y" and self._plus_advertised:
                # RFC 5802 §6: the client thinks we lack channel binding, but we offered it.
                raise SaslFailure("not-authorized", "channel binding downgrade detected")
        elif flag.startswith("p="):
            cb = flag[2:]
            if not self._plus:
                raise SaslFailure("malformed-request",
                                  f"channel binding requested with {self.mechanism}")
            if not _CB_NAME.fullmatch(cb):
                raise SaslFailure("malformed-request", "bad channel binding name")
            if cb not in self._cb_data:
                raise SaslFailure("not-authorized", "unsupported-channel-binding-type")
            self.cb_type = cb
        else:
            raise SaslFailure("malformed-request", "bad gs2 header")
        if authz:
            if not authz.startswith("a=") or len(authz) == 2:
                raise SaslFailure("malformed-request", "bad authzid in gs2 header")
            self._authzid_raw = _unescape_saslname(authz[2:])

    def _client_first(self, data: bytes) -> tuple[str, bytes | None]:
        msg = _utf8(data)
        flag, sep1, rest = msg.partition(",")
        authz, sep2, bare = rest.partition(",")
        if not sep2:
            raise SaslFailure("malformed-request", "bad gs2 header")
        self._gs2(flag, authz)
        self._gs2_header = f"{flag},{authz},"
        if bare.startswith("m="):
            raise SaslFailure("malformed-request", "extensions-not-supported")
        fields = bare.split(",")
        if len(fields) < 2 or not fields[0].startswith("n=") or not fields[1].startswith("r="):
            raise SaslFailure("malformed-request", "expected n= and r=")
        cnonce = fields[1][2:]
        if not _NONCE.fullmatch(cnonce):
            raise SaslFailure("malformed-request", "bad nonce")
        for ext in fields[2:]:
            if not _EXT_ATTR.fullmatch(ext):
                raise SaslFailure("malformed-request", "bad attribute")
        raw_user = _unescape_saslname(fields[0][2:])
        if not raw_user:
            raise SaslFailure("malformed-request", "empty username")
        self._user = username = self._prep_username(raw_user)

        cred = self._get_credential(username, self._hash)
        if cred is None or cred.mech != self._hash:
            # Unknown user: go on with a salt that is stable per user and keys nobody knows, so
            # the exchange looks the same as for an existing account.
            salt = hmac.digest(self._fake_secret,
                               f"{self._hash}\0{username}@{self._domain}".encode(),
                               "sha256")[:SALT_BYTES]
            size = hashlib.new(HASHES[self._hash]).digest_size
            cred = ScramCredential(self._hash, salt, DEFAULT_ITERATIONS,
                                   secrets.token_bytes(size), secrets.token_bytes(size))
            self._fake = True
        self._cred = cred
        self._nonce = cnonce + (self._server_nonce or secrets.token_urlsafe(24))
        self._first_bare = bare
        self._server_first = (f"r={self._nonce},s={base64.b64encode(cred.salt).decode()},"
                              f"i={cred.iterations}")
        return ("challenge", self._server_first.encode())

    def _client_final(self, data: bytes) -> tuple[str, bytes | None]:
        msg = _utf8(data)
        without_proof, sep, proof_b64 = msg.rpartition(",p=")
        if not sep:
            raise SaslFailure("malformed-request", "missing proof")
        fields = without_proof.split(",")
        if len(fields) < 2 or not fields[0].startswith("c=") or not fields[1].startswith("r="):
            raise SaslFailure("malformed-request", "expected c= and r=")
        for ext in fields[2:]:
            if not _EXT_ATTR.fullmatch(ext):
                raise SaslFailure("malformed-request", "bad attribute")
        cbind = _b64decode(fields[0][2:], "c=")
        proof = _b64decode(proof_b64, "p=")
        if not hmac.compare_digest(fields[1][2:].encode(), self._nonce.encode()):
            raise SaslFailure("not-authorized", "nonce mismatch")
        expected = self._gs2_header.encode()
        if self.cb_type is not None:
            expected += self._cb_data[self.cb_type]
        if not hmac.compare_digest(cbind, expected):
            raise SaslFailure("not-authorized", "channel binding mismatch")

        cred = self._cred
        assert cred is not None
        h = HASHES[self._hash]
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        signature = hmac.digest(cred.stored_key, auth_message, h)
        if len(proof) != len(signature):
            raise SaslFailure("not-authorized")
        client_key = (int.from_bytes(proof, "big") ^ int.from_bytes(signature, "big")).to_bytes(
            len(proof), "big")
        ok = hmac.compare_digest(hashlib.new(h, client_key).digest(), cred.stored_key)
        if not ok or self._fake:
            raise SaslFailure("not-authorized")
        self._check_authzid(self._user)
        self.username = self._user
        server_signature = hmac.digest(cred.server_key, auth_message, h)
        return ("success", b"v=" + base64.b64encode(server_signature))


def load_fake_secret(data_dir: str) -> bytes:
    """The key of the fake SCRAM salts, created once in ``data_dir`` (mode 0600)."""
    path = os.path.join(data_dir, FAKE_SECRET_FILE)
    if not os.path.exists(path):
        # Written aside, then linked into place: a reader never sees a half-written key.
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process was first: use its key
        finally:
            os.unlink(tmp)
    with open(path, "rb") as f:
        secret = f.read()
    if len(secret) < 32:
        raise ValueError(f"{path}: shorter than 32 bytes; delete it to make a new one")
    return secret


# -- channel-binding data ---------------------------------------------------------------------------

def tls_server_end_point(cert_der: bytes) -> bytes | None:
    """RFC 5929 §4.1: hash of our certificate with its signature hash (SHA-256 instead of MD5 or
    SHA-1); None when the signature has no single hash (e.g. Ed25519), where it is undefined."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_der_x509_certificate(cert_der)
    try:
        algo = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None
    if algo is None:
        return None
    if isinstance(algo, (hashes.MD5, hashes.SHA1)):
        algo = hashes.SHA256()
    h = hashes.Hash(algo)
    h.update(cert_der)
    return h.finalize()


def cert_der_from_pem(pem: bytes | str) -> bytes:
    """DER of the first certificate in a PEM file (our leaf, in a fullchain file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    if isinstance(pem, str):
        pem = pem.encode("ascii")
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def cb_data_from_ssl(ssl_object: Any, cert_der: bytes | None = None) -> dict[str, bytes]:
    """Channel-binding data available on an established TLS connection (server side).

    The ssl module cannot tell which certificate we presented, so ``cert_der`` (the DER of the
    certificate chosen for this connection, see cert_der_from_pem) is needed for
    tls-server-end-point. tls-unique only on TLS 1.2 (RFC 9266 §4 forbids it on 1.3); tls-exporter
    only on TLS 1.3 and only if the ssl module can export keying material (3.11 cannot).
    """
    out: dict[str, bytes] = {}
    version = ssl_object.version()
    export = getattr(ssl_object, "export_keying_material", None)
    if export is not None and version == "TLSv1.3":
        try:
            # RFC 9266 §2: label "EXPORTER-Channel-Binding", empty context, 32 bytes.
            data = export(b"EXPORTER-Channel-Binding", 32, b"")
        except Exception:  # noqa: BLE001 - an API we cannot test here; omit rather than fail
            data = None
        if isinstance(data, bytes) and data:
            out["tls-exporter"] = data
    if cert_der:
        tsep = tls_server_end_point(cert_der)
        if tsep:
            out["tls-server-end-point"] = tsep
    if version == "TLSv1.2":
        unique = ssl_object.get_channel_binding("tls-unique")
        if unique:
            out["tls-unique"] = unique
    return out
