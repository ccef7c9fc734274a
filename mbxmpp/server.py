"""Server: builds hosts, storage, modules and listeners from the configuration, and is what the
streams call into (authentication, binding, routing)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING, Any, Callable

from .config import DEFAULT_MODULES, Config
from .core import events as ev
from .core.accounts import Accounts
from .core.hooks import HookBus
from .core.modules import Module, load_class, order_by_dependencies
from .core.router import Router
from .core.sessions import Session, SessionManager
from .errors import StreamError
from .jid import JID
from .modules import REGISTRY
from .net.connection import C2SConnection, DeferredWrites
from .net.tls import TLSContexts, ensure_self_signed
from .storage import open_storage
from .stream.sasl import load_fake_secret
from .util.tuning import tune_for_serving
from .xml.element import Element

if TYPE_CHECKING:
    from .stream.c2s import C2SStream

log = logging.getLogger(__name__)


class StreamFeaturesEvent:
    __slots__ = ("stream", "features")

    def __init__(self, stream: C2SStream) -> None:
        self.stream = stream
        self.features: list[Element] = []


class Server:
    def __init__(self, config: Config, storage_kind: str = "lmdb") -> None:
        self.config = config
        self.hosts: set[str] = set(config.server.domains)
        self.data_dir = os.path.abspath(config.server.data_dir)
        self.storage = open_storage(storage_kind, self.data_dir if storage_kind == "lmdb" else None)
        self.accounts = Accounts(self.storage)
        self.sasl_fake_secret: bytes | None = None  # from data_dir at start (stable fake salts)
        self.hooks = HookBus()
        self.sessions = SessionManager(self.hooks)
        self.router = Router(self.hosts, self.hooks, self.sessions, self.accounts.exists)
        self.modules: dict[str, Module] = {}
        self.nonzas: dict[tuple[str, str], Callable[[C2SStream, Element], Any]] = {}
        self.connections: set[C2SConnection] = set()
        self.deferred_writes = DeferredWrites()  # small writes waiting for company, one timer
        self.unauth_per_ip: dict[str, int] = {}
        self.listeners: list[asyncio.AbstractServer] = []
        self.tls: TLSContexts | None = None
        self.started = False
        self._stopping: asyncio.Future | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def module_names(self) -> list[str]:
        names = list(self.config.server.modules or DEFAULT_MODULES)
        names = [n for n in names if n not in self.config.server.disabled_modules]
        return order_by_dependencies(names, REGISTRY)

    def load_modules(self) -> None:
        for name in self.module_names():
            cls = load_class(REGISTRY[name])
            mod = cls(self)
            self.modules[name] = mod
            iqs, hooks, nonzas = mod.handlers()
            for t, ns, tag, scope, fn in iqs:
                self.router.iq.register(t, ns, tag, scope, fn)
            for event, prio, fn in hooks:
                self.hooks.add(event, fn, prio)
            for ns, tag, fn in nonzas:
                if (ns, tag) in self.nonzas:
                    raise ValueError(f"two handlers for nonza {{{ns}}}{tag}")
                self.nonzas[(ns, tag)] = fn

    def module(self, name: str) -> Module | None:
        return self.modules.get(name)

    def tls_contexts(self) -> TLSContexts:
        cfg = self.config.tls
        if cfg.cert and cfg.key:
            default = (cfg.cert, cfg.key)
        else:
            names = []
            for h in self.config.server.domains:  # the first domain names the certificate
                names.append(h)
                names.extend(self.component_domains(h))
            default = ensure_self_signed(self.data_dir, names)
        per_host = {h: (c.cert, c.key) for h, c in cfg.domains.items()}
        return TLSContexts(default, per_host, cfg.min_version, cfg.ciphers)

    def component_domains(self, host: str) -> list[str]:
        out = []
        for section in ("muc", "upload", "proxy65"):
            sec = getattr(self.config, section)
            if sec.enabled:
                out.append(self.config.component_domain(section, host))
        return out

    async def start(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        self.sasl_fake_secret = load_fake_secret(self.data_dir)
        self.load_modules()
        for mod in self.modules.values():
            await mod.start()
        self.tls = self.tls_contexts()
        loop = asyncio.get_running_loop()
        c2s = self.config.c2s
        starttls_ctx = self.tls.context()
        direct_ctx = self.tls.context(alpn=["xmpp-client"])  # XEP-0368
        for host, port in c2s.listen:
            srv = await loop.create_server(lambda: C2SConnection(self, starttls_ctx, False),
                                           host, port, backlog=1024, reuse_address=True)
            self.listeners.append(srv)
            log.info("c2s (STARTTLS) listening on %s:%d", host, port)
        for host, port in c2s.direct_tls:
            srv = await loop.create_server(lambda: C2SConnection(self, direct_ctx, True),
                                           host, port, ssl=direct_ctx, backlog=1024,
                                           reuse_address=True, ssl_handshake_timeout=30)
            self.listeners.append(srv)
            log.info("c2s (direct TLS) listening on %s:%d", host, port)
        self.started = True

    async def stop(self) -> None:
        for srv in self.listeners:
            srv.close()
        for conn in list(self.connections):
            conn.stream.fail(StreamError("system-shutdown", "the server is shutting down"))
        # Sessions kept for resumption cannot survive the restart: end them while storage is
        # open, so that what their clients never acknowledged goes offline (XEP-0198 §5).
        for session in list(self.sessions.full.values()):
            self.destroy_session(session)
        for mod in reversed(list(self.modules.values())):
            try:
                await mod.stop()
            except Exception:
                log.exception("module %s failed to stop", mod.name)
        await asyncio.sleep(0.05)  # let the closing streams flush
        await self.storage.close()

    async def serve_forever(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        self._stopping = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._request_stop)
            except (NotImplementedError, RuntimeError):
                pass
        tune_for_serving()  # (after the handlers: a SIGTERM right after start-up is clean)
        try:
            await self._stopping
        finally:
            await self.stop()

    def _request_stop(self) -> None:
        if self._stopping is not None and not self._stopping.done():
            log.info("stopping")
            self._stopping.set_result(None)

    # -- what the c2s stream calls ----------------------------------------------------------
    def get_credential(self, username: str, host: str, mech: str) -> Any:
        return self.accounts.credential(f"{username}@{host}", mech)

    def check_password(self, username: str, host: str, password: str) -> bool:
        return self.accounts.check_password(f"{username}@{host}", password)

    def login_refusal(self, username: str, host: str) -> str | None:
        """Accounts on a plan without chat are refused with the operator's message."""
        rec = self.accounts.get(f"{username}@{host}")
        if rec is None:
            return "no such account"
        acfg = self.config.accounts
        plan = rec.get("plan") or acfg.default_plan
        if plan not in acfg.chat_plans:
            return acfg.refusal_text
        return None

    def bind(self, stream: C2SStream, jid: JID, resource: str | None) -> Session:
        return self.sessions.bind(jid, stream, resource)

    def route_from_client(self, stanza: Element, session: Session) -> None:
        self.router.route(stanza, session)

    def post_auth_features(self, stream: C2SStream) -> list[Element]:
        e = StreamFeaturesEvent(stream)
        self.hooks.fire_all(ev.STREAM_FEATURES, e)
        return e.features

    def handle_nonza(self, stream: C2SStream, el: Element) -> bool:
        fn = self.nonzas.get((el.ns, el.tag))
        if fn is None:
            return False
        fn(stream, el)
        return True

    def stream_closed(self, stream: C2SStream) -> None:
        session = stream.session
        if session is None or session.stream is not stream:
            return
        try:
            if self.hooks.fire(ev.STREAM_CLOSED, stream) is not None:
                return  # kept (hibernated) by Stream Management
        except Exception:
            # A failing hook must not leave a bound session behind a dead stream.
            log.exception("stream-closed hook failed for %s", session.full)
        self.destroy_session(session)

    def destroy_session(self, session: Session) -> None:
        """End a session for good: unavailable presence, then forget it."""
        if session.closed:
            return
        session.stream = None
        try:
            self.hooks.fire_all(ev.SESSION_CLOSED, session)
        finally:
            self.sessions.unbind(session)

    # -- for modules ------------------------------------------------------------------------
    def route(self, stanza: Element) -> None:
        """Route a stanza the server itself sends (it must carry 'from')."""
        self.router.route(stanza)

    def is_local(self, domain: str) -> bool:
        return domain in self.hosts
