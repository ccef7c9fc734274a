"""Federation with real Prosody and ejabberd over a real (test) network and real DNS.

The lab: network namespaces on a bridge, one for dnsmasq (SRV and A records under ``example.``),
one for mbxmpp (mb.example), one for Prosody (pro.example with a valid certificate; bad.example and
strict.example whose certificates name another domain). The clients and the raw peers run in the
root namespace and reach the servers over the bridge.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import subprocess
import sys
import time
from typing import Iterator

import pytest

from mbxmpp.s2s.certs import tlsa_record
from mbxmpp.xml import STREAM_END
from tests.interop.netlab import (
    CA,
    Ejabberd,
    NetLab,
    RawPeer,
    Socks5Proxy,
    lab_unavailable,
    mbxmpp_env,
    ejabberd_unavailable,
    prosody_config,
    signed_zone,
    start_unbound,
    wait_port,
)
from tests.realclient.conftest import Client

pytestmark = pytest.mark.interop

PASSWORD = "s2s secret"
ONION = "prosodyhiddenservicexxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.onion"  # a Prosody host behind "Tor"
OUR_ONION = "mbxmpphiddenservicexxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.onion"  # an mbxmpp host
TIMEOUT = 3.0  # [s2s] timeout of the mbxmpp under test


class Lab:
    def __init__(self, net: NetLab) -> None:
        self.net = net


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    why = lab_unavailable()
    if why is not None:
        pytest.skip(why)
    net = NetLab()
    try:
        net.up()
        net.add_namespace("mb")
        net.add_namespace("pro")
        net.add_namespace("two")
        net.add_namespace("ej")
        two_ip = net.ips["two"]
        mb_ip, pro_ip = net.ips["mb"], net.ips["pro"]
        # A peer that accepts TCP and never says a word (the kernel completes the handshake).
        blackhole = socket.socket()
        blackhole.bind((net.gateway, 15269))
        blackhole.listen(16)
        net.start_dns(
            v6={"xmpp.pro.example": "fd00:dead::20"},
            srv=[("_xmpp-server._tcp.mb.example", "xmpp.mb.example", 5269, 0),
                 # pro.example: direct TLS first (XEP-0368), STARTTLS as the fallback
                 ("_xmpps-server._tcp.pro.example", "xmpp.pro.example", 5270, 0),
                 ("_xmpp-server._tcp.pro.example", "xmpp.pro.example", 5269, 10),
                 ("_xmpp-server._tcp.slow.example", "slow-host.example", 15269, 0),
                 # two.example: its first candidate (direct TLS) accepts TCP and never answers
                 # (Happy Eyeballs across targets: the second wins 250 ms later)
                 ("_xmpps-server._tcp.two.example", "slow-host.example", 15269, 0),
                 ("_xmpp-server._tcp.two.example", "xmpp.two.example", 5269, 10),
                 ("_xmpp-server._tcp.ej.example", "xmpp.ej.example", 5269, 0),
                 ("_xmpp-server._tcp.ejdb.example", "xmpp.ej.example", 5269, 0),
                 # the raw authoritative server of the piggybacking test
                 ("_xmpp-server._tcp.raw1.example", "rawpeer.example", 15270, 0),
                 ("_xmpp-server._tcp.raw2.example", "rawpeer.example", 15270, 0)],
            # bad.example and strict.example have no SRV: the A record on 5269 (RFC 6120 §3.2.2)
            hosts={"xmpp.mb.example": mb_ip, "mb.example": mb_ip, "mb2.example": mb_ip, "xmpp.pro.example": pro_ip,
                   "pro.example": pro_ip, "bad.example": pro_ip, "nobidi.example": pro_ip,
                   "expired.example": pro_ip, "strict.example": pro_ip,
                   "slow-host.example": net.gateway, "rawpeer.example": net.gateway, "xmpp.two.example": two_ip,
                   "xmpp.ej.example": net.ips["ej"]})
        ca = net.ca
        mb_cert = ca.issue("mb", ["mb.example"], srv_ids=["mb.example"])
        pro_cert = ca.issue("pro", ["pro.example"])
        nobidi_cert = ca.issue("nobidi", ["nobidi.example"])
        expired_cert = ca.issue("expired", ["expired.example"], expired=True)
        wrong_cert = ca.issue("other", ["other.example"])
        onion_cert = ca.issue("onion", [ONION])
        # DANE: sec.example is signed; ok.sec.example's certificate is from a CA nobody trusts
        # but matches its TLSA record (DANE-EE 3 1 1); bad.sec.example's is valid PKIX but its
        # TLSA record names another key.
        dane_ok_cert = CA(os.path.join(net.tmp, "dane")).issue("daneok", ["ok.sec.example"])
        dane_bad_cert = ca.issue("danebad", ["bad.sec.example"])
        with open(dane_ok_cert[0], "rb") as f:
            tlsa = tlsa_record(ssl.PEM_cert_to_DER_cert(f.read().decode()), 3, 1, 1)
        zone, anchor = signed_zone(net.tmp, "sec.example.", [
            "_xmpp-server._tcp.ok SRV 0 5 5269 xmpp.ok.sec.example.",
            f"xmpp.ok A {pro_ip}",
            f"_5269._tcp.xmpp.ok TLSA 3 1 1 {tlsa[3].hex()}",
            "_xmpp-server._tcp.bad SRV 0 5 5269 xmpp.bad.sec.example.",
            f"xmpp.bad A {pro_ip}",
            f"_5269._tcp.xmpp.bad TLSA 3 1 1 {'5a' * 32}",
        ])
        resolver_ip = f"{net.prefix}.3"
        start_unbound(net, resolver_ip, net.dns_ip, "sec.example.", zone, anchor)
        net.use_resolver("mb", resolver_ip)  # mbxmpp asks the validating resolver
        our_onion_cert = ca.issue("ouronion", [OUR_ONION])
        socks = Socks5Proxy(net.gateway, {ONION: (pro_ip, 5269), "xmpp.pro.example": (pro_ip, 0),
                                          # two.example sends everything through "Tor"
                                          "xmpp.mb.example": (mb_ip, 5269), "mb2.example": (mb_ip, 5269)})
        # mb2.example's certificate comes from a CA Prosody does not trust: it must dialback.
        rogue_cert = CA(os.path.join(net.tmp, "rogue")).issue("mb2", ["mb2.example"])
        prosody_dir = os.path.join(net.tmp, "prosody")
        cfg = prosody_config(prosody_dir, pro_ip, ca.path, {"pro.example": pro_cert,
                                                            "bad.example": wrong_cert,
                                                            "strict.example": wrong_cert,
                                                            ONION: onion_cert,
                                                            "ok.sec.example": dane_ok_cert,
                                                            "bad.sec.example": dane_bad_cert,
                                                            "nobidi.example": nobidi_cert,
                                                            "expired.example": expired_cert},
                             bidi=("pro.example",))
        for user, host in (("pat", "pro.example"), ("bea", "bad.example"), ("sam", "strict.example"),
                           ("tor", ONION), ("dan", "ok.sec.example"), ("dan", "bad.sec.example"),
                           ("nat", "nobidi.example"), ("pushapp", "pro.example")):
            subprocess.run(["prosodyctl", "--config", cfg, "register", user, host, PASSWORD],
                           check=True, capture_output=True, timeout=60)
        pro = net.spawn("pro", ["prosody", "--config", cfg, "-F"], "prosody.out")
        mb_dir = os.path.join(net.tmp, "mbxmpp")
        os.makedirs(mb_dir)
        mb_cfg = os.path.join(mb_dir, "mbxmpp.toml")
        with open(mb_cfg, "w") as f:
            f.write(f"""
