"""[webchat]: the web chat's options (read by mbxmpp/options.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...options import STR, option, show


def _language(lang: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})*", lang):
        raise ValueError(f'expected a language code such as "en", "de" or "pt_BR", got {show(lang)}')
    return lang


@dataclass(frozen=True, slots=True)
class WebChatConfig:
    """the web chat at https://<host>:<http port>/chat (Converse.js)"""
    language: str = option("en", STR, 'interface language: "en", "de", "fr", "pt_BR", ...', check=_language)
    assets_dir: str | None = option(None, STR, "where `python -m mbxmpp webchat fetch` unpacks it",
                                    example="/var/lib/mbxmpp/webchat", default_doc="<data_dir>/webchat")
