"""The operator's command line: accounts, bulk import, check-config, defaults, shutdown."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time

import pytest

from mbxmpp.stream.scram import derive
from tests.daemon import Daemon
from tests.rawclient import RawClient



@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.cleanup()


def test_user_lifecycle(daemon):
    r = daemon.cli("user", "add", "alice@localhost", "--password", "pw1")
    assert "created" in r.stdout
    assert daemon.cli("user", "add", "alice@localhost", "--password", "x", check=False).returncode == 1
    daemon.cli("user", "add", "bob@localhost", input="pw2\n")
    assert daemon.cli("user", "list").stdout.split() == ["alice@localhost", "bob@localhost"]
    daemon.cli("user", "passwd", "alice@localhost", "--password", "new")
    daemon.cli("user", "del", "bob@localhost")
    assert daemon.cli("user", "list", "localhost").stdout.split() == ["alice@localhost"]
    bad = daemon.cli("user", "add", "carol@elsewhere.example", "--password", "x", check=False)
    assert bad.returncode == 2 and "not one of this server's domains" in bad.stderr
    bad = daemon.cli("user", "add", "not a jid@", "--password", "x", check=False)
    assert bad.returncode == 2


async def test_import_plain_and_scram_then_login(daemon, tmp_path):
    cred = derive("SCRAM-SHA-1", "migrated-pw", b"0123456789abcdef", 4096)
    lines = [f"user{i}@localhost pw{i}" for i in range(60)]
    lines.append("migrated@localhost scram SCRAM-SHA-1 "
                 f"{base64.b64encode(cred.salt).decode()} {cred.iterations} "
                 f"{base64.b64encode(cred.stored_key).decode()} {base64.b64encode(cred.server_key).decode()}")
    lines.append("broken-line-without-password")
    f = tmp_path / "accounts.txt"
    f.write_text("\n".join(lines) + "\n")
    r = daemon.cli("user", "import", str(f), check=False)
    assert r.returncode == 1 and "imported 61 accounts" in r.stdout and "line 62" in r.stderr
    assert len(daemon.cli("user", "list").stdout.split()) == 61
    daemon.start()
    try:
        c = await RawClient.connect(daemon.c2s)
        assert (await c.login("user59", "pw59")).startswith("user59@localhost/")
        await c.close()
    finally:
        assert daemon.stop() == 0


def test_check_config_reports_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\ndomains = ["example.org"]\nbogus = 1\n[c2s]\nmax_stanza_size = "lots"\n')
    r = subprocess.run([sys.executable, "-m", "mbxmpp", "-c", str(bad), "check-config"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "server.bogus" in r.stderr and "c2s.max_stanza_size" in r.stderr


def test_check_config_ok(daemon):
    r = daemon.cli("check-config")
    assert r.returncode == 0 and "configuration OK" in r.stdout


def test_sigterm_is_a_clean_shutdown(daemon):
    daemon.start()
    assert daemon.stop(signal.SIGTERM) == 0
    assert "Traceback" not in daemon.log()


def test_embedded_defaults_print_how_to_add_a_user(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    p = subprocess.Popen([sys.executable, "-m", "mbxmpp"], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (tmp_path / "mbxmpp-data" / "selfsigned.crt").exists():
            time.sleep(0.1)
    finally:
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=20)
    assert "user add" in out, out
    assert (tmp_path / "mbxmpp-data" / "selfsigned.crt").exists()
    assert p.returncode == 0, out


def test_archive_sizes_report(daemon):
    r = daemon.cli("archive", "sizes")
    assert r.returncode == 0 and "total" in r.stdout


def test_backup_while_serving_is_a_working_copy(tmp_path):
    """`backup` copies the database while the daemon writes; a server started on the copy has
    the accounts and an archive written before the copy."""
    import asyncio

    from tests.daemon import Daemon
    from tests.rawclient import RawClient
    d = Daemon()
    try:
        d.add_user("alice@localhost", "pw")
        d.start()

        async def chat() -> None:
            c = await RawClient.connect(d.c2s)
            await c.login("alice", "pw")
            await c.send("<message to='alice@localhost' type='chat' id='m1'><body>kept</body></message>")
            await c.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
            while (await c.element()).get("id") != "p1":
                pass
            await c.close()
        asyncio.run(chat())
        dest = tmp_path / "copy"
        out = d.cli("backup", str(dest))
        assert "copied" in out.stdout
        assert d.cli("backup", str(dest), check=False).returncode == 1  # never over an existing folder
        copy = Daemon()
        try:
            with open(copy.config_path) as f:
                text = f.read()
            with open(copy.config_path, "w") as f:
                f.write(text.replace(f'data_dir = "{copy.dir}/data"', f'data_dir = "{dest}"'))
            assert "alice@localhost" in copy.cli("user", "list").stdout
            assert "alice@localhost" in copy.cli("archive", "sizes").stdout
        finally:
            copy.cleanup()
    finally:
        d.finish()