[server]
domains = ["mb.example", "mb2.example", "{OUR_ONION}"]
data_dir = "{mb_dir}/data"
log_level = "debug"

[tls]
cert = "{mb_cert[0]}"
key = "{mb_cert[1]}"

[tls.domains."mb2.example"]
cert = "{rogue_cert[0]}"
key = "{rogue_cert[1]}"

[tls.domains."{OUR_ONION}"]
cert = "{our_onion_cert[0]}"
key = "{our_onion_cert[1]}"

[c2s]
listen = ["{mb_ip}:5222"]
direct_tls = ["{mb_ip}:5223"]

[s2s]
listen = ["{mb_ip}:5269"]
direct_tls = ["{mb_ip}:5270"]
ca_file = "{ca.path}"
dialback = true
require_valid_certificates = ["strict.example", "ok.sec.example", "expired.example"]
timeout = "{TIMEOUT}s"
tor_socks = "{socks.address}"

[sm]
resume_timeout = "1s"
push_resume_timeout = "60s"

[http]
listen = ["{mb_ip}:5443"]

[proxy65]
listen = ["{mb_ip}:7777"]
""")
        env = mbxmpp_env()
        for user in ("alice@mb.example", "amy@mb2.example", "pia@mb.example", f"olga@{OUR_ONION}"):
            subprocess.run([sys.executable, "-m", "mbxmpp", "-c", mb_cfg, "user", "add",
                            user, "--password", PASSWORD],
                           check=True, capture_output=True, env=dict(os.environ, **env), timeout=60)
        mb = net.spawn("mb", [sys.executable, "-m", "mbxmpp", "-c", mb_cfg], "mbxmpp.log", env)
        # A second mbxmpp (two.example): mbxmpp federating with itself; it closes idle streams
        # after 2 s.
        two_cert = ca.issue("two", ["two.example"])
        two_dir = os.path.join(net.tmp, "two")
        os.makedirs(two_dir)
        two_cfg = os.path.join(two_dir, "mbxmpp.toml")
        with open(two_cfg, "w") as f:
            f.write(f"""
