"""The HTTP side of uploads: PUT (streamed, encrypted, fsynced, renamed), GET/HEAD (decrypted
while streaming, ranges), OPTIONS (CORS preflight for web clients).

Every "no such file" is the same plain 404: unknown slot, wrong or cut URL secret, expired file,
deleted account. Damaged ciphertext is never sent: before the headers it is a 500, after them the
connection is dropped so the client sees a short body, not bad bytes.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import time
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from aiohttp import web

from . import crypto
from .names import media_type, unb64
from .store import expired

if TYPE_CHECKING:
    from ...http.server import HTTPService
    from . import Upload

PATH = "/upload/{slot}/{secret}/{name}"
SLOT_ID = re.compile(r"[A-Za-z0-9_-]{22}")
SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
RANGE = re.compile(r"bytes=(\d*)-(\d*)")
WRITE_BATCH = 128 * 1024           # ciphertext handed to the executor per write
READ_CHUNKS = 16                   # sealed chunks read per executor call (~1 MiB)
READ_TIMEOUT = 60.0                # seconds a PUT body may stall

# Served inline under their own type; anything else is an attachment of application/octet-stream.
# No HTML, SVG, XML or scripts: nothing a browser would run.
INLINE_TYPES = frozenset((
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/heic", "image/bmp",
    "audio/mpeg", "audio/ogg", "audio/opus", "audio/mp4", "audio/aac", "audio/webm", "audio/wav",
    "audio/flac", "audio/x-m4a", "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "text/plain",
))
CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges, Content-Disposition",
}
PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "GET, HEAD, PUT, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Range, Authorization",
    "Access-Control-Max-Age": "86400",
}


def _plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=CORS)


def _not_found() -> web.Response:
    return _plain(404, "Not Found")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | Literal[False]:
    """(first, last) byte of a single satisfiable range; None to send the whole file (no header,
    or one this server ignores: multiple or malformed ranges, RFC 9110 §14.2); False if
    unsatisfiable (416)."""
    if not header or size == 0:
        return None
    m = RANGE.fullmatch(header.strip())
    if m is None:
        return None
    a, b = m.groups()
    if not a:
        if not b:
            return None
        n = int(b)
        return False if n == 0 else (max(0, size - n), size - 1)
    first = int(a)
    last = int(b) if b else size - 1
    if b and last < first:
        return None
    if first >= size:
        return False
    return first, min(last, size - 1)


def _disposition(kind: str, name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


class UploadHTTP:
    def __init__(self, module: Upload) -> None:
        self.mod = module
        self.store = module.store
        self.received_bytes = self.served_bytes = 0  # file bytes stored and sent (metrics)

    def register(self, http: HTTPService) -> None:
        http.add_route("PUT", PATH, self.put)
        http.add_route("GET", PATH, self.get)
        http.add_route("HEAD", PATH, self.get)
        http.add_route("OPTIONS", PATH, self.options)

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=PREFLIGHT)

    # -- PUT ------------------------------------------------------------------------------------
    async def put(self, request: web.Request) -> web.Response:
        slot, secret, name = (request.match_info[k] for k in ("slot", "secret", "name"))
        token = request.query.get("token", "")
        if not token:
            return _plain(403, "an upload token is required (the PUT URL of a slot)")
        found = self.store.lookup(slot) if SLOT_ID.fullmatch(slot) and SECRET.fullmatch(secret) else None
        if found is None:
            return _plain(403, "invalid upload token")
        owner, rec = found
        if rec.get("state") != "pending":
            return _plain(409, "this slot has been used already")
        size, slot_type = rec["size"], rec["type"]
        if not hmac.compare_digest(self.mod.put_token(slot, secret, size, slot_type, name), token):
            return _plain(403, "invalid upload token")
        if time.time() >= rec["deadline"]:
            return _plain(403, "the upload slot has expired")
        if slot in self.store.uploading:
            return _plain(409, "an upload to this slot is in progress")
        declared = request.content_length
        if declared is not None and declared > size:
            return _plain(413, f"the slot is for {size} bytes")
        if declared is not None and declared != size:
            return _plain(400, f"Content-Length must be the slot's size, {size} bytes")
        ctype = media_type(request.headers.get("Content-Type"))
        if slot_type and ctype != slot_type:
            return _plain(415, f"Content-Type must be the slot's, {slot_type}")
        self.store.uploading.add(slot)
        try:
            return await self._receive(request, slot, unb64(secret), owner, rec, name, slot_type or ctype)
        finally:
            self.store.uploading.discard(slot)

    async def _receive(self, request: web.Request, slot: str, secret: bytes, owner: str,
                       rec: dict[str, Any], name: str, ctype: str) -> web.Response:
        size = rec["size"]
        cipher = crypto.FileCipher(secret, slot, size)
        loop = asyncio.get_running_loop()
        tmp = self.store.temp_path(slot)
        f = await loop.run_in_executor(None, _create, tmp)
        done = False
        writing: asyncio.Future | None = None  # one batch on its way to disk while the next fills
        try:
            buf = bytearray()
            out = bytearray()
            index, last, received = 0, cipher.count - 1, 0
            try:
                while True:
                    async with asyncio.timeout(READ_TIMEOUT):  # a stalled PUT gives its slot back
                        data = await request.content.read(crypto.CHUNK)
                    if not data:
                        break
                    received += len(data)
                    if received > size:
                        return _plain(413, f"the slot is for {size} bytes")
                    buf += data
                    if index < last and len(buf) >= crypto.CHUNK:
                        out += cipher.seal(index, bytes(buf[:crypto.CHUNK]))
                        del buf[:crypto.CHUNK]
                        index += 1
                    if len(out) >= WRITE_BATCH:
                        if writing is not None:
                            await writing
                        writing = loop.run_in_executor(None, f.write, out)
                        out = bytearray()
            except TimeoutError:
                return _plain(408, f"no data for {READ_TIMEOUT:.0f} seconds")
            except (ConnectionError, web.HTTPException, OSError) as e:
                self.mod.log.info("upload to slot %s interrupted: %r", slot, e)
                return _plain(400, "upload interrupted")
            if received < size:
                return _plain(400, f"the body has {received} bytes, the slot is for {size}")
            if writing is not None:
                await writing
                writing = None
            out += cipher.seal(last, bytes(buf))
            await loop.run_in_executor(None, _finish, f, out, tmp, self.store.path(slot))
            done = True
        finally:
            if not done:
                if writing is not None:
                    await asyncio.gather(writing, return_exceptions=True)
                await loop.run_in_executor(None, _discard, f, tmp)
        if slot not in self.store.slots:  # deleted with its account meanwhile
            await loop.run_in_executor(None, _discard, None, self.store.path(slot))
            return _plain(403, "the upload slot has expired")
        done_rec = {"state": "done", "size": size, "created": rec["created"], "uploaded": time.time(),
                    "meta": cipher.seal_meta({"name": name, "type": ctype}),
                    "verify": crypto.verifier(secret, slot)}
        await self.store.complete(slot, owner, done_rec)
        self.received_bytes += size
        self.mod.wake_sweeper()
        return _plain(201, "Created")

    # -- GET / HEAD -------------------------------------------------------------------------------
    async def get(self, request: web.Request) -> web.StreamResponse:
        slot, secret = request.match_info["slot"], request.match_info["secret"]
        if not (SLOT_ID.fullmatch(slot) and SECRET.fullmatch(secret)):
            return _not_found()
        found = self.store.lookup(slot)
        if found is None:
            return _not_found()
        _owner, rec = found
        now = time.time()
        expire_after = self.mod.cfg.expire_after
        if rec.get("state") != "done" or expired(rec["uploaded"], expire_after, now):
            return _not_found()
        key_secret = unb64(secret)
        if not crypto.check_verifier(key_secret, slot, rec["verify"]):
            return _not_found()
        size = rec["size"]
        cipher = crypto.FileCipher(key_secret, slot, size)
        try:
            meta = cipher.open_meta(rec["meta"])
        except crypto.InvalidTag:
            return self._damaged(slot, "metadata")
        span = parse_range(request.headers.get("Range"), size)
        if span is False:
            return web.Response(status=416, headers={**CORS, "Content-Range": f"bytes */{size}"})
        first, last = span if span else (0, size - 1)

        loop = asyncio.get_running_loop()
        try:
            fd = await loop.run_in_executor(None, _open_sealed, self.store.path(slot), crypto.sealed_size(size))
        except FileNotFoundError:
            return _not_found()
        except ValueError:
            return self._damaged(slot, "size")
        try:
            first_chunk = first // crypto.CHUNK
            last_chunk = max(first_chunk, last // crypto.CHUNK)
            chunks = await self._read_open(loop, fd, cipher, first_chunk, last_chunk)
            if chunks is None:
                return self._damaged(slot, f"chunk {first_chunk}")

            mtype = media_type(meta.get("type"))
            headers = {
                **CORS,
                "Content-Security-Policy": CSP,
                "Accept-Ranges": "bytes",
                "Cache-Control": f"private, max-age={max(0, int(rec['uploaded'] + expire_after - now))}",
            }
            if mtype in INLINE_TYPES:
                headers["Content-Type"] = "text/plain; charset=utf-8" if mtype == "text/plain" else mtype
                headers["Content-Disposition"] = _disposition("inline", meta.get("name") or "file")
            else:
                headers["Content-Type"] = "application/octet-stream"
                headers["Content-Disposition"] = _disposition("attachment", meta.get("name") or "file")
            resp = web.StreamResponse(status=206 if span else 200, headers=headers)
            if span:
                resp.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            resp.content_length = last - first + 1 if size else 0
            await resp.prepare(request)
            if request.method == "HEAD" or size == 0:
                return resp

            index = first_chunk
            while True:
                for plain in chunks:
                    lo = first - index * crypto.CHUNK if index == first_chunk else 0
                    hi = last - index * crypto.CHUNK + 1 if index == last_chunk else len(plain)
                    try:
                        await resp.write(plain[lo:hi])
                    except ConnectionError:
                        return resp  # the client went away: nothing to answer
                    self.served_bytes += hi - lo
                    index += 1
                if index > last_chunk:
                    break
                chunks = await self._read_open(loop, fd, cipher, index, min(last_chunk, index + READ_CHUNKS - 1))
                if chunks is None:
                    # Headers are out: stop here, the client sees a short body and no bad byte.
                    self._damaged(slot, f"chunk {index}")
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
            return resp
        finally:
            await loop.run_in_executor(None, os.close, fd)

    async def _read_open(self, loop: asyncio.AbstractEventLoop, fd: int, cipher: crypto.FileCipher,
                         first: int, last: int) -> list[bytes] | None:
        """The plaintext of chunks first..last (at most READ_CHUNKS); None if one fails to open."""
        last = min(last, first + READ_CHUNKS - 1)
        data = await loop.run_in_executor(None, os.pread, fd, (last - first + 1) * crypto.SEALED_CHUNK,
                                          first * crypto.SEALED_CHUNK)
        out = []
        for i in range(first, last + 1):
            off = (i - first) * crypto.SEALED_CHUNK
            try:
                out.append(cipher.open(i, data[off:off + crypto.SEALED_CHUNK]))
            except crypto.InvalidTag:
                return None
        return out

    def _damaged(self, slot: str, what: str) -> web.Response:
        self.mod.log.error("upload: stored file %s fails authentication (%s): not served", slot, what)
        return _plain(500, "the stored file is damaged")


# -- blocking file operations (run in the executor) ---------------------------------------------------
def _create(path: str) -> Any:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def _finish(f: Any, tail: bytes | bytearray, tmp: str, final: str) -> None:
    """Write the tail, fsync, and rename into place (then fsync the directory): the file appears
    whole or not at all."""
    f.write(tail)
    f.flush()
    os.fsync(f.fileno())
    f.close()
    d = os.path.dirname(final)
    os.makedirs(d, mode=0o700, exist_ok=True)
    os.rename(tmp, final)
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _discard(f: Any, path: str) -> None:
    if f is not None:
        try:
            f.close()
        except OSError:
            pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _open_sealed(path: str, expected: int) -> int:
    fd = os.open(path, os.O_RDONLY)
    if os.fstat(fd).st_size != expected:
        os.close(fd)
        raise ValueError("size")
    return fd
