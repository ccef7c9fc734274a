"""External components (XEP-0114) against hostile input, over the wire: each bad input gets the
stream error RFC 6120 §4.9.3 names, and the server goes on serving the clients and the other
component (test_components.py has the protocol itself)."""

from __future__ import annotations

import asyncio
from typing import Iterator

import pytest

from mbxmpp.xml import StreamHeader
from tests.daemon import Daemon, free_ports
from tests.integration.test_components import (BRIDGE, HEADER, HOSTS, OTHER, OTHER_SECRET, PASSWORD, SECRET,
                                               client, component, condition, digest, expect_error,
                                               open_component, stanza)
from tests.rawclient import RawClient

PING = "<iq type='get' id='{id}' to='localhost'{frm}><ping xmlns='urn:xmpp:ping'/></iq>"


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    """Components may take 30 s to authenticate here (the pre-auth budget test holds 100)."""
    d = Daemon()
    taken = {d.c2s, d.tls, d.s2s, d.http, d.proxy}
    d.component_port = next(p for p in free_ports(8) if p not in taken)  # type: ignore[attr-defined]
    with open(d.config_path, "a") as f:
        f.write(f'\n[components]\nlisten = ["127.0.0.1:{d.component_port}"]\n'  # type: ignore[attr-defined]
                f'max_stanza_size = "16KiB"\nauth_timeout = "30s"\n{HOSTS}')
    for u in ("alice@localhost", "bob@localhost"):
        d.add_user(u, PASSWORD)
    d.start()
    yield d
    d.finish()


async def still_serving(d: Daemon) -> None:
    """A client and a fresh component are served (the domain was given back)."""
    alice = await client(d, resource="check")
    await alice.send(PING.format(id="alive", frm=""))
    assert (await stanza(alice, "iq")).attrs["type"] == "result"
    await alice.close()
    comp = await component(d)
    await comp.send(PING.format(id="calive", frm=f" from='{BRIDGE}'"))
    assert (await stanza(comp, "iq")).attrs["type"] == "result"
    await comp.send("</stream:stream>")
    await comp.expect_closed()


# -- restricted XML (RFC 6120 §11.1) ------------------------------------------------------------

async def test_doctype_and_entities_before_the_header_are_restricted_xml(daemon: Daemon) -> None:
    c = await RawClient.connect(daemon.component_port)  # type: ignore[attr-defined]
    await c.send("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 "
                 "'&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>" + HEADER.format(to=BRIDGE))
    assert await c.stream_error() == "restricted-xml"
    await c.close()
    await still_serving(daemon)


@pytest.mark.parametrize("payload, condition", [
    ("<?evil data?>", "restricted-xml"),
    ("<!-- a comment -->", "restricted-xml"),
    (f"<message from='u@{BRIDGE}' to='alice@localhost'><body>&lol;</body></message>", "restricted-xml"),
    # (XML allows a DOCTYPE only before the root element)
    ("<!DOCTYPE x [<!ENTITY a 'b'>]>", "not-well-formed"),
    # the component closes its stream mid-stanza
    (f"<message from='u@{BRIDGE}' to='alice@localhost'><body>half</stream:stream>", "not-well-formed"),
    # an attribute past [components] max_stanza_size (16 KiB here)
    (f"<message from='u@{BRIDGE}' to='alice@localhost' id='{'x' * (40 * 1024)}'/>", "policy-violation"),
], ids=["pi", "comment", "entity", "doctype", "close-mid-stanza", "huge-attribute"])
async def test_bad_xml_after_the_handshake(daemon: Daemon, payload: str, condition: str) -> None:
    comp = await component(daemon)
    await comp.send(payload)
    await expect_error(comp, condition)
    await still_serving(daemon)


async def test_restricted_xml_before_the_handshake(daemon: Daemon) -> None:
    c, _ = await open_component(daemon)
    await c.send("<?evil data?>")
    await expect_error(c, "restricted-xml")


# -- sizes ----------------------------------------------------------------------------------------

async def test_huge_header_is_policy_violation(daemon: Daemon) -> None:
    c = await RawClient.connect(daemon.component_port)  # type: ignore[attr-defined]
    await c.send(HEADER.format(to=BRIDGE).replace(" to=", f" junk='{'y' * (100 * 1024)}' to="))
    assert await c.stream_error() == "policy-violation"
    await c.close()
    await still_serving(daemon)


# -- the handshake ---------------------------------------------------------------------------------

async def test_handshake_twice_before_the_answer(daemon: Daemon) -> None:
    """The first is accepted (<handshake/>), the second is not a stanza: the stream ends."""
    c, h = await open_component(daemon)
    hs = f"<handshake>{digest(h.attrs['id'], SECRET)}</handshake>"
    await c.send(hs + hs)
    ok = await c.element()
    assert ok.tag == "handshake" and not ok.children and not ok.text
    await expect_error(c, "policy-violation")
    await still_serving(daemon)


@pytest.mark.parametrize("value", [
    "", "abc", "zz" * 20, "0" * 40 + "0", "&#x30;" * 40, "<x/>", " " * 40,
])
async def test_malformed_handshake_is_not_authorized(daemon: Daemon, value: str) -> None:
    c, h = await open_component(daemon)
    await c.send(f"<handshake>{value}</handshake>")
    await expect_error(c, "not-authorized")


