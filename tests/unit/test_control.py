"""The control socket's pieces without a daemon: addresses of deep data directories, the
SCRAM credentials on the wire, and the command line's view of a missing or stale socket."""

from __future__ import annotations

import os
import socket

import pytest

from mbxmpp.control import (
    ControlClient,
    _address,
    probe,
    scram_from_wire,
    scram_to_wire,
    socket_path,
)
from mbxmpp.stream.scram import make_credentials


def test_a_deep_data_dir_still_gets_its_socket(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = socket_path(str(deep))
    assert len(path) > 108  # too long for sockaddr_un as it is
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with _address(path) as addr:
        srv.bind(addr)
    srv.listen()
    try:
        assert os.path.exists(path) and probe(path)
        client = ControlClient.connect(str(deep))
        assert client is not None
        client.close()
    finally:
        srv.close()
    assert not probe(path)  # a file nobody listens on: no daemon
    assert ControlClient.connect(str(deep)) is None


def test_no_socket_means_no_daemon(tmp_path):
    assert ControlClient.connect(str(tmp_path)) is None
    assert ControlClient.connect(str(tmp_path / "missing")) is None


def test_scram_credentials_round_trip_and_bad_ones_refused():
    creds = make_credentials("pw", iterations=1024)
    back = scram_from_wire(scram_to_wire(creds))
    assert {m: c.to_record() for m, c in back.items()} == {m: c.to_record() for m, c in creds.items()}
    wire = scram_to_wire(creds)
    for bad in ({}, None, {"SCRAM-MD5": wire["SCRAM-SHA-1"]},
                {"SCRAM-SHA-1": [wire["SCRAM-SHA-1"][0], 0, *wire["SCRAM-SHA-1"][2:]]},
                {"SCRAM-SHA-1": wire["SCRAM-SHA-256"]},  # keys of the wrong size
                {"SCRAM-SHA-1": ["not base64!", 4096, "", ""]},
                {"SCRAM-SHA-1": ["a", 1]}):
        with pytest.raises((ValueError, TypeError)):
            scram_from_wire(bad)
