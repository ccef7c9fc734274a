"""Virtual hosts and their certificates while the daemon serves: ``[tls] certificates_dir``
(certbot's live/ layout) chosen by SNI and re-read when a file changes, ``domains add|remove``
through the control socket (kept across restarts in <data_dir>/domains), <host-gone/> for the
sessions of a removed domain (RFC 6120 §4.9.3.6), and ``[server] domains`` applied on reload."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import tempfile

import aiohttp
import pytest
from cryptography import x509

from mbxmpp.xml import StreamHeader
from tests.daemon import Daemon
from tests.interop.netlab import CA, S2S_HEADER, RawPeer
from tests.rawclient import RawClient, WSRawClient



def install(ca: CA, live: str, domain: str, label: str) -> int:
    """Issue a certificate for ``domain`` (and its components) into certbot's layout; returns
    its serial number."""
    cert, key = ca.issue(label, [domain, f"conference.{domain}", f"upload.{domain}"])
    os.makedirs(os.path.join(live, domain), exist_ok=True)
    # certbot replaces the files by switching symlinks: write then rename, as it does
    for src, name in ((key, "privkey.pem"), (cert, "fullchain.pem")):
        dst = os.path.join(live, domain, name)
        shutil.copy(src, dst + ".new")
        os.replace(dst + ".new", dst)
    with open(cert, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).serial_number


@pytest.fixture(scope="module")
def lab():
    tmp = tempfile.mkdtemp(prefix="mbxmpp-acme-")
    ca = CA(os.path.join(tmp, "ca"))
    live = os.path.join(tmp, "live")
    serials = {d: install(ca, live, d, d) for d in ("a.test", "b.test", "c.test")}
    d = Daemon(domains=("a.test", "b.test"),
               extra=f'[tls]\ncertificates_dir = "{live}"\ncertificates_poll = 0.3\n')
    d.start()
    yield d, ca, live, serials
    d.finish()
    shutil.rmtree(tmp, ignore_errors=True)


def verifying(ca: CA) -> ssl.SSLContext:
    """A client that checks the chain against the test CA and the name against SNI."""
    ctx = ssl.create_default_context(cafile=ca.path)
    ctx.set_alpn_protocols(["xmpp-client"])
    return ctx


async def connect(port: int, ca: CA, name: str) -> tuple[RawClient, int]:
    """Direct TLS with SNI ``name``, verified; returns the client and the served serial."""
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=verifying(ca), server_hostname=name)
    der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return RawClient(r, w), x509.load_der_x509_certificate(der).serial_number


async def served_serial(port: int, ca: CA, name: str) -> int:
    client, serial = await connect(port, ca, name)
    await client.close()
    return serial


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


async def cli(d: Daemon, *args: str, check: bool = True):
    return await asyncio.to_thread(d.cli, *args, check=check)


async def test_each_domain_gets_its_certificate_by_sni(lab):
    d, ca, _live, serials = lab
    assert await served_serial(d.tls, ca, "a.test") == serials["a.test"]
    assert await served_serial(d.tls, ca, "b.test") == serials["b.test"]
    # a component without its own folder is served its parent's certificate
    assert await served_serial(d.tls, ca, "conference.b.test") == serials["b.test"]
    # STARTTLS picks by SNI too
    r, w = await asyncio.open_connection("127.0.0.1", d.c2s)
    c = RawClient(r, w)
    await c.open("b.test")
    await c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert (await c.element()).tag == "proceed"
    await w.start_tls(verifying(ca), server_hostname="b.test")
    der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
    assert x509.load_der_x509_certificate(der).serial_number == serials["b.test"]
    await c.close()


async def test_replaced_certificate_is_served_without_reload(lab):
    d, ca, live, serials = lab
    new = install(ca, live, "a.test", "a-renewed")
    assert new != serials["a.test"]
    for _ in range(100):  # the daemon polls every 0.3 s
        if await served_serial(d.tls, ca, "a.test") == new:
            break
        await asyncio.sleep(0.1)
    assert await served_serial(d.tls, ca, "a.test") == new
    assert await served_serial(d.tls, ca, "b.test") == serials["b.test"]  # untouched
    serials["a.test"] = new
    assert "certificates loaded for" in d.log()


async def test_half_done_renewal_keeps_the_old_certificate(lab):
    """certbot switches fullchain.pem, then privkey.pem: a poll in between sees a certificate
    without its key, and must keep serving the old pair rather than break the handshakes."""
    d, ca, live, serials = lab
    cert, key = ca.issue("b-renewed", ["b.test"])
    failures = d.log().count("certificates not reloaded")
    shutil.copy(cert, os.path.join(live, "b.test", "fullchain.pem"))
    for _ in range(100):
        if d.log().count("certificates not reloaded") > failures:
            break
        await asyncio.sleep(0.1)
    assert "key values mismatch" in d.log().rsplit("certificates not reloaded", 1)[1].lower()
    assert await served_serial(d.tls, ca, "b.test") == serials["b.test"]  # the old pair, whole
    shutil.copy(key, os.path.join(live, "b.test", "privkey.pem"))
    with open(cert, "rb") as f:
        new = x509.load_pem_x509_certificate(f.read()).serial_number
    for _ in range(100):
        if await served_serial(d.tls, ca, "b.test") == new:
            break
        await asyncio.sleep(0.1)
    assert await served_serial(d.tls, ca, "b.test") == new
    serials["b.test"] = new


async def test_domain_added_then_removed_at_run_time(lab):
    d, ca, _live, serials = lab
    r = await cli(d, "domains", "add", "c.test")
    assert "serving c.test (components: " in r.stdout and "with own certificate" in r.stdout
    assert "conference.c.test" in r.stdout
    d.add_user("carol@c.test", "pw")
    client, serial = await connect(d.tls, ca, "c.test")
    assert serial == serials["c.test"]
    jid = await client.login("carol", "pw", to="c.test", direct_tls=True)
    assert jid == "carol@c.test/raw"
    # its component answers: disco#info to the MUC service
    await client.send("<iq type='get' id='d1' to='conference.c.test'>"
                      "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    res = await client.element()
    assert res.get("type") == "result" and res.get("from") == "conference.c.test", res
    # the web side follows: a page on the new domain may open a WebSocket to it
    ws = await WSRawClient.connect(d.http, origin="https://c.test")
    features = await ws.open("c.test")
    assert features.tag == "features"
    listing = (await cli(d, "domains", "list")).stdout.split("\n")
    assert any(line.split() == ["c.test", "added"] for line in listing), listing
    assert any(line.split() == ["a.test", "config"] for line in listing), listing
    assert "c.test" in read(os.path.join(d.dir, "data", "domains")).split()

    r = await cli(d, "domains", "remove", "c.test")
    assert "no longer serving c.test: ended 2 streams" in r.stdout
    assert await client.stream_error() == "host-gone"
    await client.expect_closed()
    assert await ws.stream_error() == "host-gone"  # (not authenticated yet: ended too)
    await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await WSRawClient.connect(d.http, origin="https://c.test")
    assert refused.value.status == 403
    # no longer served: a new stream to it is refused with <host-unknown/> (§4.9.3.6)
    c2, _ = await connect(d.tls, ca, "a.test")
    await c2.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                  "xmlns:stream='http://etherx.jabber.org/streams' to='c.test' version='1.0'>")
    assert await c2.stream_error() == "host-unknown"
    await c2.close()
    assert "c.test" not in (await cli(d, "domains", "list")).stdout
    assert "c.test" not in read(os.path.join(d.dir, "data", "domains")).split()


async def test_domains_command_refusals(lab):
    d = lab[0]
    for args, err in ((("add", "a.test"), "a.test is already served"),
                      (("add", "conference.a.test"), "already served as a component of a.test"),
                      (("add", "bad..name"), "invalid domain name"),
                      (("remove", "a.test"), "is listed in [server] domains of"),
                      (("remove", "nowhere.test"), "nowhere.test is not served")):
        r = await cli(d, "domains", *args, check=False)
        assert r.returncode == 1 and err in r.stderr, (args, r.stderr)
    # a domain whose component domain is already a host is refused, and nothing changes
    await cli(d, "domains", "add", "conference.zz.test")
    r = await cli(d, "domains", "add", "zz.test", check=False)
    assert r.returncode == 1
    assert "zz.test's component domain conference.zz.test is already served" in r.stderr
    assert "zz.test " not in (await cli(d, "domains", "list")).stdout.replace("conference.zz", "")
    await cli(d, "domains", "remove", "conference.zz.test")


async def test_added_domain_survives_a_restart(tmp_path):
    d = Daemon(domains=("a.test",))
    try:
        # no daemon yet: the list is edited for the next start
        r = await cli(d, "domains", "add", "later.test")
        assert "no daemon is running: later.test added for the next start" in r.stdout
        d.start()
        d.add_user("lee@later.test", "pw")
        c = await RawClient.connect(d.tls, direct_tls=True)
        assert await c.login("lee", "pw", to="later.test", direct_tls=True) == "lee@later.test/raw"
        await c.close()
        await cli(d, "domains", "add", "more.test")
        assert d.stop() == 0
        d.start()
        listing = (await cli(d, "domains", "list")).stdout
        assert "later.test" in listing and "more.test" in listing
    finally:
        d.finish()


async def test_reload_applies_config_domains(tmp_path):
    d = Daemon(domains=("a.test",))
    d.start()
    try:
        text = read(d.config_path)
        write(d.config_path, text.replace('domains = ["a.test"]', 'domains = ["a.test", "new.test"]'))
        r = await cli(d, "reload")
        assert "server.domains" in r.stdout and "domains added: new.test" in r.stdout
        d.add_user("nina@new.test", "pw")
        c = await RawClient.connect(d.tls, direct_tls=True)
        await c.login("nina", "pw", to="new.test", direct_tls=True)
        write(d.config_path, text)
        d.proc.send_signal(1)  # SIGHUP
        assert await c.stream_error() == "host-gone"
    finally:
        d.finish()


def test_check_config_validates_certificates_dir(tmp_path):
    ca = CA(str(tmp_path / "ca"))
    live = str(tmp_path / "live")
    install(ca, live, "a.test", "a")
    install(ca, live, "wrong.test", "w")
    os.rename(os.path.join(live, "wrong.test"), os.path.join(live, "b.test"))
    d = Daemon(domains=("a.test", "b.test"), extra=f'[tls]\ncertificates_dir = "{live}"\n')
    try:
        r = d.cli("check-config", check=False)
        assert r.returncode == 2, r.stdout + r.stderr
        out = r.stdout + r.stderr
        assert "does not cover virtual host 'b.test'" in out and "a.test" not in out.replace(
            "domains", "")
    finally:
        d.cleanup()
    d = Daemon(domains=("a.test",), extra=f'[tls]\ncertificates_dir = "{tmp_path}/missing"\n')
    try:
        r = d.cli("check-config", check=False)
        assert "tls.certificates_dir" in r.stdout + r.stderr and "is not a directory" in r.stdout + r.stderr
    finally:
        d.cleanup()


async def test_removed_domain_ends_its_s2s_streams(lab):
    d = lab[0]
    await cli(d, "domains", "add", "fed.test")
    peer = await RawPeer.connect("127.0.0.1", d.s2s)
    try:
        await peer.send(S2S_HEADER.format(ns="jabber:server", frm="peer.example", to="fed.test"))
        assert isinstance(await peer.next(), StreamHeader)  # served: the stream is open
        await cli(d, "domains", "remove", "fed.test")
        assert await peer.stream_error() == "host-gone"
    finally:
        peer.close()
    peer = await RawPeer.connect("127.0.0.1", d.s2s)
    try:
        await peer.send(S2S_HEADER.format(ns="jabber:server", frm="peer.example", to="fed.test"))
        assert await peer.stream_error() == "host-unknown"
    finally:
        peer.close()