async def test_handshake_for_the_wrong_stream_id_is_not_authorized(daemon: Daemon) -> None:
    """A digest from another stream (a replay) does not authenticate this one."""
    c1, h1 = await open_component(daemon)
    c2, h2 = await open_component(daemon)
    assert h1.attrs["id"] != h2.attrs["id"]
    await c2.send(f"<handshake>{digest(h1.attrs['id'], SECRET)}</handshake>")
    await expect_error(c2, "not-authorized")
    await c1.close()


# -- addressing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("frm", [
    f"u@{OTHER}/r",           # a full JID at the other component
    OTHER,                    # the other component's domain
    f"{BRIDGE}.evil.example",  # a name that begins with ours
    f"u@evil{BRIDGE}",         # one that ends with it
    "localhost",              # the server
    "not a jid@@",            # no JID at all
])
async def test_from_outside_the_domain_is_invalid_from(daemon: Daemon, frm: str) -> None:
    other = await component(daemon, OTHER, OTHER_SECRET)
    alice = await client(daemon, resource="spoofed")
    comp = await component(daemon)
    await comp.send(f"<message from='{frm}' to='alice@localhost/spoofed'><body>spoof</body></message>")
    await expect_error(comp, "invalid-from")
    # nothing reached alice; the other component is still connected and served
    await alice.send(PING.format(id="a1", frm=""))
    assert (await alice.element()).attrs["id"] == "a1"
    await other.send(PING.format(id="o1", frm=f" from='{OTHER}'"))
    assert (await stanza(other, "iq")).attrs["type"] == "result"
    await other.close()
    await alice.close()


