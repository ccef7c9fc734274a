"""Feature modules: the Module base class, its decorators, and the loader.

A module declares its metadata (name, XEPs, disco features) and its handlers with decorators;
the loader collects them into the server's dispatch tables at load time, so that handling a
stanza costs no lookup (STYLE.md §5.2). A module gets the narrow ``ModuleServer`` (core/api.py)
as ``self.server``, declares the modules it needs (``depends``, loaded first: ``require``) and
those it works with when loaded (``uses``: ``optional``), and lets others influence its decisions
through hooks (core/events.py), not by looking into them.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    from .api import ModuleServer

log = logging.getLogger(__name__)

# IQ scopes: whom the IQ is addressed to (Prosody's iq/host, iq/self, iq/bare).
HOST = "host"   # the server domain itself
SELF = "self"   # no 'to', or the sender's own bare JID
BARE = "bare"   # another local user's bare JID (also tried for SELF when no SELF handler exists)
# Scopes of a component module's IQs (core/hosts.py): its domain itself, or a JID at it.
COMPONENT = "component"
COMPONENT_JID = "component-jid"


def iq_handler(type: str, ns: str, tag: str, scope: str | tuple[str, ...] = HOST) -> Callable:
    """Handle IQs of ``type`` whose payload is ``{ns}tag``, addressed to ``scope``.

    The method takes ``(iq, ctx)`` and returns the result payload (Element or None), or raises
    StanzaError; it may be a coroutine function. ``scope`` may also be a tuple of scopes.
    """
    scopes = scope if isinstance(scope, tuple) else (scope,)

    def deco(fn: Callable) -> Callable:
        fn.__dict__.setdefault("_mb_iq", []).extend((type, ns, tag, s) for s in scopes)
        return fn
    return deco


def hook(event: str, priority: int = 0) -> Callable:
    """Run the method on ``event``; a non-None return stops lower-priority handlers."""
    def deco(fn: Callable) -> Callable:
        fn.__dict__.setdefault("_mb_hooks", []).append((event, priority))
        return fn
    return deco


def nonza(ns: str, tag: str) -> Callable:
    """Handle a top-level non-stanza element ``{ns}tag`` on a client stream (SM, CSI).

    The method takes ``(stream, element)``; ``stream.session`` is the bound session, if any.
    """
    def deco(fn: Callable) -> Callable:
        fn.__dict__.setdefault("_mb_nonzas", []).append((ns, tag))
        return fn
    return deco


class ModuleLoadError(ValueError):
    """A module cannot be loaded as configured (a required module is missing)."""


ModuleT = TypeVar("ModuleT", bound="Module")


def _dep_name(dep: type[Module] | str) -> str:
    return dep if isinstance(dep, str) else dep.name


def _declares(decl: tuple[type[Module] | str, ...], cls: type[Module]) -> bool:
    return any(d is cls or d == cls.name for d in decl)


OptionsT = TypeVar("OptionsT")


class Module(Generic[OptionsT]):
    """A feature module. One with a config section of its own is a ``Module[XConfig]``: the
    section is named like the module, XConfig is declared in its package with mbxmpp/options.py
    and listed in config.MODULE_SECTIONS, and the module reads it as ``self.options``."""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    xeps: ClassVar[dict[str, str]] = {}        # XEP number -> version implemented
    features: ClassVar[list[str]] = []         # disco#info features of the server domain
    account_features: ClassVar[list[str]] = []  # disco#info features of a user's bare JID
    identities: ClassVar[list[tuple[str, str, str]]] = []  # (category, type, name)
    account_identities: ClassVar[list[tuple[str, str, str]]] = []  # of a user's bare JID
    # Modules this one needs: loaded before it (added when not configured); ``require`` them.
    depends: ClassVar[tuple[type[Module] | str, ...]] = ()
    # Modules this one works with when they are loaded; ``optional`` them from ``start()`` on.
    uses: ClassVar[tuple[type[Module] | str, ...]] = ()

    def __init__(self, server: ModuleServer) -> None:
        self.server = server
        self.log = logging.getLogger(f"mbxmpp.modules.{self.name}")

    # Dependencies -----------------------------------------------------------------------------
    def require(self, cls: type[ModuleT]) -> ModuleT:
        """The loaded ``cls`` module, declared in ``depends`` (loaded first: usable from
        ``__init__``)."""
        if not _declares(self.depends, cls):
            raise TypeError(f"module {self.name!r} requires {cls.name!r} without declaring it in depends")
        mod = self.server._loaded(cls.name)
        if not isinstance(mod, cls):
            raise ModuleLoadError(f"module {self.name!r} requires module {cls.name!r}, which is not loaded")
        return mod

    def optional(self, cls: type[ModuleT]) -> ModuleT | None:
        """The loaded ``cls`` module, or None when it is not loaded; declared in ``uses``.
        Complete from ``start()`` on (modules are constructed in dependency order only)."""
        if not (_declares(self.uses, cls) or _declares(self.depends, cls)):
            raise TypeError(f"module {self.name!r} uses {cls.name!r} without declaring it in uses")
        mod = self.server._loaded(cls.name)
        return mod if isinstance(mod, cls) else None

    # Lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Called once every module is loaded and storage is open."""

    async def stop(self) -> None:
        """Called on shutdown, before storage is flushed."""

    # Helpers --------------------------------------------------------------------------------
    @property
    def options(self) -> OptionsT:
        """This module's [name] section (None for a module without options)."""
        section: Any = getattr(self.server.config, self.name, None)
        return section

    def handlers(self) -> tuple[list[tuple[str, str, str, str, Callable]], list[tuple[str, int, Callable]],
                                list[tuple[str, str, Callable]]]:
        iqs: list[tuple[str, str, str, str, Callable]] = []
        hooks: list[tuple[str, int, Callable]] = []
        nonzas: list[tuple[str, str, Callable]] = []
        for klass in type(self).__mro__:
            for attr, fn in vars(klass).items():
                for t, ns, tag, scope in getattr(fn, "_mb_iq", ()):
                    iqs.append((t, ns, tag, scope, getattr(self, attr)))
                for ev, prio in getattr(fn, "_mb_hooks", ()):
                    hooks.append((ev, prio, getattr(self, attr)))
                for ns, tag in getattr(fn, "_mb_nonzas", ()):
                    nonzas.append((ns, tag, getattr(self, attr)))
        return iqs, hooks, nonzas


