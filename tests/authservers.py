"""A real Dovecot (authentication only) and a real OpenLDAP slapd, each in a temp dir on its own
sockets/ports, seeded with test accounts and their plans: the mail system the server trusts."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from tests.daemon import free_ports

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
LDAPADD = shutil.which("ldapadd") or "/usr/bin/ldapadd"

# jid -> (password, plan)
USERS = {"alice@mb.example": ("mail pass", "paid"), "light@mb.example": ("lightpw", "light"),
         "bob@mb.example": ("bob's pw", "paid")}


def _wait_for(check, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start")


class _Service:
    """A server process in its own process group (its workers too), and its temp dir."""

    proc: subprocess.Popen
    dir: str

    def _spawn(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

    def pause(self) -> None:
        """The service hangs: its sockets accept but nothing answers."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Dovecot(_Service):
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="mbxmpp-dovecot-")
        os.chmod(self.dir, 0o755)  # the auth worker runs as the dovecot user
        self.users_file = os.path.join(self.dir, "users")
        self.write_users(USERS)
        conf = os.path.join(self.dir, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(f"""base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
protocols =
ssl = no
auth_mechanisms = plain
disable_plaintext_auth = no
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.users_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.users_file}
  default_fields = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener auth-client {{
    mode = 0600
  }}
  unix_listener auth-userdb {{
    mode = 0600
  }}
}}
service anvil {{
  chroot =
}}
""")
        self.client_socket = os.path.join(self.dir, "run", "auth-client")
        self.userdb_socket = os.path.join(self.dir, "run", "auth-userdb")
        self._spawn([DOVECOT, "-F", "-c", conf])
        _wait_for(lambda: os.path.exists(self.client_socket) and os.path.exists(self.userdb_socket),
                  "dovecot")

    def write_users(self, users: dict[str, tuple[str, str]]) -> None:
        with open(self.users_file, "w") as f:
            for jid, (pw, plan) in users.items():
                f.write(f"{jid}:{{PLAIN}}{pw}::::::plan={plan} userdb_plan={plan}\n")
        # Dovecot re-reads the file when its mtime changes: make each write a new second.
        self._writes = getattr(self, "_writes", 0) + 1
        stamp = time.time() + self._writes
        os.utime(self.users_file, (stamp, stamp))


class Slapd(_Service):
    SUFFIX = "dc=mb,dc=example"
    ADMIN = "cn=admin,dc=mb,dc=example"
    ADMIN_PW = "adminpw"

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="mbxmpp-slapd-")
        os.makedirs(os.path.join(self.dir, "db"))
        self.port = free_ports(1)[0]
        self.uri = f"ldap://127.0.0.1:{self.port}"
        conf = os.path.join(self.dir, "slapd.conf")
        with open(conf, "w") as f:
            f.write(f"""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {self.dir}/slapd.pid
database mdb
suffix "{self.SUFFIX}"
rootdn "{self.ADMIN}"
rootpw {self.ADMIN_PW}
directory {self.dir}/db
access to attrs=userPassword by self read by anonymous auth by * none
access to * by * read
""")
        self._spawn([SLAPD, "-f", conf, "-h", self.uri + "/", "-d", "0"])

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        _wait_for(up, "slapd")
        entries = [f"dn: {self.SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: mb\ndc: mb\n",
                   f"dn: ou=people,{self.SUFFIX}\nobjectClass: organizationalUnit\nou: people\n"]
        for jid, (pw, plan) in USERS.items():
            uid = jid.split("@")[0]
            entries.append(f"dn: uid={uid},ou=people,{self.SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
                           f"cn: {uid}\nsn: {uid}\nmail: {jid}\nemployeeType: {plan}\nuserPassword: {pw}\n")
        self.ldapadd("\n".join(entries))

    def ldapadd(self, ldif: str) -> None:
        subprocess.run([LDAPADD, "-x", "-H", self.uri, "-D", self.ADMIN, "-w", self.ADMIN_PW],
                       input=ldif, text=True, check=True, capture_output=True)
