"""SCRAM credentials (RFC 5802, RFC 7677): derivation, verification, bulk-import lines. Pure functions."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import precis_i18n

from mbxmpp.jid import JID, JIDError

__all__ = ["HASHES", "ScramCredential", "saslprep", "derive", "make_credentials", "verify_password",
           "parse_import_line", "DEFAULT_ITERATIONS", "SALT_BYTES"]

HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}
DIGEST_SIZES = {"SCRAM-SHA-1": 20, "SCRAM-SHA-256": 32}
DEFAULT_ITERATIONS = 4096  # RFC 7677 §4: at least 4096
SALT_BYTES = 16

_OPAQUE = precis_i18n.get_profile("OpaqueString")
_PRINTABLE_ASCII = re.compile(r"[ -~]+")


@dataclass(frozen=True, slots=True)
class ScramCredential:
    mech: str  # "SCRAM-SHA-1" | "SCRAM-SHA-256" (never a -PLUS name: the credential is the same)
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def to_record(self) -> list[Any]:
        """A msgpack-friendly list; the enclosing storage record carries the schema version."""
        return [self.mech, self.salt, self.iterations, self.stored_key, self.server_key]

    @classmethod
    def from_record(cls, rec: list[Any] | tuple[Any, ...]) -> ScramCredential:
        mech, salt, iterations, stored_key, server_key = rec
        return cls(str(mech), bytes(salt), int(iterations), bytes(stored_key), bytes(server_key))


def saslprep(password: str) -> str:
    """Prepare a password with PRECIS OpaqueString (RFC 8265 §4.2, as RFC 7677 asks); ValueError."""
    if password.isascii() and _PRINTABLE_ASCII.fullmatch(password):
        return password  # OpaqueString is the identity on printable ASCII
    try:
        return str(_OPAQUE.enforce(password))
    except UnicodeError as e:
        raise ValueError(f"password not allowed: {getattr(e, 'reason', e)}") from None


def _hmac(hash_name: str, key: bytes, msg: bytes) -> bytes:
    return hmac.digest(key, msg, hash_name)


def keys_from_salted(mech: str, salted_password: bytes) -> tuple[bytes, bytes, bytes]:
    """(ClientKey, StoredKey, ServerKey) from SaltedPassword (RFC 5802 §3)."""
    h = HASHES[mech]
    client_key = _hmac(h, salted_password, b"Client Key")
    return client_key, hashlib.new(h, client_key).digest(), _hmac(h, salted_password, b"Server Key")


def salted_password(mech: str, password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(HASHES[mech], saslprep(password).encode("utf-8"), salt, iterations)


def derive(mech: str, password: str, salt: bytes | None = None,
           iterations: int = DEFAULT_ITERATIONS) -> ScramCredential:
    """Derive the stored credential for ``mech``; ValueError for an unknown mech or bad password."""
    if mech not in HASHES:
        raise ValueError(f"unknown SCRAM mechanism {mech!r}")
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    _, stored_key, server_key = keys_from_salted(mech, salted_password(mech, password, salt,
                                                                       iterations))
    return ScramCredential(mech, salt, iterations, stored_key, server_key)


def make_credentials(password: str,
                     iterations: int = DEFAULT_ITERATIONS) -> dict[str, ScramCredential]:
    """Credentials for every SCRAM mechanism, each with its own random salt."""
    return {mech: derive(mech, password, None, iterations) for mech in HASHES}


def verify_password(cred: ScramCredential, password: str) -> bool:
    """Whether ``password`` matches ``cred`` (constant-time comparison of StoredKey)."""
    try:
        salted = salted_password(cred.mech, password, cred.salt, cred.iterations)
    except ValueError:
        return False
    return hmac.compare_digest(keys_from_salted(cred.mech, salted)[1], cred.stored_key)


def _b64(field: str, value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{field} is not valid base64") from None


def parse_import_line(line: str) -> tuple[str, str | None, ScramCredential | None]:
    """Parse one bulk-import line: ``JID PASSWORD`` or
    ``JID scram MECH SALT_B64 ITERATIONS STORED_KEY_B64 SERVER_KEY_B64``.

    Returns (normalized bare JID, password or None, credential or None). The password is the rest of
    the line after the JID and its separating whitespace, without the line ending (it may contain
    spaces). Blank lines and comments are the caller's to skip. Raise ValueError with a message.
    """
    line = line.rstrip("\r\n")
    m = re.match(r"\s*(\S+)(?:[ \t]+(.*))?\Z", line, re.S)
    if m is None:
        raise ValueError("empty line")
    jid_s, rest = m.group(1), m.group(2)
    try:
        jid = JID.parse(jid_s)
    except JIDError as e:
        raise ValueError(f"invalid JID {jid_s!r}: {e.text}") from None
    if jid.local is None or jid.resource is not None:
        raise ValueError(f"not an account JID (user@domain): {jid_s!r}")
    if not rest:
        raise ValueError(f"missing password for {jid.bare}")
    fields = rest.split()
    if len(fields) > 1 and fields[0] == "scram":
        if len(fields) != 6:
            raise ValueError("scram line needs: JID scram MECH SALT_B64 ITERATIONS "
                             "STORED_KEY_B64 SERVER_KEY_B64")
        mech, salt_s, iter_s, stored_s, server_s = fields[1:]
        if mech not in HASHES:
            raise ValueError(f"unknown SCRAM mechanism {mech!r} (expected one of "
                             f"{', '.join(HASHES)})")
        if not re.fullmatch(r"[0-9]+", iter_s) or int(iter_s) < 1:
            raise ValueError(f"ITERATIONS must be a positive integer, not {iter_s!r}")
        salt = _b64("SALT_B64", salt_s)
        if not salt:
            raise ValueError("SALT_B64 is empty")
        stored_key, server_key = _b64("STORED_KEY_B64", stored_s), _b64("SERVER_KEY_B64", server_s)
        size = DIGEST_SIZES[mech]
        if len(stored_key) != size or len(server_key) != size:
            raise ValueError(f"{mech} keys must be {size} bytes")
        return jid.bare, None, ScramCredential(mech, salt, int(iter_s), stored_key, server_key)
    try:
        saslprep(rest)
    except ValueError as e:
        raise ValueError(f"{e} (for {jid.bare})") from None
    return jid.bare, rest, None
