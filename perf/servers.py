"""Servers under test: mbxmpp, Prosody and ejabberd, each started by the suite in its own temp dir.

Every server listens on loopback only, on free ports, with the same self-signed ECDSA P-256
certificate, TLS required,
SCRAM-SHA-1 credentials that all share one salt (so the load generator derives the SCRAM keys once),
no archiving, no s2s, pinned to the server CPUs with taskset and with its open-file soft limit raised
to the hard limit. Accounts are provisioned in bulk: mbxmpp through ``user import`` (scram lines),
Prosody by writing its internal storage files, ejabberd through one Erlang RPC client that calls
``ejabberd_auth:try_register`` with a precomputed #scram{} record. Rosters are provisioned over the
wire by the scenarios (roster sets and subscription handshakes work on every server).
"""

from __future__ import annotations

import base64
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .xmppclient import scram_keys

DOMAIN = "localhost"
PASSWORD = "perf-Pass-1"
SALT = b"mbxmpp-perf-salt"       # one salt for every account: one PBKDF2 for the whole run
ITERATIONS = 4096
REPO = Path(__file__).resolve().parent.parent


_ISSUED: set[int] = set()


def free_port() -> int:
    """A free loopback port not handed out before in this process (the kernel may give the
    port it just freed again, and one config asks for several before any is bound)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ISSUED:
            _ISSUED.add(port)
            return port


def nofile_hard() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


NICE = 0   # set by run.py --nice: scheduling priority of the servers (and the generator)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # own session (and so process group: stop() signals the whole server tree, nothing else)
    os.setsid()
    if NICE:
        set_priority(NICE)


def set_priority(nice: int) -> None:
    """Raise this process's priority. With autogroup scheduling (Linux default) a nice value only
    counts inside the session's group, so the group's nice is set too (call after setsid)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:
        pass
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:
        pass


def scram_sha1() -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) of PASSWORD with SALT, SCRAM-SHA-1."""
    _, stored, server = scram_keys("sha1", PASSWORD, SALT, ITERATIONS)
    return stored, server


def self_signed(dirpath: Path) -> tuple[Path, Path]:
    cert, key = dirpath / "cert.pem", dirpath / "key.pem"
    if not cert.exists():
        # ECDSA P-256, for every server alike (an RSA-2048 signature costs ~1 ms of server CPU
        # per handshake here and would cap a peer's login rate below what it can do)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                        str(key), "-out", str(cert), "-days", "3650", "-subj", f"/CN={DOMAIN}",
                        "-addext", f"subjectAltName=DNS:{DOMAIN}"],
                       check=True, capture_output=True)
    return cert, key


def proc_children(pid: int) -> list[int]:
    """All descendants of pid (from /proc)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def proc_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    return sum(cpu_user_system(pid))


