"""XEP-0455 over the wire: the server's disco#info names /outage.json on the HTTP side, which
serves the operator's <data_dir>/outage.json, and null without one or with one that is not JSON."""

from __future__ import annotations

import asyncio
import json
import os

import aiohttp
import pytest

from mbxmpp.xml.ns import NS_DATA, NS_DISCO_INFO
from tests.daemon import Daemon
from tests.rawclient import RawClient, client_ssl

pytestmark = pytest.mark.integration

PLANNED = {"planned": True, "beginning": "2026-12-24T22:00:00Z", "expected_end": "2026-12-24T23:00:00Z",
           "message": {"en": "Database upgrade"}}


@pytest.fixture(scope="module")
def daemon():
    d = Daemon()
    d.add_user("alice@localhost", "secret")
    d.start()
    yield d
    d.finish()


async def _status(daemon: Daemon) -> tuple[int, object, aiohttp.typedefs.LooseHeaders]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"https://127.0.0.1:{daemon.http}/outage.json", ssl=client_ssl()) as r:
            return r.status, json.loads(await r.read()), r.headers


async def test_disco_names_the_status_address(daemon):
    c = await RawClient.connect(daemon.c2s)
    await c.login("alice", "secret")
    await c.send(f"<iq type='get' id='d1' to='localhost'><query xmlns='{NS_DISCO_INFO}'/></iq>")
    reply = await c.element()
    forms = [x for x in reply.first_child().children  # type: ignore[union-attr]
             if x.__class__ is not str and x.tag == "x" and x.ns == NS_DATA]
    sos = [f for f in forms if any(fld.get("var") == "FORM_TYPE" and fld.findtext("value") == "urn:xmpp:sos:0"
                                   for fld in f.children if fld.__class__ is not str)]
    assert len(sos) == 1
    field = next(f for f in sos[0].children if f.__class__ is not str and f.get("var") == "external-status-addresses")
    assert field.get("type") == "list-multi"
    assert [v.text for v in field.children if v.__class__ is not str] == [
        f"https://localhost:{daemon.http}/outage.json"]
    await c.close()


async def test_the_document_is_the_operators(daemon):
    path = os.path.join(daemon.dir, "data", "outage.json")
    status, doc, headers = await _status(daemon)
    assert (status, doc) == (200, None)
    assert headers["Access-Control-Allow-Origin"] == "*"  # type: ignore[index]
    with open(path, "w") as f:
        json.dump(PLANNED, f)
    assert (await _status(daemon))[:2] == (200, PLANNED)
    # A document that is not JSON is never passed on: clients would fail to parse it.
    with open(path, "w") as f:
        f.write("{planned: soon")
    assert (await _status(daemon))[:2] == (200, None)
    assert "is not a JSON status document" in daemon.log()
    os.remove(path)
    assert (await _status(daemon))[:2] == (200, None)


@pytest.mark.parametrize("content", [
    b"[" * 40000 + b"]" * 40000,                                      # nested past the parser's recursion
    b'{"planned": true, "message": {"en": "' + b"a" * (200 * 1024) + b'"}}',  # past what is read
    b'{"planned": NaN, "beginning": Infinity}',                      # Python's JSON, not JSON
    b'"maintenance"',                                                # JSON, not a status document
    b"[1, 2]",
    b"\xff\xfe{\x00}\x00",                                           # not UTF-8
    b"",
], ids=["deep", "huge", "nan", "string", "list", "utf16", "empty"])
async def test_a_hostile_document_is_served_as_null(daemon, content):
    """Whatever the file holds, clients get a status document (XEP-0455 §4) or null, never a
    server error nor text a JSON parser refuses; the server goes on serving."""
    path = os.path.join(daemon.dir, "data", "outage.json")
    with open(path, "wb") as f:
        f.write(content)
    try:
        assert (await _status(daemon))[:2] == (200, None)
    finally:
        os.remove(path)


async def test_a_directory_in_place_of_the_document_is_null(daemon):
    path = os.path.join(daemon.dir, "data", "outage.json")
    os.mkdir(path)
    try:
        assert (await _status(daemon))[:2] == (200, None)
    finally:
        os.rmdir(path)
    assert (await _status(daemon))[:2] == (200, None)


@pytest.mark.parametrize("kind", ["fifo", "device"])
async def test_a_document_that_is_not_a_file_is_null_and_nothing_waits(daemon, kind):
    """A named pipe nobody writes to (reading it would wait for ever, the server with it) or a
    device (/dev/zero never ends): null; the server answers at once."""
    path = os.path.join(daemon.dir, "data", "outage.json")
    if kind == "fifo":
        os.mkfifo(path)
    else:
        os.symlink("/dev/zero", path)
    try:
        assert (await asyncio.wait_for(_status(daemon), 10))[:2] == (200, None)
    finally:
        os.remove(path)
    c = await RawClient.connect(daemon.c2s)
    await c.login("alice", "secret")
    await c.close()
