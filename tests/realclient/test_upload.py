"""The flow of Conversations, Dino, Gajim and Converse.js with slixmpp's own XEP-0363 plugin:
discover the service, request a slot, PUT, share the GET URL in a message (with XEP-0066 OOB);
an OMEMO client's aesgcm:// link passes through the server unchanged."""

from __future__ import annotations

import asyncio
import io
import os
import ssl

import aiohttp
import aiohttp.connector
import pytest

from tests.realclient.conftest import connect, disconnect

pytestmark = pytest.mark.realclient


@pytest.fixture
def trust_daemon_certificate(daemon, monkeypatch):
    """slixmpp's PUT verifies the server certificate with aiohttp's default context: let that
    context trust the test daemon's self-signed certificate (and nothing is left unverified)."""
    ctx = ssl.create_default_context(cafile=os.path.join(daemon.dir, "data", "selfsigned.crt"))
    monkeypatch.setattr(aiohttp.connector, "_SSL_CONTEXT_VERIFIED", ctx)
    return ctx


async def _message(c, pred, timeout=10.0):  # type: ignore[no-untyped-def]
    while True:
        m = await asyncio.wait_for(c.messages.get(), timeout)
        if pred(m):
            return m


async def test_slixmpp_upload_then_share_the_link(daemon, trust_daemon_certificate):
    alice = await connect(daemon, "alice@localhost/phone", plugins=("xep_0030", "xep_0066", "xep_0363"))
    bob = await connect(daemon, "bob@localhost/desk", plugins=("xep_0066",))
    try:
        picture = b"\x89PNG\r\n\x1a\n" + os.urandom(300_000)
        url = await alice.plugin["xep_0363"].upload_file("holiday.png", size=len(picture),
                                                         content_type="image/png",
                                                         input_file=io.BytesIO(picture))
        assert url.startswith(f"https://localhost:{daemon.http}/upload/") and url.endswith("/holiday.png")
        assert alice.plugin["xep_0363"].max_file_size == 10 * 1024 * 1024   # from the disco form

        msg = alice.make_message(mto="bob@localhost", mbody=url, mtype="chat")
        msg["oob"]["url"] = url
        msg.send()
        m = await _message(bob, lambda m: m["body"] == url)
        assert m["oob"]["url"] == url

        async with aiohttp.ClientSession() as s:
            async with s.get(url, ssl=trust_daemon_certificate) as r:
                assert r.status == 200 and r.headers["Content-Type"] == "image/png"
                assert await r.read() == picture

        # An OMEMO client shares an aesgcm:// link (the key in the fragment): untouched.
        omemo = url.replace("https://", "aesgcm://") + "#" + os.urandom(44).hex()
        alice.send_message(mto="bob@localhost", mbody=omemo, mtype="chat")
        m = await _message(bob, lambda m: m["body"].startswith("aesgcm://"))
        assert m["body"] == omemo
    finally:
        await disconnect(alice, bob)
