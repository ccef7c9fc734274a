"""Prosody's data files are Lua: ``import-prosody`` parses them as data and never runs them.
Data in the forms Prosody's util.serialization writes is read; code is refused, and an account
whose file holds code is rejected whole while the others are imported."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mbxmpp.migrate.account import Stores
from mbxmpp.migrate.prosody import LuaError, parse_dat, parse_list
from mbxmpp.storage import open_storage
from tests.daemon import Daemon

D = "lua.test"


def test_the_data_forms_prosody_writes() -> None:
    v = parse_dat(b'return {\n\t["a\\"b"] = "x\\ny\\092\\u{e9}";\n\t[false] = { version = 6; };'
                  b"\n\tplain = [[long\nstring]]; [10] = 0x10; -- a comment\n\t(1/0), -2.5e3, nil,"
                  b" true;\n};\n")
    assert v == {'a"b': "x\ny\\\u00e9", False: {"version": 6}, "plain": "long\nstring", 10: 16,
                 1: float("inf"), 2: -2500.0, 3: None, 4: True}
    assert list(parse_list(b'item({ key = "k1"; when = 1.5; });\nitem({ key = "k2" });\n')) == [
        {"key": "k1", "when": 1.5}, {"key": "k2"}]
    # Bytes that are not UTF-8 (a binary salt) survive as surrogates and encode back.
    salt = parse_dat(b'return "\\255\\000a";')
    assert salt.encode("utf-8", "surrogateescape") == b"\xff\x00a"


@pytest.mark.parametrize("code", [
    b'return os.execute("touch /tmp/pwned")',
    b'return { password = io.open("/etc/passwd"):read("*a") }',
    b"return { password = ('x'):rep(10) }",
    b'os.exit(1) return {}',
    b'return { password = "a" .. "b" }',
    b'return (function() return {} end)()',
    b'return {} ; print("after")',
])
def test_code_is_refused(code: bytes) -> None:
    with pytest.raises(LuaError):
        parse_dat(code)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon(domains=(D,))
    yield d
    d.cleanup()


def _write(base: str, store: str, user: str, text: str) -> None:
    d = os.path.join(base, "lua%2etest", store)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, user + (".list" if store in ("offline", "archive") else ".dat")),
              "w") as f:
        f.write(text)


def test_an_account_whose_file_holds_code_is_rejected_whole(daemon: Daemon) -> None:
    data = os.path.join(daemon.dir, "prosody-data")
    marker = os.path.join(daemon.dir, "pwned")
    _write(data, "accounts", "good", 'return { ["password"] = "pw"; };\n')
    _write(data, "accounts", "evil", 'return { ["password"] = "pw"; };\n')
    _write(data, "roster", "evil", f'return {{ ["x@y.example"] = {{ subscription = "both", '
                                   f'groups = {{}} }} }};\nos.execute("touch {marker}")\n')
    _write(data, "offline", "evil", 'item({ name = "message", attr = {}, when = 1 });\n')
    r = daemon.cli("import-prosody", data, check=False)
    assert r.returncode == 1
    assert "evil@lua.test" in r.stderr and "roster/evil.dat: line 2" in r.stderr
    assert "imported 1 accounts" in r.stdout and not os.path.exists(marker)
    storage = open_storage("lmdb", f"{daemon.dir}/data")
    try:
        stores = Stores(storage)
        assert list(stores.owners(None)) == [f"good@{D}"]
        assert stores.roster.get_all(f"evil@{D}") == {}
        assert stores.offline.query(f"evil@{D}") == []
    finally:
        storage.close_sync()