[server]
domains = ["two.example"]
data_dir = "{two_dir}/data"
[tls]
cert = "{two_cert[0]}"
key = "{two_cert[1]}"
[c2s]
listen = ["{two_ip}:5222"]
direct_tls = []
[s2s]
listen = ["{two_ip}:5269"]
ca_file = "{ca.path}"
idle_timeout = "2s"
tor_socks = "{socks.address}"
tor_all = true
[http]
listen = ["{two_ip}:5443"]
[proxy65]
enabled = false
""")
        subprocess.run([sys.executable, "-m", "mbxmpp", "-c", two_cfg, "user", "add", "tom@two.example",
                        "--password", PASSWORD], check=True, capture_output=True,
                       env=dict(os.environ, **env), timeout=60)
        two = net.spawn("two", [sys.executable, "-m", "mbxmpp", "-c", two_cfg], "two.log", env)
        wait_port(net, two_ip, 5222, two, "two.log")
        wait_port(net, mb_ip, 5222, mb, "mbxmpp.log")
        wait_port(net, pro_ip, 5222, pro, "prosody.out")
        lab = Lab(net)
        lab.mb_ip, lab.pro_ip, lab.two_ip = mb_ip, pro_ip, two_ip  # type: ignore[attr-defined]
        lab.blackhole = blackhole  # type: ignore[attr-defined]
        lab.socks = socks  # type: ignore[attr-defined]
        lab.evil_cert = ca.issue("evil", ["evil.example"])  # type: ignore[attr-defined]
        lab.raw_cert = ca.issue("raw", ["raw1.example", "raw2.example"])  # type: ignore[attr-defined]
        yield lab
        blackhole.close()
        socks.close()
        for proc, log_name in ((mb, "mbxmpp.log"), (two, "two.log")):
            proc.terminate()
            assert proc.wait(15) == 0, net.log(log_name)[-5000:]
            assert "Traceback" not in net.log(log_name), net.log(log_name)
    finally:
        if os.environ.get("MBXMPP_LAB_LOGS"):
            print(net.log("mbxmpp.log")[-30000:], file=sys.stderr)
            print(net.log("prosody/prosody.log")[-30000:], file=sys.stderr)
        net.down()


async def login(ip: str, jid: str) -> Client:
    c = Client(jid, PASSWORD)
    c.add_event_handler("message_error", c.messages.put_nowait)  # bounces
    c.enable_direct_tls = False
    c.enable_plaintext = False
    c.connect(ip, 5222)
    await asyncio.wait_for(c.session_started.wait(), 15)
    c.send_presence()
    return c


async def next_message(c: Client, pred=lambda m: True, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        m = await asyncio.wait_for(c.messages.get(), max(0.1, deadline - time.monotonic()))
        if pred(m):
            return m


async def next_presence(c: Client, pred, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        p = await asyncio.wait_for(c.presences.get(), max(0.1, deadline - time.monotonic()))
        if pred(p):
            return p


async def chat_both_ways(a_ip: str, a_jid: str, b_ip: str, b_jid: str) -> None:
    """a and b log in to their servers and exchange one message each way (full JIDs checked)."""
    a = await login(a_ip, a_jid)
    b = await login(b_ip, b_jid)
    try:
        for src, dst in ((a, b), (b, a)):
            body = f"{src.boundjid.full} to {dst.boundjid.full}"
            src.send_message(mto=dst.boundjid.full, mbody=body, mtype="chat")
            m = await next_message(dst, lambda m, body=body: m["body"] == body)
            assert m["from"].full == src.boundjid.full
    finally:
        a.disconnect()
        b.disconnect()


async def log_says(lab, name: str, text: str, timeout: float = 20.0) -> None:
    """Wait until the log ``name`` of the lab contains ``text``."""
    deadline = time.monotonic() + timeout
    while text not in lab.net.log(name):
        assert time.monotonic() < deadline, f"{text!r} not in {name}:\n" + lab.net.log(name)[-3000:]
        await asyncio.sleep(0.2)


async def bounce_of(lab, to: str, timeout: float = 15.0) -> str:
    """alice sends a message to ``to``; the condition of the error that comes back from it."""
    alice = await login(lab.mb_ip, f"alice@mb.example/to-{to}")
    try:
        alice.send_message(mto=to, mbody="hello?", mtype="chat")
        err = await next_message(alice, lambda m: m["type"] == "error", timeout=timeout)
        assert err["from"].full == to
        return error_condition(err)
    finally:
        alice.disconnect()


def error_condition(stanza) -> str:
    return stanza["error"]["condition"]


async def test_subscription_and_messages_both_ways_with_sasl_external(lab):
    alice = await login(lab.mb_ip, "alice@mb.example/desk")
    pat = await login(lab.pro_ip, "pat@pro.example/desk")
    try:
        # Subscription: mbxmpp -> Prosody, Prosody's client answers (slixmpp auto-authorizes
        # and subscribes back), then presence flows both ways.
        alice.send_presence(pto="pat@pro.example", ptype="subscribe")
        p = await next_presence(pat, lambda p: p["type"] == "subscribe")
        assert p["from"].bare == "alice@mb.example"
        p = await next_presence(alice, lambda p: p["type"] == "subscribed")
        assert p["from"].bare == "pat@pro.example"
        await next_presence(alice, lambda p: p["from"].bare == "pat@pro.example" and p["type"] == "available")
        await next_presence(pat, lambda p: p["from"].bare == "alice@mb.example" and p["type"] == "available")

        alice.send_message(mto="pat@pro.example", mbody="hello from mbxmpp", mtype="chat")
        m = await next_message(pat, lambda m: m["body"] == "hello from mbxmpp")
        assert m["from"].full == "alice@mb.example/desk"
        pat.send_message(mto="alice@mb.example", mbody="hello from prosody", mtype="chat")
        m = await next_message(alice, lambda m: m["body"] == "hello from prosody")
        assert m["from"].full == "pat@pro.example/desk"
    finally:
        alice.disconnect()
        pat.disconnect()
    log = lab.net.log("mbxmpp.log")
    # Authenticated by certificate with SASL EXTERNAL (XEP-0178), Prosody's certificate checked
    # (PKIX), and made bidirectional (XEP-0288): Prosody's stanzas came back on our stream.
    assert "s2s out mb.example -> pro.example: ready (pkix, TLSv1.3, peer certificate: pkix, bidirectional)" in log
    assert "s2s in " not in log  # no second stream: Prosody answered on ours
    # The SRV record for direct TLS came first (XEP-0368); its target's IPv6 address (tried
    # first, RFC 8305) is unreachable, the IPv4 one answered.
    assert f"s2s out mb.example -> pro.example: connected to {lab.pro_ip}:5270" in log
    assert "xmpp.pro.example is fd00:dead::20" in lab.net.log("dns.log")
    plog = lab.net.log("prosody/prosody.log")
    assert "Accepting SASL EXTERNAL identity from mb.example" in plog


async def test_without_bidi_each_direction_has_its_own_stream(lab):
    """nobidi.example does not do XEP-0288: one stream each way, both with SASL EXTERNAL."""
    await chat_both_ways(lab.mb_ip, "alice@mb.example/nobidi", lab.pro_ip, "nat@nobidi.example/n")
    log = lab.net.log("mbxmpp.log")
    assert "s2s out mb.example -> nobidi.example: ready (pkix, TLSv1.3, peer certificate: pkix)\n" in log
    assert "nobidi.example authenticated by certificate (SASL EXTERNAL)\n" in log


async def test_dialback_when_our_certificate_does_not_verify(lab):
    """mb2.example's certificate is from a CA Prosody does not trust: Prosody offers no SASL
    EXTERNAL, mbxmpp uses dialback and Prosody connects to mb2.example to ask mbxmpp (the
    authoritative server) whether the key is good; Prosody's answer comes back on the
    bidirectional stream."""
    await chat_both_ways(lab.mb_ip, "amy@mb2.example/db", lab.pro_ip, "pat@pro.example/db2")
    log = lab.net.log("mbxmpp.log")
    assert "s2s out mb2.example -> pro.example: ready (dialback" in log, log[-5000:]
    # Prosody asked mbxmpp, the authoritative server for mb2.example, and got "valid".
    plog = lab.net.log("prosody/prosody.log")
    lines = plog.splitlines()
    assert any("Sending[s2sout]: <db:verify" in x and "to='mb2.example'" in x for x in lines), plog
    assert any("Received[s2sout]: <verify" in x and "from='mb2.example'" in x and "type='valid'" in x
               for x in lines), plog
    assert any("Sending[s2sin]: <db:result" in x and "to='mb2.example'" in x and "type='valid'" in x
               for x in lines), plog


async def test_incoming_dialback_when_the_certificate_names_another_domain(lab):
    await chat_both_ways(lab.mb_ip, "alice@mb.example/db", lab.pro_ip, "bea@bad.example/db")
    log = lab.net.log("mbxmpp.log")
    # Our certificate verifies at Prosody (SASL EXTERNAL); bad.example's names another domain,
    # so mbxmpp verified it by dialback, asking bad.example's authoritative server.
    assert "s2s out mb.example -> bad.example: ready (pkix" in log, log[-5000:]
    assert "bad.example authenticated for mb.example (dialback)" in log, log[-5000:]


async def test_wrong_certificate_refused_where_dialback_is_not_allowed(lab):
    alice = await login(lab.mb_ip, "alice@mb.example/strict")
    sam = await login(lab.pro_ip, "sam@strict.example/strict")
    try:
        alice.send_message(mto="sam@strict.example", mbody="refused", mtype="chat")
        err = await next_message(alice, lambda m: m["type"] == "error")
        assert error_condition(err) == "remote-server-not-found"
        sam.send_message(mto="alice@mb.example/strict", mbody="must not arrive", mtype="chat")
        err = await next_message(sam, lambda m: m["type"] == "error")
        assert err["from"].bare == "alice@mb.example"
        with pytest.raises(asyncio.TimeoutError):
            await next_message(alice, lambda m: m["body"] == "must not arrive", timeout=1.0)
    finally:
        alice.disconnect()
        sam.disconnect()
    log = lab.net.log("mbxmpp.log")
    assert "s2s out mb.example -> strict.example failed: " in log
    assert "the certificate of strict.example does not verify" in log
    assert "dialback refused for strict.example (a valid certificate is required)" in log


async def test_expired_certificate_refused_where_dialback_is_not_allowed(lab):
    """expired.example's certificate names it and chains to the trusted CA, but expired."""
    assert await bounce_of(lab, "x@expired.example") == "remote-server-not-found"
    log = lab.net.log("mbxmpp.log")
    assert "s2s out mb.example -> expired.example failed: " in log
    assert "the certificate of expired.example does not verify" in log
    assert "chain not valid for expired.example: validation failed: cert is not valid at validation time" in log


