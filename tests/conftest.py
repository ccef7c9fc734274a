import os

import pytest

from mbxmpp.xml import CXMLParser, PyXMLParser


@pytest.fixture(params=["c", "py"])
def tokenizer(request):
    """The tokenizer class, compiled and pure Python (aiohttp's parser fixtures)."""
    if request.param == "py":
        return PyXMLParser
    if CXMLParser is None:
        if os.environ.get("MBXMPP_REQUIRE_EXTENSIONS", "") not in ("", "0"):
            pytest.fail("the compiled tokenizer is not built (MBXMPP_REQUIRE_EXTENSIONS is set)")
        pytest.skip("the compiled tokenizer is not built")
    return CXMLParser


@pytest.fixture(params=["tcp", "ws", "bosh"])
def transport(request):
    """The client transport of a wire test: TCP (STARTTLS), RFC 7395 WebSocket or BOSH; open a
    client with ``tests.rawclient.connect_client(daemon, transport)``."""
    return request.param