async def test_stanza_to_its_own_domain_comes_back_once(daemon: Daemon) -> None:
    """The server relays; nothing loops (an error to itself is never answered)."""
    comp = await component(daemon)
    await comp.send(f"<iq type='get' id='self1' from='{BRIDGE}' to='{BRIDGE}'><ping xmlns='urn:xmpp:ping'/></iq>")
    iq = await stanza(comp, "iq")
    assert iq.attrs["type"] == "get" and iq.attrs["id"] == "self1" and iq.attrs["from"] == BRIDGE
    await comp.send(f"<iq type='error' id='self1' from='{BRIDGE}' to='{BRIDGE}'><error type='cancel'>"
                    "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    err = await stanza(comp, "iq")
    assert err.attrs["type"] == "error" and err.attrs["id"] == "self1"
    await comp.send(PING.format(id="after", frm=f" from='{BRIDGE}'"))
    nxt = await stanza(comp, "iq")
    assert nxt.attrs["id"] == "after" and nxt.attrs["type"] == "result"  # nothing else between
    await comp.send("</stream:stream>")
    await comp.expect_closed()


# -- the component ends badly ------------------------------------------------------------------------

async def test_component_stream_error_is_answered_with_the_close(daemon: Daemon) -> None:
    comp = await component(daemon)
    await comp.send("<stream:error><internal-server-error xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                    "</stream:error>")
    await comp.expect_closed()  # no stream error back (RFC 6120 §4.9.1.1: no reply to one)
    await still_serving(daemon)


async def test_component_gone_mid_stanza_delivers_nothing_and_frees_the_domain(daemon: Daemon) -> None:
    alice = await client(daemon, resource="mid")
    comp = await component(daemon)
    await comp.send(f"<message from='u@{BRIDGE}' to='alice@localhost/mid'><body>half")
    comp.abort()
    await still_serving(daemon)
    await alice.send(PING.format(id="m1", frm=""))
    got = await alice.element()
    assert got.tag == "iq" and got.attrs["id"] == "m1"  # (no half message before it)
    await alice.close()


# -- output and pre-auth bounds ------------------------------------------------------------------------

async def test_component_that_does_not_read_is_ended_and_others_are_served(daemon: Daemon) -> None:
    """Clients send to a component that never reads: the server's output to it is bounded
    (policy-violation once too much is unread, after what was buffered); the router and the
    clients go on meanwhile."""
    comp = await component(daemon)
    alice = await client(daemon, resource="flood")
    bob = await client(daemon, "bob", resource="flood")
    body = "z" * (200 * 1024)
    for i in range(80):  # 16 MB: past the 8 MiB bound and the kernel's buffers
        await alice.send(f"<message to='u@{BRIDGE}' id='f{i}'><body>{body}</body></message>")
    # the clients are served while the component's output is stuck
    await bob.send("<message to='alice@localhost/flood' id='b1'><body>still here</body></message>")
    assert (await stanza(alice, "message", 30)).attrs["id"] == "b1"
    # the component's stream ends with policy-violation, after what was buffered
    tail = b""
    while True:
        chunk = await asyncio.wait_for(comp.reader.read(1 << 20), 30)
        if not chunk:
            break
        tail = (tail + chunk)[-4096:]
    assert b"<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in tail
    assert tail.endswith(b"</stream:stream>")
    await alice.close()
    await bob.close()
    await still_serving(daemon)


async def test_preauth_budget_over_all_component_connections(daemon: Daemon) -> None:
    """100 connections without a handshake are all there may be: the next is refused with
    resource-constraint (RFC 6120 §4.9.3.17); an authenticated component is not affected, and
    the slots come back when those connections go."""
    connected = await component(daemon, OTHER, OTHER_SECRET)
    waiting = []
    for _ in range(100):
        c = await RawClient.connect(daemon.component_port)  # type: ignore[attr-defined]
        await c.send(HEADER.format(to=BRIDGE))
        assert isinstance(await c.next(), StreamHeader)
        waiting.append(c)
    extra = await RawClient.connect(daemon.component_port)  # type: ignore[attr-defined]
    assert await extra.stream_error() == "resource-constraint"
    await extra.close()
    await connected.send(PING.format(id="o1", frm=f" from='{OTHER}'"))
    assert (await stanza(connected, "iq")).attrs["type"] == "result"
    for c in waiting:
        c.abort()
    await connected.close()
    await asyncio.sleep(0.5)  # (the server sees the connections go)
    await still_serving(daemon)


async def test_stanza_to_a_stuck_component_does_not_block_the_router(daemon: Daemon) -> None:
    """A component that stops reading: clients' stanzas to it are buffered, up to the bound;
    the router and everyone else go on."""
    comp = await component(daemon)
    alice = await client(daemon, resource="stuck")
    bob = await client(daemon, "bob", resource="stuck")
    body = "q" * 8000
    for i in range(40):
        await alice.send(f"<message to='u@{BRIDGE}' id='s{i}'><body>{body}</body></message>")
        await bob.send(f"<message to='alice@localhost/stuck' id='b{i}'><body>hi {i}</body></message>")
        m = await stanza(alice, "message", 20)
        assert m.attrs["id"] == f"b{i}"
    comp.abort()
    await alice.close()
    await bob.close()
    await still_serving(daemon)


async def test_whitespace_flood_before_the_handshake_hits_the_preauth_budget(daemon: Daemon) -> None:
    """Whitespace between elements is legal, but not 64 KiB of it before authenticating."""
    c, _ = await open_component(daemon)
    for _ in range(10):
        await c.send(" " * (16 * 1024))
    await expect_error(c, "policy-violation")


@pytest.mark.parametrize("to", ["@@@", "u@", "u@/r", "x" * 1100 + "@localhost"])
async def test_malformed_to_is_bounced_with_jid_malformed(daemon: Daemon, to: str) -> None:
    """RFC 6120 §8.3.3.8; the component's stream stays."""
    comp = await component(daemon)
    await comp.send(f"<message from='u@{BRIDGE}' to='{to}' id='jm'><body>x</body></message>")
    err = await stanza(comp, "message")
    assert err.attrs["type"] == "error" and err.attrs["id"] == "jm"
    assert condition(err) == ("modify", "jid-malformed")
    await comp.send(PING.format(id="still", frm=f" from='{BRIDGE}'"))
    assert (await stanza(comp, "iq")).attrs["id"] == "still"
    await comp.send("</stream:stream>")
    await comp.expect_closed()


@pytest.mark.parametrize("iq", [
    f"<iq id='i1' from='{BRIDGE}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",               # no type
    f"<iq type='bogus' id='i1' from='{BRIDGE}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    f"<iq type='get' id='i1' from='{BRIDGE}' to='localhost'/>",                                    # no payload
    f"<iq type='get' id='i1' from='{BRIDGE}' to='localhost'><ping xmlns='urn:xmpp:ping'/>"
    "<ping xmlns='urn:xmpp:ping'/></iq>",                                                          # two
    f"<iq type='get' id='i1' from='{BRIDGE}' to='alice@localhost'><ping xmlns='urn:xmpp:ping'/>"
    "<query xmlns='jabber:iq:version'/></iq>",
], ids=["no-type", "bogus-type", "no-payload", "two-payloads", "two-payloads-to-a-client"])
async def test_bad_iq_from_the_component_is_bad_request(daemon: Daemon, iq: str) -> None:
    """RFC 6120 §8.2.3: a type among the four, exactly one payload in a get or set."""
    comp = await component(daemon)
    await comp.send(iq)
    err = await stanza(comp, "iq")
    assert err.attrs["type"] == "error" and err.attrs["id"] == "i1"
    assert condition(err) == ("modify", "bad-request")
    await comp.send("</stream:stream>")
    await comp.expect_closed()


async def test_iq_without_id_from_the_component_is_bad_request(daemon: Daemon) -> None:
    comp = await component(daemon)
    await comp.send(f"<iq type='get' from='{BRIDGE}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    err = await stanza(comp, "iq")
    assert err.attrs["type"] == "error" and condition(err) == ("modify", "bad-request")
    await comp.send("</stream:stream>")
    await comp.expect_closed()


async def test_close_before_the_handshake_is_answered_with_the_close(daemon: Daemon) -> None:
    c, _ = await open_component(daemon)
    await c.send("</stream:stream>")
    await c.expect_closed()
    await still_serving(daemon)