async def test_unresponsive_peer_bounced_with_remote_server_timeout(lab):
    assert await bounce_of(lab, "x@slow.example", timeout=TIMEOUT * 4) == "remote-server-timeout"


async def test_domain_without_dns_bounced_with_remote_server_not_found(lab):
    assert await bounce_of(lab, "x@nowhere.example") == "remote-server-not-found"
    assert "nowhere.example does not exist" in lab.net.log("mbxmpp.log")


# -- a raw peer ----------------------------------------------------------------------------------

async def raw_peer(lab, domain: str) -> RawPeer:
    r, w = await asyncio.open_connection(lab.mb_ip, 5269)
    peer = RawPeer(r, w)
    features = await peer.open(domain, "mb.example")
    assert features.find("starttls", "urn:ietf:params:xml:ns:xmpp-tls") is not None
    await peer.starttls(lab.evil_cert, "mb.example")
    return peer


async def test_spoofed_from_on_an_incoming_stream_is_a_stream_error(lab):
    alice = await login(lab.mb_ip, "alice@mb.example/spoof")
    peer = await raw_peer(lab, "evil.example")
    try:
        features = await peer.open("evil.example", "mb.example")
        mechs = [m.text for m in features.find("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl").elements()]
        assert mechs == ["EXTERNAL"]
        await peer.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>"
                        + base64.b64encode(b"evil.example").decode() + "</auth>")
        assert (await peer.element()).tag == "success"
        await peer.open("evil.example", "mb.example")
        # Its own domain: delivered.
        await peer.send("<message from='eve@evil.example/x' to='alice@mb.example/spoof' type='chat'>"
                        "<body>honest</body></message>")
        m = await next_message(alice, lambda m: m["body"] == "honest")
        assert m["from"].full == "eve@evil.example/x"
        # Another domain's address: the stream ends with <invalid-from/>, nothing is delivered.
        await peer.send("<message from='pat@pro.example/x' to='alice@mb.example/spoof' type='chat'>"
                        "<body>spoofed</body></message>")
        err = await peer.element()
        assert err.tag == "error" and err.first_child().tag == "invalid-from", err
        assert await peer.next() is STREAM_END
        with pytest.raises(asyncio.TimeoutError):
            await next_message(alice, lambda m: m["body"] == "spoofed", timeout=1.0)
    finally:
        alice.disconnect()
        peer.writer.close()


