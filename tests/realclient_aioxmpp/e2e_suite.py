"""Run aioxmpp's own end-to-end suite (its ``tests/*/test_e2e.py``) against a spawned mbxmpp.

The suite is not in aioxmpp's sdist and is not vendored here; point this at a checkout's tests:

    PYTHONPATH=. python -m tests.realclient_aioxmpp.e2e_suite /path/to/aioxmpp [pytest args]

It starts the daemon (shipped defaults, ephemeral ports), writes the ``e2etest.ini`` of aioxmpp's
StaticPasswordProvisioner with twelve accounts, and runs ``pytest -p aioxmpp.e2etest
--e2etest-only`` in that directory. Certificate checks are off there (``no_verify``): the
provisioner has no way to trust the daemon's self-signed certificate but pinning.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from tests.daemon import Daemon

ACCOUNTS = [(f"e2e{i}", "e2e password") for i in range(12)]


def main(checkout: str, *pytest_args: str) -> int:
    d = Daemon()
    for user, password in ACCOUNTS:
        d.add_user(f"{user}@localhost", password)
    d.start()
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as ini:
            ini.write(f"""[global]
provisioner=aioxmpp.e2etest.provision.StaticPasswordProvisioner
timeout=10

[aioxmpp.e2etest.provision.StaticPasswordProvisioner]
host=127.0.0.1
domain=localhost
port={d.c2s}
no_verify=true
accounts={ACCOUNTS!r}
""")
        try:
            return subprocess.run(
                [sys.executable, "-m", "pytest", "-p", "aioxmpp.e2etest", "-p", "no:cacheprovider",
                 f"--e2etest-config={ini.name}", "--e2etest-only", "-o", "asyncio_mode=strict",
                 *pytest_args], cwd=checkout, check=False).returncode
        finally:
            os.unlink(ini.name)
    finally:
        d.finish()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
