"""Command line: serve (default), user add|passwd|del|disable|enable|list|import, sessions
list|kick, reload, domains list|add|remove, check-config, xeps, export, import, import-prosody.

Account changes and the session commands go through a running daemon's control socket
(mbxmpp/control.py); with no daemon running, account changes are written to storage directly.

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

from .config import Config, ConfigError, check_config, find_default_config, load_config

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
    sub.add_parser("config", help="the configuration's documentation").add_subparsers(
        dest="config_command", required=True).add_parser(
        "example", help="print every section and key with its doc (mbxmpp.example.toml)")
    arch = sub.add_parser("archive", help="message archive (XEP-0313) maintenance")
    asub = arch.add_subparsers(dest="archive_command", required=True)
    sizes = asub.add_parser("sizes", help="archived messages per account and room, largest first")
    sizes.add_argument("domain", nargs="?")
    sizes.add_argument("--top", type=int, help="only the N largest")
    chk = sub.add_parser("check", help="check DNS, certificates, TLSA and TLS ports as a remote "
                                       "tester would; a graded report with the fix for each finding")
    chk.add_argument("--nameserver", help="ask this DNS server (IP[:PORT]) instead of the system's")
    chk.add_argument("--no-ports", action="store_true", help="skip the TLS probes of the listeners")
    sub.add_parser("tlsa", help="print the TLSA records (DANE-EE) for the configured certificates")
    bk = sub.add_parser("backup", help="a consistent copy of the database while the server runs")
    bk.add_argument("dest", help="a new folder for the copy (it holds db/data.mdb)")
    web = sub.add_parser("webchat", help="the web chat's files (Converse.js)")
    wsub = web.add_subparsers(dest="webchat_command", required=True)
    fetch = wsub.add_parser("fetch", help="fetch the pinned Converse.js release (npm) and unpack it")
    fetch.add_argument("--tarball", help="use this converse.js .tgz instead of fetching it with npm")
    _migrate_parsers(sub)
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
    _control_parsers(sub, us)
    return p


def _control_parsers(sub: Any, us: Any) -> None:
    """The commands that act on the running daemon through its control socket."""
    for name, text in (("disable", "disable an account: its sessions end, its logins are refused"),
                       ("enable", "enable a disabled account")):
        us.add_parser(name, help=text).add_argument("jid")
    sessions = sub.add_parser("sessions", help="the running daemon's client sessions")
    ss = sessions.add_subparsers(dest="sessions_command", required=True)
    ss.add_parser("list", help="JID, transport, IP, since, stream management")
    kick = ss.add_parser("kick", help="end sessions: a bare JID all of them, a full JID one")
    kick.add_argument("jid")
    reports = sub.add_parser("reports", help="spam and abuse reports users sent (XEP-0377)")
    rs = reports.add_subparsers(dest="reports_command", required=True)
    rl = rs.add_parser("list", help="newest first: when, reported JID, reporter, reason, text")
    rl.add_argument("--jid", help="only the reports about this JID")
    s2s = sub.add_parser("s2s", help="the running daemon's server-to-server streams")
    s2s.add_subparsers(dest="s2s_command", required=True).add_parser(
        "list", help="peer, direction, authentication (PKIX, DANE, dialback), TLS version")
    sub.add_parser("reload", help="make the running daemon re-read its configuration "
                                  "(log level and format, [accounts], domains, certificates)")
    _domains_parsers(sub)


def _domains_parsers(sub: Any) -> None:
    dom = sub.add_parser("domains", help="virtual hosts: list, or add and remove them while the "
                                         "daemon runs (kept in <data_dir>/domains)")
    ds = dom.add_subparsers(dest="domains_command", required=True)
    ds.add_parser("list", help="the served domains and where each comes from")
    ds.add_parser("add", help="serve a domain from now on (and after restarts)").add_argument("domain")
    ds.add_parser("remove", help="stop serving a domain added with 'domains add': its sessions "
                                 "end with <host-gone/>").add_argument("domain")


def _migrate_parsers(sub: Any) -> None:
    ex = sub.add_parser("export", help="write accounts and their data as XEP-0227 (PIEFXIS)")
    ex.add_argument("file", help="file name, or - for standard output")
    ex.add_argument("domains", nargs="*", help="only these domains (default: all)")
    im = sub.add_parser("import", help="read a XEP-0227 file (ours, Prosody's, ejabberd's "
                                       "export_piefxis) or a folder of them")
    im.add_argument("file", help="file or folder name, or - for standard input")
    im.add_argument("--dry-run", action="store_true", help="check the file, write nothing")
    ip = sub.add_parser("import-prosody", help="read a Prosody data directory (internal storage)")
    ip.add_argument("dir", help="Prosody's data_path, e.g. /var/lib/prosody")
    ip.add_argument("hosts", nargs="*", help="only these hosts (default: all)")
    ip.add_argument("--dry-run", action="store_true", help="check the files, write nothing")


def _load(args: argparse.Namespace) -> Config:
    from .domains import with_added_domains
    path = getattr(args, "config_sub", None) or args.config or find_default_config()
    return with_added_domains(load_config(path))  # (and the domains added at run time)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config":  # needs no configuration of its own
        from .config_example import example_toml
        sys.stdout.write(example_toml())
        return EXIT_OK
    try:
        cfg = _load(args)
    except ConfigError as e:
        print(f"configuration error:\n{e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"cannot read the configuration: {e}", file=sys.stderr)
        return EXIT_USAGE
    from .util.logjson import configure_logging
    configure_logging(args.log_level or cfg.server.log_level, cfg.server.log_format)
    cmd = args.command or "serve"
    try:
        if cmd == "serve":
            return _serve(cfg)
        if cmd == "check-config":
            return _check(cfg)
        if cmd == "check":
            return _selfcheck(cfg, args.nameserver, not args.no_ports)
        if cmd == "tlsa":
            from .selfcheck import tlsa_lines
            print("\n".join(tlsa_lines(cfg)))
            return EXIT_OK
        if cmd == "backup":
            return _backup(cfg, args.dest)
        if cmd == "webchat":
            return _webchat_fetch(cfg, args.tarball)
        if cmd == "xeps":
            return _xeps(cfg)
        if cmd == "user":
            remote = _user_remote(cfg, args)
            return remote if remote is not None else _run(_user(cfg, args))
        if cmd == "sessions":
            return _sessions(cfg, args)
        if cmd == "reload":
            return _reload(cfg)
        if cmd == "s2s":
            return _s2s_list(cfg)
        if cmd == "domains":
            return _domains(cfg, args.domains_command, getattr(args, "domain", None))
        if cmd == "archive":
            return _archive_sizes(cfg, args)
        if cmd == "reports":
            return _reports_list(cfg, args)
        if cmd == "export":
            return _export(cfg, args.file, args.domains)
        if cmd in ("import", "import-prosody"):
            return _import_data(cfg, args)
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


def _run(coro: Any) -> Any:
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
    _print_storage_bounds(cfg)
    _print_limits(cfg)
    from .components.options import describe as describe_components
    print("\n".join(describe_components(cfg)))
    print(f"configuration OK ({cfg.source or 'embedded defaults'}): "
          f"domains {', '.join(cfg.server.domains)}")
    if "webchat" in cfg.enabled_modules:
        from .modules.webchat import assets
        if not assets.installed(_webchat_dir(cfg)):
            print(f"note: {assets.install_hint(_webchat_dir(cfg))}")
    return EXIT_OK


def _selfcheck(cfg: Config, nameserver: str | None, ports: bool) -> int:
    from .selfcheck import run_check
    report = _run(run_check(cfg, nameserver, probe_ports=ports))
    print(report.render())
    return EXIT_FAIL if report.grade == "F" else EXIT_OK


def _backup(cfg: Config, dest: str) -> int:
    from .storage.lmdb_backend import backup
    try:
        where = backup(cfg.server.data_dir, dest)
    except FileExistsError:
        print(f"backup: {dest} exists; name a new folder", file=sys.stderr)
        return EXIT_FAIL
    except OSError as e:
        print(f"backup: {e}", file=sys.stderr)
        return EXIT_FAIL
    print(f"database copied to {where} (start a server on it with data_dir = {os.path.abspath(dest)!r})")
    return EXIT_OK


def _webchat_dir(cfg: Config) -> str:
    return cfg.webchat.assets_dir or os.path.join(cfg.server.data_dir, "webchat")


def _webchat_fetch(cfg: Config, tarball: str | None) -> int:
    from .modules.webchat import assets
    try:
        where = assets.fetch(_webchat_dir(cfg), tarball)
    except (assets.AssetsError, OSError) as e:
        print(f"webchat: {e}", file=sys.stderr)
        return EXIT_FAIL
    print(f"Converse.js {assets.VERSION} installed in {where}; served at /chat")
    return EXIT_OK


def _print_storage_bounds(cfg: Config) -> None:
    from .modules.mam.quota import describe_bounds
    for line in describe_bounds(cfg):
        print(line)


def _print_limits(cfg: Config) -> None:
    rates = cfg.limits.rates
    print("rate limits: " + "; ".join(f"{k} {r.describe()}" for k, r in rates.items()))


def _xeps(cfg: Config) -> int:
    from .core.modules import load_class
    from .modules import REGISTRY
    # Implemented by the core (streams, TLS, SASL) rather than by a feature module.
    rows = [("0368", "1.1.0", "core", "SRV records for XMPP over TLS: direct TLS listeners (c2s, s2s) "
                                      "and _xmpps-server lookups"),
            ("0114", "1.6", "components", "Jabber Component Protocol: external components ([components])"),
            ("0178", "1.2", "s2s", "SASL EXTERNAL with certificates, both ways"),
            ("0220", "1.1.1", "s2s", "Server Dialback, every role, with dialback errors"),
            ("0288", "1.0.1", "s2s", "Bidirectional server-to-server streams"),
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
        report = format_archive_report(archive_report(storage, domain=args.domain, top=args.top))
    finally:
        storage.close_sync()
    _print_storage_bounds(cfg)  # first: the table's total stays the last line (scripts read it)
    print(report)
    return EXIT_OK


def _reports_list(cfg: Config, args: argparse.Namespace) -> int:
    from .jid import JID, JIDError
    from .modules.abuse_reports import Reports, format_reports
    from .storage import open_storage
    jid = None
    if args.jid:
        try:
            jid = JID.parse(args.jid).full
        except JIDError as e:
            raise UsageError(f"invalid JID {args.jid!r}: {e}") from None
    storage = open_storage("lmdb", os.path.abspath(cfg.server.data_dir))
    try:
        print(format_reports(list(Reports(storage).all(jid))))
    finally:
        storage.close_sync()
    return EXIT_OK


def _export(cfg: Config, path: str, domains: list[str]) -> int:
    from .migrate.account import Stores
    from .migrate.xep0227 import export
    from .storage import open_storage
    unknown = [d for d in domains if d not in cfg.server.domains]
    if unknown:
        raise UsageError(f"not one of this server's domains: {', '.join(unknown)}")
    storage = open_storage("lmdb", os.path.abspath(cfg.server.data_dir))
    tty = sys.stderr.isatty()
    try:
        if path == "-":
            n = export(Stores(storage), sys.stdout.buffer, domains or list(cfg.server.domains))
            sys.stdout.buffer.flush()
        else:
            # The file holds credentials (XEP-0227 §7): readable by its owner only.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb", buffering=1 << 20) as out:
                n = export(Stores(storage), out, domains or list(cfg.server.domains),
                           (lambda i: print(f"\rexported {i}", end="", file=sys.stderr))
                           if tty else None)
    except OSError as e:
        print(f"export: {e}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        storage.close_sync()
    if tty and path != "-":
        print(file=sys.stderr)
    print(f"exported {n} accounts", file=sys.stderr if path == "-" else sys.stdout)
    return EXIT_OK


def _import_data(cfg: Config, args: argparse.Namespace) -> int:
    """`import FILE` (XEP-0227) and `import-prosody DIR`: one write transaction per batch of
    whole accounts; rejected accounts are reported and nothing of them is written."""
    from .migrate import Summary, import_accounts
    from .migrate.prosody import LuaError, read_dir
    from .migrate.xep0227 import FileError, read_file
    from .storage import open_storage
    tty = sys.stderr.isatty()

    def note(text: str) -> None:
        print(("\r" if tty else "") + f"note: {text}", file=sys.stderr)

    def progress(s: Summary) -> None:
        if tty:
            print(f"\rimported {s.accounts} accounts, {s.messages} messages", end="",
                  file=sys.stderr)

    domains = set(cfg.server.domains)
    if args.command == "import":
        source = read_file(args.file, domains, note)
    else:
        source = read_dir(args.dir, domains, args.hosts or None)
    from .control import probe, socket_path
    if not args.dry_run and probe(socket_path(cfg.server.data_dir)):
        print("warning: a daemon serves this data directory; it may not see the imported data "
              "of accounts it has in its caches until it restarts", file=sys.stderr)
    storage = open_storage("lmdb", os.path.abspath(cfg.server.data_dir))
    try:
        summary = import_accounts(storage, source, dry_run=args.dry_run, progress=progress,
                                  rejected=lambda r: print(("\r" if tty else "") + f"error: {r}",
                                                           file=sys.stderr),
                                  workers=os.cpu_count() or 1,
                                  stop_on=(FileError, LuaError, OSError))
    finally:
        storage.close_sync()
    if tty:
        print(file=sys.stderr)
    if summary.error is not None:
        print(f"error: {summary.error}\nthe import stopped there: the accounts read completely "
              "before it were imported, none after", file=sys.stderr)
    verb = "checked" if args.dry_run else "imported"
    print(f"{verb} {summary.accounts} accounts, {summary.messages} archived and offline messages"
          + (f"; {len(summary.rejected)} accounts rejected" if summary.rejected else ""))
    return EXIT_FAIL if summary.rejected or summary.error else EXIT_OK


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
        elif c in ("disable", "enable"):
            bare = _bare(cfg, args.jid)
            if not accounts.exists(bare):
                print(f"no account {bare}", file=sys.stderr)
                return EXIT_FAIL
            await accounts.set_disabled(bare, c == "disable")
            print(f"{c}d {bare}")
        elif c == "list":
            for bare in sorted(accounts.list(args.domain)):
                print(bare)
        elif c == "import":
            return await _import(cfg, accounts, args.file)
        return EXIT_OK
    finally:
        await storage.close()


def _daemon(cfg: Config) -> Any:
    """The running daemon's control connection, or None when no daemon serves this data_dir."""
    from .control import ControlClient
    return ControlClient.connect(cfg.server.data_dir)