def load_class(spec: str) -> type[Module]:
    mod_name, _, cls_name = spec.partition(":")
    mod: Any = importlib.import_module(mod_name)
    cls = getattr(mod, cls_name)
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"{spec} is not a Module")
    return cls


def check_dependencies(cls: type[Module], loaded: dict[str, Module]) -> None:
    """Raise ModuleLoadError when a module ``cls`` requires is not loaded (a component module
    switched off by its section, say)."""
    for dep in cls.depends:
        if _dep_name(dep) not in loaded:
            raise ModuleLoadError(f"module {cls.name!r} requires module {_dep_name(dep)!r}, which is not "
                                  "loaded (switched off in its section?)")


def order_by_dependencies(names: list[str], registry: dict[str, str]) -> list[str]:
    """Add missing dependencies and order so that each module comes after what it depends on.
    (Optional ones, ``uses``, do not change the order: they are looked up from ``start()`` on.)"""
    out: list[str] = []
    seen: set[str] = set()

    def visit(n: str, stack: tuple[str, ...]) -> None:
        if n in seen:
            return
        if n in stack:
            raise ValueError(f"module dependency cycle: {' -> '.join(stack + (n,))}")
        if n not in registry:
            raise ValueError(f"unknown module {n!r}")
        for d in load_class(registry[n]).depends:
            visit(_dep_name(d), stack + (n,))
        seen.add(n)
        out.append(n)

    for n in names:
        visit(n, ())
    return out
