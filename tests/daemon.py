"""Run the real daemon (`python -m mbxmpp`) on ephemeral loopback ports with a temp data dir."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Daemon:
    """A running mbxmpp process; ``c2s``/``tls`` are its STARTTLS and direct-TLS ports."""

    def __init__(self, domains: tuple[str, ...] = ("localhost",), extra: str = "",
                 env: dict[str, str] | None = None, c2s_extra: str = "", http_extra: str = "",
                 server_extra: str = "") -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="mbxmpp-test-")
        self.dir = self.tmp.name
        self.c2s, self.tls, self.s2s, self.http, self.proxy = free_ports(5)
        self.domains = domains
        self.config_path = os.path.join(self.dir, "mbxmpp.toml")
        doms = ", ".join(f'"{d}"' for d in domains)
        with open(self.config_path, "w") as f:
            f.write(f"""
[server]
domains = [{doms}]
data_dir = "{self.dir}/data"
log_level = "info"
{server_extra}

[c2s]
listen = ["127.0.0.1:{self.c2s}"]
direct_tls = ["127.0.0.1:{self.tls}"]
{c2s_extra}

[s2s]
listen = ["127.0.0.1:{self.s2s}"]

[http]
listen = ["127.0.0.1:{self.http}"]
{http_extra}

[proxy65]
listen = ["127.0.0.1:{self.proxy}"]
{extra}
""")
        self.env = dict(os.environ, **(env or {}))
        self.proc: subprocess.Popen | None = None
        self.command_prefix: list[str] = []  # e.g. `ip netns exec NS`: where the server runs
        self.log_path = os.path.join(self.dir, "server.log")

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mbxmpp", "-c", self.config_path, *args],
                              input=input, capture_output=True, text=True, env=self.env,
                              check=check, timeout=120)

    def add_user(self, jid: str, password: str = "secret", plan: str | None = None) -> None:
        args = ["user", "add", jid, "--password", password]
        if plan:
            args += ["--plan", plan]
        self.cli(*args)

    def start(self, timeout: float = 20.0) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*self.command_prefix, sys.executable, "-m", "mbxmpp", "-c",
                                      self.config_path],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mbxmpp exited with {self.proc.returncode}:\n{self.log()}")
            if self.listening():
                return
            time.sleep(0.05)
        raise RuntimeError(f"mbxmpp did not start listening:\n{self.log()}")

    def listening(self) -> bool:
        """Whether the client ports accept connections yet."""
        try:
            socket.create_connection(("127.0.0.1", self.c2s), timeout=0.2).close()
            socket.create_connection(("127.0.0.1", self.tls), timeout=0.2).close()
            return True
        except OSError:
            return False

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-20000:]
        except OSError:
            return ""

    def stop(self, sig: Any = None) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._log.close()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        self.tmp.cleanup()

    def finish(self) -> None:
        """Stop (SIGTERM), remove the data, and fail the run on an unclean exit or a traceback
        in the server's log (the end of every module-scoped daemon fixture)."""
        rc = self.stop()
        log = self.log()
        self.cleanup()
        assert rc == 0, f"server exit code {rc}\n{log}"
        assert "Traceback" not in log, log
