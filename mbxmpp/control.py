"""The local control socket: how the command line reaches a running daemon.

A Unix socket ``<data_dir>/control.sock``, mode 0600, and every connection's peer must run as
the daemon's own uid (SO_PEERCRED): a local user who can reach the file by some other path
(a looser mode, a shared directory) is still refused. The protocol is one JSON object per line
each way, request then response, several requests per connection:

    {"op": "user.del", "jid": "alice@example.org"}
    {"ok": true, "ended": 2}                  or     {"ok": false, "error": "no account ..."}

Operations: ``ping``, ``user.add`` / ``user.passwd`` (SCRAM records derived by the caller: no
password crosses the socket and PBKDF2 never runs on the daemon's loop), ``user.del``,
``user.disable`` / ``user.enable``, ``sessions.list``, ``sessions.kick``, ``reload``, ``s2s.list``, ``domains.list`` /
``domains.add`` / ``domains.remove`` (virtual hosts at run time, kept in <data_dir>/domains).

Why a socket: LMDB lets the command line write while the daemon serves (one writer at a time,
across processes), but the daemon's caches, its sessions and its events would not learn of it.
When the socket answers, the command line changes accounts through the daemon; when nothing
listens on it, no daemon runs on this data directory and the command line writes storage itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import errno
import json
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import StreamError
from .jid import JID, JIDError
from .stream.scram import DIGEST_SIZES, HASHES, ScramCredential

if TYPE_CHECKING:
    from .core.api import Operator
    from .core.sessions import Session
    from .server import Server

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_LINE = 64 * 1024        # a request is small; anything longer is refused
IDLE_TIMEOUT = 60.0         # a connection that sends nothing for this long is closed
MAX_CLIENTS = 16
CLIENT_TIMEOUT = 120.0      # the command line's wait for an answer (deleting a large archive)
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_SUN_PATH_MAX = 107         # sockaddr_un.sun_path, less the terminating NUL

# RFC 6120 §4.9.3 conditions for sessions that the operator ends:
# - deleted or disabled: <not-authorized/>, the account may no longer use the service (as
#   XEP-0077 §3.2 says for a cancelled registration); clients stop rather than retry.
# - password changed: <reset/> (§4.9.3.17): the credentials the stream was authenticated with
#   are revoked, and "authentication needs to be negotiated again"; a client that has the new
#   password reconnects, one that has not fails at SASL. <not-authorized/> would tell every client
#   that its session was refused, the user's own freshly updated ones too.
# - kicked: <policy-violation/> (§4.9.3.14), a decision of local policy, said in the text.
END_DELETED = ("not-authorized", "the account was deleted")
END_DISABLED = ("not-authorized", "the account is disabled")
END_PASSWORD = ("reset", "the password was changed: log in again")
END_KICKED = ("policy-violation", "the session was ended by the administrator")
END_NOT_ENTITLED = "not-authorized"


def socket_path(data_dir: str) -> str:
    return os.path.join(os.path.abspath(data_dir), SOCKET_NAME)


@contextlib.contextmanager
def _address(path: str) -> Iterator[str]:
    """An address for ``path`` that fits sockaddr_un: the path itself when short enough, else
    the same file through the directory's descriptor in /proc (Linux), so that a deep data_dir
    does not lose the control socket."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield path
        return
    fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


def peer_uid(sock: Any) -> int:
    _pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return uid


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class ControlError(Exception):
    """The daemon refused or failed a request (the message says why)."""


# ------------------------------------------------------------------------------------- the daemon

