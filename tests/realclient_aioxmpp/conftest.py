"""Fixtures for the aioxmpp tier: a spawned daemon with its shipped defaults and aioxmpp clients
that verify its certificate (the self-signed one it made, trusted as a CA)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import timedelta
from typing import Any, AsyncIterator, Callable, Iterator

import aioxmpp
import aioxmpp.connector
import aioxmpp.dispatcher
import aioxmpp.node
import aioxmpp.security_layer
import aiosasl
import OpenSSL.SSL
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.daemon import Daemon
from tests.realclient.conftest import PASSWORD, next_match, running_daemon

__all__ = ["PASSWORD", "next_match"]  # the tier's tests take them from here

USERS = ["alice@localhost", "bob@localhost", "carol@localhost", "dave@localhost"]


def _matches_hostname(cert: OpenSSL.crypto.X509, hostname: str) -> bool:
    """RFC 6125 DNS-ID check for aioxmpp's verifier. aioxmpp 0.13.3 reads subjectAltName with
    X509.get_extension (removed in pyOpenSSL 24.3) and matches with ssl.match_hostname (removed in
    Python 3.12); this reads the names through cryptography (the server's certificate is
    verified against the trusted file by OpenSSL all the same)."""
    parsed = cert.to_cryptography()
    try:
        names = parsed.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in parsed.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    host = hostname.lower().rstrip(".")
    for name in (n.lower().rstrip(".") for n in names):
        if name == host or (name.startswith("*.") and host.partition(".")[2] == name[2:]):
            return True
    return False


aioxmpp.security_layer.check_x509_hostname = _matches_hostname


async def _no_discovery(domain: str, **_kw: Any) -> list:
    return []


# Clients reach the daemon only through override_peer; when that fails (a restarted daemon),
# aioxmpp would look up SRV records next: the tier stays on loopback and never resolves names.
aioxmpp.node.discover_connectors = _no_discovery  # type: ignore[assignment]


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    yield from running_daemon(USERS)


def trusting_context(daemon: Daemon) -> Callable[[], OpenSSL.SSL.Context]:
    """aioxmpp's default context (peer verification on) trusting the daemon's certificate."""
    cafile = os.path.join(daemon.dir, "data", "selfsigned.crt")

    def factory() -> OpenSSL.SSL.Context:
        ctx = aioxmpp.security_layer.default_ssl_context()
        ctx.load_verify_locations(cafile)
        return ctx
    return factory


class ServerEndPoint(aiosasl.channel_binding.TLSServerEndPoint):
    """RFC 5929 tls-server-end-point. aiosasl 0.5 derives the hash from the signature algorithm's
    name by splitting at "with", which for "ecdsa-with-SHA256" (the daemon's certificate) gives
    "ecdsa-"; read the hash from cryptography instead (MD5 and SHA-1 become SHA-256)."""

    def extract_cb_data(self) -> bytes:
        cert = self._connection.get_peer_certificate().to_cryptography()
        algorithm = cert.signature_hash_algorithm
        if algorithm is None or algorithm.name in ("md5", "sha1"):
            algorithm = hashes.SHA256()
        return cert.fingerprint(algorithm)


class OneMechanism(aioxmpp.security_layer.SASLProvider):
    """SASL with exactly one named mechanism (aioxmpp itself picks the strongest SCRAM and has no
    -PLUS); a -PLUS name binds to the channel with tls-server-end-point."""

    def __init__(self, mechanism: str, password: str) -> None:
        super().__init__()
        self.mechanism = mechanism
        self.password = password

    async def execute(self, client_jid, features, xmlstream, tls_transport):  # type: ignore[no-untyped-def]
        offered = features[aioxmpp.security_layer.SASLMechanisms].get_mechanism_list()
        if self.mechanism not in offered:
            raise aiosasl.AuthenticationFailure("mechanism-not-offered", text=self.mechanism)

        async def credentials() -> tuple[str, str]:
            return client_jid.localpart, self.password

        mechanism: aiosasl.SASLMechanism
        if self.mechanism == "PLAIN":
            mechanism, token = aiosasl.PLAIN(credentials), "PLAIN"
        elif self.mechanism.endswith("-PLUS"):
            binding = ServerEndPoint(tls_transport.get_extra_info("ssl_object"))
            mechanism = aiosasl.SCRAMPLUS(credentials, binding)
            token = aiosasl.SCRAMPLUS.any_supported([self.mechanism])
        else:
            mechanism = aiosasl.SCRAM(credentials)
            token = aiosasl.SCRAM.any_supported([self.mechanism])
        assert token is not None, self.mechanism
        return await self._execute(aioxmpp.sasl.SASLXMPPInterface(xmlstream), mechanism, token)


def make_client(daemon: Daemon, jid: str, password: str = PASSWORD, *, direct_tls: bool = False,
                mechanism: str | None = None) -> aioxmpp.Client:
    if mechanism is None:
        security = aioxmpp.make_security_layer(password, ssl_context_factory=trusting_context(daemon))
    else:
        security = aioxmpp.security_layer.SecurityLayer(trusting_context(daemon),
                                         aioxmpp.security_layer.PKIXCertificateVerifier, True,
                                         (OneMechanism(mechanism, password),))
    connector = (aioxmpp.connector.XMPPOverTLSConnector() if direct_tls
                 else aioxmpp.connector.STARTTLSConnector())
    port = daemon.tls if direct_tls else daemon.c2s
    return aioxmpp.Client(aioxmpp.JID.fromstr(jid), security,
                          override_peer=[("127.0.0.1", port, connector)])


@contextlib.asynccontextmanager
async def online(daemon: Daemon, jid: str, password: str = PASSWORD, *, available: bool = True,
                 services: tuple[type, ...] = (), **kw: Any) -> AsyncIterator[aioxmpp.Client]:
    """A connected client (available by default), stopped on exit. ``services`` are summoned
    before the stream starts, as an application does (RosterClient then asks for the roster and
    so becomes an interested resource, RFC 6121 §2.1.6)."""
    client = make_client(daemon, jid, password, **kw)
    for service in services:
        client.summon(service)
    if available:
        client.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True))
    async with client.connected(timeout=timedelta(seconds=15)):
        yield client


def inbox(client: aioxmpp.Client) -> asyncio.Queue:
    """Every message stanza the client receives."""
    q: asyncio.Queue = asyncio.Queue()
    client.summon(aioxmpp.dispatcher.SimpleMessageDispatcher).register_callback(
        None, None, q.put_nowait)
    return q


def body(msg: aioxmpp.Message) -> str | None:
    return msg.body.any() if msg.body else None


def chat(to: str, text: str) -> aioxmpp.Message:
    msg = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=aioxmpp.JID.fromstr(to))
    msg.body[None] = text
    return msg
