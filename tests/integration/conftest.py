from __future__ import annotations

from typing import Iterator

import pytest

from tests.daemon import Daemon

PASSWORD = "pw-raw"


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(domains=("localhost", "example.test"),
               extra="[accounts]\nchat_plans = [\"paid\"]\nrefusal_text = \"Chat is not part of your plan.\"\n")
    for u in ("alice@localhost", "bob@localhost", "eve@localhost", "zed@example.test"):
        d.add_user(u, PASSWORD)
    d.add_user("free@localhost", PASSWORD, plan="free")
    d.start()
    yield d
    d.finish()