async def test_sasl_external_refused_for_a_domain_the_certificate_does_not_name(lab):
    peer = await raw_peer(lab, "pro.example")  # the certificate is evil.example's
    try:
        features = await peer.open("pro.example", "mb.example")
        assert features.find("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl") is None
        await peer.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
        failure = await peer.element()
        assert failure.tag == "failure" and failure.first_child().tag == "not-authorized"
        # Dialback with a forged key: mbxmpp asks pro.example's authoritative server (Prosody),
        # which does not know the key: invalid, and the stream ends.
        await peer.send("<db:result from='pro.example' to='mb.example'>forged</db:result>")
        res = await peer.element()
        assert res.tag == "result" and res.get("type") == "invalid", res
    finally:
        peer.writer.close()


async def test_onion_domain_through_the_socks_proxy_without_dns(lab):
    alice = await login(lab.mb_ip, "alice@mb.example/tor")
    tor = await login(lab.pro_ip, f"tor@{ONION}/hs")
    try:
        alice.send_message(mto=f"tor@{ONION}/hs", mbody="over tor", mtype="chat")
        m = await next_message(tor, lambda m: m["body"] == "over tor")
        assert m["from"].full == "alice@mb.example/tor"
    finally:
        alice.disconnect()
        tor.disconnect()
    assert (ONION, 5269) in lab.socks.requests
    assert "onion" not in lab.net.log("dns.log")  # no DNS query for the .onion name, ever
    assert f"s2s out mb.example -> {ONION}: connected to {ONION}:5269 through Tor" in lab.net.log("mbxmpp.log")


