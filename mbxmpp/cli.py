"""Command line: serve (default), user add|passwd|del|list|import, check-config, xeps.

Exit codes: 0 success, 2 usage or configuration error, 1 any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Iterable, Sequence

from .config import ConfigError, Config, check_config, find_default_config, load_config

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
IMPORT_BATCH = 2000


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mbxmpp", description="mbxmpp XMPP server")
    p.add_argument("-c", "--config", help="TOML configuration file (default: ./mbxmpp.toml, "
                                          "else embedded defaults)")
    p.add_argument("--log-level", help="debug, info, warning, error (overrides the config)")
    sub = p.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the server (the default)")
    serve.add_argument("-c", "--config", dest="config_sub", help=argparse.SUPPRESS)
    sub.add_parser("check-config", help="validate the configuration and explain every error")
    sub.add_parser("xeps", help="list the XEPs this server implements")
    arch = sub.add_parser("archive", help="message archive (XEP-0313) maintenance")
    asub = arch.add_subparsers(dest="archive_command", required=True)
    sizes = asub.add_parser("sizes", help="archived messages per account and room, largest first")
    sizes.add_argument("domain", nargs="?")
    sizes.add_argument("--top", type=int, help="only the N largest")
    user = sub.add_parser("user", help="manage accounts")
    us = user.add_subparsers(dest="user_command", required=True)
    add = us.add_parser("add", help="create an account (prompts for the password)")
    add.add_argument("jid")
    add.add_argument("--password")
    add.add_argument("--plan", help="the customer's plan (see [accounts] chat_plans)")
    pw = us.add_parser("passwd", help="change an account's password")
    pw.add_argument("jid")
    pw.add_argument("--password")
    d = us.add_parser("del", help="delete an account and all its data")
    d.add_argument("jid")
    ls = us.add_parser("list", help="list accounts")
    ls.add_argument("domain", nargs="?")
    imp = us.add_parser("import", help="bulk import: 'JID PASSWORD' or "
                        "'JID scram MECH SALT_B64 ITERATIONS STORED_KEY_B64 SERVER_KEY_B64' per line")
    imp.add_argument("file", help="file name, or - for standard input")
    return p


def _load(args: argparse.Namespace) -> Config:
    path = getattr(args, "config_sub", None) or args.config or find_default_config()
    return load_config(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = _load(args)
    except ConfigError as e:
        print(f"configuration error:\n{e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"cannot read the configuration: {e}", file=sys.stderr)
        return EXIT_USAGE
    level = (args.log_level or cfg.server.log_level).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cmd = args.command or "serve"
    try:
        if cmd == "serve":
            return _serve(cfg)
        if cmd == "check-config":
            return _check(cfg)
        if cmd == "xeps":
            return _xeps(cfg)
        if cmd == "user":
            return _run(_user(cfg, args))
        if cmd == "archive":
            return _archive_sizes(cfg, args)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAIL
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return EXIT_OK
    return EXIT_USAGE


class UsageError(Exception):
    pass


def _run(coro: Any) -> int:
    return asyncio.run(coro)


def _serve(cfg: Config) -> int:
    from .server import Server
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        logging.getLogger(__name__).warning("uvloop is not installed; using asyncio's loop")

    async def run() -> None:
        server = Server(cfg)
        await server.serve_forever()

    if cfg.source is None:
        print("mbxmpp: serving 'localhost' on 127.0.0.1 with embedded defaults "
              f"(data in {os.path.abspath(cfg.server.data_dir)}).\n"
              "Add a user with:  python -m mbxmpp user add alice@localhost", file=sys.stderr)
    try:
        asyncio.run(run())
    except OSError as e:
        print(f"mbxmpp: cannot start: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _check(cfg: Config) -> int:
    errors = check_config(cfg)
    if errors:
        print("configuration problems:", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"configuration OK ({cfg.source or 'embedded defaults'}): "
          f"domains {', '.join(cfg.server.domains)}")
    return EXIT_OK


def _xeps(cfg: Config) -> int:
    from .core.modules import load_class
    from .modules import REGISTRY
    # Implemented by the core (streams, TLS, SASL) rather than by a feature module.
    rows = [("0368", "1.1.0", "core", "SRV records for XMPP over TLS: the direct TLS listener, ALPN xmpp-client"),
            ("0440", "0.4.2", "core", "SASL channel-binding type capability"),
            ("0203", "2.0", "core", "Delayed delivery stamps on offline and archived messages"),
            ("0334", "0.3.3", "core", "Message processing hints (no-store, store, no-copy) honoured")]
    for name, spec in sorted(REGISTRY.items()):
        cls = load_class(spec)
        for xep, version in sorted(cls.xeps.items()):
            rows.append((xep, version, name, cls.description))
    for xep, version, name, desc in sorted(rows):
        print(f"XEP-{xep}  {version:<8} {name:<10} {desc}")
    return EXIT_OK


def _archive_sizes(cfg: Config, args: argparse.Namespace) -> int:
    from .modules.mam import archive_report, format_archive_report
    from .storage import open_storage
    storage = open_storage("lmdb", os.path.abspath(cfg.server.data_dir))
    try:
        print(format_archive_report(archive_report(storage, domain=args.domain, top=args.top)))
    finally:
        storage.close_sync()
    return EXIT_OK


def _bare(cfg: Config, s: str) -> str:
    from .jid import JID, JIDError
    try:
        j = JID.parse(s)
    except JIDError as e:
        raise UsageError(f"invalid JID {s!r}: {e}") from None
    if j.local is None or j.resource is not None:
        raise UsageError(f"{s!r} is not an account address (user@domain)")
    if j.domain not in cfg.server.domains:
        raise UsageError(f"{j.domain!r} is not one of this server's domains "
                         f"({', '.join(cfg.server.domains)})")
    return j.bare


def _password(given: str | None, confirm: bool = True) -> str:
    if given is not None:
        return given
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise UsageError("no password given")
        return line.rstrip("\n")
    pw = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Again: ") != pw:
        raise UsageError("the passwords differ")
    return pw


async def _user(cfg: Config, args: argparse.Namespace) -> int:
    from .core.accounts import Accounts
    from .storage import open_storage
    storage = open_storage("lmdb", os.path.abspath(cfg.server.data_dir))
    try:
        accounts = Accounts(storage)
        c = args.user_command
        if c == "add":
            bare = _bare(cfg, args.jid)
            if accounts.exists(bare):
                print(f"{bare} already exists (use 'user passwd')", file=sys.stderr)
                return EXIT_FAIL
            await accounts.create(bare, _password(args.password), plan=args.plan)
            print(f"created {bare}")
        elif c == "passwd":
            bare = _bare(cfg, args.jid)
            if not accounts.exists(bare):
                print(f"no account {bare}", file=sys.stderr)
                return EXIT_FAIL
            await accounts.create(bare, _password(args.password))
            print(f"password changed for {bare}")
        elif c == "del":
            bare = _bare(cfg, args.jid)
            if not await accounts.delete(bare):
                print(f"no account {bare}", file=sys.stderr)
                return EXIT_FAIL
            print(f"deleted {bare}")
        elif c == "list":
            for bare in sorted(accounts.list(args.domain)):
                print(bare)
        elif c == "import":
            return await _import(cfg, accounts, args.file)
        return EXIT_OK
    finally:
        await storage.close()


def _derive_line(item: tuple[int, str, str | None, Any]) -> tuple[int, str, dict | None, str | None]:
    """Worker: SCRAM keys for one line (PBKDF2 is the cost of an import)."""
    from .stream.scram import make_credentials
    n, bare, password, cred = item
    if password is not None:
        return n, bare, {m: c.to_record() for m, c in make_credentials(password).items()}, None
    return n, bare, {cred.mech: cred.to_record()}, None


async def _import(cfg: Config, accounts: Any, path: str) -> int:
    from .stream.scram import ScramCredential, parse_import_line
    f = sys.stdin if path == "-" else open(path, encoding="utf-8")
    errors = 0
    items: list[tuple[int, str, str | None, Any]] = []
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            # Only the line ending goes: a password keeps its trailing spaces, as in `user add`.
            line = line.rstrip("\r\n")
            try:
                jid, password, cred = parse_import_line(line)
                items.append((n, _bare(cfg, jid), password, cred))
            except (ValueError, UsageError) as e:
                print(f"line {n}: {e}", file=sys.stderr)
                errors += 1
    tty = sys.stderr.isatty()
    done = 0
    workers = os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers) if any(i[2] is not None for i in items) and len(items) > 50 else _Inline() as pool:
        for start in range(0, len(items), IMPORT_BATCH):
            chunk = items[start:start + IMPORT_BATCH]
            derived = list(pool.map(_derive_line, chunk, chunksize=64))
            # One write transaction per chunk (DESIGN.md: bulk import).
            async with accounts.storage.batch() as batch:
                for _n, bare, scram, _ in derived:
                    creds = {m: ScramCredential.from_record(r) for m, r in scram.items()}  # type: ignore[union-attr]
                    batch.set(accounts.store, bare, accounts.record(None, creds, None, accounts.get(bare)))
            done += len(chunk)
            if tty:
                print(f"\rimported {done}/{len(items)}", end="", file=sys.stderr)
    if tty:
        print(file=sys.stderr)
    print(f"imported {done} accounts" + (f", {errors} lines rejected" if errors else ""))
    return EXIT_FAIL if errors else EXIT_OK


class _Inline:
    """A stand-in for a process pool when there is nothing expensive to do."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    def map(fn: Any, it: Iterable, chunksize: int = 1) -> Iterable:
        return map(fn, it)
