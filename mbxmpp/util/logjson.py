"""Logging set-up: ``[server] log_format = "text"`` (human lines) or ``"json"`` (one JSON
object per line, for journald/Loki/ELK: time, level, logger, message, and the traceback when
there is one). Log lines carry addresses and counts, never a password or a message body: the
code logs stanzas by kind, not by content."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Set the root logger's level and its handler's format (at start and on reload)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    formatter = JSONFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    for handler in root.handlers:
        handler.setFormatter(formatter)
    # Python's warnings go through logging too: a JSON log stays one object per line.
    logging.captureWarnings(log_format == "json")


def loggable(item: Any) -> str:
    """What a log line may say about a stanza or nonza: its name, addressing and the names of
    its children, never their text (a message body, a SASL <auth/> carrying a password)."""
    from ..xml.element import Element
    if not isinstance(item, Element):
        return repr(item)  # a stream header, STREAM_END: no content
    attrs = " ".join(f"{k}={item.attrs[k]!r}" for k in ("type", "id", "from", "to") if k in item.attrs)
    children = ",".join(c.tag for c in item.elements())
    return f"<{item.tag} xmlns={item.ns!r}{' ' + attrs if attrs else ''}> [{children}]"