async def test_dane_ee_authenticates_and_a_tlsa_mismatch_is_refused(lab):
    """ok.sec.example's certificate chains to no trusted CA and dialback is not allowed for it:
    only its DNSSEC-validated TLSA record can authenticate it. bad.sec.example's certificate is
    valid PKIX, but does not match its TLSA record: refused."""
    alice = await login(lab.mb_ip, "alice@mb.example/dane")
    dan = await login(lab.pro_ip, "dan@ok.sec.example/d")
    try:
        alice.send_message(mto="dan@ok.sec.example/d", mbody="dane says yes", mtype="chat")
        await next_message(dan, lambda m: m["body"] == "dane says yes")
        alice.send_message(mto="dan@bad.sec.example", mbody="dane says no", mtype="chat")
        err = await next_message(alice, lambda m: m["type"] == "error")
        assert err["from"].bare == "dan@bad.sec.example"
        assert error_condition(err) == "remote-server-not-found"
    finally:
        alice.disconnect()
        dan.disconnect()
    log = lab.net.log("mbxmpp.log")
    assert "s2s out mb.example -> ok.sec.example: ready (pkix, TLSv1.3, peer certificate: dane)" in log
    assert "the certificate of bad.sec.example does not match its DANE TLSA records" in log
    ulog = lab.net.log("unbound/unbound.log")
    assert "_5269._tcp.xmpp.ok.sec.example. TLSA" in ulog, ulog[-3000:]


async def test_push_notification_to_an_app_server_on_another_domain(lab):
    """XEP-0357: the app server is a client of Prosody (pushapp@pro.example/srv); a phone on
    mbxmpp registers it, loses its connection, and a message for it makes mbxmpp publish the
    notification across s2s."""
    from slixmpp.xmlstream.handler import Callback
    from slixmpp.xmlstream.matcher import MatchXPath

    from tests.rawclient import RawClient

    app = await login(lab.pro_ip, "pushapp@pro.example/srv")
    pushes: asyncio.Queue = asyncio.Queue()

    def on_publish(iq) -> None:
        pushes.put_nowait(iq)
        iq.reply().send()

    app.register_handler(Callback("push", MatchXPath(
        "{jabber:client}iq/{http://jabber.org/protocol/pubsub}pubsub"), on_publish))
    r, w = await asyncio.open_connection(lab.mb_ip, 5222)
    phone = RawClient(r, w)
    alice = await login(lab.mb_ip, "alice@mb.example/pusher")
    try:
        await phone.auth("pia", PASSWORD, to="mb.example")
        await phone.bind("phone")
        await phone.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        assert (await phone.element()).tag == "enabled"
        await phone.send("<iq type='set' id='push1'><enable xmlns='urn:xmpp:push:0' "
                         "jid='pushapp@pro.example/srv' node='node-p'/></iq>")
        while True:
            el = await phone.element()
            if el.tag == "iq" and el.get("id") == "push1":
                assert el.get("type") == "result", el
                break
        phone.writer.transport.abort()   # the phone loses its network
        await asyncio.sleep(1.5)         # past resume_timeout: the session hibernates for push
        alice.send_message(mto="pia@mb.example", mbody="wake up", mtype="chat")
        iq = await asyncio.wait_for(pushes.get(), 15)
        assert iq["from"].full == "pia@mb.example" and iq["to"].full == "pushapp@pro.example/srv"
        publish = iq.xml.find("{http://jabber.org/protocol/pubsub}pubsub/{http://jabber.org/protocol/pubsub}publish")
        assert publish.get("node") == "node-p"
    finally:
        alice.disconnect()
        app.disconnect()


