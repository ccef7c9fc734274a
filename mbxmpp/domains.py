"""Virtual hosts added at run time (``python -m mbxmpp domains add|remove``), kept across
restarts in ``<data_dir>/domains``: one domain per line, merged after ``[server] domains``.

Why a file and not a storage record: it is read before storage opens (the served set decides
the certificates and component hosts made at start), the command line reads it without opening
LMDB (``user add`` with no daemon running, ``check-config``), and an operator can read it, back
it up or edit it like the configuration file it extends. The configuration file's list stays
the operator's: a domain listed there is removed by editing the file and reloading."""

from __future__ import annotations

import dataclasses
import os

from .config import Config
from .options import check_domain as _check_domain

FILE_NAME = "domains"


def domains_path(data_dir: str) -> str:
    return os.path.join(os.path.abspath(data_dir), FILE_NAME)


def read_added(data_dir: str) -> list[str]:
    """The domains added at run time (none when the file does not exist). Lines that are not
    domain names are skipped: a hand edit must not keep the daemon from starting."""
    try:
        with open(domains_path(data_dir), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out: list[str] = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            name = _check_domain(line)
        except ValueError:
            continue
        if name not in out:
            out.append(name)
    return out


def write_added(data_dir: str, domains: list[str]) -> None:
    """Replace the file atomically (a crash leaves the old list or the new one)."""
    path = domains_path(data_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("# virtual hosts added with `python -m mbxmpp domains add` (see mbxmpp/domains.py)\n")
        f.writelines(d + "\n" for d in domains)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_name(raw: str) -> str:
    """The normalized domain, or ValueError saying why not."""
    return _check_domain(raw)


def with_added_domains(cfg: Config) -> Config:
    """``cfg`` serving its configured domains and then those added at run time."""
    merged = list(cfg.server.domains)
    merged += [d for d in read_added(cfg.server.data_dir) if d not in merged]
    if len(merged) == len(cfg.server.domains):
        return cfg
    return dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, domains=tuple(merged)))
