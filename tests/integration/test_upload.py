"""HTTP File Upload (XEP-0363) against the spawned daemon: slots over XMPP (raw client), the files
over HTTPS with aiohttp, the upload directory and LMDB checked on disk."""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Iterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from mbxmpp.xml.element import Element
from tests.daemon import Daemon
from tests.rawclient import RawClient, client_ssl

PASSWORD = "pw-upload"
NS_UPLOAD = "urn:xmpp:http:upload:0"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(extra='[upload]\nquota_per_user = "20MiB"\n')
    for u in ("alice", "bob", "flood", "quota"):
        d.add_user(f"{u}@localhost", PASSWORD)
    d.start()
    yield d
    d.finish()


async def _login(d: Daemon, user: str) -> RawClient:
    c = await RawClient.connect(d.c2s)
    await c.login(user, PASSWORD)
    return c


_ids = iter(range(1, 10**9))


async def request_slot(c: RawClient, filename: str, size: int, ctype: str | None = "application/octet-stream",
                       to: str = "upload.localhost") -> Element:
    i = f"s{next(_ids)}"
    ct = f" content-type='{ctype}'" if ctype else ""
    await c.send(f"<iq type='get' id='{i}' to='{to}'><request xmlns='{NS_UPLOAD}' "
                 f"filename='{filename}' size='{size}'{ct}/></iq>")
    while True:
        el = await c.element(10)
        if el.tag == "iq" and el.get("id") == i:
            return el


def urls(reply: Element) -> tuple[str, str]:
    assert reply.get("type") == "result", reply
    slot = reply.find("slot", NS_UPLOAD)
    return slot.find("put", NS_UPLOAD).get("url"), slot.find("get", NS_UPLOAD).get("url")  # type: ignore[union-attr]


def condition(reply: Element) -> str:
    err = reply.find("error")
    assert err is not None, reply
    return next(c.tag for c in err.elements() if c.ns == NS_STANZAS and c.tag != "text")


def local(url: str) -> str:
    """The URL with its host replaced by 127.0.0.1 (the daemon listens there only)."""
    p = urlsplit(url)
    return p._replace(netloc=f"127.0.0.1:{p.port}").geturl()


