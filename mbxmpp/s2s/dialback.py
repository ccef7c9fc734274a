"""Server Dialback keys (XEP-0220 §2.1, XEP-0185): HMAC-SHA256 keyed with the SHA-256 of a secret
kept in the data dir, over the receiving domain, the originating domain and the stream id. The
stream id is random per stream, so a key is never valid for another stream."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

SECRET_FILE = "s2s-dialback.secret"


def load_secret(data_dir: str) -> bytes:
    """The dialback secret (created at first use, readable by the server only)."""
    path = os.path.join(data_dir, SECRET_FILE)
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
        if len(secret) >= 32:
            return secret
    except FileNotFoundError:
        pass
    os.makedirs(data_dir, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    os.replace(path + ".tmp", path)
    return secret


def dialback_key(secret: bytes, receiving: str, originating: str, stream_id: str) -> str:
    k = hashlib.sha256(secret).hexdigest().encode()
    msg = f"{receiving} {originating} {stream_id}".encode()
    return hmac.new(k, msg, hashlib.sha256).hexdigest()


def key_matches(secret: bytes, receiving: str, originating: str, stream_id: str, key: str) -> bool:
    return hmac.compare_digest(dialback_key(secret, receiving, originating, stream_id).encode(),
                               key.strip().encode())
