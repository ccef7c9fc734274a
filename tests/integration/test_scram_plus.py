"""SCRAM-*-PLUS with tls-server-end-point over a real TLS connection, and its attacks."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.integration.conftest import PASSWORD
from tests.rawclient import RawClient
from tests.unit.test_sasl import ScramClient

pytestmark = pytest.mark.realclient


async def _exchange(daemon, mech, *, flag=None, cb_mutate=lambda b: b, direct_tls=True):
    c = await RawClient.connect(daemon.tls if direct_tls else daemon.c2s, direct_tls=direct_tls)
    if not direct_tls:
        await c.open()
        await c.starttls()
    feats = await c.open()
    sslobj = c.writer.get_extra_info("ssl_object")
    cert = sslobj.getpeercert(binary_form=True)
    cb = cb_mutate(hashlib.sha256(cert).digest())  # ECDSA-SHA256 certificate -> SHA-256
    client = ScramClient(mech, username="alice", password=PASSWORD, cb_data=cb, flag=flag,
                         nonce=base64.b64encode(b"n" * 18).decode())
    await c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>"
                 + base64.b64encode(client.first()).decode() + "</auth>")
    ch = await c.element()
    if ch.tag != "challenge":
        return c, ch, client
    await c.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                 + base64.b64encode(client.final(base64.b64decode(ch.text))).decode() + "</response>")
    return c, await c.element(), client


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"])
@pytest.mark.parametrize("direct_tls", [True, False])
async def test_plus_login(daemon, mech, direct_tls):
    c, res, client = await _exchange(daemon, mech, direct_tls=direct_tls)
    assert res.tag == "success", res
    assert base64.b64decode(res.text) == client.expected_v
    await c.close()


async def test_plus_with_wrong_binding_fails(daemon):
    c, res, _ = await _exchange(daemon, "SCRAM-SHA-256-PLUS", cb_mutate=lambda b: b[::-1])
    assert res.tag == "failure" and res.find("not-authorized") is not None
    await c.close()


async def test_downgrade_flag_y_is_refused(daemon):
    # 'y' says "I could bind but think you can't": the server did advertise -PLUS: a downgrade.
    c, res, _ = await _exchange(daemon, "SCRAM-SHA-256", flag="y")
    assert res.tag == "failure" and res.find("not-authorized") is not None
    await c.close()
