"""Server: builds hosts, storage, modules and listeners from the configuration, and is what the
streams call into (authentication, binding, routing)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING, Any, Callable

from .auth.service import ExternalAccounts, open_backend
from .config import DEFAULT_MODULES, Config
from .control import ControlServer
from .core import events as ev
from .core.accounts import Accounts
from .core.api import ModuleServer
from .core.admission import PreauthAdmission
from .core.hooks import HookBus
from .core.hosts import ComponentHost, ComponentModule
from .core.modules import (COMPONENT, COMPONENT_JID, Module, check_dependencies, load_class,
                           order_by_dependencies)
from .core.router import Router
from .core.sessions import Session, SessionManager
from .core.limits import ServerLimits
from .domains import with_added_domains
from .errors import StreamError
from .jid import JID
from .modules import REGISTRY
from .modules.sm import StreamManagement
from .net.connection import C2SConnection, DeferredWrites
from .http.server import HTTPService
from .net.tls import TLSContexts, ensure_self_signed
from .net.listener import AdmittingTLSListener
from .storage import open_storage
from .stream.c2s import ST_CLOSED, C2SStream
from .stream.sasl import load_fake_secret
from .util.tuning import tune_for_serving
from .xml.element import Element

if TYPE_CHECKING:
    from .components.service import ComponentService
    from .s2s.net import S2SService

log = logging.getLogger(__name__)


# The <system-shutdown/> text (RFC 6120 §4.9.3.20): a stop is nearly always a restart (upgrade,
# reboot), and clients that read the text reconnect rather than report an outage.
SHUTDOWN_TEXT = "the server is restarting: reconnect in a moment"
# <host-gone/> (§4.9.3.6): the domain was removed from this server while the stream was open.
HOST_GONE_TEXT = "this domain is no longer served here"


class PreauthIQEvent:
    __slots__ = ("stream", "iq")

    def __init__(self, stream: C2SStream, iq: Element) -> None:
        self.stream = stream
        self.iq = iq

    def reply(self, el: Element) -> None:
        self.stream.send_stanza(el)


class StreamFeaturesEvent:
    __slots__ = ("stream", "features")

    def __init__(self, stream: C2SStream) -> None:
        self.stream = stream
        self.features: list[Element] = []


class Server:
    def __init__(self, config: Config, storage_kind: str = "lmdb") -> None:
        config = with_added_domains(config)  # (and those added at run time: mbxmpp/domains.py)
        self.config = config
        self.hosts: set[str] = set(config.server.domains)
        self.data_dir = os.path.abspath(config.server.data_dir)
        self.storage = open_storage(storage_kind, self.data_dir if storage_kind == "lmdb" else None)
        self.sasl_fake_secret: bytes | None = None  # from data_dir at start (stable fake salts)
        self.hooks = HookBus()
        self.accounts = Accounts(self.storage, hooks=self.hooks)
        self.sessions = SessionManager(self.hooks)
        self.router = Router(self.hosts, self.hooks, self.sessions, self.accounts.exists)
        # Accounts in the mail system ([auth] backend = "dovecot" / "ldap"); None: internal.
        self.external: ExternalAccounts | None = None
        self._login_tasks: set[asyncio.Future[Any]] = set()
        backend = open_backend(config.auth)
        if backend is not None:
            cache_ttl = getattr(config.auth, config.auth.backend).cache_ttl
            self.external = ExternalAccounts(self, backend, cache_ttl)
            self.router.user_exists = self.external.exists
            self.router.when_known = self.external.when_known
        self.modules: dict[str, Module] = {}
        self.nonzas: dict[tuple[str, str], Callable[[C2SStream, Element], Any]] = {}
        self.components: dict[str, ComponentHost] = {}  # component domain -> host
        self.http = HTTPService(config)
        self.connections: set[C2SConnection] = set()
        self.deferred_writes = DeferredWrites()  # small writes waiting for company, one timer
        self.preauth = PreauthAdmission.from_config(config.c2s)  # not-yet-authenticated connections
        self.limits = ServerLimits(config.limits)  # [limits]: token buckets (core/limits.py)
        self.listeners: list[asyncio.AbstractServer] = []
        self.tls: TLSContexts | None = None
        self.control: ControlServer | None = None
        self.s2s: S2SService | None = None
        self.external_components: ComponentService | None = None  # [components] (XEP-0114)
        self.started = False
        self.stopping = False
        self._stopping: asyncio.Future | None = None
        self._cert_watch: asyncio.Task | None = None
        self.api = ModuleServer(self)  # what the modules get of the server (core/api.py)

    # -- lifecycle ----------------------------------------------------------------------------
    def module_names(self) -> list[str]:
        names = list(self.config.server.modules or DEFAULT_MODULES)
        names = [n for n in names if n not in self.config.server.disabled_modules]
        ordered = order_by_dependencies(names, REGISTRY)
        for name in ordered:
            if name in self.config.server.disabled_modules:  # (another module depends on it)
                dependants = [n for n in ordered if name in (
                    d if isinstance(d, str) else d.name for d in load_class(REGISTRY[n]).depends)]
                log.warning("module %s is in disabled_modules but loaded: %s depend%s on it", name,
                            ", ".join(dependants) or "another module", "s" if len(dependants) == 1 else "")
        return ordered

    def load_modules(self) -> None:
        for name in self.module_names():
            cls = load_class(REGISTRY[name])
            if issubclass(cls, ComponentModule) and not getattr(self.config, cls.component_section).enabled:
                continue  # e.g. [muc] enabled = false
            check_dependencies(cls, self.modules)
            mod = cls(self.api)
            self.modules[name] = mod
            iqs, hooks, nonzas = mod.handlers()
            for t, ns, tag, scope, fn in iqs:
                if scope not in (COMPONENT, COMPONENT_JID):  # those go to the module's hosts
                    self.router.iq.register(t, ns, tag, scope, fn)
            for event, prio, fn in hooks:
                self.hooks.add(event, fn, prio)
            for ns, tag, fn in nonzas:
                if (ns, tag) in self.nonzas:
                    raise ValueError(f"two handlers for nonza {{{ns}}}{tag}")
                self.nonzas[(ns, tag)] = fn

    def module(self, name: str) -> Module | None:
        return self.modules.get(name)

    # -- component hosts ------------------------------------------------------------------------
    def add_component_host(self, module: ComponentModule, parent: str) -> ComponentHost:
        """Serve ``module``'s component domain for virtual host ``parent`` from now on."""
        domain = self.config.component_domain(module.component_section, parent)
        if domain in self.components or domain in self.hosts:
            raise ValueError(f"{domain} is already served")
        host = ComponentHost(domain, parent, module, self.router)
        self.components[domain] = host
        self.router.components[domain] = host
        module.host_added(host)
        log.info("serving %s (%s) for %s", domain, module.name, parent)
        return host

    def remove_component_host(self, domain: str) -> None:
        host = self.components.pop(domain, None)
        if host is None:
            return
        self.router.components.pop(domain, None)
        host.module.host_removed(host)
        log.info("no longer serving %s", domain)

    def components_of(self, parent: str, section: str) -> list[str]:
        """The component domains of ``section`` ("muc", "upload", ...) served for ``parent``."""
        return [h.domain for h in self.components.values()
                if h.parent == parent and h.module.component_section == section]

    def _component_items(self, parent: str) -> list[tuple[str, str | None, str | None]]:
        return [(h.domain, h.module.component_name or None, None)
                for h in self.components.values() if h.parent == parent]

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
        return TLSContexts(default, per_host, cfg.min_version, cfg.ciphers,
                           cfg.certificates_dir, self._tls_hosts())

    def _tls_hosts(self) -> list[str]:
        """The names whose certificates certificates_dir may hold: the hosts and their
        components (a component without its own folder is served its parent's)."""
        names = list(self.config.server.domains)
        for h in self.config.server.domains:
            names += self.component_domains(h)
        names += self.config.components.hosts  # external ones federate under their own name
        return names

    async def _watch_certificates(self) -> None:
        """[tls] certificates_dir: a renewed certificate is served without a reload (a stat of
        each file every certificates_poll seconds; certbot's deploy hooks are then optional)."""
        while True:
            await asyncio.sleep(self.config.tls.certificates_poll)
            try:
                if self.tls is not None and self.tls.changed():
                    self.reload_certificates()
            except Exception:  # the watch must outlive one bad look
                log.exception("certificate watch failed")

    def reload_certificates(self) -> bool:
        assert self.tls is not None
        try:
            self.tls.reload()
        except (OSError, ValueError) as e:  # (ssl.SSLError is an OSError)
            log.error("certificates not reloaded, the old ones stay: %s", e)
            return False
        log.info("certificates loaded for %s",
                 ", ".join(sorted(self.tls.per_host_files)) or "the default only")
        if self.s2s is not None:
            asyncio.ensure_future(self.s2s.reload_tls())
        return True

    def component_domains(self, host: str) -> list[str]:
        out = []
        for section in ("muc", "upload", "proxy65"):
            sec = getattr(self.config, section)
            if sec.enabled:
                out.append(self.config.component_domain(section, host))
        return out

    async def start_modules(self) -> None:
        """Load and start every module, then serve the component hosts (no listeners)."""
        self.load_modules()
        disco = self.modules.get("disco")
        if disco is not None:
            disco.host_items.append(self._component_items)  # type: ignore[attr-defined]
        for mod in self.modules.values():
            await mod.start()
        for mod in list(self.modules.values()):
            if isinstance(mod, ComponentModule):
                for parent in self.config.server.domains:
                    self.add_component_host(mod, parent)

    async def stop_modules(self) -> None:
        for domain in list(self.components):
            self.remove_component_host(domain)
        for mod in reversed(list(self.modules.values())):
            try:
                await mod.stop()
            except Exception:
                log.exception("module %s failed to stop", mod.name)

    async def start(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        self.sasl_fake_secret = load_fake_secret(self.data_dir)
        await self.start_modules()
        if self.external is not None:
            self.external.start()
        self.tls = self.tls_contexts()
        loop = asyncio.get_running_loop()
        if self.config.s2s.enabled:
            # (before the c2s listeners: a client that can connect can federate)
            from .s2s.net import S2SService
            self.s2s = S2SService(self)
            await self.s2s.start()   # sets router.remote: stanzas to other domains federate
        if self.config.components.hosts:  # (nothing listens without [components.hosts])
            from .components.service import ComponentService
            self.external_components = ComponentService(self)
            await self.external_components.start()
        sm = self.modules.get("sm")
        if isinstance(sm, StreamManagement):
            await sm.restore_sessions()  # saved by the last graceful stop; resumable once we listen
        c2s = self.config.c2s
        starttls_ctx = self.tls.context()
        direct_ctx = self.tls.context(alpn=["xmpp-client"])  # XEP-0368
        for host, port in c2s.listen:
            srv = await loop.create_server(lambda: C2SConnection(self, starttls_ctx, False),
                                           host, port, backlog=1024, reuse_address=True)
            self.listeners.append(srv)
            log.info("c2s (STARTTLS) listening on %s:%d", host, port)
        for host, port in c2s.direct_tls:
            # (admitted before the handshake: see net/listener.py)
            tls_srv = await AdmittingTLSListener.start(
                host, port, direct_ctx, self.preauth,
                lambda ticket: C2SConnection(self, direct_ctx, True, ticket), handshake_timeout=30)
            self.listeners.append(tls_srv)  # type: ignore[arg-type]  # (has close())
            log.info("c2s (direct TLS) listening on %s:%d", host, port)
        if self.http.enabled:
            from .http import bosh, hostmeta, websocket
            websocket.register(self)
            bosh.register(self)
            hostmeta.register(self)
        await self.http.start(self.tls)
        if self.config.tls.certificates_dir is not None:
            self._cert_watch = asyncio.ensure_future(self._watch_certificates())
        self.started = True

    async def stop(self) -> None:
        self.stopping = True  # (push keeps the registrations that the stop's failures hit)
        if self._cert_watch is not None:
            self._cert_watch.cancel()
        try:
            if self.control is not None:
                await self.control.stop()
            for srv in self.listeners:
                srv.close()
            if self.s2s is not None:
                await self.s2s.stop()
            if self.external_components is not None:
                self.external_components.stop()
            for conn in list(self.connections):  # WebSocket ones too: before the HTTP side stops
                conn.stream.fail(StreamError("system-shutdown", SHUTDOWN_TEXT))
            await self.http.stop()
            # Resumable sessions are saved for the next start (modules/sm_restart.py); the
            # others end while storage is open, so that what their clients never acknowledged
            # goes offline (XEP-0198 §5).
            sm = self.modules.get("sm")
            if isinstance(sm, StreamManagement):
                sm.save_sessions_for_restart()
            for session in list(self.sessions.full.values()):
                self.destroy_session(session)
            if self.external is not None:
                await self.external.stop()
            await self.stop_modules()
            await asyncio.sleep(0.05)  # let the closing streams flush
        finally:
            # Whatever failed above, what the server accepted is committed before the exit.
            await self.storage.close()  # (flushes the writer queue, then closes)

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = loop.create_future()
        # The stop signals are handled before anything listens: a SIGTERM that arrives while
        # the later listeners start (the first ones already accept) is a clean stop after it.
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._request_stop)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            self.control = ControlServer(self)
            await self.control.start()  # first: it refuses to start beside another daemon
            await self.start()
            try:
                loop.add_signal_handler(signal.SIGHUP, self._reload_logged)
            except (NotImplementedError, RuntimeError):
                pass
            tune_for_serving()
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

    def check_password(self, username: str, host: str, password: str,
                       peer_ip: str | None = None) -> Any:
        """An awaitable Verdict (the internal store hashes in a thread; an external backend)."""
        if self.external is not None:
            return self.external.login(f"{username}@{host}", password, peer_ip)
        return self.accounts.login(f"{username}@{host}", password)  # (PBKDF2 off the loop)

    def await_login(self, verdict: Any, done: Callable[[Any], None]) -> None:
        """Wait for an external backend's verdict on a login, then ``done(verdict)`` (a stream
        is sans-IO: the waiting happens here)."""
        def finished(task: asyncio.Future[Any]) -> None:
            self._login_tasks.discard(task)
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None:
                log.error("login check failed: %r", exc)
            done(None if exc is not None else task.result())
        task = asyncio.ensure_future(verdict)
        self._login_tasks.add(task)
        task.add_done_callback(finished)

    @property
    def offers_scram(self) -> bool:
        """SCRAM needs the salted secrets, which only the internal store has."""
        return self.external is None or self.external.backend.offers_scram

    def login_refusal(self, username: str, host: str) -> str | None:
        """Accounts on a plan without chat are refused with the operator's message."""
        rec = self.accounts.get(f"{username}@{host}")
        if rec is None:
            return "no such account"
        if rec.get("disabled"):
            return "This account is disabled."
        acfg = self.config.accounts
        plan = rec.get("plan") or acfg.default_plan
        if plan not in acfg.chat_plans:
            return acfg.refusal_text
        return None

    def authenticated(self, stream: C2SStream) -> None:
        """SASL succeeded on ``stream`` (not bound yet)."""
        self.hooks.fire_all(ev.AUTHENTICATED, stream)

    def login_failed(self, condition: str) -> None:
        self.hooks.fire_all(ev.LOGIN_FAILED, condition)

    def bind(self, stream: C2SStream, jid: JID, resource: str | None) -> Session:
        session = self.sessions.bind(jid, stream, resource)
        session.mod["peer"] = stream.peer  # for the operator's list while it hibernates
        return session

    def route_from_client(self, stanza: Element, session: Session) -> None:
        self.router.route(stanza, session)

    def post_auth_features(self, stream: C2SStream) -> list[Element]:
        e = StreamFeaturesEvent(stream)
        self.hooks.fire_all(ev.STREAM_FEATURES, e)
        return e.features

    def preauth_iq(self, stream: C2SStream, iq: Element) -> bool:
        return self.hooks.fire(ev.PREAUTH_IQ, PreauthIQEvent(stream, iq)) is not None

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

    # -- for the operator (control socket) -----------------------------------------------------
    def end_sessions(self, jid: str, err: StreamError, keep: Session | None = None) -> int:
        """End at once, with the stream error ``err``, the sessions of an account (a bare JID:
        all its resources, those hibernated by Stream Management and its streams authenticated
        but not bound yet, but ``keep``) or one session (a full JID). Returns how many ended."""
        bare, _, resource = jid.partition("/")
        if resource:
            one = self.sessions.get(jid)
            sessions = [] if one is None else [one]
        else:
            sessions = [s for s in self.sessions.resources(bare) if s is not keep]
        for session in sessions:
            stream = session.stream
            # Destroyed first, so that the stream's close is an end and not a hibernation.
            self.destroy_session(session)
            if stream is not None:
                stream.close(err)  # (a hibernated session's stand-in ignores it)
        ended = len(sessions)
        if not resource:
            for conn in list(self.connections):
                st = conn.stream
                if (st.session is None and st.username is not None and st.stage != ST_CLOSED
                        and f"{st.username}@{st.host}" == bare):
                    st.fail(err)
                    ended += 1
        if ended:
            log.info("ended %d session(s) of %s: %s", ended, jid, err)
        return ended

    def end_unentitled_sessions(self) -> int:
        """End the sessions of every account that may no longer log in (its plan lost chat)."""
        ended = 0
        for bare in list(self.sessions.by_bare):
            username, _, host = bare.partition("@")
            refusal = self.login_refusal(username, host)
            if refusal is not None:
                ended += self.end_sessions(bare, StreamError("not-authorized", refusal))
        return ended

    def describe_sessions(self) -> list[dict[str, Any]]:
        from .control import describe_session
        conns = {id(c.stream): c for c in self.connections}
        direct_ports = {p for _h, p in self.config.c2s.direct_tls}
        out = []
        for session in list(self.sessions.full.values()):
            stream: Any = session.stream
            if not isinstance(stream, C2SStream):  # hibernated (Stream Management): no stream now
                out.append(describe_session(session, "-", session.mod.get("peer", ""), True, True))
                continue
            conn = conns.get(id(stream))
            name = getattr(conn, "transport_name", None)  # a transport that names itself
            if name is None:
                t = conn.transport if conn is not None else None
                port = t.get_extra_info("sockname")[1] if t is not None else None
                name = "direct-tls" if port in direct_ports else "starttls"
            out.append(describe_session(session, name, stream.peer, stream.sm is not None, False))
        return out

    def reload(self) -> dict[str, Any]:
        """Re-read the configuration file and apply what can change while serving: the log
        level and format, the [accounts] plan settings (then end the sessions of accounts whose
        plan no longer includes chat), the served domains and the certificates. Returns what
        was applied and what needs a restart."""
        from dataclasses import fields, replace

        from .config import load_config
        from .util.logjson import configure_logging
        new = with_added_domains(load_config(self.config.source))
        old = self.config
        applied = []
        if new.accounts != old.accounts:
            applied.append("accounts")
        live = ("log_level", "log_format", "domains")  # (server.* keys applied here)
        applied += [f"server.{k}" for k in live[:2] if getattr(new.server, k) != getattr(old.server, k)]
        configure_logging(new.server.log_level, new.server.log_format)
        self.config = replace(old, accounts=new.accounts,
                              server=replace(old.server, log_level=new.server.log_level,
                                             log_format=new.server.log_format))
        restart = [f"server.{f.name}" for f in fields(old.server)
                   if f.name not in live and getattr(old.server, f.name) != getattr(new.server, f.name)]
        restart += [f.name for f in fields(old) if f.name not in ("server", "accounts", "source")
                    and getattr(old, f.name) != getattr(new, f.name)]
        ended = self.end_unentitled_sessions() if "accounts" in applied else 0
        try:
            change = self.set_domains(new.server.domains)
        except ValueError as e:  # a new domain clashes: the served set stays as it was
            log.error("domains not changed: %s", e)
            change = {"added": [], "removed": [], "ended": 0}
        if change["added"] or change["removed"]:
            applied.append("server.domains")
            ended += change["ended"]
        if self.tls is not None and self.reload_certificates():
            applied.append("certificates")
        log.info("configuration reloaded from %s: applied %s; needing a restart: %s",
                 old.source or "embedded defaults", ", ".join(applied) or "nothing changed",
                 ", ".join(restart) or "nothing")
        return {"applied": applied, "restart_needed": restart, "ended": ended,
                "source": old.source, "added": change["added"], "removed": change["removed"]}

    # -- domains at run time -------------------------------------------------------------------
    def set_domains(self, domains: tuple[str, ...] | list[str]) -> dict[str, Any]:
        """Serve exactly ``domains`` from now on: added ones get their component hosts and
        certificates, removed ones lose their sessions (<host-gone/>), components and s2s
        streams. Certificates are loaded by the caller (``reload_certificates``). Raises
        ValueError when a new domain is already a component domain."""
        from dataclasses import replace
        wanted = list(dict.fromkeys(domains))
        added = [d for d in wanted if d not in self.hosts]
        removed = sorted(d for d in self.hosts if d not in wanted)
        for d in added:
            clash = self.components.get(d)
            if clash is not None:
                raise ValueError(f"{d} is already served as a component of {clash.parent}")
            if d in self.router.components:  # (the router's other ones: external, [components])
                raise ValueError(f"{d} is already served by an external component")
            for comp in self.component_domains(d):
                if comp in self.hosts or comp in self.components:
                    raise ValueError(f"{d}'s component domain {comp} is already served")
        ended = sum(self._stop_serving(d) for d in removed)
        for d in added:
            self._start_serving(d)
        self.config = replace(self.config, server=replace(self.config.server, domains=tuple(wanted)))
        self.http.config = self.config  # (its links name the domains)
        if self.tls is not None:
            self.tls.set_hosts(self._tls_hosts())
        if added or removed:
            log.info("domains: serving %s (added %s; removed %s)", ", ".join(wanted),
                     ", ".join(added) or "none", ", ".join(removed) or "none")
        return {"added": added, "removed": removed, "ended": ended}

    def _start_serving(self, domain: str) -> None:
        self.hosts.add(domain)
        for mod in list(self.modules.values()):
            if isinstance(mod, ComponentModule):
                self.add_component_host(mod, domain)

    def _stop_serving(self, domain: str) -> int:
        """End everything of ``domain``; returns how many client streams ended. The domain
        stays local until its sessions are gone: their unavailable presence to contacts on the
        same domain is delivered here, not sent to federation."""
        err = StreamError("host-gone", HOST_GONE_TEXT)
        ended = 0
        for bare in [b for b in list(self.sessions.by_bare) if b.rpartition("@")[2] == domain]:
            ended += self.end_sessions(bare, err)
        for conn in list(self.connections):  # streams opened to it, not authenticated yet
            st = conn.stream
            if st.host == domain and st.stage != ST_CLOSED:
                st.fail(err)
                ended += 1
        for comp in [h.domain for h in self.components.values() if h.parent == domain]:
            self.remove_component_host(comp)
        if self.s2s is not None:
            self.s2s.end_streams_of(domain, err)
        self.hosts.discard(domain)
        return ended

    def _reload_logged(self) -> None:
        try:
            self.reload()
        except Exception as e:  # a bad file must not take the daemon down
            log.error("reload failed, configuration unchanged: %s", e)

    # -- for modules ------------------------------------------------------------------------
    def route(self, stanza: Element) -> None:
        """Route a stanza the server itself sends (it must carry 'from')."""
        self.router.route(stanza)

    def is_local(self, domain: str) -> bool:
        return domain in self.hosts
