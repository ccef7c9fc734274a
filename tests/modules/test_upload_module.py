"""The upload module in process (ServerHarness, its aiohttp app on a test server without TLS):
who may request slots on which host, and account deletion through the ACCOUNT_DELETED hook."""

from __future__ import annotations

import asyncio
import os
from urllib.parse import urlsplit

from aiohttp.test_utils import TestClient, TestServer

from mbxmpp.core import events as ev
from tests.harness import ServerHarness

NS_UPLOAD = "urn:xmpp:http:upload:0"


def slot_request(i: str, to: str, size: int = 5) -> str:
    return (f"<iq type='get' id='{i}' to='{to}'><request xmlns='{NS_UPLOAD}' filename='a.txt' "
            f"size='{size}' content-type='text/plain'/></iq>")


def path_of(url: str) -> str:
    p = urlsplit(url)
    return p.path + ("?" + p.query if p.query else "")


async def test_slots_only_for_the_parent_hosts_users():
    async with ServerHarness(modules=["disco", "upload"], domains=("localhost", "example.org")) as h:
        zed = await h.login("zed@example.org", "r")
        h.send(zed, slot_request("s1", "upload.localhost"))
        r = await zed.expect(lambda s: s.get("id") == "s1")
        assert r.get("type") == "error" and r.find("error").children[0].tag == "not-allowed"
        h.send(zed, slot_request("s2", "upload.example.org"))
        r = await zed.expect(lambda s: s.get("id") == "s2")
        get_url = r.find("slot", NS_UPLOAD).find("get", NS_UPLOAD).get("url")
        assert urlsplit(get_url).hostname == "example.org"


async def test_account_deletion_hook_removes_the_files():
    async with ServerHarness(modules=["disco", "upload"]) as h:
        mod = h.server.modules["upload"]
        alice = await h.login("alice@localhost", "r")
        bob = await h.login("bob@localhost", "r")
        urls = {}
        for who, c in (("alice", alice), ("bob", bob)):
            h.send(c, slot_request(who, "upload.localhost"))
            slot = (await c.expect(lambda s, w=who: s.get("id") == w)).find("slot", NS_UPLOAD)
            urls[who] = (slot.find("put", NS_UPLOAD).get("url"), slot.find("get", NS_UPLOAD).get("url"))
        client = TestClient(TestServer(h.server.http.app))
        await client.start_server()
        try:
            for who in urls:
                r = await client.put(path_of(urls[who][0]), data=b"hello", headers={"Content-Type": "text/plain"})
                assert r.status == 201
            files = {who: mod.store.path(urlsplit(urls[who][1]).path.split("/")[2]) for who in urls}
            assert all(os.path.exists(f) for f in files.values())

            h.server.hooks.fire_all(ev.ACCOUNT_DELETED, "alice@localhost")
            for _ in range(100):
                if not os.path.exists(files["alice"]):
                    break
                await asyncio.sleep(0.02)
            assert not os.path.exists(files["alice"]) and os.path.exists(files["bob"])
            assert (await client.get(path_of(urls["alice"][1]))).status == 404
            r = await client.get(path_of(urls["bob"][1]))
            assert r.status == 200 and await r.read() == b"hello"
            assert mod.store.used_bytes("alice@localhost") == 0 and mod.store.used_bytes("bob@localhost") == 5
        finally:
            await client.close()


async def test_expired_file_is_404_before_the_sweep_removes_it():
    import dataclasses

    from mbxmpp.config import UploadConfig

    async with ServerHarness(modules=["disco", "upload"],
                             upload=dataclasses.replace(UploadConfig(), expire_after=1.0)) as h:
        mod = h.server.modules["upload"]
        await mod.stop()                               # no sweep from here on
        alice = await h.login("alice@localhost", "r")
        h.send(alice, slot_request("s", "upload.localhost"))
        slot = (await alice.expect(lambda s: s.get("id") == "s")).find("slot", NS_UPLOAD)
        put_url, get_url = slot.find("put", NS_UPLOAD).get("url"), slot.find("get", NS_UPLOAD).get("url")
        client = TestClient(TestServer(h.server.http.app))
        await client.start_server()
        try:
            r = await client.put(path_of(put_url), data=b"hello", headers={"Content-Type": "text/plain"})
            assert r.status == 201
            assert (await client.get(path_of(get_url))).status == 200
            await asyncio.sleep(1.05)
            assert (await client.get(path_of(get_url))).status == 404
            assert (await client.head(path_of(get_url))).status == 404
            assert os.path.exists(mod.store.path(urlsplit(get_url).path.split("/")[2]))  # not swept
        finally:
            await client.close()


async def test_files_of_an_account_deleted_elsewhere_are_found_by_the_audit():
    """`user del` in another process deletes the records, not the files (no hook fires here):
    the sweep's audit finds the files whose record is gone."""
    async with ServerHarness(modules=["disco", "upload"]) as h:
        mod = h.server.modules["upload"]
        clients = {u: await h.login(f"{u}@localhost", "r") for u in ("alice", "bob")}
        client = TestClient(TestServer(h.server.http.app))
        await client.start_server()
        try:
            files = {}
            for u, c in clients.items():
                h.send(c, slot_request(u, "upload.localhost"))
                slot = (await c.expect(lambda s, u=u: s.get("id") == u)).find("slot", NS_UPLOAD)
                r = await client.put(path_of(slot.find("put", NS_UPLOAD).get("url")), data=b"hello",
                                     headers={"Content-Type": "text/plain"})
                assert r.status == 201
                files[u] = mod.store.path(urlsplit(slot.find("get", NS_UPLOAD).get("url")).path.split("/")[2])
            await h.server.storage.delete_owner("alice@localhost")     # what the CLI's `user del` does
            assert await mod.store.drop_orphans() == 1
            assert not os.path.exists(files["alice"]) and os.path.exists(files["bob"])
            assert mod.store.used_bytes("alice@localhost") == 0
        finally:
            await client.close()
