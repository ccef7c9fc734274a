"""Software Version (XEP-0092). The OS is not disclosed (XEP-0092 §4 security note)."""

from .. import __version__
from ..core.modules import HOST, Module, iq_handler
from ..xml.element import Element
from ..xml.ns import NS_VERSION


class Version(Module):
    name = "version"
    description = "Software Version"
    xeps = {"0092": "1.1"}
    features = [NS_VERSION]

    @iq_handler("get", NS_VERSION, "query", scope=HOST)
    def version(self, iq, ctx):  # type: ignore[no-untyped-def]
        q = Element("query", NS_VERSION)
        q.add("name", text="mbxmpp")
        q.add("version", text=__version__)
        return q
