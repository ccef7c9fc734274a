"""The s2s listener over real sockets (no peer server needed): stream errors on bad headers, the
limits on unauthenticated streams, and certificates reloaded without dropping connections."""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Iterator

import pytest

from mbxmpp.xml import STREAM_END, StreamHeader
from tests.daemon import Daemon
from tests.interop.netlab import CA, S2S_HEADER, RawPeer



def header(ns: str = "jabber:server", to: str = "localhost") -> str:
    return S2S_HEADER.format(ns=ns, frm="peer.example", to=to)


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon()
    # (the Daemon writes its own [s2s] section with the listen address; the timeout joins it)
    with open(d.config_path) as f:
        text = f.read()
    with open(d.config_path, "w") as f:
        f.write(text.replace("[s2s]\n", '[s2s]\ntimeout = "1s"\n'))
    d.start()
    yield d
    d.finish()


@pytest.mark.parametrize("ns, to, condition", [
    ("jabber:client", "localhost", "invalid-namespace"),
    ("jabber:server", "elsewhere.example", "host-unknown"),
])
async def test_bad_headers(daemon, ns, to, condition):
    p = await RawPeer.connect("127.0.0.1", daemon.s2s)
    try:
        await p.send(header(ns, to))
        assert await p.stream_error() == condition
    finally:
        p.close()


async def test_stanzas_and_dialback_before_tls_are_refused(daemon):
    p = await RawPeer.connect("127.0.0.1", daemon.s2s)
    try:
        await p.send(header())
        assert isinstance(await p.next(), StreamHeader)
        features = await p.next()
        assert features.find("starttls", "urn:ietf:params:xml:ns:xmpp-tls").find(
            "required", "urn:ietf:params:xml:ns:xmpp-tls") is not None
        await p.send("<message from='a@peer.example' to='b@localhost'><body>x</body></message>")
        assert await p.stream_error() == "not-authorized"
    finally:
        p.close()
    p = await RawPeer.connect("127.0.0.1", daemon.s2s)
    try:
        await p.send(header())
        await p.send("<db:result from='peer.example' to='localhost'>key</db:result>")
        assert await p.stream_error() == "policy-violation"  # TLS first (RFC 6120 §5.3.1)
    finally:
        p.close()


async def test_a_stream_that_never_authenticates_is_closed(daemon):
    p = await RawPeer.connect("127.0.0.1", daemon.s2s)
    try:
        await p.send(header())
        assert isinstance(await p.next(), StreamHeader)
        await p.next()  # features
        # [s2s] timeout is 1 s: closed after twice that, without a word from us.
        assert await p.next(timeout=10) is STREAM_END
    finally:
        p.close()


async def test_unauthenticated_streams_per_address_are_bounded(daemon):
    from mbxmpp.s2s.net import MAX_UNAUTH_PER_IP
    peers = [await RawPeer.connect("127.0.0.1", daemon.s2s) for _ in range(MAX_UNAUTH_PER_IP)]
    try:
        for p in peers:  # each gets its header: the server took it
            await p.send(header())
            assert isinstance(await p.next(), StreamHeader)
        extra = await RawPeer.connect("127.0.0.1", daemon.s2s)
        assert await extra.stream_error() == "policy-violation"
        extra.close()
    finally:
        for p in peers:
            p.close()


async def test_certificates_reloaded_for_new_connections_only(tmp_path):
    """reload_tls: new connections get the new certificate, an established one stays."""
    from mbxmpp.config import load_config
    from mbxmpp.server import Server

    ca = CA(str(tmp_path / "ca"))
    first = ca.issue("first", ["localhost"])
    cert_path, key_path = str(tmp_path / "cur.crt"), str(tmp_path / "cur.key")
    for src, dst in zip(first, (cert_path, key_path)):
        os.replace(src, dst)
    cfg_path = tmp_path / "mbxmpp.toml"
    cfg_path.write_text(f"""
[server]
domains = ["localhost"]
data_dir = "{tmp_path}/data"
[tls]
cert = "{cert_path}"
key = "{key_path}"
[c2s]
listen = ["127.0.0.1:0"]
direct_tls = []
[s2s]
listen = ["127.0.0.1:0"]
direct_tls = ["127.0.0.1:0"]
[http]
listen = ["127.0.0.1:0"]
[proxy65]
enabled = false
""")
    server = Server(load_config(cfg_path), storage_kind="memory")
    await server.start()
    try:
        s2s = server.s2s
        assert s2s is not None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["xmpp-server"])

        async def serial() -> tuple[int, RawPeer]:
            # (port 0 in the test: a re-created listener has a new port)
            port = s2s.direct_listeners[0].sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
            der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
            from cryptography import x509
            return x509.load_der_x509_certificate(der).serial_number, RawPeer(r, w)

        old_serial, old_conn = await serial()
        second = ca.issue("second", ["localhost"])
        for src, dst in zip(second, (cert_path, key_path)):
            os.replace(src, dst)
        server.tls = server.tls_contexts()
        await s2s.reload_tls()
        new_serial, new_conn = await serial()
        assert new_serial != old_serial
        # The established connection still works: its stream header is answered.
        await old_conn.send(header())
        assert isinstance(await old_conn.next(), StreamHeader)
        # The operator's view lists both incoming streams (not authenticated yet).
        from mbxmpp.s2s.net import format_streams
        rows = s2s.describe()
        assert [(r["direction"], r["remote"], r["auth"], r["tls"]) for r in rows] == [
            ("in", "", "none", "TLSv1.3"), ("in", "peer.example", "none", "TLSv1.3")]
        table = format_streams(rows)
        assert table[0].startswith("REMOTE") and table[-1] == "2 streams"
        new_conn.close()
        old_conn.close()
    finally:
        await server.stop()


async def test_a_peer_with_an_untrusted_certificate_gets_through_tls_to_dialback(daemon, tmp_path):
    """A self-signed or private-CA certificate must not fail the TLS handshake: such peers
    authenticate with dialback. SASL EXTERNAL is not offered to them."""
    cert = CA(str(tmp_path)).issue("peer", ["peer.example"])
    p = await RawPeer.connect("127.0.0.1", daemon.s2s)
    try:
        await p.open("peer.example", "localhost")
        await p.starttls(cert, "localhost")
        features = await p.open("peer.example", "localhost")
        assert features.find("dialback", "urn:xmpp:features:dialback") is not None
        assert features.find("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl") is None
    finally:
        p.close()
