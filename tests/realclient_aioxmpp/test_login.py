"""aioxmpp logs in over the wire: its own SASL choice, each SCRAM mechanism with and without
channel binding (aiosasl's tls-server-end-point), STARTTLS and direct TLS, and bad credentials."""

from __future__ import annotations

from datetime import timedelta

import aioxmpp
import aioxmpp.connector
import aiosasl
import OpenSSL.SSL
import pytest

from tests.realclient_aioxmpp.conftest import PASSWORD, make_client, online

pytestmark = pytest.mark.realclient


async def test_default_security_layer_binds_a_resource(daemon):
    async with online(daemon, "alice@localhost") as c:
        assert str(c.local_jid.bare()) == "alice@localhost"
        assert c.local_jid.resource


async def test_direct_tls(daemon):
    async with online(daemon, "bob@localhost", direct_tls=True) as c:
        assert str(c.local_jid.bare()) == "bob@localhost"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "SCRAM-SHA-256-PLUS",
                                       "SCRAM-SHA-1-PLUS", "PLAIN"])
async def test_each_mechanism(daemon, mechanism):
    async with online(daemon, "carol@localhost", mechanism=mechanism) as c:
        assert str(c.local_jid.bare()) == "carol@localhost"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1-PLUS"])
async def test_wrong_password_is_not_authorized(daemon, mechanism):
    with pytest.raises(aiosasl.AuthenticationFailure) as err:
        async with online(daemon, "carol@localhost", "wrong", mechanism=mechanism):
            pass
    assert err.value.opaque_error == "not-authorized"


async def test_unknown_user_is_not_authorized(daemon):
    with pytest.raises(aiosasl.AuthenticationFailure) as err:
        async with online(daemon, "nobody@localhost", PASSWORD, mechanism="SCRAM-SHA-256"):
            pass
    assert err.value.opaque_error == "not-authorized"


async def test_requested_resource_kept_and_conflict_gets_another(daemon):
    first = make_client(daemon, "dave@localhost/phone")
    async with first.connected():
        assert first.local_jid.resource == "phone"
        async with online(daemon, "dave@localhost/phone") as second:
            # RFC 6120 §7.7.2.2: the server may give the second session another resource.
            assert second.local_jid.resource and second.local_jid.resource != "phone"
        assert first.established


async def test_untrusted_certificate_is_refused(daemon):
    """The tier's trust is real: without the daemon's certificate, aioxmpp refuses the server."""
    client = aioxmpp.Client(aioxmpp.JID.fromstr("alice@localhost"),
                            aioxmpp.make_security_layer(PASSWORD),
                            override_peer=[("127.0.0.1", daemon.c2s,
                                            aioxmpp.connector.STARTTLSConnector())])
    with pytest.raises(Exception) as err:
        async with client.connected(timeout=timedelta(seconds=15)):
            pass
    # aioopenssl 0.6 then fails its own waiter twice: the handshake error is the context.
    cause = err.value if isinstance(err.value, OpenSSL.SSL.Error) else err.value.__context__
    assert isinstance(cause, OpenSSL.SSL.Error) and "certificate verify failed" in str(cause)
