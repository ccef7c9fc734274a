"""`python -m mbxmpp check` and `tlsa` against the running daemon and a real DNS server
(Debian's dnsmasq on a loopback port) serving the SRV, A and TLSA records a remote tester sees."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.daemon import Daemon, free_ports

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


@pytest.fixture(scope="module")
def daemon():
    d = Daemon(domains=("mb.example", "nodns.example"))
    d.start()
    yield d
    d.finish()


@pytest.fixture(scope="module")
def dns(daemon, tmp_path_factory):
    """dnsmasq with mb.example's records: the right TLSA under one SRV target, a stale one under
    the other; nodns.example has nothing."""
    good = [line.split(" IN TLSA ")[1] for line in daemon.cli("tlsa").stdout.splitlines()
            if line.startswith("_5269._tcp.mb.example.") and " 3 1 1 " in f" {line.split(' IN TLSA ')[1]} "]
    assert good, daemon.cli("tlsa").stdout
    u, s, m, digest = good[0].split()
    port = free_ports(1)[0]
    conf = tmp_path_factory.mktemp("dns") / "dnsmasq.conf"
    conf.write_text("\n".join([
        "no-resolv", "no-hosts", "bind-interfaces", "listen-address=127.0.0.1", "user=root",
        f"srv-host=_xmpp-client._tcp.mb.example,xmpp.mb.example,{daemon.c2s},0,5",
        f"srv-host=_xmpp-server._tcp.mb.example,xmpp.mb.example,{daemon.s2s},0,5",
        "srv-host=_xmpps-server._tcp.mb.example,stale.mb.example,5270,0,5",
        "srv-host=_xmpps-client._tcp.mb.example,gone.mb.example,5223,0,5",
        "host-record=xmpp.mb.example,127.0.0.1",
        "host-record=stale.mb.example,127.0.0.1",
        "host-record=mb.example,127.0.0.1",
        f"dns-rr=_{daemon.s2s}._tcp.xmpp.mb.example,52,{int(u):02x}{int(s):02x}{int(m):02x}{digest}",
        "dns-rr=_5270._tcp.stale.mb.example,52,030101" + "00" * 32,
        "address=/nodns.example/",  # NXDOMAIN for it and its components
    ]) + "\n")
    proc = subprocess.Popen([DNSMASQ, "--keep-in-foreground", f"--conf-file={conf}", f"--port={port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(5)


def test_tlsa_prints_dane_ee_records(daemon):
    out = daemon.cli("tlsa").stdout
    assert "_5269._tcp.mb.example. IN TLSA 3 1 1 " in out and "_5269._tcp.mb.example. IN TLSA 3 0 1 " in out


def test_check_reports_what_a_remote_tester_sees(daemon, dns):
    r = daemon.cli("check", "--nameserver", dns, check=False)
    out = r.stdout
    assert r.returncode == 1 and "grade F" in out, out
    assert f"mb.example: client at xmpp.mb.example:{daemon.c2s} (127.0.0.1)" in out, out
    assert f"_{daemon.s2s}._tcp.xmpp.mb.example: a TLSA record matches the certificate" in out
    assert "_5270._tcp.stale.mb.example: no TLSA record matches the certificate" in out
    assert "gone.mb.example, which has no A/AAAA record" in out
    assert "nodns.example: neither SRV nor A/AAAA records" in out
    assert "self-signed" in out
    # The listeners, probed as a remote tester would.
    assert f"c2s 127.0.0.1:{daemon.c2s}: accepts TLS 1.2" in out
    assert f"c2s 127.0.0.1:{daemon.c2s}: accepts TLS 1.3" in out
    assert f"c2s direct TLS 127.0.0.1:{daemon.tls}: refuses TLS 1.1" in out
    assert f"https 127.0.0.1:{daemon.http}: refuses weak suites" in out
    assert "accepts TLS 1.0" not in out and "accepts TLS 1.1" not in out
    # Every finding that is not OK says how to fix it.
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("[ERROR") or line.startswith("[WARNING"):
            assert lines[i + 1].strip().startswith("fix:"), line


def test_check_without_a_server_says_the_ports_do_not_answer(tmp_path):
    d = Daemon()
    try:
        r = d.cli("check", "--nameserver", "127.0.0.1:9", check=False)  # nothing listens there
        assert r.returncode == 1
        assert f"c2s 127.0.0.1:{d.c2s}: 127.0.0.1:{d.c2s} does not answer" in r.stdout
        assert "no answer from DNS" in r.stdout and r.stdout.count("DNS checks skipped") == 1
    finally:
        d.cleanup()
    assert not os.path.exists(d.dir)
