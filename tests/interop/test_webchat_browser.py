"""The web chat in a real browser: Debian's Chromium, headless, driven by Playwright, logs in at
/chat as a user, talks with a second user connected over TCP (slixmpp) both ways, and joins a
group chat when the server has one. Screenshots are kept in test-artifacts/."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from tests.daemon import Daemon
from tests.realclient.conftest import PASSWORD, connect, disconnect
from tests.webchat_assets import converse_tarball

pytestmark = pytest.mark.interop

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "test-artifacts")
# As the probe of this machine kind starts Chromium: no background connections to the outside.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--ignore-certificate-errors"]


@pytest.fixture(scope="module")
def daemon():
    d = Daemon()
    for u in ("alice@localhost", "bob@localhost", "carol@localhost"):
        d.add_user(u, PASSWORD)
    d.cli("webchat", "fetch", "--tarball", converse_tarball())
    d.start()
    yield d
    d.finish()


async def _shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    os.makedirs(ARTIFACTS, exist_ok=True)
    await page.screenshot(path=os.path.join(ARTIFACTS, f"webchat-{name}.png"), full_page=True)


@pytest.mark.parametrize("transport", ["websocket", "bosh"])
async def test_browser_logs_in_chats_and_joins_a_room(daemon, transport):
    """Over WebSocket (the page's default), and over BOSH alone (/chat/?transport=bosh leaves
    Converse.js no WebSocket URL). One user each: Converse.js restores the rooms a user was in."""
    from playwright.async_api import async_playwright

    user = "alice@localhost" if transport == "websocket" else "carol@localhost"

    bob = await connect(daemon, "bob@localhost")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(ignore_https_errors=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            base = f"https://localhost:{daemon.http}/chat/"
            if transport == "bosh":
                base += "?transport=bosh"
            await page.goto(base)
            await page.fill("input[name=jid]", user)
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_selector("converse-user-profile, .controlbox-heading, converse-roster",
                                         timeout=20000)
            await _shot(page, f"{transport}-1-logged-in")
            listed = (await asyncio.to_thread(daemon.cli, "sessions", "list")).stdout.splitlines()
            row = next(line.split() for line in listed if line.startswith(user + "/"))
            assert row[1] == transport, listed

            # Open a chat with bob (Converse's own URL route) and write to him.
            await page.goto(base + "#converse/chat?jid=bob@localhost")
            box = page.locator("textarea.chat-textarea").first
            await box.wait_for(timeout=15000)
            await box.fill("hello from the browser")
            await box.press("Enter")
            msg = await asyncio.wait_for(_next_chat(bob), 15)
            assert msg["body"] == "hello from the browser"
            assert str(msg["from"]).startswith(user + "/")

            bob.send_message(mto=msg["from"], mbody="hello back over TCP", mtype="chat")
            await page.wait_for_selector("text=hello back over TCP", timeout=15000)
            await _shot(page, f"{transport}-2-chat")

            if daemon_has_muc(daemon):
                await page.goto(base + "#converse/room?jid=lobby@conference.localhost")
                room_box = page.locator("converse-muc textarea.chat-textarea, .chatroom textarea.chat-textarea").first
                await room_box.wait_for(timeout=20000)
                await room_box.fill("hi room")
                await room_box.press("Enter")
                await page.wait_for_selector("text=hi room", timeout=15000)
                await _shot(page, f"{transport}-3-room")
            assert not errors, errors
        except Exception:
            await _shot(page, f"{transport}-failure")
            raise
        finally:
            await browser.close()
            await disconnect(bob)


def daemon_has_muc(daemon: Daemon) -> bool:
    from mbxmpp.modules import REGISTRY
    return "muc" in REGISTRY


async def _next_chat(client):  # type: ignore[no-untyped-def]
    while True:
        m = await client.messages.get()
        if m["type"] in ("chat", "normal") and m["body"]:
            return m
