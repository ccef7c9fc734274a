"""Encryption at rest for uploaded files: AES-256-GCM in fixed-size chunks, with a key derived
from a secret that exists only in the file's URL.

Layout of a stored file: the chunks, each ``CHUNK`` bytes of plaintext (the last one shorter,
possibly empty) followed by its 16-byte tag. The nonce of chunk ``i`` is ``i`` (11 bytes,
big-endian) and a flag byte, 1 for the last chunk and 0 otherwise (the STREAM construction): a
chunk moved, dropped or duplicated, or a file cut at a chunk boundary, fails authentication. The
associated data binds every chunk to the slot id and the plaintext size, so the metadata cannot be
swapped or edited either. The name and content type are sealed the same way under flag 2.

The key is HKDF-SHA256(secret, salt=slot id). A separate HKDF output (the verifier) is kept in the
metadata so that a wrong URL secret is told apart from damaged data without decrypting; it reveals
nothing about the key (both are independent outputs of a 256-bit secret).
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CHUNK = 64 * 1024
TAG = 16
SEALED_CHUNK = CHUNK + TAG
_LAST, _META = 1, 2
_VERSION = b"mbxmpp-upload-v1"

def _derive(secret: bytes, slot: str, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=slot.encode(), info=_VERSION + info).derive(secret)


def verifier(secret: bytes, slot: str) -> bytes:
    return _derive(secret, slot, b" verifier")


def check_verifier(secret: bytes, slot: str, expected: bytes) -> bool:
    return hmac.compare_digest(verifier(secret, slot), expected)


def sealed_size(size: int) -> int:
    """Bytes on disk for ``size`` bytes of plaintext (an empty file is one empty last chunk)."""
    return size + TAG * chunk_count(size)


def chunk_count(size: int) -> int:
    return max(1, -(-size // CHUNK))


def _nonce(index: int, flag: int) -> bytes:
    return index.to_bytes(11, "big") + bytes((flag,))


class FileCipher:
    """Seals and opens the chunks of one file."""

    __slots__ = ("_ad", "_aead", "count", "size")

    def __init__(self, secret: bytes, slot: str, size: int) -> None:
        self._aead = AESGCM(_derive(secret, slot, b" key"))
        self._ad = _VERSION + slot.encode() + size.to_bytes(8, "big")
        self.size = size
        self.count = chunk_count(size)

    def seal(self, index: int, plaintext: bytes) -> bytes:
        last = index == self.count - 1
        return self._aead.encrypt(_nonce(index, _LAST if last else 0), plaintext, self._ad)

    def open(self, index: int, sealed: bytes) -> bytes:
        """The plaintext of chunk ``index``; InvalidTag if it was not sealed as that chunk."""
        last = index == self.count - 1
        return self._aead.decrypt(_nonce(index, _LAST if last else 0), sealed, self._ad)

    def seal_meta(self, meta: dict[str, Any]) -> bytes:
        return self._aead.encrypt(_nonce(0, _META), json.dumps(meta).encode(), self._ad)

    def open_meta(self, sealed: bytes) -> dict[str, Any]:
        return json.loads(self._aead.decrypt(_nonce(0, _META), sealed, self._ad))  # type: ignore[no-any-return]

__all__ = [
    "CHUNK",
    "SEALED_CHUNK",
    "TAG",
    "FileCipher",
    "InvalidTag",
    "check_verifier",
    "chunk_count",
    "sealed_size",
    "verifier",
]
