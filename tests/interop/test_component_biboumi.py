"""biboumi, the XMPP-IRC gateway (a real XEP-0114 component, C++), connected to the daemon: its
handshake, a client's IQs answered by it, presence to an IRC channel answered by it, bounces
while it is away, and its reconnection."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from typing import Iterator

import pytest

from mbxmpp.xml import Element
from tests.daemon import Daemon
from tests.integration.test_components import PASSWORD, client, stanza, with_components
from tests.rawclient import RawClient

pytestmark = pytest.mark.interop

IRC = "irc.localhost"
SECRET = "biboumi-test-secret"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


class Biboumi:
    def __init__(self, directory: str, port: int) -> None:
        self.dir = directory
        self.cfg = os.path.join(directory, "biboumi.cfg")
        with open(self.cfg, "w") as f:
            f.write(f"hostname={IRC}\npassword={SECRET}\nxmpp_server_ip=127.0.0.1\nport={port}\n"
                    f"admin=alice@localhost\nidentd_port=0\ndb_name={directory}/biboumi.sqlite\n"
                    f"policy_directory={directory}\nlog_level=1\n")
        self.log_path = os.path.join(directory, "biboumi.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["biboumi", self.cfg], stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def wait_for_log(d: Daemon, text: str, count: int, timeout: float = 15.0) -> None:
    """Until the daemon's log holds ``text`` ``count`` times."""
    end = time.monotonic() + timeout
    while d.log().count(text) < count:
        if time.monotonic() > end:
            raise AssertionError(f"{text!r} not logged {count} times:\n{d.log()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[Daemon, Biboumi]]:
    if shutil.which("biboumi") is None:
        pytest.skip("biboumi is not installed (scripts/test.sh installs it)")
    d = Daemon()
    port = with_components(d, hosts=f'[components.hosts."{IRC}"]\nsecret = "{SECRET}"\nname = "IRC"\n')
    d.add_user("alice@localhost", PASSWORD)
    d.start()
    tmp = tempfile.mkdtemp(prefix="mbxmpp-biboumi-")
    bib = Biboumi(tmp, port)
    bib.start()
    try:
        wait_for_log(d, f"{IRC} connected", 1)
        yield d, bib
    finally:
        bib.stop()
        d.finish()
        shutil.rmtree(tmp, ignore_errors=True)


async def disco_info(c: RawClient, id_: str) -> Element:
    await c.send(f"<iq type='get' id='{id_}' to='{IRC}'><query xmlns='{NS_DISCO_INFO}'/></iq>")
    res = await stanza(c, "iq")
    assert res.attrs["id"] == id_ and res.attrs["from"] == IRC
    return res


async def test_biboumi_answers_a_clients_iqs(lab: tuple[Daemon, Biboumi]) -> None:
    d, _ = lab
    alice = await client(d, resource="iq")
    res = await disco_info(alice, "i1")
    assert res.attrs["type"] == "result", res
    ident = res.first_child().find("identity", NS_DISCO_INFO)  # type: ignore[union-attr]
    assert ident is not None and (ident.attrs["category"], ident.attrs["type"]) == ("conference", "irc")
    await alice.send(f"<iq type='get' id='v1' to='{IRC}'><query xmlns='jabber:iq:version'/></iq>")
    ver = await stanza(alice, "iq")
    assert ver.attrs["type"] == "result"
    assert ver.first_child().findtext("name", "jabber:iq:version") == "biboumi"  # type: ignore[union-attr]
    await alice.close()


async def test_joining_an_unreachable_irc_server_is_answered_by_biboumi(lab: tuple[Daemon, Biboumi]) -> None:
    """Presence to a channel on an IRC server that refuses connections: biboumi, through the
    server, tells the client from the IRC server's JID at the gateway."""
    d, _ = lab
    alice = await client(d, resource="join")
    room = f"#test%127.0.0.1@{IRC}"  # biboumi's channel%server@gateway (no IRC server here)
    await alice.send(f"<presence to='{room}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    m = await stanza(alice, "message", timeout=20)
    assert m.attrs["from"] == f"127.0.0.1@{IRC}" and m.attrs["to"] == "alice@localhost/join"
    assert (m.findtext("body") or "").startswith("Connecting to 127.0.0.1:")
    while "Connection failed" not in (m.findtext("body") or ""):
        m = await stanza(alice, "message", timeout=20)
    await alice.close()


async def test_biboumi_away_bounces_then_reconnects(lab: tuple[Daemon, Biboumi]) -> None:
    d, bib = lab
    bib.stop()
    wait_for_log(d, f"{IRC} disconnected", 1)
    alice = await client(d, resource="away")
    res = await disco_info(alice, "i2")
    assert res.attrs["type"] == "error"
    err = next(x for x in res.elements() if x.tag == "error")
    assert err.attrs["type"] == "wait"
    assert err.find("service-unavailable", NS_STANZAS) is not None
    bib.start()
    await asyncio.to_thread(wait_for_log, d, f"{IRC} connected", 2)
    res = await disco_info(alice, "i3")
    assert res.attrs["type"] == "result"
    await alice.close()
