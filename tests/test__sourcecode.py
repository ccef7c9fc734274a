"""The source passes ruff and mypy with the project's settings (pyproject.toml), so that the
README's test command (which CI runs) checks them too; asyncpg's test__sourcecode pattern.
Both tools are pinned in setup.py's test extras: a new release cannot fail this on its own."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_ruff() -> None:
    r = run("ruff", "check", "mbxmpp", "perf", "tests", "setup.py")
    assert r.returncode == 0, f"ruff found:\n{r.stdout}{r.stderr}"


def test_mypy() -> None:
    r = run("mypy", "mbxmpp")
    assert r.returncode == 0, f"mypy found:\n{r.stdout}{r.stderr}"
