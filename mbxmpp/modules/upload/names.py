"""Names and identifiers of uploads: URL-safe base64, file names, media types."""

from __future__ import annotations

import base64
import re
import unicodedata

MAX_NAME = 128             # characters kept of a file name
MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sanitize_filename(name: str) -> str:
    """A file name safe in a URL path segment and a Content-Disposition header: no directories,
    no control or separator characters, no leading dot, at most MAX_NAME characters."""
    name = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    kept = "".join(c if (c.isalnum() or c in "._-+()") else "_" for c in name
                   if unicodedata.category(c)[0] not in "CZ" or c == " ")
    kept = re.sub(r"_{2,}", "_", kept).strip("._ ")
    if len(kept) > MAX_NAME:
        stem, dot, ext = kept.rpartition(".")
        kept = (stem[:MAX_NAME - len(ext) - 1] + "." + ext) if dot and len(ext) <= 16 else kept[:MAX_NAME]
    return kept or "file"


def media_type(value: str | None) -> str:
    """``type/subtype`` of a Content-Type value, lower-cased, without parameters ('' if none)."""
    return (value or "").split(";", 1)[0].strip().lower()


def is_media_type(value: str) -> bool:
    return MIME_TYPE.fullmatch(value) is not None
