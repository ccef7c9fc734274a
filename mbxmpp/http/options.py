"""[http]: the HTTP side's options (read by mbxmpp/options.py)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ..options import BOOL, DURATION, LISTEN, STR, STR_LIST, Listen, option, show


def _public_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f'expected an absolute http(s) URL such as "https://example.org:5443", got {show(url)}')
    return url.rstrip("/")


def _origin(o: str) -> str:
    parts = urlsplit(o)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment:
        raise ValueError(f'expected origins such as "https://chat.example.org", got {show(o)}')
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True, slots=True)
class HTTPConfig:
    """HTTPS: upload, BOSH, WebSocket, web chat, metrics"""
    listen: tuple[Listen, ...] = option((("127.0.0.1", 5443),), LISTEN, "HTTPS (or HTTP) listeners",
                                        example=(("::", 5443),))
    public_url: str | None = option(None, STR, "base URL given to clients", check=_public_url,
                                    example="https://example.org:5443",
                                    default_doc="https://<first domain>:<first listen port>")
    tls: bool = option(True, BOOL, "false: plain HTTP, for running behind a TLS-terminating proxy")
    websocket_origins: tuple[str, ...] = option(
        (), STR_LIST, "browser origins allowed on /xmpp-websocket (and, for CORS, on /http-bind) besides the "
        "hosts' own https origins", each=_origin, example=("https://chat.example.org",))
    bosh_inactivity: float = option(30.0, DURATION, "BOSH: a session without a request for this long is lost "
                                    "(SM may hibernate it)", minimum=0.1)
    bosh_max_pause: float = option(120.0, DURATION, "BOSH: the longest pause (XEP-0124 maxpause) a client "
                                   "may ask for", minimum=1.0)
