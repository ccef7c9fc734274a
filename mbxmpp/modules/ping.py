"""XMPP Ping (XEP-0199): the server answers pings to itself and on behalf of accounts."""

from ..core.modules import HOST, SELF, Module, iq_handler
from ..xml.ns import NS_PING


class Ping(Module):
    name = "ping"
    description = "XMPP Ping"
    xeps = {"0199": "2.0.1"}
    features = [NS_PING]

    @iq_handler("get", NS_PING, "ping", scope=(HOST, SELF))
    def ping(self, iq, ctx):  # type: ignore[no-untyped-def]
        return None
