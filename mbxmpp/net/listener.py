"""The direct TLS listener (XEP-0368): admission first, then the TLS handshake.

asyncio's own TLS servers do the handshake before the protocol hears of the connection, so a
peer that connects and never sends a ClientHello would hold a socket for the whole handshake
timeout without counting against any pre-auth limit. Here each accepted socket is admitted
(PreauthAdmission, by its address) before the handshake, and the handshake runs under that
slot: refused, it costs no TLS; stalled, it makes room like any other pre-auth connection.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Callable

from ..errors import StreamError

if TYPE_CHECKING:
    from ..core.admission import PreauthAdmission, Ticket

log = logging.getLogger(__name__)

# accept() failing for lack of descriptors or memory: wait a little rather than spin
ACCEPT_RETRY_DELAY = 0.1


class _Handshake:
    __slots__ = ("peer", "task")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.task: asyncio.Task | None = None

    def evict(self, err: StreamError) -> None:
        # Stalled in the handshake: there is no stream yet to send the error on.
        log.info("c2s %s: TLS handshake ended to make room: %s", self.peer, err)
        if self.task is not None:
            self.task.cancel()


class AdmittingTLSListener:
    __slots__ = ("_admission", "_ctx", "_factory", "_handshake_timeout", "_handshakes", "_socks",
                 "_tasks")

    def __init__(self, socks: list[socket.socket], ctx: ssl.SSLContext,
                 admission: PreauthAdmission, protocol_factory: Callable[[Ticket], asyncio.Protocol],
                 handshake_timeout: float) -> None:
        self._socks = socks
        self._ctx = ctx
        self._admission = admission
        self._factory = protocol_factory
        self._handshake_timeout = handshake_timeout
        self._tasks: list[asyncio.Task] = []
        self._handshakes: set[asyncio.Task] = set()

    @classmethod
    async def start(cls, host: str, port: int, ctx: ssl.SSLContext, admission: PreauthAdmission,
                    protocol_factory: Callable[[Ticket], asyncio.Protocol],
                    handshake_timeout: float, backlog: int = 1024) -> AdmittingTLSListener:
        loop = asyncio.get_running_loop()
        socks = []
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, type_, proto, _, addr in dict.fromkeys(infos):
                sock = socket.socket(family, type_, proto)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as create_server
                sock.bind(addr)
                sock.listen(backlog)
                sock.setblocking(False)
        except OSError:
            for sock in socks:
                sock.close()
            raise
        self = cls(socks, ctx, admission, protocol_factory, handshake_timeout)
        self._tasks = [asyncio.ensure_future(self._accept(sock)) for sock in socks]
        return self

    async def _accept(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, addr = await loop.sock_accept(lsock)
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("c2s direct TLS: accept failed: %s", e)
                    await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            try:
                self._admit(loop, sock, addr[0])
            except Exception:  # one connection's trouble must not stop the listener
                log.exception("c2s %s: direct TLS connection failed", addr[0])
                sock.close()

    def _admit(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, peer: str) -> None:
        pending = _Handshake(peer)
        try:
            ticket = self._admission.admit(peer, pending.evict)
        except StreamError as e:
            log.info("c2s %s: refused before TLS: %s", peer, e)
            sock.close()  # no TLS spent on a refusal (nor a stream to say why)
            return
        pending.task = task = asyncio.ensure_future(loop.connect_accepted_socket(
            functools.partial(self._factory, ticket), sock, ssl=self._ctx,
            ssl_handshake_timeout=self._handshake_timeout))
        self._handshakes.add(task)
        task.add_done_callback(functools.partial(self._handshake_done, ticket=ticket))

    def _handshake_done(self, task: asyncio.Task, ticket: Ticket) -> None:
        self._handshakes.discard(task)
        if task.cancelled():
            ticket.release()
            return
        e = task.exception()
        if e is not None:
            log.info("c2s: TLS handshake failed: %s", e)
            ticket.release()

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in list(self._handshakes):
            task.cancel()
        for sock in self._socks:
            sock.close()