def _user_remote(cfg: Config, args: argparse.Namespace) -> int | None:
    """Account changes through the running daemon, which ends the account's sessions and tells
    its modules; None when no daemon runs (the caller writes storage itself)."""
    from .control import ControlError
    c = args.user_command
    if c not in ("add", "passwd", "del", "disable", "enable"):
        return None  # list reads storage; import writes it in bulk (LMDB: safe beside the daemon)
    bare = _bare(cfg, args.jid)
    try:
        scram = None
        if c in ("add", "passwd"):
            from .control import probe, scram_to_wire, socket_path
            if not probe(socket_path(cfg.server.data_dir)):
                return None
            # Asked before connecting: the daemon does not wait long for a silent client.
            args.password = _password(args.password)
            from .stream.scram import make_credentials
            scram = scram_to_wire(make_credentials(args.password))
        client = _daemon(cfg)
        if client is None:
            return None
        with client:
            if scram is not None:
                if c == "add":
                    client.request("user.add", jid=bare, scram=scram, plan=args.plan)
                    print(f"created {bare}")
                    return EXIT_OK
                r = client.request("user.passwd", jid=bare, scram=scram)
                print(f"password changed for {bare}{_ended(r)}")
                return EXIT_OK
            r = client.request(f"user.{c}", jid=bare)
            print(f"{'deleted' if c == 'del' else c + 'd'} {bare}{_ended(r)}")
            return EXIT_OK
    except ControlError as e:
        print(f"mbxmpp: {e}", file=sys.stderr)
        return EXIT_FAIL


