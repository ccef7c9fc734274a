"""slixmpp's own integration suite against mbxmpp: the sdist's ``itests/``, run by its own
``run_integration_tests.py`` one module at a time and then all together (as their CI does),
against the daemon with its shipped defaults (the client ports 5222 and 5223 the tests hard-code,
``conference.``/``upload.`` components) in a network namespace of its own, so those fixed ports
never meet another test's. The domain is their CI's, ``prosody`` (test_component.py hard-codes
it), named in the namespace's hosts file. The configuration names only the domain and the data
directory: the certificate is the self-signed one the daemon generates at first start, which the
clients trust through ``SSL_CERT_FILE`` as slixmpp's CI trusts its Prosody's."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
from typing import Iterator

import pytest

from tests.daemon import Daemon
from tests.interop.netlab import netns_unavailable

pytestmark = [pytest.mark.realclient, pytest.mark.slow]

SLIXMPP_VERSION = "1.17.0"
CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     ".cache")
DOMAIN = "prosody"
ACCOUNTS = [(f"slix-ci-1@{DOMAIN}", "slix-ci-1-pass"), (f"slix-ci-2@{DOMAIN}", "slix-ci-2-pass")]
# Every module of itests/ (test_component.py: their CI's XEP-0114 component slixmpp.prosody).
ITESTS = [
    "basic_connect_and_message", "blocking", "bob", "chatmarkers", "component", "disco", "httpupload", "ibb",
    "last_activity", "mam", "moderate", "muc", "pep", "ping", "privatestorage", "quickresponse",
    "reactions", "reconnect", "retract", "selfping", "slow_filters", "sos", "tls_check",
    "user_avatar", "vcard", "vcard_avatar", "version",
]


def slixmpp_sdist() -> str:
    """The slixmpp source release (with itests/), downloaded once into .cache/."""
    path = os.path.join(CACHE, f"slixmpp-{SLIXMPP_VERSION}.tar.gz")
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                        f"slixmpp=={SLIXMPP_VERSION}", "--no-deps", "--no-binary", ":all:",
                        "-d", CACHE], check=True, timeout=300)
    return path


class NamespacedDaemon(Daemon):
    """The daemon inside network namespace ``ns`` with the shipped listeners, paths aside."""

    def __init__(self, ns: str) -> None:
        super().__init__(domains=(DOMAIN,))
        self.ns = ns
        self.command_prefix = ["ip", "netns", "exec", ns]
        self.c2s, self.tls = 5222, 5223
        with open(self.config_path, "w") as f:
            f.write(f"""
[server]
domains = ["{DOMAIN}"]
data_dir = "{self.dir}/data"

[components.hosts."slixmpp.{DOMAIN}"]
secret = "secret"
""")

    def listening(self) -> bool:
        probe = ("import socket\nfor p in (5222, 5223): "
                 "socket.create_connection(('127.0.0.1', p), timeout=0.2).close()")
        return subprocess.run([*self.command_prefix, sys.executable, "-c", probe],
                              capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NamespacedDaemon, str, dict[str, str]]]:
    why = netns_unavailable()
    if why:  # the fixed ports 5222/5223 need a network namespace of their own
        pytest.skip(why)
    tmp = str(tmp_path_factory.mktemp("slixmpp-itests"))
    with tarfile.open(slixmpp_sdist()) as tar:
        tar.extractall(tmp, filter="data")
    src = os.path.join(tmp, f"slixmpp-{SLIXMPP_VERSION}")
    ns = f"mbit{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
    with open(f"/etc/netns/{ns}/hosts", "w") as f:
        f.write(f"127.0.0.1 localhost {DOMAIN}\n")
    with open(f"/etc/netns/{ns}/resolv.conf", "w") as f:
        f.write("nameserver 127.0.0.1\n")  # no DNS here: SRV look-ups fail at once, A from hosts
    subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
    d = NamespacedDaemon(ns)
    try:
        for jid, password in ACCOUNTS:
            d.add_user(jid, password)
        d.start()
        env = dict(os.environ, SSL_CERT_FILE=os.path.join(d.dir, "data", "selfsigned.crt"), PYTHONPATH=src,
                   CI_ACCOUNT1=ACCOUNTS[0][0], CI_ACCOUNT1_PASSWORD=ACCOUNTS[0][1],
                   CI_ACCOUNT2=ACCOUNTS[1][0], CI_ACCOUNT2_PASSWORD=ACCOUNTS[1][1],
                   CI_MUC_SERVER=f"conference.{DOMAIN}",
                   CI="woodpecker")  # what their `IN_CI` checks: run everything valid against us
        yield d, src, env
        d.finish()
    finally:
        d.cleanup()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(["rm", "-rf", f"/etc/netns/{ns}"], check=False)


@pytest.mark.parametrize("name", [*ITESTS, "all"])
def test_slixmpp_itest(lab: tuple[NamespacedDaemon, str, dict[str, str]], name: str) -> None:
    """One module of the suite, or ("all") all of them in one run, as their CI runs them."""
    daemon, src, env = lab
    started = time.monotonic()
    files = [f"itests/test_{n}.py" for n in (ITESTS if name == "all" else [name])]
    r = subprocess.run([*daemon.command_prefix, sys.executable, "run_integration_tests.py", *files],
                       cwd=src, env=env, capture_output=True, text=True, timeout=600, check=False)
    out = r.stdout + r.stderr
    took = time.monotonic() - started
    assert r.returncode == 0, f"{name} ({took:.0f}s):\n{out}\n--- server log:\n{daemon.log()[-6000:]}"
    assert "success='True'" in out and "ran='0'" not in out, out
    assert "skipped" not in out, f"{name}: a test skipped itself:\n{out}"
