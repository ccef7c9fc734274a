"""Real Prosody (Debian package) for the migration tests: its own config, data dir and ports,
users registered with prosodyctl, data created over XMPP by slixmpp clients."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.daemon import free_ports

HOST = "prosody.test"        # internal_hashed: SCRAM-SHA-1 keys in accounts/*.dat
PLAIN_HOST = "plain.test"    # internal_plain: the password itself


def available() -> bool:
    return shutil.which("prosody") is not None and shutil.which("prosodyctl") is not None


def _self_signed(d: Path) -> tuple[Path, Path]:
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={HOST}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class Prosody:
    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="mbxmpp-prosody-")
        self.dir = Path(self.tmp.name)
        self.data = self.dir / "data"
        self.data.mkdir()
        self.c2s, self.tls = free_ports(2)
        cert, key = _self_signed(self.dir)
        self.config = self.dir / "prosody.cfg.lua"
        self.config.write_text(f"""
run_as_root = true
daemonize = false
pidfile = "{self.dir}/prosody.pid"
data_path = "{self.data}"
log = {{ info = "{self.dir}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.c2s} }}
c2s_direct_tls_ports = {{ }}
c2s_require_encryption = true
storage = "internal"
default_archive_policy = true
archive_expires_after = "never"
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping"; "vcard"; "pep"; "private";
                     "offline"; "mam"; "blocklist" }}
modules_disabled = {{ "s2s" }}
ssl = {{ certificate = "{cert}"; key = "{key}"; }}
http_ports = {{ }}
https_ports = {{ }}
VirtualHost "{HOST}"
    authentication = "internal_hashed"
VirtualHost "{PLAIN_HOST}"
    authentication = "internal_plain"
""")
        self.proc: subprocess.Popen | None = None

    def register(self, local: str, host: str, password: str) -> None:
        subprocess.run(["prosodyctl", "--config", str(self.config), "register", local, host,
                        password], check=True, capture_output=True, timeout=60)

    def start(self, timeout: float = 30.0) -> None:
        self._log = open(self.dir / "stdout.log", "ab")  # noqa: SIM115 (open while it runs)
        self.proc = subprocess.Popen(["prosody", "--config", str(self.config), "-F"],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prosody exited {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.c2s), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("prosody did not start:\n" + self.log())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._log.close()
        self.proc = None

    def log(self) -> str:
        out = ""
        for f in ("prosody.log", "stdout.log"):
            p = self.dir / f
            if p.exists():
                out += p.read_text(errors="replace")[-5000:]
        return out

    def export_xep0227(self, out: Path) -> None:
        """prosody-migrator from the internal storage to mod_storage_xep0227 (one file per
        account, in ``out``): Prosody's own XEP-0227 writer."""
        out.mkdir()
        cfg = self.dir / "migrator.cfg.lua"
        stores = '"accounts", "roster", "vcard", "private", "pep-pubsub", "archive-archive"'
        cfg.write_text(f"""
input {{ type = "internal"; path = "{self.data}"; hosts = {{
    ["{HOST}"] = {{ {stores} }}; ["{PLAIN_HOST}"] = {{ {stores} }} }} }}
output {{ type = "xep0227"; path = "{out}"; }}
""")
        # The migrator drops root for the 'prosody' user (no run_as_root here): let it in.
        for p in [self.dir, *self.dir.rglob("*")]:
            os.chmod(p, 0o777 if p.is_dir() else 0o666)
        # mod_storage_xep0227 writes into Prosody's data path, which the migrator takes from
        # its script (CFG_DATADIR): a copy of the real script with that one line changed.
        script = self.dir / "prosody-migrator"
        text = Path(shutil.which("prosody-migrator") or "").read_text()
        script.write_text(re.sub(r"(?m)^CFG_DATADIR=.*$", f"CFG_DATADIR='{out}';", text))
        r = subprocess.run(["lua5.4", str(script), "--config", str(cfg), "input", "output"],
                           capture_output=True, text=True, timeout=120, cwd=self.dir,
                           check=False)
        if r.returncode != 0:
            raise RuntimeError(f"prosody-migrator failed:\n{r.stdout}\n{r.stderr}")

    def cleanup(self) -> None:
        self.stop()
        self.tmp.cleanup()
