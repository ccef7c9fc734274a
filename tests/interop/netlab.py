"""A test network for federation: network namespaces on a bridge (each server with its own IP and
port 5269), dnsmasq answering for the test domains under ``example.``, a test CA issuing each
server's certificate. Built by the tests and torn down after; needs root and ``ip netns``."""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mbxmpp.xml import STREAM_END, Element, PyXMLParser, StreamHeader

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def netns_unavailable() -> str | None:
    """Why this machine cannot make network namespaces (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2 (`ip netns`)"
    probe = f"mbprobe{os.getpid() % 100000}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if r.returncode != 0:
        return f"`ip netns add` fails here: {r.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def lab_unavailable() -> str | None:
    """Why this machine cannot build the lab (None: it can)."""
    why = netns_unavailable()
    if why is not None:
        return f"the federation lab: {why}"
    for tool in ("dnsmasq", "unbound", "prosody"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/test.sh installs it)"
    return None


def run(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


class CA:
    """A test certificate authority."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mbxmpp federation test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(hours=1))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                    critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                                    critical=False)
                     .sign(self.key, hashes.SHA256()))
        self.path = os.path.join(directory, "ca.pem")
        with open(self.path, "wb") as f:
            f.write(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, label: str, names: list[str], srv_ids: list[str] = (),
              expired: bool = False) -> tuple[str, str]:
        """A certificate for DNS names ``names`` (and SRV-IDs ``_xmpp-server.<d>``), valid for
        a day (``expired``: ended yesterday); returns the (cert, key) paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        if expired:
            now -= datetime.timedelta(days=2)
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        for d in srv_ids:
            value = f"_xmpp-server.{d}".encode()
            sans.append(x509.OtherName(x509.ObjectIdentifier("1.3.6.1.5.5.7.8.7"),
                                       bytes([0x16, len(value)]) + value))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_path = os.path.join(self.dir, f"{label}.crt")
        key_path = os.path.join(self.dir, f"{label}.key")
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        os.chmod(key_path, 0o644)  # Prosody reads it
        return cert_path, key_path


class NetLab:
    """Namespaces on one bridge; the root namespace (where the tests run) is on it too."""

    def __init__(self) -> None:
        n = os.getpid() % 200 + 20
        self.tag = f"{os.getpid() % 100000}"
        self.prefix = f"10.{n}.77"
        self.bridge = f"mbbr{self.tag}"
        self.gateway = f"{self.prefix}.1"
        self.dns_ip = f"{self.prefix}.2"
        self.namespaces: dict[str, str] = {}   # short name -> namespace name
        self.ips: dict[str, str] = {}
        self.procs: list[subprocess.Popen] = []
        self.host_ifs: list[str] = []
        self.tmp = tempfile.mkdtemp(prefix="mbxmpp-s2s-lab-")
        os.chmod(self.tmp, 0o755)
        self.ca = CA(self.tmp)
        self._next_ip = 10

    def up(self) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        self.add_namespace("dns", self.dns_ip)

    def add_namespace(self, short: str, ip: str | None = None) -> str:
        ns = f"mb{self.tag}-{short}"
        if ip is None:
            ip = f"{self.prefix}.{self._next_ip}"
            self._next_ip += 10
        host_if, ns_if = f"mbv{self.tag}{short[:3]}", "eth0"
        run("ip", "netns", "add", ns)
        self.namespaces[short] = ns
        self.host_ifs.append(host_if)
        self.ips[short] = ip
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns)
        run("ip", "link", "set", host_if, "master", self.bridge, "up")
        self.nsexec(short, "ip", "addr", "add", f"{ip}/24", "dev", ns_if)
        self.nsexec(short, "ip", "link", "set", ns_if, "up")
        self.nsexec(short, "ip", "link", "set", "lo", "up")
        os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
        with open(f"/etc/netns/{ns}/resolv.conf", "w") as f:
            f.write(f"nameserver {self.dns_ip}\n")
        with open(f"/etc/netns/{ns}/hosts", "w") as f:
            f.write("127.0.0.1 localhost\n")
        return ns

    def use_resolver(self, short: str, ip: str) -> None:
        with open(f"/etc/netns/{self.namespaces[short]}/resolv.conf", "w") as f:
            f.write(f"nameserver {ip}\n")

    def nsexec(self, short: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.namespaces[short], *cmd, check=check,
                   env=dict(os.environ, **mbxmpp_env()))

    def spawn(self, short: str, cmd: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(os.path.join(self.tmp, log_name), "ab")
        p = subprocess.Popen(["ip", "netns", "exec", self.namespaces[short], *cmd], stdout=log,
                             stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})))
        self.procs.append(p)
        return p

    def log(self, name: str) -> str:
        try:
            with open(os.path.join(self.tmp, name), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- DNS ---------------------------------------------------------------------------------
    def start_dns(self, srv: list[tuple[str, str, int, int]], hosts: dict[str, str],
                  v6: dict[str, str] | None = None) -> None:
        """dnsmasq answering only for ``example.``: ``srv`` (name, target, port, priority) and ``hosts``
        (name -> IPv4); every other name under example. is NXDOMAIN."""
        args = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
                f"--listen-address={self.dns_ip}", "--bind-interfaces", "--port=53",
                "--local=/example/", "--log-queries", f"--log-facility={self.tmp}/dns.log",
                f"--pid-file={self.tmp}/dnsmasq.pid", "--user=root", "--cache-size=0"]
        for name, target, port, prio in srv:
            args.append(f"--srv-host={name},{target},{port},{prio},5")
        for name, ip in hosts.items():
            extra = (v6 or {}).get(name)
            args.append(f"--host-record={name},{ip}" + (f",{extra}" if extra else ""))
        self.spawn("dns", args, "dnsmasq.out")
        self.wait_log("dns.log", "started", "dnsmasq.out")

    def wait_log(self, name: str, text: str, output: str) -> None:
        """Wait until the log ``name`` says ``text`` (a daemon's "I am serving")."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if text in self.log(name):
                return
            time.sleep(0.05)
        raise RuntimeError(f"no {text!r} in {name}:\n" + self.log(output) + self.log(name))

    # -- teardown ----------------------------------------------------------------------------
    def down(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for ns in self.namespaces.values():
            # Whatever a peer left running in its namespace (a daemon's daemon) would keep the
            # namespace, and its end of the bridge, alive.
            pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 15)
                except (ProcessLookupError, ValueError):
                    pass
            run("ip", "netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        for host_if in self.host_ifs:
            # (a veth goes with its namespace only once nothing holds that any more: deleted
            # here, so that a next lab of this process can reuse the name at once)
            run("ip", "link", "del", host_if, check=False)
        run("ip", "link", "del", self.bridge, check=False)
        if os.environ.get("MBXMPP_KEEP_LAB"):
            print("lab files kept in", self.tmp, file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def wait_port(lab: NetLab, ip: str, port: int, proc: subprocess.Popen, log_name: str,
              timeout: float = 20.0) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{log_name}: exited with {proc.returncode}:\n{lab.log(log_name)[-5000:]}")
        try:
            socket.create_connection((ip, port), timeout=0.3).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{log_name}: not listening on {ip}:{port}:\n{lab.log(log_name)[-5000:]}")


PROSODY_CONFIG = """
run_as_root = true
daemonize = false
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
plugin_paths = {{}}
interfaces = {{ "{ip}" }}
c2s_ports = {{ 5222 }}
s2s_ports = {{ 5269 }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ 5270 }}
http_ports = {{ }}
https_ports = {{ }}
log = {{ debug = "{dir}/prosody.log" }}
authentication = "internal_plain"
storage = "internal"
modules_enabled = {{ "roster", "saslauth", "tls", "dialback", "disco", "ping", "presence" }}
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = false
s2s_timeout = 10
ssl = {{ certificate = "{cert}"; key = "{key}"; cafile = "{ca}" }}
{hosts}
"""

PROSODY_HOST = """
VirtualHost "{domain}"
    ssl = {{ certificate = "{cert}"; key = "{key}"; cafile = "{ca}" }}
    {extra}
"""


def prosody_config(directory: str, ip: str, ca: str, hosts: dict[str, tuple[str, str]],
                   bidi: tuple[str, ...] = ()) -> str:
    """Prosody serving ``hosts`` (domain -> certificate files); those in ``bidi`` also do
    XEP-0288 (mod_s2s_bidi)."""
    os.makedirs(os.path.join(directory, "data"), exist_ok=True)
    first = next(iter(hosts.values()))
    vhosts = "".join(PROSODY_HOST.format(domain=d, cert=c, key=k, ca=ca,
                                         extra='modules_enabled = { "s2s_bidi" }' if d in bidi else "")
                     for d, (c, k) in hosts.items())
    path = os.path.join(directory, "prosody.cfg.lua")
    with open(path, "w") as f:
        f.write(PROSODY_CONFIG.format(dir=directory, ip=ip, cert=first[0], key=first[1], ca=ca,
                                      hosts=vhosts))
    return path


def mbxmpp_env() -> dict[str, str]:
    return {"PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


class Socks5Proxy:
    """A SOCKS5 proxy standing in for Tor's SocksPort: CONNECT by name only, names looked up in
    ``routes`` (name -> (ip, port), port 0: the requested one; never DNS); records what it was
    asked for."""

    def __init__(self, ip: str, routes: dict[str, tuple[str, int]]) -> None:
        import socket
        import threading
        self.routes = routes
        self.requests: list[tuple[str, int]] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, 0))
        self.sock.listen(16)
        self.address = f"{ip}:{self.sock.getsockname()[1]}"
        self._threading = threading
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self._threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: Any) -> None:
        import socket
        import struct
        try:
            client.recv(3)                       # 05 01 00
            client.sendall(b"\x05\x00")
            head = client.recv(5)                # 05 01 00 03 len
            name = client.recv(head[4]).decode()
            (port,) = struct.unpack("!H", client.recv(2))
            self.requests.append((name, port))
            target = self.routes.get(name)
            if head[3] != 3 or target is None:
                client.sendall(b"\x05\x04\x00\x01" + bytes(6))  # host unreachable
                client.close()
                return
            upstream = socket.create_connection((target[0], target[1] or port), timeout=5)
            upstream.settimeout(None)
            client.sendall(b"\x05\x00\x00\x01" + bytes(6))
        except OSError:
            client.close()
            return

        def pump(a: Any, b: Any) -> None:
            try:
                while True:
                    data = a.recv(65536)
                    if not data:
                        break
                    b.sendall(data)
            except OSError:
                pass
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        self._threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
        pump(upstream, client)

    def close(self) -> None:
        self.sock.close()


def signed_zone(directory: str, origin: str, records: list[str]) -> tuple[str, str]:
    """A DNSSEC-signed zone file for ``origin`` (records in zone-file syntax, relative names
    allowed) and the trust-anchor file for its key; returns both paths."""
    import dns.dnssec
    import dns.rdatatype
    import dns.zone

    text = (f"$ORIGIN {origin}\n$TTL 60\n"
            f"@ SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 60\n@ NS ns.{origin}\n"
            + "\n".join(records) + "\n")
    zone = dns.zone.from_text(text, origin=origin, relativize=False)
    key = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(key.public_key(), dns.dnssec.Algorithm.ECDSAP256SHA256,
                                    flags=257)
    with zone.writer() as txn:
        dns.dnssec.sign_zone(zone, txn, keys=[(key, dnskey)], lifetime=86400)
    zone_path = os.path.join(directory, f"{origin.rstrip('.')}.zone")
    zone.to_file(zone_path, relativize=False)
    anchor_path = os.path.join(directory, f"{origin.rstrip('.')}.anchor")
    with open(anchor_path, "w") as f:
        f.write(f"{origin} 60 IN DNSKEY {dnskey.to_text()}\n")
    return zone_path, anchor_path


UNBOUND_CONFIG = """
server:
    interface: {ip}
    port: 53
    access-control: 0.0.0.0/0 allow
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    logfile: "{dir}/unbound.log"
    use-syslog: no
    verbosity: 1
    log-queries: yes
    module-config: "validator iterator"
    trust-anchor-file: "{anchor}"
    do-ip6: no
    cache-max-ttl: 0
    cache-max-negative-ttl: 0
    val-log-level: 2
    local-zone: "onion." refuse
auth-zone:
    name: "{secure_zone}"
    zonefile: "{zone}"
    for-downstream: no
    for-upstream: yes
    fallback-enabled: no
stub-zone:
    name: "example."
    stub-addr: {upstream}
"""


def start_unbound(lab: NetLab, ip: str, upstream: str, secure_zone: str, zone: str, anchor: str) -> None:
    """A validating resolver at ``ip`` (in the DNS namespace): ``secure_zone`` signed and served by
    itself, the rest of ``example.`` from the unsigned upstream (dnsmasq)."""
    lab.nsexec("dns", "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
    d = os.path.join(lab.tmp, "unbound")
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "unbound.conf")
    with open(cfg, "w") as f:
        f.write(UNBOUND_CONFIG.format(ip=ip, dir=d, anchor=anchor, secure_zone=secure_zone, zone=zone,
                                      upstream=upstream))
    lab.spawn("dns", ["unbound", "-d", "-c", cfg], "unbound.out")
    lab.wait_log("unbound/unbound.log", "start of service", "unbound.out")


S2S_HEADER = ("<?xml version='1.0'?><stream:stream xmlns='{ns}' "
              "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
              "from='{frm}' to='{to}' version='1.0'>")


class RawPeer:
    """A server peer (or a bad one) that writes exactly what the test says and reads parsed
    events."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader, self.writer = reader, writer
        self.parser = PyXMLParser(max_stanza_size=1 << 20)
        self.events: list = []
        self.stream_id: str | None = None

    @classmethod
    async def connect(cls, host: str, port: int) -> RawPeer:
        return cls(*await asyncio.open_connection(host, port))

    async def send(self, data: str) -> None:
        self.writer.write(data.encode())
        await self.writer.drain()

    async def next(self, timeout: float = 10.0) -> Any:
        """The next header, element or STREAM_END."""

        while not self.events:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                return STREAM_END
            self.events.extend(self.parser.feed(data))
        return self.events.pop(0)

    async def element(self) -> Any:
        while True:
            ev = await self.next()
            if isinstance(ev, Element):
                return ev
            assert ev is not STREAM_END, "stream closed"

    async def open(self, frm: str, to: str, ns: str = "jabber:server") -> Any:
        """Send a stream header; return the features (the header's id in ``stream_id``)."""
        self.parser.reset()
        await self.send(S2S_HEADER.format(ns=ns, frm=frm, to=to))
        header = await self.next()
        assert isinstance(header, StreamHeader), header
        self.stream_id = header.attrs.get("id")
        return await self.element()

    async def starttls(self, cert: tuple[str, str] | None, server_name: str) -> None:
        """<starttls/>, then TLS presenting ``cert`` (None: no certificate)."""
        await self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert (await self.element()).tag == "proceed"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if cert is not None:
            ctx.load_cert_chain(*cert)
        await self.writer.start_tls(ctx, server_hostname=server_name)

    async def stream_error(self) -> str:
        """Read until a stream error; its condition."""
        while True:
            ev = await self.next()
            assert ev is not STREAM_END, "closed without a stream error"
            if isinstance(ev, Element) and ev.tag == "error":
                return ev.first_child().tag

    def close(self) -> None:
        self.writer.close()


# -- ejabberd ------------------------------------------------------------------------------------

EJABBERD_CONFIG = """
hosts: {hosts}
loglevel: {loglevel}
log_rotate_count: 0
certfiles: {certfiles}
ca_file: "{ca}"
s2s_use_starttls: required
s2s_dns_timeout: 5
listen:
  -
    port: 5222
    ip: "{ip}"
    module: ejabberd_c2s
    starttls_required: true
  -
    port: 5269
    ip: "{ip}"
    module: ejabberd_s2s_in
auth_method: internal
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  s2s:
    allow: all
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_s2s_dialback: {{}}
"""


def ejabberd_unavailable() -> str | None:
    if shutil.which("ejabberdctl") is None:
        return "ejabberd is not installed (apt-get install ejabberd)"
    return None


class Ejabberd:
    """Debian's ejabberd in namespace ``short``, serving ``hosts`` (domain -> certificate files,
    None: no certificate of its own, so it presents another domain's). Each instance is its own
    Erlang node (name, spool and logs under ``<lab>/ejabberd-<short>``, the namespace's own
    loopback for the distribution port), so several can run in one lab."""

    def __init__(self, net: NetLab, short: str, hosts: dict[str, tuple[str, str] | None],
                 loglevel: str = "info") -> None:
        self.net, self.short = net, short
        self.dir = d = os.path.join(net.tmp, f"ejabberd-{short}")
        for sub in ("db", "logs"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        pems = []
        for domain, files in hosts.items():
            if files is None:
                continue
            pem = os.path.join(d, f"{domain}.pem")
            with open(pem, "w") as f, open(files[1]) as k, open(files[0]) as c:
                f.write(k.read() + c.read())
            pems.append(pem)
        cfg = os.path.join(d, "ejabberd.yml")
        with open(cfg, "w") as f:
            f.write(EJABBERD_CONFIG.format(hosts=json_list(hosts), certfiles=json_list(pems),
                                           ca=net.ca.path, ip=net.ips[short], loglevel=loglevel))
        ctl_cfg = os.path.join(d, "ejabberdctl.cfg")
        with open(ctl_cfg, "w") as f:
            # a fixed distribution port (no epmd daemon: it would outlive the test); the port is
            # the namespace's, so instances in other namespaces do not collide
            f.write(f"EXEC_CMD=as_current_user\nERLANG_NODE=ej{short}{os.getpid()}@localhost\n"
                    f"ERL_DIST_PORT=4370\n"
                    f"EJABBERD_PID_PATH={d}/ejabberd.pid\nEJABBERD_BYPASS_WARNINGS=true\n")
        self.ctl = ["ejabberdctl", "--config", cfg, "--ctl-config", ctl_cfg, "--logs", f"{d}/logs",
                    "--spool", f"{d}/db"]
        self.out = f"ejabberd-{short}.out"
        self.log_name = f"ejabberd-{short}/logs/ejabberd.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        self.proc = self.net.spawn(self.short, [*self.ctl, "foreground"], self.out)
        wait_port(self.net, self.net.ips[self.short], 5222, self.proc, self.out, timeout=60)
        return self.proc

    def register(self, user: str, domain: str, password: str) -> None:
        """(retried: the node answers ejabberdctl a moment after it listens)"""
        deadline = time.monotonic() + 60
        while True:
            r = self.net.nsexec(self.short, *self.ctl, "register", user, domain, password, check=False)
            if r.returncode == 0 or "already registered" in r.stdout + r.stderr:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(r.stdout + r.stderr + self.net.log(self.out)[-3000:])
            time.sleep(1)

    def stop(self) -> None:
        self.net.nsexec(self.short, *self.ctl, "stop", check=False)
        if self.proc is not None:
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def json_list(items: Any) -> str:
    """A YAML flow list (JSON is YAML)."""
    import json
    return json.dumps(list(items))
