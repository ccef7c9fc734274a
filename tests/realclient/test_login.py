"""slixmpp logs in over the wire with every SASL mechanism, on STARTTLS and direct TLS."""

from __future__ import annotations


import pytest

from tests.realclient.conftest import PASSWORD, connect, disconnect

pytestmark = pytest.mark.realclient


# slixmpp has no tls-server-end-point binding (its -PLUS needs tls-unique, absent on TLS 1.3);
# the -PLUS variants are exercised over the wire in tests/integration/test_scram_plus.py.
@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
async def test_login_each_mechanism(daemon, mech):
    c = await connect(daemon, "alice@localhost", sasl_mech=mech)
    assert c.boundjid.bare == "alice@localhost"
    assert c.boundjid.resource
    await disconnect(c)


async def test_login_direct_tls(daemon):
    c = await connect(daemon, "bob@localhost", direct_tls=True)
    assert c.boundjid.bare == "bob@localhost"
    await disconnect(c)


async def test_wrong_password_fails(daemon):
    with pytest.raises(PermissionError):
        c = await connect(daemon, "alice@localhost", "wrong password")
        await disconnect(c)


async def test_unknown_user_fails(daemon):
    with pytest.raises(PermissionError):
        await connect(daemon, "nobody@localhost", PASSWORD)


async def test_requested_resource_and_conflict(daemon):
    a1 = await connect(daemon, "alice@localhost/phone")
    assert a1.boundjid.resource == "phone"
    a2 = await connect(daemon, "alice@localhost/phone")
    # RFC 6120 §7.7.2.2: the server assigns a different resource instead of kicking the first.
    assert a2.boundjid.resource != "phone" and a2.boundjid.resource
    await disconnect(a1, a2)


async def test_ping_version_time_disco(daemon):
    c = await connect(daemon, "carol@localhost",
                      plugins=("xep_0030", "xep_0092", "xep_0199", "xep_0202", "xep_0012"))
    assert (await c.plugin["xep_0199"].ping("localhost", timeout=5)) is not None
    v = await c.plugin["xep_0092"].get_version("localhost", timeout=5)
    assert v["software_version"]["name"] == "mbxmpp"
    info = await c.plugin["xep_0030"].get_info("localhost", timeout=5)
    features = info["disco_info"]["features"]
    for ns in ("urn:xmpp:ping", "jabber:iq:version", "urn:xmpp:time", "jabber:iq:last",
               "http://jabber.org/protocol/disco#info"):
        assert ns in features
    t = await c.plugin["xep_0202"].get_entity_time("localhost", timeout=5)
    # slixmpp's own parser appends a second 'Z' to <utc/>; read the raw text instead.
    utc = t.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}utc").text
    assert utc.endswith("Z") and utc[:4].isdigit()
    last = await c.plugin["xep_0012"].get_last_activity("localhost", timeout=5)
    assert int(last["last_activity"]["seconds"]) >= 0
    await disconnect(c)
