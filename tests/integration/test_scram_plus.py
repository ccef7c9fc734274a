"""SCRAM-*-PLUS with tls-server-end-point over a real TLS connection, and its attacks."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.integration.conftest import PASSWORD
from tests.rawclient import RawClient, WSRawClient
from tests.unit.test_sasl import ScramClient



async def _exchange(daemon, mech, *, flag=None, cb_mutate=lambda b: b, via="direct_tls"):
    if via == "ws":  # the binding is the HTTPS connection's TLS
        c = await WSRawClient.connect(daemon.http)
    else:
        c = await RawClient.connect(daemon.tls if via == "direct_tls" else daemon.c2s,
                                    direct_tls=via == "direct_tls")
    if via == "starttls":
        await c.open()
        await c.starttls()
    feats = await c.open()
    assert mech.removesuffix("-PLUS") + "-PLUS" in [m.text for m in feats.find(
        "mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl").elements()]
    sslobj = c.ssl_object()
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
@pytest.mark.parametrize("via", ["direct_tls", "starttls", "ws"])
async def test_plus_login(daemon, mech, via):
    c, res, client = await _exchange(daemon, mech, via=via)
    assert res.tag == "success", res
    assert base64.b64decode(res.text) == client.expected_v
    await c.close()


@pytest.mark.parametrize("via", ["direct_tls", "ws"])
async def test_plus_with_wrong_binding_fails(daemon, via):
    c, res, _ = await _exchange(daemon, "SCRAM-SHA-256-PLUS", cb_mutate=lambda b: b[::-1], via=via)
    assert res.tag == "failure" and res.find("not-authorized") is not None
    await c.close()


async def test_downgrade_flag_y_is_refused(daemon):
    # 'y' says "I could bind but think you can't": the server did advertise -PLUS: a downgrade.
    c, res, _ = await _exchange(daemon, "SCRAM-SHA-256", flag="y")
    assert res.tag == "failure" and res.find("not-authorized") is not None
    await c.close()
