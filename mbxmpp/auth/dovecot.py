"""Dovecot's authentication protocol (doc: "Dovecot auth protocol" v1.2), the way Postfix checks
SMTP logins: PLAIN over the auth-client socket, user lookups over the auth-userdb socket.

One connection to each socket, requests multiplexed by id; a request that gets no answer within
the timeout, or a socket that cannot be reached, is UNAVAILABLE, never a wrong password.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import os

from . import CachedLookups, Lookup, Outcome, TTLCache, Verdict, plausible

log = logging.getLogger(__name__)


def _escape(value: str) -> str:
    # The protocol's TAB-separated fields: TAB, LF and the escape character itself are escaped.
    return (value.replace("\x01", "\x011").replace("\t", "\x01t").replace("\n", "\x01n")
            .replace("\r", "\x01r"))


def _fields(parts: list[str]) -> dict[str, str]:
    out = {}
    for p in parts:
        k, _, v = p.partition("=")
        out[k] = v
    return out


def _open(address: str) -> asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    if address.startswith("/") or address.startswith("."):
        return asyncio.ensure_future(asyncio.open_unix_connection(address))
    host, _, port = address.rpartition(":")
    return asyncio.ensure_future(asyncio.open_connection(host.strip("[]"), int(port)))


class _Channel:
    """One connection to a Dovecot auth socket: handshake, then lines keyed by request id."""

    def __init__(self, address: str, hello: bytes, ready_line: str | None) -> None:
        self.address = address
        self.hello = hello
        self.ready_line = ready_line   # the server line that ends its handshake ("DONE"), if any
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[list[str]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def request(self, fmt: str, timeout: float) -> list[str]:
        """Send ``fmt`` with {id} filled in; the reply's fields after the command and id."""
        async with self._lock:
            if self._writer is None or self._writer.is_closing():
                await asyncio.wait_for(self._connect(), timeout)
        assert self._writer is not None
        rid = str(next(self._ids))
        fut: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._writer.write(fmt.format(id=rid).encode() + b"\n")
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(rid, None)

    async def _connect(self) -> None:
        reader, writer = await _open(self.address)
        writer.write(self.hello)
        if self.ready_line is not None:
            while True:
                line = (await reader.readline()).decode(errors="replace").rstrip("\n")
                if not line:
                    writer.close()
                    raise ConnectionError("the auth socket closed during the handshake")
                if line.split("\t", 1)[0] == self.ready_line:
                    break
        self._writer = writer
        self._reader_task = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                parts = raw.decode(errors="replace").rstrip("\n").split("\t")
                if len(parts) >= 2:
                    fut = self._pending.get(parts[1])
                    if fut is not None and not fut.done():
                        fut.set_result(parts)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if self._writer is not None:
                self._writer.close()
            self._writer = None
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("the auth socket closed"))

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()


class DovecotBackend(CachedLookups):
    name = "dovecot"
    offers_scram = False  # Dovecot checks passwords; it hands out no SCRAM secrets

    def __init__(self, client_socket: str, userdb_socket: str | None, *, plan_field: str = "plan",
                 timeout: float = 5.0, cache_ttl: float = 60.0, service: str = "xmpp") -> None:
        self.plan_field = plan_field
        self.timeout = timeout
        self.service = service
        self.cache = TTLCache(cache_ttl)
        self._auth = _Channel(client_socket, f"VERSION\t1\t2\nCPID\t{os.getpid()}\n".encode(), "DONE")
        self._userdb = (_Channel(userdb_socket, b"VERSION\t1\t1\n", "SPID") if userdb_socket else None)

    async def authenticate(self, jid: str, password: str, remote_ip: str | None = None) -> Verdict:
        if not plausible(jid):
            return Verdict(Outcome.WRONG, reason="malformed username")
        resp = base64.b64encode(b"\0" + jid.encode() + b"\0" + password.encode()).decode()
        # Dovecot delays its answers after failures from one address (its brute-force
        # penalty): thousands of users behind one carrier address would all wait for one
        # guesser. The server's own [limits] count failures per account and address instead;
        # the address still goes to Dovecot's log.
        who = (f"rip={_escape(remote_ip)}\t" if remote_ip else "") + "no-penalty"
        try:
            parts = await self._auth.request(
                f"AUTH\t{{id}}\tPLAIN\tservice={_escape(self.service)}\tsecured\t{who}\tresp={resp}",
                self.timeout)
        except (OSError, ConnectionError, asyncio.TimeoutError) as e:
            log.warning("dovecot auth socket %s: %s", self._auth.address, type(e).__name__)
            return Verdict(Outcome.UNAVAILABLE, reason="the authentication service did not answer")
        fields = _fields(parts[2:])
        if parts[0] == "OK":
            plan = fields.get(self.plan_field) or None
            self.cache.put(jid, Lookup(True, plan))
            return Verdict(Outcome.OK, plan)
        if parts[0] == "FAIL" and "temp" in fields:
            return Verdict(Outcome.UNAVAILABLE, reason=fields.get("reason", "temporary failure"))
        return Verdict(Outcome.WRONG, reason=fields.get("reason", ""))

    async def _ask(self, jid: str) -> Lookup:
        if self._userdb is None:
            return Lookup(None)
        try:
            parts = await self._userdb.request(
                f"USER\t{{id}}\t{_escape(jid)}\tservice={_escape(self.service)}", self.timeout)
        except (OSError, ConnectionError, asyncio.TimeoutError) as e:
            log.warning("dovecot userdb socket %s: %s", self._userdb.address, type(e).__name__)
            return Lookup(None)
        if parts[0] == "USER":
            return Lookup(True, _fields(parts[3:]).get(self.plan_field) or None)
        return Lookup(False) if parts[0] == "NOTFOUND" else Lookup(None)

    async def close(self) -> None:
        await self._auth.close()
        if self._userdb is not None:
            await self._userdb.close()