def _ended(reply: dict[str, Any]) -> str:
    n = reply.get("ended") or 0
    return f" ({n} session{'s' if n != 1 else ''} ended)" if n else ""


def _require_daemon(cfg: Config) -> Any:
    client = _daemon(cfg)
    if client is None:
        from .control import socket_path
        raise _NoDaemon(f"mbxmpp: no daemon is running for {os.path.abspath(cfg.server.data_dir)} "
                        f"(nothing listens on {socket_path(cfg.server.data_dir)})")
    return client


class _NoDaemon(Exception):
    pass


def _ask_daemon(cfg: Config, op: str) -> dict[str, Any] | None:
    """One control request to the running daemon; None (and the reason on stderr) when there is
    no daemon or it refused."""
    from .control import ControlError
    try:
        with _require_daemon(cfg) as client:
            return client.request(op)  # type: ignore[no-any-return]
    except (ControlError, _NoDaemon) as e:
        print(str(e) if isinstance(e, _NoDaemon) else f"mbxmpp: {e}", file=sys.stderr)
        return None


def _sessions(cfg: Config, args: argparse.Namespace) -> int:
    from .control import ControlError
    try:
        with _require_daemon(cfg) as client:
            if args.sessions_command == "kick":
                from .jid import JID, JIDError
                try:
                    jid = JID.parse(args.jid).full
                except JIDError as e:
                    raise UsageError(f"invalid JID {args.jid!r}: {e}") from None
                r = client.request("sessions.kick", jid=jid)
                print(f"ended {r['ended']} session{'s' if r['ended'] != 1 else ''} of {jid}")
                return EXIT_OK
            rows = client.request("sessions.list")["sessions"]
    except (ControlError, _NoDaemon) as e:
        print(str(e) if isinstance(e, _NoDaemon) else f"mbxmpp: {e}", file=sys.stderr)
        return EXIT_FAIL
    print(f"{'JID':<40} {'TRANSPORT':<10} {'IP':<39} {'SINCE':<20} SM")
    for r in sorted(rows, key=lambda r: r["jid"]):
        sm = "hibernated" if r["hibernated"] else ("yes" if r["sm"] else "no")
        print(f"{r['jid']:<40} {r['transport']:<10} {r['ip'] or '-':<39} {r['since']:<20} {sm}")
    print(f"{len(rows)} session{'s' if len(rows) != 1 else ''}")
    return EXIT_OK


