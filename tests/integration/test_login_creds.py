"""Credentials and login over the wire: an import replaces credentials, fake SCRAM salts are stable
across restarts, passwords SASLprep refuses are an ordinary failed attempt (issue 11, item 7)."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from mbxmpp.stream.sasl import FAKE_SECRET_FILE
from mbxmpp.stream.scram import derive
from tests.daemon import Daemon
from tests.rawclient import RawClient
from tests.unit.test_sasl import ScramClient


NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.cleanup()


async def _tls_stream(daemon: Daemon) -> RawClient:
    c = await RawClient.connect(daemon.tls, direct_tls=True)
    await c.open()
    return c


def _condition(el) -> str:
    return next(ch.tag for ch in el.elements() if ch.tag != "text")


async def _plain(c: RawClient, user: str, password: str):
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    await c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
    return await c.element()


async def _plain_result(daemon: Daemon, user: str, password: str) -> str:
    """'success' or the failure condition of one PLAIN attempt on a new connection."""
    c = await _tls_stream(daemon)
    try:
        res = await _plain(c, user, password)
        return "success" if res.tag == "success" else _condition(res)
    finally:
        await c.close()


async def _scram_first(c: RawClient, mech: str, client: ScramClient) -> dict[str, str]:
    await c.send(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>"
                 + base64.b64encode(client.first()).decode() + "</auth>")
    ch = await c.element()
    assert ch.tag == "challenge", ch
    c.server_first = base64.b64decode(ch.text)  # type: ignore[attr-defined]
    return dict(a.split("=", 1) for a in c.server_first.decode().split(","))  # type: ignore[attr-defined]


async def _scram_result(daemon: Daemon, mech: str, user: str, password: str) -> str:
    c = await _tls_stream(daemon)
    try:
        client = ScramClient(mech, username=user, password=password)
        await _scram_first(c, mech, client)
        await c.send(f"<response xmlns='{NS_SASL}'>"
                     + base64.b64encode(client.final(c.server_first)).decode()  # type: ignore[attr-defined]
                     + "</response>")
        res = await c.element()
        return "success" if res.tag == "success" else _condition(res)
    finally:
        await c.close()


async def _salt_and_iterations(daemon: Daemon, mech: str, user: str) -> tuple[str, str]:
    c = await _tls_stream(daemon)
    try:
        attrs = await _scram_first(c, mech, ScramClient(mech, username=user))
        return attrs["s"], attrs["i"]
    finally:
        await c.close()


def _scram_line(jid: str, mech: str, password: str) -> str:
    cred = derive(mech, password, os.urandom(16), 4096)
    b = lambda x: base64.b64encode(x).decode()
    return f"{jid} scram {mech} {b(cred.salt)} {cred.iterations} {b(cred.stored_key)} {b(cred.server_key)}"


async def test_import_replaces_all_credentials_and_keeps_trailing_spaces(daemon, tmp_path):
    daemon.add_user("alice@localhost", "old-pw")
    daemon.add_user("bob@localhost", "old-pw")
    f = tmp_path / "accounts.txt"
    f.write_text(_scram_line("alice@localhost", "SCRAM-SHA-1", "new-pw") + "\n"
                 + "bob@localhost new pw  \n"      # two trailing spaces belong to the password
                 + "  carol@localhost pw \r\n")  # leading blanks; CRLF ending
    r = daemon.cli("user", "import", str(f))
    assert "imported 3 accounts" in r.stdout
    daemon.start()
    try:
        # The old password works through no mechanism any more.
        assert await _plain_result(daemon, "alice", "old-pw") == "not-authorized"
        assert await _scram_result(daemon, "SCRAM-SHA-256", "alice", "old-pw") == "not-authorized"
        assert await _scram_result(daemon, "SCRAM-SHA-1", "alice", "old-pw") == "not-authorized"
        # The new one through PLAIN and the imported mechanism; not through the one left out.
        assert await _plain_result(daemon, "alice", "new-pw") == "success"
        assert await _scram_result(daemon, "SCRAM-SHA-1", "alice", "new-pw") == "success"
        assert await _scram_result(daemon, "SCRAM-SHA-256", "alice", "new-pw") == "not-authorized"
        # A password line replaces too, and keeps its trailing spaces.
        assert await _plain_result(daemon, "bob", "old-pw") == "not-authorized"
        assert await _plain_result(daemon, "bob", "new pw") == "not-authorized"
        assert await _plain_result(daemon, "bob", "new pw  ") == "success"
        assert await _scram_result(daemon, "SCRAM-SHA-256", "bob", "new pw  ") == "success"
        assert await _plain_result(daemon, "carol", "pw ") == "success"
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


async def test_fake_salts_are_stable_across_restarts(daemon):
    daemon.add_user("alice@localhost", "pw")
    daemon.start()
    try:
        before = {(mech, user): await _salt_and_iterations(daemon, mech, user)
                  for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1") for user in ("alice", "ghost")}
    finally:
        assert daemon.stop() == 0
    path = os.path.join(daemon.dir, "data", FAKE_SECRET_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    daemon.start()
    try:
        after = {key: await _salt_and_iterations(daemon, *key) for key in before}
        # Asked twice in one run, the made-up salt does not change either.
        assert await _salt_and_iterations(daemon, "SCRAM-SHA-1", "ghost") == before[("SCRAM-SHA-1", "ghost")]
    finally:
        assert daemon.stop() == 0
    assert after == before
    # Like a real account's: 16-byte salts, one per mechanism, the same iteration count.
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        salt, iterations = before[(mech, "ghost")]
        assert len(base64.b64decode(salt)) == 16 and iterations == before[(mech, "alice")][1]
    assert before[("SCRAM-SHA-256", "ghost")][0] != before[("SCRAM-SHA-1", "ghost")][0]
    assert before[("SCRAM-SHA-1", "ghost")][0] != before[("SCRAM-SHA-1", "alice")][0]


async def test_passwords_and_usernames_saslprep_refuses_are_failed_attempts(daemon):
    daemon.add_user("alice@localhost", "pw")
    daemon.start()
    try:
        c = await _tls_stream(daemon)
        res = await _plain(c, "alice", "p\x07w")
        assert res.tag == "failure" and _condition(res) == "not-authorized", res
        # The stream goes on: the client may retry, and the right password works.
        res = await _plain(c, "alice", "pw")
        assert res.tag == "success", res
        await c.close()

        # Counted: the default 5 failed attempts, then the stream is closed.
        c = await _tls_stream(daemon)
        for _ in range(4):
            res = await _plain(c, "alice", "b\x07d")
            assert _condition(res) == "not-authorized"
        await c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>"
                     + base64.b64encode("\0alice\0\u0085x".encode()).decode() + "</auth>")
        assert _condition(await c.element()) == "not-authorized"
        assert await c.stream_error() == "policy-violation"
        await c.close()

        # SCRAM: a username nodeprep refuses, an unescaped '=' in it, a name not in UTF-8.
        for first, condition in ((b"n,,n=a\x07b,r=abcdef", "not-authorized"),
                                 (b"n,,n=a=b,r=abcdef", "malformed-request"),
                                 (b"n,,n=\xff\xfe,r=abcdef", "malformed-request"),
                                 (b"n,,n=al ice,r=abcdef", "not-authorized")):
            c = await _tls_stream(daemon)
            await c.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>"
                         + base64.b64encode(first).decode() + "</auth>")
            res = await c.element()
            assert res.tag == "failure" and _condition(res) == condition, (first, res)
            await c.close()
    finally:
        assert daemon.stop() == 0
    log = daemon.log()
    assert "Traceback" not in log and "internal-server-error" not in log, log
    assert sum("SASL PLAIN" in line and "refused" in line for line in log.splitlines()) == 6
