"""HTTP File Upload (XEP-0363) at upload.<domain>, files encrypted at rest with a key that only
the GET URL carries.

A slot request gets two URLs on the daemon's HTTP side::

    GET  {base}/upload/{slot}/{secret}/{name}
    PUT  {base}/upload/{slot}/{secret}/{name}?token={token}

``secret`` (32 random bytes) is generated for the slot and never stored: the PUT handler reads it
from the URL, derives the file key, encrypts while streaming, and forgets it. The token is an
HMAC (key in ``<data_dir>/upload-token.key``) over slot, secret, size, content type and name: it
cannot be forged, and it is spent once the upload completes. See crypto.py for the format and
README's "File upload" for what this protects.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ...core import events as ev
from ...core.hosts import ComponentModule
from ...core.iq import IQContext
from ...core.modules import COMPONENT, hook, iq_handler
from ...errors import StanzaError
from ...xml.build import error_reply
from ...xml.element import Element
from ...xml.ns import NS_DATA, NS_UPLOAD
from .http import UploadHTTP
from .names import b64, is_media_type, media_type, sanitize_filename
from .store import UploadStore
from .options import UploadConfig

if TYPE_CHECKING:
    from ...core.api import ModuleServer

SLOT_LIFETIME = 300.0      # seconds a PUT URL stays valid
RATE_WINDOW = 3600.0       # slots_per_hour counts requests in this window
AUDIT_INTERVAL = 60.0      # how often the sweep looks for files of accounts deleted by the CLI


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Upload(ComponentModule[UploadConfig]):
    name = "upload"
    description = "HTTP File Upload, encrypted at rest"
    xeps = {"0363": "1.1.0"}
    component_section = "upload"
    component_name = "HTTP File Upload"
    component_identities = [("store", "file", "HTTP File Upload")]
    component_features = [NS_UPLOAD]

    def __init__(self, server: ModuleServer) -> None:
        super().__init__(server)
        self.cfg = self.options
        root = self.cfg.storage_dir or os.path.join(server.data_dir, "upload")
        self.store = UploadStore(server.storage, root, self.cfg.expire_after)
        self.http = UploadHTTP(self)
        self.token_key = b""
        self._sweeper: asyncio.Task | None = None
        self._wake = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self.token_key = await asyncio.get_running_loop().run_in_executor(None, self._load_token_key)
        await self.store.load()
        self.http.register(self.server.http)
        self._sweeper = asyncio.ensure_future(self._sweep_loop())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None

    def _load_token_key(self) -> bytes:
        path = os.path.join(self.server.data_dir, "upload-token.key")
        try:
            with open(path, "rb") as f:
                key = f.read()
            if len(key) == 32:
                return key
        except FileNotFoundError:
            pass
        key = secrets.token_bytes(32)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return key

    async def _sweep_loop(self) -> None:
        """Delete what is due, a batch at a time, sleeping until the next deadline (at most a
        minute, so that a clock jump is caught up with). GETs check the expiry themselves, so the
        sweep is about freeing the disk, not about the promise to users."""
        last_audit = time.monotonic()
        while True:
            try:
                deleted, more = await self.store.sweep()
                if deleted:
                    self.log.info("upload: %d expired files and slots deleted", deleted)
                if time.monotonic() - last_audit >= AUDIT_INTERVAL:
                    last_audit = time.monotonic()
                    orphans = await self.store.drop_orphans()
                    if orphans:
                        self.log.info("upload: %d files of deleted accounts removed", orphans)
            except Exception:
                self.log.exception("upload sweep failed")
                more = False
            if more:
                await asyncio.sleep(0)
                continue
            nxt = self.store.next_due()
            delay = 60.0 if nxt is None else min(60.0, max(0.05, nxt - time.time() + 0.01))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass

    def wake_sweeper(self) -> None:
        """A new deadline may be earlier than the one the sweep sleeps until."""
        self._wake.set()

    # -- disco ----------------------------------------------------------------------------------
    def component_forms(self, host: Any) -> list[Element]:
        form = Element("x", NS_DATA, {"type": "result"})
        f = form.add("field", attrs={"var": "FORM_TYPE", "type": "hidden"})
        f.add("value", text=NS_UPLOAD)
        form.add("field", attrs={"var": "max-file-size"}).add("value", text=str(self.cfg.max_file_size))
        return [form]

    # -- slot requests ------------------------------------------------------------------------
    @iq_handler("get", NS_UPLOAD, "request", scope=COMPONENT)
    async def request_slot(self, iq: Element, ctx: IQContext) -> Element:
        host = ctx.host
        assert host is not None
        owner = ctx.frm.bare
        if ctx.frm.local is None or ctx.frm.domain != host.parent:
            raise StanzaError("not-allowed", f"uploads are for accounts of {host.parent}")
        if not self.server.http.enabled:
            raise StanzaError("service-unavailable", "uploads need the HTTP listener ([http] listen)")
        req = iq.first_child()
        assert req is not None
        filename, size_s = req.get("filename"), req.get("size")
        if not filename or not size_s or not (size_s.isascii() and size_s.isdigit()):
            raise StanzaError("bad-request", "filename and size (a whole number of bytes) are required")
        size = int(size_s)
        ctype = media_type(req.get("content-type"))
        if ctype and not is_media_type(ctype):
            raise StanzaError("bad-request", "content-type is not a MIME type")
        limit = self.cfg.max_file_size
        if size > limit:
            return self._refusal(iq, StanzaError("not-acceptable", f"file too large: the limit is {limit} bytes"),
                                 _file_too_large(limit))
        now = time.time()
        refusal = self._check_quota(iq, owner, size, now)
        if refusal is not None:
            return refusal
        # Counted and reserved before the first await: concurrent requests see each other.
        counted = self._count_request(owner, now)

        slot = b64(secrets.token_bytes(16))
        secret = b64(secrets.token_bytes(32))
        name = sanitize_filename(filename)
        rec = {"state": "pending", "size": size, "type": ctype, "created": now,
               "deadline": now + min(SLOT_LIFETIME, self.cfg.expire_after)}
        await self.store.add_pending(slot, owner, rec)
        await counted
        self.wake_sweeper()

        get_url = f"{self.server.http.public_url(host.parent)}/upload/{slot}/{secret}/{quote(name, safe='')}"
        token = self.put_token(slot, secret, size, ctype, name)
        out = Element("slot", NS_UPLOAD)
        out.add("put", attrs={"url": f"{get_url}?token={token}"})
        out.add("get", attrs={"url": get_url})
        return out

    def put_token(self, slot: str, secret: str, size: int, ctype: str, name: str) -> str:
        msg = "\n".join(("put", slot, secret, str(size), ctype, name)).encode()
        return b64(hmac.new(self.token_key, msg, hashlib.sha256).digest())

    def _check_quota(self, iq: Element, owner: str, size: int, now: float) -> Element | None:
        recent = [t for t in (self.store.rates.get(owner) or ()) if t > now - RATE_WINDOW]
        if len(recent) >= self.cfg.slots_per_hour:
            retry = min(recent) + RATE_WINDOW
            return self._refusal(iq, StanzaError(
                "resource-constraint", f"at most {self.cfg.slots_per_hour} uploads per hour"), _retry(retry))
        quota = self.cfg.quota_per_user
        used = self.store.used_bytes(owner)
        if used + size <= quota:
            return None
        err = StanzaError("resource-constraint", f"upload quota of {quota} bytes reached ({used} in use)")
        if size > quota:
            return self._refusal(iq, err, None)
        # When enough of the user's files have expired for this one to fit.
        freed = 0
        for info in sorted(self.store.owner_slots(owner), key=lambda i: i.deadline):
            freed += info.size
            if used - freed + size <= quota:
                return self._refusal(iq, err, _retry(info.deadline))
        return self._refusal(iq, err, None)

    def _count_request(self, owner: str, now: float) -> asyncio.Future[None]:
        recent = [t for t in (self.store.rates.get(owner) or ()) if t > now - RATE_WINDOW]
        recent.append(now)
        return self.store.rates.set(owner, recent)

    @staticmethod
    def _refusal(iq: Element, err: StanzaError, detail: Element | None) -> Element:
        reply = error_reply(iq, err)
        if detail is not None:
            reply.children[-1].children.append(detail)
        return reply

    # -- account deletion ----------------------------------------------------------------------
    @hook(ev.ACCOUNT_DELETED)
    def _account_deleted(self, arg: Any) -> None:
        bare = getattr(arg, "bare", arg)
        if isinstance(bare, str) and bare in self.store.by_owner:
            task = asyncio.ensure_future(self.store.remove_owner(bare))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _file_too_large(limit: int) -> Element:
    el = Element("file-too-large", NS_UPLOAD)
    el.add("max-file-size", text=str(limit))
    return el


def _retry(when: float) -> Element:
    return Element("retry", NS_UPLOAD, {"stamp": stamp(when)})


__all__ = ["Upload"]