def _s2s_list(cfg: Config) -> int:
    from .s2s.net import format_streams
    r = _ask_daemon(cfg, "s2s.list")
    if r is None:
        return EXIT_FAIL
    if not r["enabled"]:
        print("federation is off ([s2s] enabled = false)")
        return EXIT_OK
    print("\n".join(format_streams(r["streams"])))
    return EXIT_OK


def _reload(cfg: Config) -> int:
    r = _ask_daemon(cfg, "reload")
    if r is None:
        return EXIT_FAIL
    print(f"reloaded {r.get('source') or 'embedded defaults'}: applied "
          f"{', '.join(r['applied']) or 'nothing (no change)'}")
    if r.get("ended"):
        print(f"ended {r['ended']} session(s) of accounts whose plan no longer includes chat")
    if r.get("added") or r.get("removed"):
        print(f"domains added: {', '.join(r['added']) or 'none'}; removed: "
              f"{', '.join(r['removed']) or 'none'}")
    if r["restart_needed"]:
        print(f"changed but applied only by a restart: {', '.join(r['restart_needed'])}")
    return EXIT_OK


def _domains(cfg: Config, command: str, raw: str | None) -> int:
    """Through the running daemon when there is one (it starts or stops serving at once and
    saves the list); with none, the list in <data_dir>/domains is edited for the next start."""
    from .control import ControlError
    try:
        client = _daemon(cfg)
    except ControlError as e:
        print(f"mbxmpp: {e}", file=sys.stderr)
        return EXIT_FAIL
    if client is None:
        return _domains_offline(cfg, command, raw)
    try:
        with client:
            if command == "list":
                for row in client.request("domains.list")["domains"]:
                    print(f"{row['domain']:<40} {row['source']}")
            elif command == "add":
                r = client.request("domains.add", domain=raw)
                comps = f" (components: {', '.join(r['components'])})" if r["components"] else ""
                print(f"serving {raw}{comps}, with {r['certificate']} certificate")
            else:
                r = client.request("domains.remove", domain=raw)
                print(f"no longer serving {raw}: ended {r['ended']} stream"
                      f"{'s' if r['ended'] != 1 else ''}")
    except ControlError as e:
        print(f"mbxmpp: {e}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def _domains_offline(cfg: Config, command: str, raw: str | None) -> int:
    from .domains import check_name, read_added, write_added
    configured = load_config(cfg.source).server.domains
    added = read_added(cfg.server.data_dir)
    if command == "list":
        for d in cfg.server.domains:
            print(f"{d:<40} {'config' if d in configured else 'added'}")
        return EXIT_OK
    try:
        domain = check_name(raw or "")
    except ValueError as e:
        raise UsageError(f"mbxmpp: {e}") from None
    if command == "add":
        if domain in cfg.server.domains:
            print(f"mbxmpp: {domain} is already served", file=sys.stderr)
            return EXIT_FAIL
        write_added(cfg.server.data_dir, [*added, domain])
    else:
        if domain in configured:
            print(f"mbxmpp: {domain} is listed in [server] domains of {cfg.source}: remove it "
                  "there", file=sys.stderr)
            return EXIT_FAIL
        if domain not in added:
            print(f"mbxmpp: {domain} is not served", file=sys.stderr)
            return EXIT_FAIL
        write_added(cfg.server.data_dir, [d for d in added if d != domain])
    print(f"no daemon is running: {domain} {'added' if command == 'add' else 'removed'} "
          "for the next start")
    return EXIT_OK


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
    parallel = any(i[2] is not None for i in items) and len(items) > 50
    with ProcessPoolExecutor(max_workers=workers) if parallel else _Inline() as pool:
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
