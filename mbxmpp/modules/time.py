"""Entity Time (XEP-0202): the server's UTC time (XEP-0082 format)."""

import datetime

from ..core.modules import HOST, Module, iq_handler
from ..xml.element import Element
from ..xml.ns import NS_TIME


def xep82_datetime(ts: float | None = None) -> str:
    """UTC date-time as XEP-0082 profiles it (milliseconds, 'Z')."""
    d = (datetime.datetime.now(datetime.timezone.utc) if ts is None
         else datetime.datetime.fromtimestamp(ts, datetime.timezone.utc))
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


class EntityTime(Module):
    name = "time"
    description = "Entity Time"
    xeps = {"0202": "2.0"}
    features = [NS_TIME]

    @iq_handler("get", NS_TIME, "time", scope=HOST)
    def time(self, iq, ctx):  # type: ignore[no-untyped-def]
        t = Element("time", NS_TIME)
        t.add("tzo", text="+00:00")
        t.add("utc", text=xep82_datetime())
        return t