class ControlServer:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.path = socket_path(server.data_dir)
        self._srv: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        self.ops: dict[str, Callable[[dict[str, Any]], Any]] = {
            "ping": self._ping,
            "user.add": self._user_add,
            "user.passwd": self._user_passwd,
            "user.del": self._user_del,
            "user.disable": self._user_disable,
            "user.enable": self._user_enable,
            "sessions.list": self._sessions_list,
            "sessions.kick": self._sessions_kick,
            "reload": self._reload,
            "s2s.list": self._s2s_list,
            "domains.list": self._domains_list,
            "domains.add": self._domains_add,
            "domains.remove": self._domains_remove,
        }

    async def start(self) -> None:
        os.makedirs(self.server.data_dir, exist_ok=True)
        if os.path.exists(self.path):
            if probe(self.path):
                raise OSError(errno.EADDRINUSE, f"another mbxmpp daemon serves {self.server.data_dir} "
                                                f"(its control socket {self.path} answers)")
            os.unlink(self.path)  # left by a daemon that did not stop cleanly
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _address(self.path) as addr:
                sock.bind(addr)
            # Owner-only before anyone can connect: listen() comes after the chmod.
            os.chmod(self.path, 0o600)
            self._srv = await asyncio.start_unix_server(self._client, sock=sock, limit=MAX_LINE)
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise
        log.info("control socket at %s", self.path)

    async def stop(self) -> None:
        if self._srv is None:
            return
        self._srv.close()
        clients = list(self._clients)
        for t in clients:
            t.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self._srv = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            uid = peer_uid(writer.get_extra_info("socket"))
            if uid != os.geteuid():
                log.warning("control socket: refused a connection from uid %d", uid)
                await self._last_word(writer, "permission denied: the control socket is for uid "
                                              f"{os.geteuid()} only")
                return
            if len(self._clients) > MAX_CLIENTS:
                await self._last_word(writer, "too many control connections")
                return
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                except (TimeoutError, ValueError):  # ValueError: a line over MAX_LINE
                    await self._last_word(writer, "request too long or too slow")
                    return
                if not line:
                    return
                writer.write(_encode(await self.handle(line)))
                await writer.drain()
        except ConnectionError:
            pass  # the client went away
        except asyncio.CancelledError:
            # stop(): ended quietly, because asyncio's start_server reports a handler task that
            # ends cancelled as an error in a callback (Python 3.11's streams.py).
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    @staticmethod
    async def _last_word(writer: asyncio.StreamWriter, error: str) -> None:
        writer.write(_encode({"ok": False, "error": error}))
        await writer.drain()

    async def handle(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "not a JSON object"}
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            return {"ok": False, "error": "a request is a JSON object with an 'op'"}
        fn = self.ops.get(req["op"])
        log.debug("control request %s", req["op"])
        if fn is None:
            return {"ok": False, "error": f"unknown operation {req['op']!r}"}
        try:
            result = await fn(req)
        except ControlError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:
            log.exception("control operation %s failed", req["op"])
            return {"ok": False, "error": f"internal error: {e}"}
        return {"ok": True, **result}

    # -- operations ---------------------------------------------------------------------------
    def _jid(self, req: dict[str, Any], *, full_ok: bool = False) -> JID:
        raw = req.get("jid")
        if not isinstance(raw, str):
            raise ControlError("'jid' is required")
        try:
            j = JID.parse(raw)
        except JIDError as e:
            raise ControlError(f"invalid JID {raw!r}: {e}") from None
        if j.local is None or (j.resource is not None and not full_ok):
            raise ControlError(f"{raw!r} is not an account address (user@domain)")
        if not self.server.is_local(j.domain):
            raise ControlError(f"{j.domain!r} is not one of this server's domains")
        return j

    def _account(self, req: dict[str, Any]) -> str:
        bare = self._jid(req).bare
        if not self.server.accounts.exists(bare):
            raise ControlError(f"no account {bare}")
        return bare

    @staticmethod
    def _scram(req: dict[str, Any]) -> dict[str, ScramCredential]:
        try:
            return scram_from_wire(req.get("scram"))
        except (TypeError, ValueError) as e:  # (binascii.Error is a ValueError)
            raise ControlError(f"bad SCRAM credentials: {e}") from None

    async def _ping(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid(), "sessions": self.server.sessions.count()}

    async def _user_add(self, req: dict[str, Any]) -> dict[str, Any]:
        bare = self._jid(req).bare
        plan = req.get("plan")
        if plan is not None and not isinstance(plan, str):
            raise ControlError("'plan' must be a string")
        await add_account(self.server, bare, self._scram(req), plan)
        return {}

    async def _user_passwd(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ended": await set_password(self.server, self._account(req), self._scram(req))}

    async def _user_del(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ended": await delete_account(self.server, self._account(req))}

    async def _user_disable(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ended": await disable_account(self.server, self._account(req))}

    async def _user_enable(self, req: dict[str, Any]) -> dict[str, Any]:
        await enable_account(self.server, self._account(req))
        return {}

    async def _sessions_list(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"sessions": self.server.describe_sessions()}

    async def _sessions_kick(self, req: dict[str, Any]) -> dict[str, Any]:
        j = self._jid(req, full_ok=True)
        ended = kick(self.server, j.full)
        if not ended:
            raise ControlError(f"no session of {j.full}")
        return {"ended": ended}

    async def _s2s_list(self, req: dict[str, Any]) -> dict[str, Any]:
        s2s = self.server.s2s
        return {"enabled": s2s is not None, "streams": s2s.describe() if s2s is not None else []}

    # -- virtual hosts at run time (mbxmpp/domains.py) ----------------------------------------
    def _configured_domains(self) -> tuple[str, ...]:
        """[server] domains as the configuration file says now (not those added at run time)."""
        from .config import ConfigError, load_config
        try:
            return load_config(self.server.config.source).server.domains
        except (ConfigError, OSError) as e:
            raise ControlError(f"cannot read the configuration: {e}") from None

    def _domain(self, req: dict[str, Any]) -> str:
        from .domains import check_name
        raw = req.get("domain")
        if not isinstance(raw, str):
            raise ControlError("'domain' is required")
        try:
            return check_name(raw)
        except ValueError as e:
            raise ControlError(str(e)) from None

    async def _domains_list(self, req: dict[str, Any]) -> dict[str, Any]:
        configured = self._configured_domains()
        return {"domains": [{"domain": d, "source": "config" if d in configured else "added"}
                            for d in self.server.config.server.domains]}

    async def _domains_add(self, req: dict[str, Any]) -> dict[str, Any]:
        from .domains import read_added, write_added
        domain = self._domain(req)
        srv = self.server
        if domain in srv.hosts:
            raise ControlError(f"{domain} is already served")
        before = srv.config.server.domains
        try:
            srv.set_domains((*before, domain))
        except ValueError as e:
            raise ControlError(str(e)) from None
        try:
            write_added(srv.data_dir, [*read_added(srv.data_dir), domain])
        except OSError as e:
            srv.set_domains(before)
            raise ControlError(f"cannot save the domain list, nothing changed: {e}") from None
        if srv.tls is not None:
            srv.reload_certificates()
        tls = srv.tls
        own = tls is not None and domain in tls.per_host_files
        log.info("domain %s added (%s)", domain, "its own certificate" if own else "the default certificate")
        return {"components": sorted(h.domain for h in srv.components.values() if h.parent == domain),
                "certificate": "own" if own else "default"}

    async def _domains_remove(self, req: dict[str, Any]) -> dict[str, Any]:
        from .domains import read_added, write_added
        domain = self._domain(req)
        srv = self.server
        if domain not in srv.hosts:
            raise ControlError(f"{domain} is not served")
        if domain in self._configured_domains():
            raise ControlError(f"{domain} is listed in [server] domains of "
                               f"{srv.config.source or 'the embedded defaults'}: remove it there, "
                               "then reload")
        try:
            write_added(srv.data_dir, [d for d in read_added(srv.data_dir) if d != domain])
        except OSError as e:
            raise ControlError(f"cannot save the domain list, nothing changed: {e}") from None
        change = srv.set_domains(tuple(d for d in srv.config.server.domains if d != domain))
        if srv.tls is not None:
            srv.reload_certificates()
        log.info("domain %s removed: %d stream(s) ended", domain, change["ended"])
        return {"ended": change["ended"]}

    async def _reload(self, req: dict[str, Any]) -> dict[str, Any]:
        from .config import ConfigError
        try:
            return self.server.reload()
        except ConfigError as e:
            raise ControlError(f"configuration error, nothing reloaded:\n{e}") from None
        except OSError as e:
            raise ControlError(f"cannot read the configuration, nothing reloaded: {e}") from None


# ------------------------------------------------- account operations (also the ad-hoc commands)
# The steps and their order for each operator action, shared by the control socket and the
# XEP-0133 commands (modules/adhoc) so that both end the same sessions with the same errors.

async def add_account(server: Operator, bare: str, creds: dict[str, ScramCredential],
                      plan: str | None = None) -> None:
    """Create ``bare``; ControlError if it exists."""
    accounts = server.accounts
    if accounts.get(bare) is not None:
        raise ControlError(f"{bare} already exists (use 'user passwd')")
    await accounts.create(bare, creds=creds, plan=plan)  # fires ACCOUNT_CREATED
    log.info("account %s created", bare)


async def set_password(server: Operator, bare: str, creds: dict[str, ScramCredential],
                       keep: Session | None = None) -> int:
    """``keep``: the session that changed its own password (XEP-0077) stays."""
    await server.accounts.set_credentials(bare, creds)
    log.info("password of %s changed", bare)
    # After the commit: a client that reconnects at once meets the new credentials.
    return server.end_sessions(bare, StreamError(*END_PASSWORD), keep)


async def delete_account(server: Operator, bare: str) -> int:
    # Sessions first: what their clients never acknowledged goes to offline storage before
    # the account's data is deleted, and nothing can log in between (no await until then).
    ended = server.end_sessions(bare, StreamError(*END_DELETED))
    await server.accounts.delete(bare)  # fires ACCOUNT_DELETED
    log.info("account %s deleted", bare)
    return ended


async def disable_account(server: Operator, bare: str) -> int:
    fut = server.accounts.set_disabled(bare, True)  # seen by the next login at once
    ended = server.end_sessions(bare, StreamError(*END_DISABLED))
    await fut
    log.info("account %s disabled", bare)
    return ended


async def enable_account(server: Operator, bare: str) -> None:
    await server.accounts.set_disabled(bare, False)
    log.info("account %s enabled", bare)


def kick(server: Operator, jid: str) -> int:
    """End the sessions of an account (bare JID) or one session (full JID)."""
    return server.end_sessions(jid, StreamError(*END_KICKED))


def scram_to_wire(creds: dict[str, ScramCredential]) -> dict[str, list[Any]]:
    """mechanism -> [salt, iterations, StoredKey, ServerKey], the bytes in base64."""
    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()
    return {m: [b64(c.salt), c.iterations, b64(c.stored_key), b64(c.server_key)]
            for m, c in creds.items()}


def scram_from_wire(obj: Any) -> dict[str, ScramCredential]:
    if not isinstance(obj, dict) or not obj:
        raise ValueError("'scram' (mechanism -> credentials) is required")
    out = {}
    for mech, (salt, iterations, stored, server) in obj.items():
        if mech not in HASHES or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"unknown mechanism or bad iteration count for {mech!r}")
        cred = ScramCredential(mech, base64.b64decode(salt, validate=True), iterations,
                               base64.b64decode(stored, validate=True),
                               base64.b64decode(server, validate=True))
        if len(cred.stored_key) != DIGEST_SIZES[mech] or len(cred.server_key) != DIGEST_SIZES[mech]:
            raise ValueError(f"keys of the wrong size for {mech}")
        out[mech] = cred
    return out


def iso_time(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_session(session: Session, transport: str, peer: str, sm: bool, hibernated: bool
                     ) -> dict[str, Any]:
    return {"jid": session.full, "transport": transport, "ip": peer.rpartition(":")[0] or peer,
            "since": iso_time(session.created), "sm": sm, "hibernated": hibernated}


# ------------------------------------------------------------------------------ the command line

def probe(path: str) -> bool:
    """Whether something accepts connections on ``path`` (a daemon is running)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _address(path) as addr:
            s.connect(addr)
        return True
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    except PermissionError:
        return True  # there is one, and it is not ours to use
    finally:
        s.close()


class ControlClient:
    """A connection to a running daemon's control socket (synchronous: for the command line)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")

    @classmethod
    def connect(cls, data_dir: str) -> ControlClient | None:
        """The daemon serving ``data_dir``, or None when none runs. Raises ControlError when
        one runs but this process may not use its socket."""
        path = socket_path(data_dir)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(CLIENT_TIMEOUT)
        try:
            with _address(path) as addr:
                s.connect(addr)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            s.close()
            return None  # no socket, or a stale one: no daemon
        except PermissionError:
            s.close()
            raise ControlError(f"a daemon is running but its control socket {path} is not open to "
                               f"this user: run the command as the daemon's user") from None
        return cls(s)

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        try:
            self.sock.sendall(_encode({"op": op, **args}))
            line = self.file.readline(MAX_LINE * 16)
        except OSError as e:  # (timeouts included)
            raise ControlError(f"the daemon did not answer: {e}") from None
        if not line:
            raise ControlError("the daemon closed the control connection")
        try:
            reply = json.loads(line)
        except ValueError:
            raise ControlError("the daemon's answer is not JSON") from None
        if not reply.get("ok"):
            raise ControlError(reply.get("error") or "refused")
        return reply

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
