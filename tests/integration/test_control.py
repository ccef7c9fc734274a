"""The operator's commands on a running daemon, through its control socket: account changes end
the account's sessions at once with the right stream error, the session commands, reload, the
socket's owner-only access, and what deleting an account removes."""

from __future__ import annotations

import asyncio
import base64
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
from typing import Any, Callable

import pytest

from mbxmpp.xml import Element
from tests.daemon import Daemon
from tests.rawclient import RawClient

PW = "control-pw"
NS_SM = "urn:xmpp:sm:3"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_ROSTER = "jabber:iq:roster"
NS_MAM = "urn:xmpp:mam:2"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


@pytest.fixture(scope="module")
def daemon():
    d = Daemon(extra='[sm]\nresume_timeout = "60s"\n')
    d.start()
    yield d
    d.finish()


async def cli(daemon: Daemon, *args: str, check: bool = True) -> Any:
    return await asyncio.to_thread(daemon.cli, *args, check=check)


async def add(daemon: Daemon, user: str, password: str = PW) -> None:
    r = await cli(daemon, "user", "add", f"{user}@localhost", "--password", password)
    assert r.stdout.strip() == f"created {user}@localhost"


async def login(daemon: Daemon, user: str, password: str = PW, resource: str = "r",
                direct_tls: bool = False) -> RawClient:
    c = await RawClient.connect(daemon.tls if direct_tls else daemon.c2s, direct_tls=direct_tls)
    assert await c.login(user, password, resource=resource, direct_tls=direct_tls) == f"{user}@localhost/{resource}"
    return c


async def sm_hibernated(daemon: Daemon, user: str, resource: str) -> str:
    """A session with resumable Stream Management whose connection is then cut: it hibernates.
    Returns its resumption id."""
    c = await login(daemon, user, resource=resource)
    await c.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    en = await c.element()
    assert en.tag == "enabled", en
    jid = f"{user}@localhost/{resource}"
    await until_listed(daemon, lambda rows: any(r[0] == jid and r[-1] == "yes" for r in rows))
    c.writer.transport.abort()  # no closing tag: the session is kept for resumption
    rows = await until_listed(daemon, lambda rows: any(r[0] == jid and r[-1] == "hibernated" for r in rows))
    assert next(r for r in rows if r[0] == jid)[1:3] == ["-", "127.0.0.1"]  # the last address known
    return en.get("id")


async def sasl_failure(daemon: Daemon, user: str, password: str) -> Element:
    c = await RawClient.connect(daemon.c2s)
    try:
        await c.open()
        await c.starttls()
        await c.open()
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        res = await c.element()
        assert res.tag == "failure", res
        return res
    finally:
        await c.close()


def condition(failure: Element) -> str:
    return next(c.tag for c in failure.elements() if c.tag != "text")


async def sessions(daemon: Daemon) -> list[list[str]]:
    r = await cli(daemon, "sessions", "list")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["JID", "TRANSPORT", "IP", "SINCE", "SM"] and lines[-1].endswith(("session", "sessions"))
    return [line.split() for line in lines[1:-1]]


async def until_listed(daemon: Daemon, pred: Callable[[list[list[str]]], bool]) -> list[list[str]]:
    for _ in range(100):
        rows = await sessions(daemon)
        if pred(rows):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"sessions never matched: {rows}")


async def until(c: RawClient, pred: Callable[[Element], bool]) -> Element:
    while True:
        el = await c.element()
        if pred(el):
            return el


async def try_resume(daemon: Daemon, user: str, password: str, previd: str) -> Element:
    c = await RawClient.connect(daemon.c2s)
    try:
        await c.auth(user, password)
        await c.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
        return await c.element()
    finally:
        await c.close()


# -- account changes end the account's sessions -----------------------------------------------

