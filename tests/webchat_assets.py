"""The pinned Converse.js tarball for the web chat tests, fetched once with npm into .cache/
(the same `npm pack` that `python -m mbxmpp webchat fetch` runs), integrity-checked on use."""

from __future__ import annotations

import os

from mbxmpp.modules.webchat import assets

CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache")


def converse_tarball() -> str:
    path = os.path.join(CACHE, f"{assets.PACKAGE}-{assets.VERSION}.tgz")
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        got = assets.npm_pack(CACHE)
        if got != path:
            os.replace(got, path)
    return path
