"""Real Prosody (Debian package) for the migration tests: its own config, data dir and ports,
users registered with prosodyctl, data created over XMPP by slixmpp clients."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from slixmpp import JID
from slixmpp.plugins.xep_0054.stanza import VCardTemp
from slixmpp.xmlstream import ET

from tests.daemon import free_ports
from tests.realclient.conftest import connect, disconnect, subscribe_both

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


EJ_HOST = "ej.test"            # auth_password_format: scram (the default of Debian's config)
EJ_PLAIN_HOST = "plain.ej.test"  # auth_password_format: plain


def ejabberd_available() -> bool:
    return shutil.which("ejabberdctl") is not None and shutil.which("erl") is not None


class Ejabberd:
    """ejabberd (Debian package) in the foreground, with its own config, spool, logs, node name
    and Erlang distribution port (no epmd)."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="mbxmpp-ejabberd-")
        self.dir = Path(self.tmp.name)
        for sub in ("db", "logs", "export"):
            (self.dir / sub).mkdir()
        os.chmod(self.dir / "export", 0o777)
        self.c2s, dist = free_ports(2)
        cert, key = _self_signed(self.dir)
        pem = self.dir / "ejabberd.pem"
        pem.write_text(key.read_text() + cert.read_text())
        self.config = self.dir / "ejabberd.yml"
        self.config.write_text(f"""
hosts:
  - "{EJ_HOST}"
  - "{EJ_PLAIN_HOST}"
loglevel: info
certfiles:
  - "{pem}"
listen:
  -
    port: {self.c2s}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
auth_method: internal
auth_password_format: scram
host_config:
  "{EJ_PLAIN_HOST}":
    auth_password_format: plain
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
shaper_rules:
  max_user_offline_messages: 100
modules:
  mod_roster: {{}}
  mod_vcard: {{}}
  mod_private: {{}}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_disco: {{}}
  mod_ping: {{}}
  mod_caps: {{}}
  mod_pubsub:
    plugins: ["flat", "pep"]
  mod_mam:
    default: always
""")
        self.ctl_cfg = self.dir / "ejabberdctl.cfg"
        self.ctl_cfg.write_text(f"""
EXEC_CMD=as_current_user
ERLANG_NODE=migtest{dist}@localhost
ERL_DIST_PORT={dist}
EJABBERD_PID_PATH={self.dir}/ejabberd.pid
EJABBERD_BYPASS_WARNINGS=true
""")
        self.env = dict(os.environ, HOME=str(self.dir))
        self.proc: subprocess.Popen | None = None

    def ctl(self, *args: str, timeout: float = 60) -> str:
        r = subprocess.run(["ejabberdctl", "--config", str(self.config), "--ctl-config",
                            str(self.ctl_cfg), "--logs", str(self.dir / "logs"), "--spool",
                            str(self.dir / "db"), *args], capture_output=True, text=True,
                           timeout=timeout, env=self.env, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"ejabberdctl {' '.join(args)}: {r.returncode}\n{r.stdout}{r.stderr}")
        return r.stdout

    def start(self, timeout: float = 90.0) -> None:
        self._log = open(self.dir / "stdout.log", "ab")  # noqa: SIM115 (open while it runs)
        self.proc = subprocess.Popen(["ejabberdctl", "--config", str(self.config), "--ctl-config",
                                      str(self.ctl_cfg), "--logs", str(self.dir / "logs"),
                                      "--spool", str(self.dir / "db"), "foreground"],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ejabberd exited {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.c2s), timeout=0.2).close()
                self.ctl("status")
                return
            except (OSError, RuntimeError):
                time.sleep(0.5)
        raise RuntimeError("ejabberd did not start:\n" + self.log())

    def export_piefxis(self) -> Path:
        """``ejabberdctl export_piefxis DIR``; returns the main file (it includes the others)."""
        out = self.dir / "export"
        self.ctl("export_piefxis", str(out))
        mains = [p for p in out.iterdir() if p.suffix == ".xml" and "_" not in p.stem]
        assert len(mains) == 1, sorted(out.iterdir())
        return mains[0]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.ctl("stop")
                self.proc.wait(30)
            except (RuntimeError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self._log.close()
        self.proc = None

    def log(self) -> str:
        p = self.dir / "logs" / "ejabberd.log"
        return p.read_text(errors="replace")[-5000:] if p.exists() else ""

    def cleanup(self) -> None:
        self.stop()
        self.tmp.cleanup()


# -- the data both peers' tests make over XMPP and look for in mbxmpp afterwards ----------------
NS_PREFS = "example:prefs"


async def make_common_data(a: Any, b: Any, carol: str, full_name: str) -> None:
    """``a`` and ``b`` subscribed both ways; ``a`` names ``carol`` (offline) in two groups and asks
    for her presence (her pending request); a vCard with ``full_name``; private XML."""
    await subscribe_both(a, b)
    await a.update_roster(JID(carol), name="Carol C", groups=["Work", "Friends"])
    a.send_presence(pto=carol, ptype="subscribe")
    vcard = VCardTemp()
    vcard["FN"] = full_name
    await a.plugin["xep_0054"].publish_vcard(vcard)
    iq = a.make_iq_set()
    prefs = ET.SubElement(ET.SubElement(iq.xml, "{jabber:iq:private}query"), f"{{{NS_PREFS}}}prefs")
    ET.SubElement(prefs, f"{{{NS_PREFS}}}theme").text = "dark"
    await iq.send(timeout=10)


async def check_common_data(a: Any, bob: str, carol: str, full_name: str) -> None:
    roster = a.client_roster
    assert roster[bob]["subscription"] == "both"
    assert roster[carol]["subscription"] == "none" and roster[carol]["pending_out"]
    assert roster[carol]["name"] == "Carol C"
    assert sorted(roster[carol]["groups"]) == ["Friends", "Work"]
    v = await a.plugin["xep_0054"].get_vcard(a.boundjid.bare, local=False, cached=False)
    assert v["vcard_temp"]["FN"] == full_name
    iq = a.make_iq_get(queryxmlns="jabber:iq:private")
    iq.xml.find("{jabber:iq:private}query").append(ET.Element(f"{{{NS_PREFS}}}prefs"))
    priv = await iq.send(timeout=10)
    assert priv.xml.find(f".//{{{NS_PREFS}}}theme").text == "dark"


async def check_offline_and_request(d: Any, carol: str, password: str, body: str,
                                    requester: str) -> None:
    """At carol's first login: the message that waited for her, and the subscription request."""
    c = await connect(d, carol + "/new", password, get_roster=False, send_presence=False)
    subs: asyncio.Queue = asyncio.Queue()
    c.add_event_handler("presence_subscribe", subs.put_nowait)
    c.send_presence()
    msg = await asyncio.wait_for(c.messages.get(), 10)
    assert msg["body"] == body
    req = await asyncio.wait_for(subs.get(), 10)
    assert req["from"].bare == requester
    await disconnect(c)
