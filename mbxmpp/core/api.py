"""What a feature module may use of the server: ``ModuleServer``, the narrow host interface.

A module gets a ``ModuleServer`` (as ``self.server``), never the ``Server``: the services below
and nothing else, so that mypy rejects a module reaching for the server's internals (its
listeners, streams, TLS, reload...). The Server builds one at start-up; its attributes are the
server's own objects and bound methods, bound once, so a module's call costs what it did on the
Server (``route`` is the router's method itself: one call fewer than ``Server.route``).

Another module is reached only through a declared dependency (``Module.depends`` / ``uses``,
``Module.require`` / ``Module.optional``); a decision another module must influence is a hook
(core/events.py). The operator's powers (ending sessions, connection counts) are the
``Operator`` view, for the modules that are the operator's tools (ad-hoc administration,
metrics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from ..config import Config
    from ..errors import StreamError
    from ..http.server import HTTPService
    from ..s2s.net import S2SService
    from ..storage.api import Storage
    from .accounts import Accounts
    from .hooks import HookBus
    from .hosts import ComponentHost
    from .limits import ServerLimits
    from .modules import Module
    from .router import Router
    from .sessions import Session, SessionManager
    from ..xml.element import Element


class Operator(Protocol):
    """The operator's view of the running server (the control socket's powers)."""

    @property
    def accounts(self) -> Accounts: ...
    @property
    def sessions(self) -> SessionManager: ...
    @property
    def started(self) -> bool: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def connections(self) -> Collection[Any]: ...
    @property
    def components(self) -> Mapping[str, ComponentHost]: ...
    @property
    def hosts(self) -> Collection[str]: ...
    @property
    def s2s(self) -> S2SService | None: ...

    def end_sessions(self, jid: str, err: StreamError, keep: Session | None = None) -> int: ...
    def describe_sessions(self) -> list[dict[str, Any]]: ...


class _ServerLike(Operator, Protocol):
    """What ModuleServer reads from the Server it is built from (the Server satisfies it)."""

    @property
    def config(self) -> Config: ...
    router: Router
    hooks: HookBus
    storage: Storage
    http: HTTPService
    limits: ServerLimits
    data_dir: str
    modules: dict[str, Module]

    def is_local(self, domain: str) -> bool: ...
    def destroy_session(self, session: Session) -> None: ...
    def components_of(self, parent: str, section: str) -> list[str]: ...


Advertised = Literal["features", "account_features", "identities", "account_identities"]


class ModuleServer:
    """The services a module may use; see the module docstring."""

    __slots__ = ("router", "route", "sessions", "hooks", "storage", "accounts", "limits", "http",
                 "hosts", "data_dir", "is_local", "destroy_session", "components_of", "operator",
                 "_server", "_modules")

    def __init__(self, server: _ServerLike) -> None:
        self.router: Router = server.router         # deliver, bounce, iq.request, user_exists
        self.route: Callable[[Element], None] = server.router.route  # a stanza with 'from'
        self.sessions: SessionManager = server.sessions
        self.hooks: HookBus = server.hooks
        self.storage: Storage = server.storage
        self.accounts: Accounts = server.accounts
        self.limits: ServerLimits = server.limits
        self.http: HTTPService = server.http        # route registration, public_url
        self.hosts: Collection[str] = server.hosts  # the served domains (changed in place)
        self.data_dir: str = server.data_dir
        self.is_local: Callable[[str], bool] = server.is_local
        self.destroy_session: Callable[[Session], None] = server.destroy_session
        self.components_of: Callable[[str, str], list[str]] = server.components_of
        self.operator: Operator = server
        # Private: for the properties and the dependency accessors only.
        self._server = server
        self._modules = server.modules

    @property
    def config(self) -> Config:
        """The configuration (a property: a reload replaces the server's)."""
        return self._server.config

    @property
    def started(self) -> bool:
        """Every module started and the listeners open."""
        return self._server.started

    @property
    def stopping(self) -> bool:
        """A stop is under way (the server's own links are going down)."""
        return self._server.stopping

    def advertised(self, attr: Advertised) -> list[Any]:
        """The union of one disco attribute over the loaded modules (for disco#info)."""
        out: list[Any] = []
        for mod in self._modules.values():
            for x in getattr(mod, attr):
                if x not in out:
                    out.append(x)
        return out

    def _loaded(self, name: str) -> Module | None:
        """For ``Module.require``/``optional`` only (they check the declaration)."""
        return self._modules.get(name)