async def test_user_add_on_a_running_daemon_fires_account_created(daemon):
    await add(daemon, "carol")
    assert "account carol@localhost created" in daemon.log()
    c = await login(daemon, "carol")
    await c.close()
    r = await cli(daemon, "user", "add", "carol@localhost", "--password", "x", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr


async def test_delete_ends_every_session_with_not_authorized(daemon):
    await add(daemon, "dave")
    c = await login(daemon, "dave", resource="desk")
    previd = await sm_hibernated(daemon, "dave", "phone")
    # Authenticated but not bound yet: it must not bind after the deletion.
    half = await RawClient.connect(daemon.c2s)
    await half.auth("dave", PW)
    r = await cli(daemon, "user", "del", "dave@localhost")
    assert r.stdout.strip() == "deleted dave@localhost (3 sessions ended)"
    assert await c.stream_error() == "not-authorized"
    await c.expect_closed()
    assert await half.stream_error() == "not-authorized"
    assert not any(row[0].startswith("dave@") for row in await sessions(daemon))
    assert condition(await sasl_failure(daemon, "dave", PW)) == "not-authorized"
    await add(daemon, "dave")  # a new account of that name does not inherit the old session
    assert (await try_resume(daemon, "dave", PW, previd)).find("item-not-found", NS_STANZAS) is not None
    await c.close()
    await half.close()


async def test_password_change_ends_sessions_with_reset(daemon):
    await add(daemon, "erin")
    c = await login(daemon, "erin")
    previd = await sm_hibernated(daemon, "erin", "phone")
    r = await asyncio.to_thread(daemon.cli, "user", "passwd", "erin@localhost", input="new-pw\n")
    assert r.stdout.strip() == "password changed for erin@localhost (2 sessions ended)"
    # RFC 6120 §4.9.3.17: the credentials the stream was authenticated with are revoked.
    assert await c.stream_error() == "reset"
    assert condition(await sasl_failure(daemon, "erin", PW)) == "not-authorized"
    failed = await try_resume(daemon, "erin", "new-pw", previd)
    assert failed.tag == "failed" and failed.find("item-not-found", NS_STANZAS) is not None
    c2 = await login(daemon, "erin", "new-pw")
    await c2.close()
    await c.close()


async def test_disable_ends_sessions_and_refuses_logins_until_enabled(daemon):
    await add(daemon, "fay")
    c = await login(daemon, "fay")
    r = await cli(daemon, "user", "disable", "fay@localhost")
    assert r.stdout.strip() == "disabled fay@localhost (1 session ended)"
    assert await c.stream_error() == "not-authorized"
    refused = await sasl_failure(daemon, "fay", PW)
    assert condition(refused) == "account-disabled" and refused.findtext("text") == "This account is disabled."
    assert (await cli(daemon, "user", "enable", "fay@localhost")).stdout.strip() == "enabled fay@localhost"
    c2 = await login(daemon, "fay")
    await c2.close()
    await c.close()
    r = await cli(daemon, "user", "disable", "nobody-here@localhost", check=False)
    assert r.returncode == 1 and "no account nobody-here@localhost" in r.stderr


# -- sessions -----------------------------------------------------------------------------------

async def test_sessions_list_and_kick(daemon):
    await add(daemon, "gus")
    a = await login(daemon, "gus", resource="laptop")
    b = await login(daemon, "gus", resource="tablet", direct_tls=True)
    rows = await until_listed(daemon, lambda rows: sum(r[0].startswith("gus@") for r in rows) == 2)
    mine = {r[0]: r for r in rows if r[0].startswith("gus@")}
    assert mine["gus@localhost/laptop"][1:3] == ["starttls", "127.0.0.1"]
    assert mine["gus@localhost/tablet"][1:3] == ["direct-tls", "127.0.0.1"]
    assert mine["gus@localhost/laptop"][4] == "no"
    since = time.strptime(mine["gus@localhost/laptop"][3], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(time.mktime(since) - time.mktime(time.gmtime())) < 600

    r = await cli(daemon, "sessions", "kick", "gus@localhost/laptop")
    assert r.stdout.strip() == "ended 1 session of gus@localhost/laptop"
    assert await a.stream_error() == "policy-violation"
    await b.send("<iq type='get' id='still' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await until(b, lambda el: el.get("id") == "still")).get("type") == "result"

    r = await cli(daemon, "sessions", "kick", "gus@localhost")
    assert r.stdout.strip() == "ended 1 session of gus@localhost"
    assert await b.stream_error() == "policy-violation"
    r = await cli(daemon, "sessions", "kick", "gus@localhost", check=False)
    assert r.returncode == 1 and "no session of gus@localhost" in r.stderr
    await a.close()
    await b.close()


# -- the socket -----------------------------------------------------------------------------------

def _as_nobody(fn: Callable[[], str]) -> str:
    """Run ``fn`` in a forked child that has dropped to the user nobody; its result."""
    nobody = pwd.getpwnam("nobody")
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no return from here
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            out = fn()
        except BaseException as e:
            out = f"child failed: {e!r}"
        os.write(wfd, out.encode())
        os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


def _connect_and_ask(path: str) -> str:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(path)
    except PermissionError:
        return "connect: permission denied"
    try:
        s.sendall(b'{"op":"sessions.list"}\n')
    except BrokenPipeError:
        pass  # refused and closed before the request: the answer is still there to read
    f = s.makefile("rb")
    data = f.readline()
    if data.startswith(b'{"ok":false'):
        return f"answer: {data.decode().strip()} then {'closed' if f.read() == b'' else 'open'}"
    return f"answer: {data.decode().strip()}"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_control_socket_is_owner_only(daemon):
    path = os.path.join(daemon.dir, "data", "control.sock")
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    dirs = [daemon.dir, os.path.join(daemon.dir, "data")]
    modes = [stat.S_IMODE(os.stat(d).st_mode) for d in dirs]
    try:
        for d in dirs:
            os.chmod(d, 0o755)  # only the socket's own mode stands in the way now
        assert _as_nobody(lambda: _connect_and_ask(path)) == "connect: permission denied"
        # A looser mode by mistake: the peer's uid is still checked (SO_PEERCRED).
        os.chmod(path, 0o666)
        out = _as_nobody(lambda: _connect_and_ask(path))
        assert out.startswith('answer: {"ok":false,"error":"permission denied') and out.endswith("then closed"), out
        assert "control socket: refused a connection from uid %d" % pwd.getpwnam("nobody").pw_uid in daemon.log()
    finally:
        os.chmod(path, 0o600)
        for d, m in zip(dirs, modes):
            os.chmod(d, m)
    assert _connect_and_ask(path).startswith('answer: {"ok":true')  # the owner still can


def test_a_second_daemon_on_the_same_data_dir_is_refused(daemon):
    r = subprocess.run([sys.executable, "-m", "mbxmpp", "-c", daemon.config_path], capture_output=True,
                       text=True, env=daemon.env, timeout=60)
    assert r.returncode == 1 and "another mbxmpp daemon serves" in r.stderr, r.stderr
    assert _connect_and_ask(os.path.join(daemon.dir, "data", "control.sock")).startswith('answer: {"ok":true')


def test_bad_requests_get_an_error_and_the_connection_stays(daemon):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(os.path.join(daemon.dir, "data", "control.sock"))
    f = s.makefile("rb")
    for line, error in ((b"not json\n", "not a JSON object"),
                        (b"[1, 2]\n", "a request is a JSON object with an 'op'"),
                        (b'{"op": "format-disk"}\n', "unknown operation 'format-disk'"),
                        (b'{"op": "user.del"}\n', "'jid' is required"),
                        (b'{"op": "user.del", "jid": "x@elsewhere.example"}\n', "not one of this server's domains"),
                        (b'{"op": "user.add", "jid": "new@localhost", "scram": {"SCRAM-SHA-1": ["!", 1, "", ""]}}\n',
                         "bad SCRAM credentials")):
        s.sendall(line)
        answer = f.readline().decode()
        assert answer.startswith('{"ok":false') and error in answer, (line, answer)
    s.sendall(b'{"op": "ping"}\n')
    assert f.readline().startswith(b'{"ok":true,"pid":')
    s.sendall(b"x" * 70000 + b"\n")  # over the line limit
    assert b"request too long" in f.readline()
    assert f.readline() == b""
    s.close()


# -- what deleting an account removes ---------------------------------------------------------

async def subscribe_both(a: RawClient, a_jid: str, b: RawClient, b_jid: str) -> None:
    for x, x_jid, y, y_jid in ((a, a_jid, b, b_jid), (b, b_jid, a, a_jid)):
        await x.send(f"<presence type='subscribe' to='{y_jid}'/>")
        await until(y, lambda el: el.tag == "presence" and el.get("type") == "subscribe")
        await y.send(f"<presence type='subscribed' to='{x_jid}'/>")
        await until(x, lambda el: el.tag == "presence" and el.get("type") == "subscribed")


async def roster(c: RawClient, id: str) -> dict[str, str]:
    await c.send(f"<iq type='get' id='{id}'><query xmlns='{NS_ROSTER}'/></iq>")
    res = await until(c, lambda el: el.get("id") == id)
    return {i.get("jid"): i.get("subscription") for i in res.first_child().elements()}


async def archive_count(c: RawClient) -> int:
    await c.send(f"<iq type='set' id='mam'><query xmlns='{NS_MAM}' queryid='q'/></iq>")
    res = await until(c, lambda el: el.get("id") == "mam")
    return int(res.find("fin", NS_MAM).find("set", "http://jabber.org/protocol/rsm").findtext("count"))


async def test_deleting_an_account_removes_its_data_and_its_subscriptions(daemon):
    await add(daemon, "hal")
    await add(daemon, "ivy")
    hal = await login(daemon, "hal")
    ivy = await login(daemon, "ivy")
    for c in (hal, ivy):
        await roster(c, "r0")
        await c.send("<presence/>")
    await subscribe_both(hal, "hal@localhost", ivy, "ivy@localhost")
    assert await roster(ivy, "r1") == {"hal@localhost": "both"}
    await ivy.send("<message type='chat' to='hal@localhost' id='m0'><body>archived</body></message>")
    await until(hal, lambda el: el.tag == "message" and el.findtext("body") == "archived")
    assert await archive_count(hal) == 1
    await hal.send(f"<iq type='set' id='never'><prefs xmlns='{NS_MAM}' default='never'/></iq>")
    await until(hal, lambda el: el.get("id") == "never")
    await hal.send("</stream:stream>")
    await hal.expect_closed()
    await hal.close()
    for i in range(2):
        await ivy.send(f"<message type='chat' to='hal@localhost' id='o{i}'><body>offline {i}</body></message>")
    await until(ivy, lambda el: el.tag == "presence" and el.get("from", "").startswith("hal@")
                and el.get("type") == "unavailable")

    await cli(daemon, "user", "del", "hal@localhost")
    # Ivy's roster learns that the subscriptions are over, both ways (one push for each).
    pushed = []
    while "none" not in pushed:
        push = await until(ivy, lambda el: el.tag == "iq" and el.get("type") == "set")
        item = push.first_child().first_child()
        assert item.get("jid") == "hal@localhost"
        pushed.append(item.get("subscription"))
    assert pushed in (["from", "none"], ["to", "none"])
    assert await roster(ivy, "r2") == {"hal@localhost": "none"}
    await ivy.send("<message type='chat' to='hal@localhost' id='gone'><body>?</body></message>")
    err = await until(ivy, lambda el: el.get("id") == "gone")
    assert err.get("type") == "error" and err.find("error").find("service-unavailable", NS_STANZAS) is not None

    await add(daemon, "hal")  # the same name again: nothing of the old account is left
    hal = await login(daemon, "hal")
    assert await roster(hal, "r3") == {}
    await hal.send(f"<iq type='get' id='prefs'><prefs xmlns='{NS_MAM}'/></iq>")
    prefs = await until(hal, lambda el: el.get("id") == "prefs")
    assert prefs.first_child().get("default") == "always"
    assert await archive_count(hal) == 0
    await hal.send("<presence/>")
    await hal.send("<iq type='get' id='after' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    seen = []
    while True:
        el = await hal.element()
        if el.get("id") == "after":
            break
        seen.append(el)
    assert not [el for el in seen if el.tag == "message"], seen  # no offline messages
    await hal.close()
    await ivy.close()


# -- without a daemon, and reload -------------------------------------------------------------

async def test_session_commands_need_a_daemon_and_account_commands_do_not():
    d = Daemon()
    try:
        for args in (("sessions", "list"), ("sessions", "kick", "a@localhost"), ("reload",)):
            r = await cli(d, *args, check=False)
            assert r.returncode == 1 and "no daemon is running" in r.stderr, r
        await add(d, "jo")
        assert (await cli(d, "user", "disable", "jo@localhost")).stdout.strip() == "disabled jo@localhost"
        d.start()
        assert condition(await sasl_failure(d, "jo", PW)) == "account-disabled"
        await cli(d, "user", "enable", "jo@localhost")
        c = await login(d, "jo")
        await c.close()
        idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        idle.connect(os.path.join(d.dir, "data", "control.sock"))
        d.finish()  # a clean stop (exit code 0, no traceback) with a control connection open
        assert idle.recv(10) == b""
        idle.close()
    finally:
        d.cleanup()


async def test_reload_applies_log_level_and_plans(tmp_path):
    d = Daemon(extra='[accounts]\nchat_plans = ["paid", "gold"]\n')
    try:
        d.add_user("kim@localhost", PW, plan="gold")
        d.add_user("lou@localhost", PW, plan="paid")
        d.start()
        kim = await login(d, "kim")
        lou = await login(d, "lou")
        with open(d.config_path) as f:
            text = f.read()
        text = text.replace('log_level = "info"', 'log_level = "debug"')
        text = text.replace('chat_plans = ["paid", "gold"]',
                            'chat_plans = ["paid"]\nrefusal_text = "Gold lost chat."')
        text = text.replace("[c2s]\n", '[c2s]\nmax_stanza_size = "100KiB"\n')
        with open(d.config_path, "w") as f:
            f.write(text)
        r = await cli(d, "reload")
        assert f"reloaded {d.config_path}: applied accounts, server.log_level, certificates" in r.stdout
        assert "ended 1 session(s)" in r.stdout
        assert "changed but applied only by a restart: c2s" in r.stdout
        assert await kim.stream_error() == "not-authorized"
        refused = await sasl_failure(d, "kim", PW)
        assert condition(refused) == "account-disabled" and refused.findtext("text") == "Gold lost chat."
        await lou.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert (await until(lou, lambda el: el.get("id") == "p")).get("type") == "result"
        assert " DEBUG " not in d.log()
        await sessions(d)
        assert " DEBUG mbxmpp.control: control request sessions.list" in d.log()  # the new level

        with open(d.config_path, "a") as f:
            f.write("\n[bogus]\n")
        r = await cli(d, "reload", check=False)
        assert r.returncode == 2 and "bogus" in r.stderr  # the command line checks the file first
        d.proc.send_signal(signal.SIGHUP)  # the daemon's own check: it keeps what it has
        for _ in range(100):
            if "reload failed, configuration unchanged" in d.log():
                break
            await asyncio.sleep(0.05)
        assert "bogus" in d.log().split("reload failed, configuration unchanged")[1]
        with open(d.config_path, "w") as f:
            f.write(text)
        assert (await until_listed(d, lambda rows: len(rows) == 1))[0][0] == "lou@localhost/r"
        await kim.close()
        await lou.close()
    finally:
        d.finish()


async def test_sighup_reloads_certificates_without_dropping_connections(tmp_path):
    """A renewed certificate (certbot's new fullchain.pem) is presented to new connections after
    SIGHUP; a client logged in before keeps its connection."""
    import ssl as _ssl

    from mbxmpp.net.tls import ensure_self_signed
    d = Daemon()
    try:
        d.add_user("kim@localhost", PW)
        d.start()
        kim = await login(d, "kim")

        def presented() -> bytes:
            return _ssl.get_server_certificate(("127.0.0.1", d.tls)).encode()
        before = presented()
        fresh_dir = tmp_path / "renewed"
        cert, key = ensure_self_signed(str(fresh_dir), ["localhost"])
        data = os.path.join(d.dir, "data")
        os.replace(cert, os.path.join(data, "selfsigned.crt"))
        os.replace(key, os.path.join(data, "selfsigned.key"))
        d.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if presented() != before:
                break
            await asyncio.sleep(0.05)
        after = presented()
        assert after != before
        with open(os.path.join(data, "selfsigned.crt")) as f:
            assert _ssl.PEM_cert_to_DER_cert(after.decode()) == _ssl.PEM_cert_to_DER_cert(f.read())
        await kim.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert (await until(kim, lambda el: el.get("id") == "p")).get("type") == "result"
        await kim.close()
    finally:
        d.finish()


async def test_s2s_list_through_the_control_socket(tmp_path):
    d = Daemon()
    try:
        r = await cli(d, "s2s", "list", check=False)
        assert r.returncode == 1 and "no daemon is running" in r.stderr
        d.start()
        r = await cli(d, "s2s", "list")
        assert r.stdout.split()[:4] == ["REMOTE", "DIR", "LOCAL", "AUTH"]  # no peer yet
    finally:
        d.finish()