async def put(url: str, body: bytes, ctype: str = "application/octet-stream", **headers: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s:
        async with s.put(local(url), data=body, headers={"Content-Type": ctype, **headers}, ssl=client_ssl()) as r:
            return r.status, await r.text()


async def get(url: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.request(method, local(url), headers=headers, ssl=client_ssl()) as r:
            return r.status, dict(r.headers), await r.read()


async def upload(c: RawClient, name: str, body: bytes, ctype: str = "application/octet-stream") -> str:
    put_url, get_url = urls(await request_slot(c, name, len(body), ctype))
    status, text = await put(put_url, body, ctype)
    assert status == 201, text
    return get_url


def stored_files(d: Daemon) -> list[str]:
    root = os.path.join(d.dir, "data", "upload")
    return [os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs]


# -- disco and slots ----------------------------------------------------------------------------------
async def test_disco_advertises_upload_and_max_size(daemon):
    c = await _login(daemon, "alice")
    await c.send("<iq type='get' id='d1' to='upload.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    info = await c.element()
    q = info.first_child()
    assert NS_UPLOAD in {f.get("var") for f in q.findall("feature")}
    form = q.find("x", "jabber:x:data")
    fields = {f.get("var"): f.findtext("value", "jabber:x:data") for f in form.findall("field", "jabber:x:data")}
    assert fields == {"FORM_TYPE": NS_UPLOAD, "max-file-size": str(10 * MiB)}
    await c.send("<iq type='get' id='d2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    items = await c.element()
    assert "upload.localhost" in {i.get("jid") for i in items.first_child().children}
    await c.close()


async def test_file_over_the_limit_refused_with_the_limit(daemon):
    c = await _login(daemon, "alice")
    r = await request_slot(c, "big.bin", 10 * MiB + 1)
    assert r.get("type") == "error" and condition(r) == "not-acceptable"
    assert r.find("error").get("type") == "modify"
    too_large = r.find("error").find("file-too-large", NS_UPLOAD)
    assert too_large.findtext("max-file-size", NS_UPLOAD) == str(10 * MiB)
    for bad in ("size='-1'", "size='ten'", "size='²'", ""):
        await c.send(f"<iq type='get' id='b' to='upload.localhost'>"
                     f"<request xmlns='{NS_UPLOAD}' filename='x' {bad}/></iq>")
        assert condition(await c.element()) == "bad-request"
    await c.close()


# -- upload and download ------------------------------------------------------------------------------
async def test_upload_download_byte_exact_and_by_range(daemon):
    c = await _login(daemon, "alice")
    body = os.urandom(3 * MiB + 12345)          # several chunks, a short last one
    put_url, get_url = urls(await request_slot(c, "holiday photo.jpg", len(body), "image/jpeg"))
    assert put_url.startswith(get_url + "?token=") and get_url.endswith("/holiday_photo.jpg")
    status, text = await put(put_url, body, "image/jpeg")
    assert status == 201, text

    status, h, got = await get(get_url)
    assert status == 200 and got == body
    assert h["Content-Length"] == str(len(body)) and h["Content-Type"] == "image/jpeg"
    assert h["X-Content-Type-Options"] == "nosniff" and "default-src 'none'" in h["Content-Security-Policy"]
    assert h["Access-Control-Allow-Origin"] == "*" and h["Accept-Ranges"] == "bytes"

    for rng, lo, hi in (("bytes=0-99", 0, 99), ("bytes=65530-131080", 65530, 131080),
                        (f"bytes={len(body) - 10}-", len(body) - 10, len(body) - 1),
                        ("bytes=-70000", len(body) - 70000, len(body) - 1),
                        (f"bytes=100-{len(body) + 50}", 100, len(body) - 1)):
        status, h, got = await get(get_url, Range=rng)
        assert status == 206 and got == body[lo:hi + 1], rng
        assert h["Content-Range"] == f"bytes {lo}-{hi}/{len(body)}"
    status, h, _ = await get(get_url, Range=f"bytes={len(body)}-")
    assert status == 416 and h["Content-Range"] == f"bytes */{len(body)}"

    status, h, got = await get(get_url, "HEAD")
    assert status == 200 and got == b"" and h["Content-Length"] == str(len(body))
    await c.close()


async def test_unsafe_types_are_attachments_and_cors_preflight(daemon):
    c = await _login(daemon, "alice")
    page = b"<html><script>alert(1)</script></html>"
    get_url = await upload(c, "page.html", page, "text/html")
    status, h, got = await get(get_url)
    assert status == 200 and got == page
    assert h["Content-Type"] == "application/octet-stream"
    assert h["Content-Disposition"].startswith("attachment;") and 'filename="page.html"' in h["Content-Disposition"]
    txt = await upload(c, "résumé.txt", b"hello", "text/plain")
    assert txt.endswith("/r%C3%A9sum%C3%A9.txt")
    status, h, got = await get(txt)
    assert status == 200 and got == b"hello"
    assert h["Content-Type"] == "text/plain; charset=utf-8" and h["Content-Disposition"].startswith("inline;")
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9.txt" in h["Content-Disposition"]

    async with aiohttp.ClientSession() as s:
        async with s.options(local(get_url), headers={"Origin": "https://chat.example",
                                                      "Access-Control-Request-Method": "PUT"}, ssl=client_ssl()) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert "PUT" in r.headers["Access-Control-Allow-Methods"]
            assert "Content-Type" in r.headers["Access-Control-Allow-Headers"]
    await c.close()


async def test_stored_bytes_are_encrypted_and_the_key_is_only_in_the_url(daemon):
    c = await _login(daemon, "alice")
    marker = b"PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
    body = marker * 5000 + b"end"
    get_url = await upload(c, "secret-notes.txt", body, "text/plain")
    slot, secret = urlsplit(get_url).path.split("/")[2:4]
    await asyncio.sleep(0.2)
    files = stored_files(daemon)
    assert any(f.endswith(slot) for f in files)
    for path in files + [os.path.join(daemon.dir, "data", n) for n in os.listdir(os.path.join(daemon.dir, "data"))
                         if os.path.isfile(os.path.join(daemon.dir, "data", n))]:
        with open(path, "rb") as f:
            data = f.read()
        assert marker not in data, path
        assert secret.encode() not in data, path       # the key's secret is nowhere on disk
        assert b"secret-notes" not in data, path        # nor the file's name
    status, _, got = await get(get_url)
    assert status == 200 and got == body
    await c.close()


async def test_wrong_or_cut_secret_is_a_plain_404(daemon):
    c = await _login(daemon, "alice")
    get_url = await upload(c, "a.bin", b"x" * 1000)
    base, secret, name = get_url.rsplit("/", 2)
    wrong = ("A" if secret[0] != "A" else "B") + secret[1:]
    unknown = await get(base.rsplit("/", 1)[0] + "/AAAAAAAAAAAAAAAAAAAAAA/" + secret + "/" + name)
    for url in (f"{base}/{wrong}/{name}", f"{base}/{secret[:-1]}/{name}", f"{base}/{secret[:20]}/{name}"):
        for method in ("GET", "HEAD"):
            status, _, body = await get(url, method)
            assert status == 404, url
            if method == "GET":
                assert body == unknown[2]
    await c.close()


async def test_tampered_ciphertext_is_never_served(daemon):
    c = await _login(daemon, "alice")
    body = os.urandom(1_500_000)
    first = await upload(c, "t1.bin", body)
    later = await upload(c, "t2.bin", body)
    for url, offset in ((first, 10), (later, 1_300_000)):
        slot = urlsplit(url).path.split("/")[2]
        path = next(f for f in stored_files(daemon) if f.endswith(slot))
        with open(path, "r+b") as f:
            f.seek(offset)
            b = f.read(1)
            f.seek(offset)
            f.write(bytes([b[0] ^ 1]))
    status, _, got = await get(first)
    assert status == 500 and body[:100] not in got
    # Damage past the first megabyte of output: the headers are out, the body stops short.
    with pytest.raises(aiohttp.ClientPayloadError):
        await get(later)
    status, _, got = await get(later, Range="bytes=0-1000")
    assert status == 206 and got == body[:1001]     # undamaged chunks are still served
    await c.close()


# -- bad PUTs -------------------------------------------------------------------------------------------
async def test_put_token_missing_forged_reused_and_mismatched(daemon):
    c = await _login(daemon, "alice")
    body = b"0123456789" * 100
    put_url, get_url = urls(await request_slot(c, "doc.pdf", len(body), "application/pdf"))
    assert (await put(get_url, body, "application/pdf"))[0] == 403                 # no token
    forged = re.sub(r"token=.*", "token=" + "A" * 43, put_url)
    assert (await put(forged, body, "application/pdf"))[0] == 403
    base, secret, name = get_url.rsplit("/", 2)
    other_secret = put_url.replace(secret, "B" * 43)
    assert (await put(other_secret, body, "application/pdf"))[0] == 403           # token bound to the secret
    renamed = put_url.replace("/doc.pdf?", "/evil.html?")
    assert (await put(renamed, body, "application/pdf"))[0] == 403                 # and to the name
    assert (await put(put_url, body + b"!", "application/pdf"))[0] == 413          # bigger than the slot
    assert (await put(put_url, body[:-1], "application/pdf"))[0] == 400            # smaller
    assert (await put(put_url, body, "text/html"))[0] == 415                       # another type
    assert (await get(get_url))[0] == 404                                          # nothing stored yet
    assert (await put(put_url, body, "application/pdf"))[0] == 201
    assert (await put(put_url, b"9" * len(body), "application/pdf"))[0] == 409     # spent
    assert (await get(get_url))[2] == body
    await c.close()


async def test_chunked_put_is_cut_at_the_slot_size(daemon):
    c = await _login(daemon, "alice")
    put_url, get_url = urls(await request_slot(c, "stream.bin", 100_000))

    async def gen():
        for _ in range(30):
            yield b"z" * 10_000          # 300 kB for a 100 kB slot, no Content-Length

    async with aiohttp.ClientSession() as s:
        async with s.put(local(put_url), data=gen(), headers={"Content-Type": "application/octet-stream"},
                         ssl=client_ssl()) as r:
            assert r.status == 413
    assert (await get(get_url))[0] == 404
    await c.close()


async def test_another_users_slot_and_filename(daemon):
    alice, bob = await _login(daemon, "alice"), await _login(daemon, "bob")
    a_get = await upload(alice, "shared.png", b"alice's picture", "image/png")
    b_put, b_get = urls(await request_slot(bob, "shared.png", 15, "image/png"))
    assert b_get != a_get and urlsplit(b_get).path.split("/")[2] != urlsplit(a_get).path.split("/")[2]
    # Bob's token does not open Alice's slot, and Alice's file is unchanged.
    a_put_forged = a_get + "?" + urlsplit(b_put).query
    assert (await put(a_put_forged, b"bob's overwrite", "image/png"))[0] in (403, 409)
    assert (await get(a_get))[2] == b"alice's picture"
    await alice.close()
    await bob.close()


async def test_path_traversal_in_urls_and_names(daemon):
    c = await _login(daemon, "alice")
    put_url, get_url = urls(await request_slot(c, "../../etc/passwd", 4))
    assert get_url.endswith("/passwd") and ".." not in get_url
    put2, get2 = urls(await request_slot(c, "..\\..\\win.ini", 4))
    assert get2.endswith("/win.ini")
    put3, get3 = urls(await request_slot(c, "...", 4))
    assert get3.endswith("/file")
    origin = f"https://127.0.0.1:{daemon.http}"
    for path in ("/upload/../../../etc/passwd", "/upload/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 "/upload/..%2f..%2f..%2fetc/passwd/x/y", "/upload/%2e%2e%2f%2e%2e/x/y",
                 "/upload/AAAAAAAAAAAAAAAAAAAAAA/../../../../etc/passwd"):
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http, ssl=client_ssl())
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        status = int(data.split(b" ", 2)[1])
        assert status in (400, 404), (path, data[:200])
        assert b"root:" not in data
    async with aiohttp.ClientSession() as s:
        async with s.put(origin + "/upload/%2e%2e/%2e%2e/x?token=abc", data=b"abcd", ssl=client_ssl()) as r:
            assert r.status in (400, 403, 404)
    await c.close()


async def test_clients_that_go_away_mid_transfer(daemon):
    """A download dropped half-way and a PUT cut off mid-body: no error in the log (the module
    fixture fails on a traceback), no half file kept, the slot's URL still 404."""
    c = await _login(daemon, "alice")
    get_url = await upload(c, "big.bin", os.urandom(3 * MiB))
    path = urlsplit(get_url).path
    for _ in range(3):
        r, w = await asyncio.open_connection("127.0.0.1", daemon.http, ssl=client_ssl())
        w.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        await r.read(100_000)
        w.transport.abort()
    put_url, cut_url = urls(await request_slot(c, "cut.bin", 2 * MiB))
    q = urlsplit(put_url)
    r, w = await asyncio.open_connection("127.0.0.1", daemon.http, ssl=client_ssl())
    w.write(f"PUT {q.path}?{q.query} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {2 * MiB}\r\n\r\n".encode() + b"x" * 500_000)
    await w.drain()
    await asyncio.sleep(0.3)
    w.transport.abort()
    tmp_dir = os.path.join(daemon.dir, "data", "upload", "tmp")
    for _ in range(100):
        if not os.listdir(tmp_dir):
            break
        await asyncio.sleep(0.05)
    assert os.listdir(tmp_dir) == []
    assert (await get(cut_url))[0] == 404
    assert (await get(get_url))[0] == 200
    await c.close()


# -- quotas -------------------------------------------------------------------------------------------------
async def test_thousand_slot_requests_hit_the_hourly_limit(daemon):
    c = await _login(daemon, "flood")
    await c.send("".join(f"<iq type='get' id='f{i}' to='upload.localhost'><request xmlns='{NS_UPLOAD}' "
                         f"filename='f{i}.bin' size='10'/></iq>" for i in range(1000)))
    results, errors = 0, []
    while results + len(errors) < 1000:
        el = await c.element(30)
        if el.tag != "iq":
            continue
        if el.get("type") == "result":
            results += 1
        else:
            errors.append(el)
    assert results == 100 and len(errors) == 900
    err = errors[0]
    assert condition(err) == "resource-constraint" and err.find("error").get("type") == "wait"
    retry = err.find("error").find("retry", NS_UPLOAD).get("stamp")
    when = time.mktime(time.strptime(retry, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert 3500 < when - time.time() <= 3600
    await c.close()


async def test_bytes_quota_with_retry_when_space_frees(daemon):
    c = await _login(daemon, "quota")
    assert (await request_slot(c, "a.bin", 9 * MiB)).get("type") == "result"     # reserved by the slot
    assert (await request_slot(c, "b.bin", 9 * MiB)).get("type") == "result"
    r = await request_slot(c, "c.bin", 5 * MiB)                                       # 23 MiB > 20 MiB
    assert condition(r) == "resource-constraint"
    assert "quota" in r.find("error").findtext("text", NS_STANZAS)
    assert r.find("error").find("retry", NS_UPLOAD) is not None                      # when a slot lapses
    assert (await request_slot(c, "d.bin", 2 * MiB)).get("type") == "result"        # 20 MiB fits
    await c.close()


# -- expiry, restarts, account deletion ----------------------------------------------------------------------
async def test_expiry_is_exact_and_the_bytes_go():
    d = Daemon(extra='[upload]\nexpire_after = "3s"\n')
    d.add_user("alice@localhost", PASSWORD)
    d.start()
    try:
        c = await _login(d, "alice")
        body = os.urandom(200_000)
        get_url = await upload(c, "short.bin", body)
        t_uploaded = time.time()
        slot = urlsplit(get_url).path.split("/")[2]
        assert (await get(get_url))[2] == body
        assert any(f.endswith(slot) for f in stored_files(d))
        await asyncio.sleep(max(0.0, t_uploaded + 3 + 1 - time.time()))  # one second after expiry
        assert (await get(get_url))[0] == 404
        assert (await get(get_url, "HEAD"))[0] == 404
        for _ in range(100):                                                # the sweep follows
            if not any(f.endswith(slot) for f in stored_files(d)):
                break
            await asyncio.sleep(0.1)
        assert not any(f.endswith(slot) for f in stored_files(d))

        # Expiry survives a restart: a file due while the daemon was down is gone after it.
        get2 = await upload(c, "while-down.bin", b"y" * 5000)
        slot2 = urlsplit(get2).path.split("/")[2]
        await c.close()
        d.stop()
        assert any(f.endswith(slot2) for f in stored_files(d))
        await asyncio.sleep(3.2)
        d.start()
        assert (await get(get2))[0] == 404
        for _ in range(100):
            if not any(f.endswith(slot2) for f in stored_files(d)):
                break
            await asyncio.sleep(0.1)
        assert not any(f.endswith(slot2) for f in stored_files(d))
    finally:
        d.finish()


async def test_account_deletion_removes_the_files():
    d = Daemon()
    d.add_user("gone@localhost", PASSWORD)
    d.add_user("stays@localhost", PASSWORD)
    d.start()
    try:
        c, s = await _login(d, "gone"), await _login(d, "stays")
        get_url = await upload(c, "mine.bin", b"m" * 70_000)
        keep_url = await upload(s, "kept.bin", b"k" * 100)
        slot = urlsplit(get_url).path.split("/")[2]
        await c.close()
        await s.close()
        d.cli("user", "del", "gone@localhost")
        assert (await get(get_url))[0] == 404            # at once: its record went with the account
        d.stop()
        d.start()                                         # the bytes go at the next start at the latest
        assert not any(f.endswith(slot) for f in stored_files(d))
        assert (await get(keep_url))[2] == b"k" * 100
    finally:
        d.finish()


async def test_crash_mid_upload_leaves_no_file_and_finished_ones_survive():
    d = Daemon()
    d.add_user("alice@localhost", PASSWORD)
    d.start()
    try:
        c = await _login(d, "alice")
        done_url = await upload(c, "kept.bin", b"k" * 200_000)
        put_url, get_url = urls(await request_slot(c, "half.bin", 1_000_000))
        started = asyncio.Event()

        async def slow_body():
            yield b"h" * 300_000
            started.set()
            await asyncio.sleep(60)      # never finishes: the daemon dies first
            yield b"h"

        async def uploading():
            async with aiohttp.ClientSession() as s:
                await s.put(local(put_url), data=slow_body(), ssl=client_ssl(),
                            headers={"Content-Type": "application/octet-stream", "Content-Length": "1000000"})

        task = asyncio.ensure_future(uploading())
        await asyncio.wait_for(started.wait(), 10)
        tmp_dir = os.path.join(d.dir, "data", "upload", "tmp")
        for _ in range(100):             # the half file exists, in tmp/ only
            if os.listdir(tmp_dir):
                break
            await asyncio.sleep(0.05)
        assert os.listdir(tmp_dir)
        d.kill9()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        d.start()
        assert os.listdir(tmp_dir) == []
        slot = urlsplit(get_url).path.split("/")[2]
        assert not any(f.endswith(slot) for f in stored_files(d))
        assert (await get(get_url))[0] == 404
        assert (await get(done_url))[2] == b"k" * 200_000
        await c.close()
    finally:
        d.finish()