async def test_dialback_piggybacking_several_domains_on_one_incoming_stream(lab):
    """A raw peer authenticates raw1.example and raw2.example by dialback on ONE stream
    (XEP-0220 §2.5); mbxmpp asks the authoritative server (the same raw peer, found by SRV) over
    its own outgoing streams; stanzas from both domains are accepted, from a third refused."""
    keys: dict[tuple[str, str], str] = {}
    verified: list[tuple[str, str]] = []
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*lab.raw_cert)

    async def authoritative(r, w) -> None:
        p = RawPeer(r, w)
        try:
            h = await p.next()
            domain = h.attrs["to"]
            head = (f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                    f"xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
                    f"id='auth-{domain}' from='{domain}' to='mb.example' version='1.0'>")
            await p.send(head + "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
                         "<required/></starttls></stream:features>")
            assert (await p.element()).tag == "starttls"
            await p.send("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            await w.start_tls(sctx)
            p.parser.reset()
            await p.next()
            await p.send(head + "<stream:features><dialback xmlns='urn:xmpp:features:dialback'>"
                         "<errors/></dialback></stream:features>")
            while True:
                el = await p.element()
                if el.tag == "verify":
                    orig, recv, sid = el.get("to"), el.get("from"), el.get("id")
                    ok = keys.get((orig, sid)) == el.text
                    verified.append((orig, "valid" if ok else "invalid"))
                    await p.send(f"<db:verify from='{orig}' to='{recv}' id='{sid}' "
                                 f"type='{'valid' if ok else 'invalid'}'/>")
                # (its own db:result for mb.example is never answered: not needed here)
        except (AssertionError, OSError, asyncio.TimeoutError, ssl.SSLError):
            pass

    auth_server = await asyncio.start_server(authoritative, lab.net.gateway, 15270)
    alice = await login(lab.mb_ip, "alice@mb.example/piggy")
    peer = await raw_peer(lab, "raw1.example")  # its certificate (evil.example) names neither domain
    try:
        await peer.open("raw1.example", "mb.example")
        for domain in ("raw1.example", "raw2.example"):
            keys[(domain, peer.stream_id)] = f"key-for-{domain}"
            await peer.send(f"<db:result from='{domain}' to='mb.example'>key-for-{domain}</db:result>")
            res = await peer.element()
            assert (res.tag, res.get("type"), res.get("to")) == ("result", "valid", domain), res
        for domain in ("raw1.example", "raw2.example"):
            await peer.send(f"<message from='u@{domain}/x' to='alice@mb.example/piggy' type='chat'>"
                            f"<body>from {domain}</body></message>")
            m = await next_message(alice, lambda m, d=domain: m["body"] == f"from {d}")
            assert m["from"].full == f"u@{domain}/x"
        await peer.send("<message from='u@raw3.example/x' to='alice@mb.example/piggy'><body>no</body></message>")
        err = await peer.element()
        assert err.tag == "error" and err.first_child().tag == "invalid-from", err
    finally:
        alice.disconnect()
        peer.writer.close()
        auth_server.close()
    assert sorted(verified) == [("raw1.example", "valid"), ("raw2.example", "valid")]


async def test_mbxmpp_with_mbxmpp_bidirectional_and_idle_streams_closed(lab):
    """Two mbxmpp servers: SASL EXTERNAL and XEP-0288 on both ends (one stream carries both
    directions); two.example closes the stream once idle ([s2s] idle_timeout = 2 s), and the
    next message opens a new one."""
    alice = await login(lab.mb_ip, "alice@mb.example/two")
    tom = await login(lab.two_ip, "tom@two.example/t")
    try:
        alice.send_message(mto="tom@two.example/t", mbody="hi tom", mtype="chat")
        await next_message(tom, lambda m: m["body"] == "hi tom")
        tom.send_message(mto="alice@mb.example/two", mbody="hi alice", mtype="chat")
        m = await next_message(alice, lambda m: m["body"] == "hi alice")
        assert m["from"].full == "tom@two.example/t"
        two_log = lab.net.log("two.log")
        assert "mb.example authenticated by certificate (SASL EXTERNAL), bidirectional" in two_log
        assert "s2s out two.example" not in two_log  # tom's message rode alice's stream back
        await log_says(lab, "two.log", "closing idle stream")
        alice.send_message(mto="tom@two.example/t", mbody="again", mtype="chat")
        await next_message(tom, lambda m: m["body"] == "again")
    finally:
        alice.disconnect()
        tom.disconnect()
    log = lab.net.log("mbxmpp.log")
    ready = "s2s out mb.example -> two.example: ready (pkix, TLSv1.3, peer certificate: pkix, bidirectional)"
    assert log.count(ready) == 2
    # two.example's first SRV target stalls in TLS; the second one won the race, each time.
    assert log.count(f"s2s out mb.example -> two.example: connected to {lab.two_ip}:5269 in ") == 2


async def test_another_of_our_domains_piggybacks_on_an_established_stream(lab):
    """mb2.example joins mb.example's stream to two.example by dialback (XEP-0220 §2.5; two.example
    announces dialback errors), two.example asking mbxmpp (authoritative for mb2.example); the
    answer comes back on the same, bidirectional, stream."""
    alice = await login(lab.mb_ip, "alice@mb.example/pb")
    amy = await login(lab.mb_ip, "amy@mb2.example/pb")
    tom = await login(lab.two_ip, "tom@two.example/pb")
    try:
        alice.send_message(mto="tom@two.example/pb", mbody="carrier", mtype="chat")
        await next_message(tom, lambda m: m["body"] == "carrier")
        amy.send_message(mto="tom@two.example/pb", mbody="piggyback", mtype="chat")
        m = await next_message(tom, lambda m: m["body"] == "piggyback")
        assert m["from"].full == "amy@mb2.example/pb"
        tom.send_message(mto="amy@mb2.example/pb", mbody="back to amy", mtype="chat")
        await next_message(amy, lambda m: m["body"] == "back to amy")
    finally:
        alice.disconnect()
        amy.disconnect()
        tom.disconnect()
    log = lab.net.log("mbxmpp.log")
    assert "s2s out mb2.example -> two.example: ready (dialback, piggybacked on the stream of mb.example)" in log
    assert "s2s out mb2.example -> two.example: connected" not in log  # no stream of its own
    two_log = lab.net.log("two.log")
    assert "mb2.example authenticated for two.example (dialback), bidirectional" in two_log
    # two.example ([s2s] tor_all) asked mb2.example's authoritative server through the proxy,
    # which resolved the name (SRV and A lookups still went to DNS).
    assert "s2s out two.example -> mb2.example: connected to mb2.example:5269 through Tor" in two_log
    assert ("mb2.example", 5269) in lab.socks.requests


# -- ejabberd ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ejabberd(lab) -> Iterator[str]:
    """ejabberd (Debian's) serving ej.example and, with ej.example's certificate (so for another
    name), ejdb.example; in its own namespace; yields its IP."""
    why = ejabberd_unavailable()
    if why:
        pytest.skip(why)
    net = lab.net
    cert = net.ca.issue("ej", ["ej.example"])
    server = Ejabberd(net, "ej", {"ej.example": cert, "ejdb.example": None})
    server.start()
    server.register("eve", "ej.example", PASSWORD)
    server.register("eda", "ejdb.example", PASSWORD)
    yield net.ips["ej"]
    server.stop()


async def test_ejabberd_messages_both_ways(lab, ejabberd):
    await chat_both_ways(lab.mb_ip, "alice@mb.example/ej", ejabberd, "eve@ej.example/e")
    log = lab.net.log("mbxmpp.log")
    assert "s2s out mb.example -> ej.example: ready (pkix, TLSv1.3, peer certificate: pkix" in log
    assert "ej.example authenticated by certificate (SASL EXTERNAL)" in log
    # (ejabberd writes its log asynchronously)
    await log_says(lab, "ejabberd-ej/logs/ejabberd.log",
                   "Accepted inbound s2s EXTERNAL authentication mb.example -> ej.example")


async def test_dialback_with_ejabberd_both_ways(lab, ejabberd):
    """ejabberd presents ej.example's certificate for ejdb.example, and mb2.example's comes from a
    CA ejabberd does not trust: neither side can authenticate the other by certificate, so each
    direction (ejabberd has no XEP-0288: a stream each way) falls back to dialback (XEP-0220),
    each server asking the other's authoritative server."""
    await chat_both_ways(lab.mb_ip, "amy@mb2.example/ejdb", ejabberd, "eda@ejdb.example/e")
    log = lab.net.log("mbxmpp.log")
    # Our stream: we authenticated by dialback, ejabberd's certificate did not name ejdb.example.
    assert "s2s out mb2.example -> ejdb.example: ready (dialback, TLSv1.3, peer certificate: none)" in log, \
        log[-5000:]
    # ejabberd's stream: no SASL EXTERNAL for it, we asked ejdb.example's authoritative server.
    assert "ejdb.example authenticated for mb2.example (dialback)" in log, log[-5000:]
    assert "ejdb.example authenticated by certificate" not in log
    ejlog = "ejabberd-ej/logs/ejabberd.log"
    await log_says(lab, ejlog, "Accepted inbound s2s dialback authentication mb2.example -> ejdb.example")
    await log_says(lab, ejlog, "Accepted outbound s2s dialback authentication ejdb.example -> mb2.example")


async def test_our_onion_host_federates_only_through_tor(lab):
    """An .onion domain of ours reaches even a clearnet peer through the SOCKS proxy (never from
    the server's own address); Prosody answers on the same (bidirectional) stream: the onion
    name is in no DNS, Prosody could not connect to it."""
    await chat_both_ways(lab.mb_ip, f"olga@{OUR_ONION}/o", lab.pro_ip, "pat@pro.example/o")
    assert ("xmpp.pro.example", 5270) in lab.socks.requests
    log = lab.net.log("mbxmpp.log")
    assert f"s2s out {OUR_ONION} -> pro.example: connected to xmpp.pro.example:5270 through Tor" in log