def cpu_user_system(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` so far, in user space and in the kernel."""
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    hz = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / hz, int(fields[12]) / hz


def proc_io(pid: int) -> dict[str, int]:
    """The counters of /proc/PID/io (syscr, syscw: read and write system calls so far)."""
    with open(f"/proc/{pid}/io") as f:
        return {k: int(v) for k, v in (line.split(":") for line in f if ":" in line)}


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ServerUnderTest:
    name = "?"
    accounts_before_start = True

    def __init__(self, workdir: Path, cpus: str = "0") -> None:
        self.dir = Path(workdir) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cpus = cpus
        self.c2s_port = free_port()
        self.tls_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.profiler: subprocess.Popen | None = None
        self.profile_out: Path | None = None    # --profile: the flame graph being recorded
        self.log_path = self.dir / "server.out"
        self.users: list[str] = []
        self.archive = False    # run.py --archive: every server archives 1:1 messages (MAM)
        # what the sm_sessions / mam_query scenarios switch on, in instances of their own
        self.sm = False         # Stream Management (XEP-0198) offered
        self.archive_items = 0  # archive size per user the instance must hold (Prosody's limit)
        self.muc = False        # Multi-User Chat (XEP-0045) at conference.<domain> (muc_fanout)
        # perf/bench_web.py: WebSocket (/xmpp-websocket) and BOSH (/http-bind) over HTTPS on
        # http_port, with no per-address limit on BOSH sessions or logins
        self.web = False
        self.http_port = free_port()
        # mam_archiving: called by launch() with this server after provisioning, before the
        # daemon starts (mbxmpp: fills its LMDB archive in place); its result in preload_result
        self.preload: Callable[[ServerUnderTest], Any] | None = None
        self.preload_result: Any = None
        # run.py --instructions: the server runs under valgrind's callgrind, and each measured
        # window reports the instructions it executed (a figure the machine's noise leaves alone)
        self.instructions = False

    @staticmethod
    def sm_available() -> tuple[bool, str]:
        """Whether this server can offer Stream Management (XEP-0198)."""
        return True, ""

    def mam_storage(self) -> str:
        """Where the MAM archive lives (after prepare)."""
        return ""

    # -- to implement ----------------------------------------------------------------------
    @staticmethod
    def available() -> tuple[bool, str]:
        return True, ""

    def version(self) -> str:
        return ""

    def prepare(self) -> None:
        """Write configuration (before provisioning and start)."""

    def provision_accounts(self, users: list[str]) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    # -- common ----------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        cmd = self.command()
        if self.instructions:
            cmd = ["valgrind", "--tool=callgrind", "--dump-line=no",
                   f"--callgrind-out-file={self.dir}/callgrind.out.%p"] + cmd
            timeout *= 20
        if self.cpus:
            cmd = ["taskset", "-c", self.cpus] + cmd
        self._out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env(),
                                     preexec_fn=_raise_nofile)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} at start:\n"
                                   + self.log_tail())
            if port_open(self.c2s_port):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on {self.c2s_port} within {timeout}s:\n"
                           + self.log_tail())

    def launch(self, users: list[str]) -> None:
        """prepare, accounts, start, in the order this server needs (as run.py does); the
        ``preload`` hook, if set, runs just before the start."""
        try:
            self.prepare()
            if self.accounts_before_start:
                self.provision_accounts(users)
            if self.preload is not None:
                self.preload_result = self.preload(self)
            self.start()
            if not self.accounts_before_start:
                self.provision_accounts(users)
        except BaseException:
            self.stop()
            raise

    def log_tail(self, n: int = 30) -> str:
        out = []
        for p in [self.log_path] + sorted(self.dir.glob("*.log")) + sorted(self.dir.glob("logs/*")):
            try:
                lines = p.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                continue
            if lines:
                out.append(f"--- {p.name}\n" + "\n".join(lines))
        return "\n".join(out)

    def zero_instructions(self) -> None:
        """Under callgrind: start counting from zero now."""
        subprocess.run(["callgrind_control", "-z", str(self.main_pid())], capture_output=True,
                       timeout=120)

    def dump_instructions(self) -> int | None:
        """Under callgrind: the instructions executed since zero_instructions() (all threads)."""
        before = set(self.dir.glob("callgrind.out.*.*"))
        subprocess.run(["callgrind_control", "-d", str(self.main_pid())], capture_output=True,
                       timeout=120)
        for dump in sorted(set(self.dir.glob("callgrind.out.*.*")) - before):
            with open(dump) as f:
                for line in f:
                    if line.startswith("totals:"):
                        return int(line.split()[1])
        return None

    def main_pid(self) -> int:
        """The process that holds the connections (for RSS/CPU)."""
        assert self.proc is not None
        return self.proc.pid

    def rss_kb(self) -> int:
        return rss_kb(self.main_pid())

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.main_pid())

    def cpu_user_system(self) -> tuple[float, float]:
        return cpu_user_system(self.main_pid())

    def nofile_limit(self) -> int:
        try:
            with open(f"/proc/{self.main_pid()}/limits") as f:
                for line in f:
                    if line.startswith("Max open files"):
                        return int(line.split()[3])
        except (OSError, ValueError):
            pass
        return nofile_hard()

    def start_profiler(self, out_svg: Path) -> str | None:
        py_spy = shutil.which("py-spy")
        if py_spy is None:
            return "py-spy is not installed (pip install py-spy)"
        self.profile_out = out_svg
        self.profiler = subprocess.Popen(
            [py_spy, "record", "-o", str(out_svg), "--pid", str(self.main_pid()), "-r", "200",
             "--nonblocking"], stdout=open(self.dir / "py-spy.out", "wb"), stderr=subprocess.STDOUT)
        time.sleep(1.0)
        if self.profiler.poll() is not None:
            return "py-spy exited: " + (self.dir / "py-spy.out").read_text(errors="replace")[-500:]
        return None

    def stop_profiler(self) -> None:
        if self.profiler is not None and self.profiler.poll() is None:
            self.profiler.send_signal(signal.SIGINT)
            try:
                self.profiler.wait(30)
            except subprocess.TimeoutExpired:
                self.profiler.kill()
        self.profiler = None

    def stop(self) -> None:
        self.stop_profiler()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        else:
            try:    # the leader is gone; its group may not be
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc = None
        self._out.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


# ====================================================================== mbxmpp

# Equivalent to the peers' module lists (Prosody: roster saslauth tls disco ping + its autoloaded
# presence/message/iq/offline; ejabberd: mod_roster mod_disco mod_ping mod_offline).
MBXMPP_MODULES = ["disco", "roster", "presence", "offline", "ping"]


class Mbxmpp(ServerUnderTest):
    name = "mbxmpp"
    accounts_before_start = True

    @staticmethod
    def available() -> tuple[bool, str]:
        if not (REPO / "mbxmpp" / "__main__.py").exists():
            return False, "mbxmpp package not found"
        return True, ""

    def version(self) -> str:
        try:
            from mbxmpp import __version__  # type: ignore[attr-defined]
            return str(__version__)
        except Exception:
            return "dev"

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mbxmpp", "-c", str(self.config), *args]

    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
        return e

    def prepare(self) -> None:
        cert, key = self_signed(self.dir)
        self.config = self.dir / "mbxmpp.toml"
        data = self.data_dir = self.dir / "data"
        self.config.write_text(f"""# generated by perf/servers.py
[server]
domains = ["{DOMAIN}"]
data_dir = "{data}"
log_level = "warning"
# the same feature set as the peers' configs: no archive (MAM), no carbons/SM/PEP...
# (sm_sessions adds "sm", mam_query and --archive add "mam", muc_fanout "muc")
modules = {MBXMPP_MODULES + (["mam"] if self.archive else []) + (["sm"] if self.sm else [])
           + (["muc"] if self.muc else [])!r}

[tls]
cert = "{cert}"
key = "{key}"

[c2s]
listen = ["127.0.0.1:{self.c2s_port}"]
direct_tls = ["127.0.0.1:{self.tls_port}"]
{"max_unauthenticated_per_ip = 100000" if self.web else ""}

[s2s]
listen = ["127.0.0.1:{free_port()}"]

[http]
listen = ["127.0.0.1:{self.http_port}"]

""" + ("""
[limits]
bosh_sessions_per_address_burst = 100000
""" if self.web else "") + ("""
[muc]
# Raised from the default 5 messages/s per occupant (burst 25): muc_fanout measures a room's
# saturation with a few senders, each sending hundreds of messages a second, which the default
# (an anti-flood limit for people) refuses with policy-violation; the peers' MUCs have no
# per-occupant rate limit by default (Prosody 0.12 mod_muc: none; ejabberd mod_muc:
# min_message_interval 0). Everything else stays at its default (history kept in memory: 100).
message_rate = 0
""" if self.muc else ""))
        r = subprocess.run(self._cli("check-config"), capture_output=True, text=True,
                           env=self.env(), cwd=self.dir, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"mbxmpp check-config failed ({r.returncode}):\n{r.stdout}{r.stderr}")

    def provision_accounts(self, users: list[str]) -> None:
        stored, server = scram_sha1()
        tail = (f" scram SCRAM-SHA-1 {base64.b64encode(SALT).decode()} {ITERATIONS} "
                f"{base64.b64encode(stored).decode()} {base64.b64encode(server).decode()}\n")
        f = self.dir / "users.txt"
        with open(f, "w") as out:
            for u in users:
                out.write(f"{u}@{DOMAIN}{tail}")
        r = subprocess.run(self._cli("user", "import", str(f)), capture_output=True, text=True,
                           env=self.env(), cwd=self.dir, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"mbxmpp user import failed ({r.returncode}):\n"
                               f"{r.stdout[-2000:]}{r.stderr[-2000:]}")
        self.users = list(users)

    def command(self) -> list[str]:
        return self._cli("serve")

    def mam_storage(self) -> str:
        return "LMDB"

    def fill_archive(self, n: int, owners: list[str]) -> dict[str, Any]:
        """Fill the MAM archive in place with ``n`` messages over ``owners`` (bare JIDs) through
        mbxmpp's storage API (``perf/mamfill.py``, like ``perf/bench_mam.py``). Only while the
        daemon is not running (after prepare): a ``preload`` hook for mam_archiving."""
        assert not self.running, "fill the archive before the start"
        from mbxmpp.storage import open_storage

        from . import mamfill
        storage = open_storage("lmdb", str(self.data_dir))
        try:
            took = mamfill.fill(storage, n, owners)
            t = time.perf_counter()
            items, archives = mamfill.archive_total(storage)
            count_s = time.perf_counter() - t
        finally:
            storage.close_sync()
        return {"messages": n, "owners": len(owners), "fill_s": round(took, 2),
                "appends_per_s": round(n / took, 1) if took > 0 else None,
                "batch": mamfill.CHUNK, "archive_items": items, "archives": archives,
                "count_s": round(count_s, 3),
                "db_bytes": sum(f.stat().st_size for f in (self.data_dir / "db").iterdir())}

    def archive_sizes(self) -> tuple[int, int]:
        """(archived messages, non-empty archives) from ``python -m mbxmpp archive sizes`` (the
        operator's CLI; run it with the daemon stopped)."""
        r = subprocess.run(self._cli("archive", "sizes"), capture_output=True, text=True,
                           env=self.env(), cwd=self.dir, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"mbxmpp archive sizes failed ({r.returncode}):\n"
                               f"{r.stdout[-2000:]}{r.stderr[-2000:]}")
        last = r.stdout.strip().splitlines()[-1].split()
        # "total  <items>  (<n> archives)"
        if len(last) < 3 or last[0] != "total":
            raise RuntimeError(f"mbxmpp archive sizes: unexpected output {r.stdout[-500:]!r}")
        return int(last[1]), int(last[2].lstrip("("))


# ====================================================================== Prosody

class Prosody(ServerUnderTest):
    name = "prosody"
    accounts_before_start = True

    @staticmethod
    def available() -> tuple[bool, str]:
        if shutil.which("prosody") is None:
            return False, "prosody is not installed (apt-get install prosody)"
        return True, ""

    def version(self) -> str:
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "prosody"],
                                 capture_output=True, text=True, timeout=10).stdout
            return out.strip()
        except Exception:
            return ""

    # where Prosody looks for its modules (Debian package)
    MODULE_DIRS = ("/usr/lib/prosody/modules", "/usr/local/lib/prosody/modules")

    @classmethod
    def sm_available(cls) -> tuple[bool, str]:
        # Prosody 0.12 ships mod_smacks with the server; older ones only in prosody-modules
        for d in cls.MODULE_DIRS:
            if (Path(d) / "mod_smacks.lua").exists() or (Path(d) / "mod_smacks").is_dir():
                return True, ""
        return False, ("mod_smacks is not installed (Prosody 0.12 ships it; older versions need "
                       "it from the community modules)")

    def storage_config(self) -> str:
        return 'storage = "internal"'

    def mam_storage(self) -> str:
        return "internal (files)"

    def prepare(self) -> None:
        cert, key = self_signed(self.dir)
        self.data = self.dir / "data"
        (self.data / DOMAIN / "accounts").mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "prosody.cfg.lua"
        mam = ' "mam";' if self.archive else ""
        smacks = ' "smacks";' if self.sm else ""
        web = ' "websocket"; "bosh";' if self.web else ""
        https = str(self.http_port) if self.web else ""
        # the internal (file) archive store refuses appends past 10,000 items per user by default
        limit = (f"storage_archive_item_limit = {2 * self.archive_items + 1000}\n"
                 if self.archive and self.archive_items else "")
        self.config.write_text(f"""-- generated by perf/servers.py
run_as_root = true
daemonize = false
pidfile = "{self.dir}/prosody.pid"
data_path = "{self.data}"
log = {{ warn = "{self.dir}/prosody.log" }}
network_backend = "epoll"
-- like the other servers: TCP_NODELAY, a listen backlog that survives a login burst
network_settings = {{ nagle = false; tcp_backlog = 4096; }}
certificates = "{self.dir}"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.c2s_port} }}
c2s_direct_tls_ports = {{ {self.tls_port} }}
c2s_require_encryption = true
allow_unencrypted_plain_auth = false
authentication = "internal_hashed"
{self.storage_config()}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping";{mam}{smacks}{web} }}
default_archive_policy = true
archive_expires_after = "1w"
{limit}modules_disabled = {{ "s2s"; }}
ssl = {{ certificate = "{cert}"; key = "{key}"; }}
c2s_direct_tls_ssl = {{ certificate = "{cert}"; key = "{key}"; }}
http_ports = {{ }}
https_ports = {{ {https} }}
https_interfaces = {{ "127.0.0.1" }}
https_ssl = {{ certificate = "{cert}"; key = "{key}"; }}
consider_websocket_secure = true
consider_bosh_secure = true
VirtualHost "{DOMAIN}"
    ssl = {{ certificate = "{cert}"; key = "{key}"; }}
""" + (f"""
-- muc_fanout: no history kept or sent (max 0), no logging (mod_muc_mam not loaded), rooms
-- unlocked at creation (the creator configures them as instant rooms anyway), no rate limits
-- (mod_muc_limits is not loaded), no cap on occupants (Prosody's mod_muc has none)
Component "conference.{DOMAIN}" "muc"
    max_history_messages = 0
    muc_room_default_history_length = 0
    muc_room_locking = false
    muc_tombstones = false
""" if self.muc else ""))

    def provision_accounts(self, users: list[str]) -> None:
        stored, server = scram_sha1()
        body = (f'return {{\n\t["iteration_count"] = {ITERATIONS};\n\t["salt"] = "{SALT.decode()}";\n'
                f'\t["server_key"] = "{server.hex()}";\n\t["stored_key"] = "{stored.hex()}";\n}};\n')
        d = self.data / DOMAIN / "accounts"
        for u in users:
            assert u.isalnum(), u          # Prosody %-encodes other characters in file names
            (d / f"{u}.dat").write_text(body)
        self.users = list(users)

    def command(self) -> list[str]:
        return ["prosody", "--config", str(self.config), "-F"]


# ====================================================================== ejabberd

class Ejabberd(ServerUnderTest):
    name = "ejabberd"
    accounts_before_start = False
    _mam_sql = False

    @staticmethod
    def available() -> tuple[bool, str]:
        if shutil.which("ejabberdctl") is None or shutil.which("erl") is None:
            return False, "ejabberd is not installed (apt-get install ejabberd)"
        return True, ""

    def version(self) -> str:
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "ejabberd"],
                                 capture_output=True, text=True, timeout=10).stdout
            return out.strip()
        except Exception:
            return ""

    @staticmethod
    def sm_available() -> tuple[bool, str]:
        # mod_stream_mgmt is part of ejabberd (since 17.03)
        beams = list(Path("/usr/lib").glob("*/ejabberd*/ebin/mod_stream_mgmt.beam")) + \
            list(Path("/usr/lib").glob("ejabberd*/ebin/mod_stream_mgmt.beam")) + \
            list(Path("/usr/lib").glob("erlang/lib/ejabberd*/ebin/mod_stream_mgmt.beam"))
        if not beams:
            return False, "mod_stream_mgmt.beam not found in this ejabberd installation"
        return True, ""

    SQL_SCHEMAS = ("/usr/share/ejabberd/sql/lite.sql",)

    @classmethod
    def mam_sqlite(cls) -> tuple[Path | None, str]:
        """ejabberd's SQLite schema when its SQLite driver (erlang-p1-sqlite3) is installed.

        mod_mam on mnesia keeps every archive in one disc_only_copies *bag* (dets) keyed by user:
        each insert scans the user's whole archive (filling 10,000 messages per user over the
        wire takes tens of minutes) and every query scans the table; ejabberd's documentation
        points archives to SQL."""
        if not list(Path("/usr/lib/erlang/lib").glob("p1_sqlite3-*")) and \
                not list(Path("/usr/lib/erlang/lib").glob("sqlite3-*")):
            return None, "erlang-p1-sqlite3 is not installed"
        for f in cls.SQL_SCHEMAS + tuple(
                str(x) for x in Path("/usr/lib").glob("*/ejabberd*/priv/sql/lite.sql")):
            if Path(f).exists():
                return Path(f), ""
        return None, "ejabberd's SQLite schema (sql/lite.sql) not found"

    def mam_storage(self) -> str:
        return "sql (SQLite)" if self.archive and self._mam_sql else "mnesia"

    def prepare(self) -> None:
        cert, key = self_signed(self.dir)
        pem = self.dir / "ejabberd.pem"
        pem.write_text(key.read_text() + cert.read_text())
        self.dist_port = free_port()
        self.node = f"perfej{self.dist_port}@localhost"
        for sub in ("db", "logs"):
            (self.dir / sub).mkdir(exist_ok=True)
        self.config = self.dir / "ejabberd.yml"
        # archives: mnesia (its default) for --archive, whose archives stay small; SQLite for
        # mam_query's large ones (archive_items) when the driver is installed (see mam_sqlite)
        schema, _why = self.mam_sqlite() if self.archive and self.archive_items else (None, "")
        self._mam_sql = schema is not None
        sql = ""
        if schema is not None:
            import sqlite3
            db = self.dir / "db" / "ejabberd.sqlite"
            con = sqlite3.connect(db)
            try:
                con.executescript(schema.read_text())
                # persistent in the file: one WAL append (and fsync) per commit instead of the
                # rollback journal's several
                con.execute("PRAGMA journal_mode=WAL")
            finally:
                con.close()
            sql = f'sql_type: sqlite\nsql_database: "{db}"\n'
        listener = """    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: c2s_shaper
    access: c2s
    backlog: 4096"""
        self.config.write_text(f"""# generated by perf/servers.py
hosts:
  - "{DOMAIN}"
loglevel: warning
log_rotate_count: 0
hide_sensitive_log_data: true
certfiles:
  - "{pem}"
listen:
  -
    port: {self.c2s_port}
{listener}
    starttls_required: true
  -
    port: {self.tls_port}
{listener}
    tls: true
""" + (f"""  -
    port: {self.http_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    tls: true
    request_handlers:
      /xmpp-websocket: ejabberd_http_ws
      /http-bind: mod_bosh
""" if self.web else "") + f"""auth_method: internal
{sql}cache_size: 100000
auth_password_format: scram
auth_scram_hash: sha
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
shaper:
  normal:
    rate: 1000000000
    burst_size: 1000000000
  fast: 1000000000
shaper_rules:
  max_user_sessions: 1000000
  max_user_offline_messages: 100
  c2s_shaper: none
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster:
    versioning: false
  mod_offline:
    access_max_user_messages: max_user_offline_messages
""" + ("""  mod_bosh: {}
""" if self.web else "") + (f"""  mod_mam:
    db_type: {"sql" if self._mam_sql else "mnesia"}
    default: always
""" if self.archive else "") + ("""  mod_stream_mgmt: {}
""" if self.sm else "") + ("""  mod_muc:
    access: all
    access_create: all
    access_persistent: all
    access_admin: none
    max_users: 1000
    default_room_options:
      max_users: 1000
""" if self.muc else ""))
        self.ctl_cfg = self.dir / "ejabberdctl.cfg"
        self.ctl_cfg.write_text(f"""# generated by perf/servers.py
EXEC_CMD=as_current_user
ERLANG_NODE={self.node}
ERL_DIST_PORT={self.dist_port}
EJABBERD_PID_PATH={self.dir}/ejabberd.pid
ERL_MAX_PORTS=65536
POLL=true
EJABBERD_BYPASS_WARNINGS=true
ERL_OPTIONS="+S 1:1 +SDcpu 1:1 -env ERL_CRASH_DUMP_BYTES 0"
""")

    def _ctl(self) -> list[str]:
        return ["ejabberdctl", "--config", str(self.config), "--ctl-config", str(self.ctl_cfg),
                "--logs", str(self.dir / "logs"), "--spool", str(self.dir / "db")]

    def command(self) -> list[str]:
        return self._ctl() + ["foreground"]

    def main_pid(self) -> int:
        assert self.proc is not None
        for p in proc_children(self.proc.pid):
            if proc_name(p).startswith("beam"):
                return p
        return self.proc.pid

    def _erl_eval(self, code: str, timeout: float = 300) -> str:
        name = f"perfctl{os.getpid()}_{free_port()}@localhost"
        cmd = ["erl", "-sname", name, "-hidden", "-noinput", "-noshell", "-erl_epmd_port",
               str(self.dist_port), "-start_epmd", "false", "-dist_listen", "false",
               "-eval", code]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if r.returncode != 0:
            raise RuntimeError(f"erl eval failed ({r.returncode}): {r.stdout[-2000:]}"
                               f"{r.stderr[-2000:]}")
        return r.stdout

    def start(self, timeout: float = 90.0) -> None:
        super().start(timeout)
        # the listener is up; wait until the node answers RPC too
        deadline = time.monotonic() + 30
        while True:
            try:
                out = self._erl_eval(f"io:format(\"~p~n\", [lists:keymember(ejabberd, 1, "
                                     f"rpc:call('{self.node}', application, which_applications, "
                                     "[]))]), halt(0).", timeout=30)
                if "true" in out:
                    return
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("ejabberd does not answer RPC:\n" + self.log_tail())
            time.sleep(0.5)

    def provision_accounts(self, users: list[str]) -> None:
        stored, server = scram_sha1()
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        terms = self.dir / "users.eterm"
        with open(terms, "w") as f:
            f.write(f"{{'{self.node}', <<\"{DOMAIN}\">>, "
                    f"{{scram, <<\"{b64(stored)}\">>, <<\"{b64(server)}\">>, <<\"{b64(SALT)}\">>, "
                    f"sha, {ITERATIONS}}}, [")
            f.write(",".join(f'<<"{u}">>' for u in users))
            f.write("]}.\n")
        code = (f'{{ok, [{{Node, Host, Pw, Users}}]}} = file:consult("{terms}"), '
                "Self = self(), "
                "Chunks = fun C([]) -> []; C(L) -> {A, B} = lists:split(min(500, length(L)), L), "
                "[A | C(B)] end, "
                "Ps = [spawn(fun() -> Self ! {done, [rpc:call(Node, ejabberd_auth, try_register, "
                "[U, Host, Pw]) || U <- Ch]} end) || Ch <- Chunks(Users)], "
                "R = lists:append([receive {done, X} -> X end || _ <- Ps]), "
                "Bad = [X || X <- R, X =/= ok, X =/= {error, exists}], "
                'io:format("registered ~p bad ~p~n", [length(R) - length(Bad), '
                "lists:sublist(Bad, 3)]), halt(0).")
        out = self._erl_eval(code, timeout=900)
        if "bad []" not in out:
            raise RuntimeError(f"ejabberd account provisioning failed: {out[-2000:]}")
        self.users = list(users)


SERVERS: dict[str, type[ServerUnderTest]] = {"mbxmpp": Mbxmpp, "prosody": Prosody,
                                             "ejabberd": Ejabberd}


def make(name: str, workdir: Path, cpus: str) -> ServerUnderTest:
    return SERVERS[name](workdir, cpus)


def describe(srv: ServerUnderTest) -> dict[str, Any]:
    return {"server": srv.name, "version": srv.version(), "c2s_port": srv.c2s_port,
            "cpus": srv.cpus}
