from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.daemon import Daemon

PASSWORD = "pw-raw"
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration is the raw-socket tier: ``-m integration`` selects it.
    (A conftest's ``pytestmark`` is not applied to the modules beside it; this hook sees every
    collected item, so it marks only the ones in this directory.)"""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


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


@pytest.fixture(scope="module")
def dovecot():
    """A real Dovecot (authentication only) with the test accounts (tests/authservers.py)."""
    from tests.authservers import Dovecot
    d = Dovecot()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def slapd():
    """A real OpenLDAP slapd with the test accounts (tests/authservers.py)."""
    from tests.authservers import Slapd
    s = Slapd()
    yield s
    s.stop()
