"""Helpers shared by the MAM tests (test_mam*.py): query building, result collection."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mbxmpp.util.ids import new_id
from mbxmpp.xml.element import Element
from mbxmpp.xml.ns import NS_CLIENT, NS_DATA, NS_FORWARD, NS_MAM, NS_RSM, NS_STANZA_ID, NS_STANZAS
from tests.harness import FakeClient, ServerHarness

A = "alice@localhost"
B = "bob@localhost"
C = "carol@localhost"
# The full feature set, for the tests of how the modules act together.
ALL_MODULES = ["disco", "roster", "presence", "offline", "mam", "carbons", "blocking", "pep",
               "vcard", "private", "csi"]


def chat(to: str, body: str | None = "hi", id_: str = "m1", extra: str = "",
         type_: str = "chat") -> str:
    b = f"<body>{body}</body>" if body is not None else ""
    return f"<message to='{to}' type='{type_}' id='{id_}'>{b}{extra}</message>"


def form(**fields: Any) -> str:
    """A submit form; a value may be a list (multi-valued field); FORM_TYPE unless given."""
    fields.setdefault("FORM_TYPE", NS_MAM)
    out = [f"<x xmlns='{NS_DATA}' type='submit'>"]
    for var, val in fields.items():
        if val is None:
            continue
        var = {"before_id": "before-id", "after_id": "after-id"}.get(var, var)
        vals = val if isinstance(val, list) else [val]
        attrs = " type='hidden'" if var == "FORM_TYPE" else ""
        out.append(f"<field var='{var}'{attrs}>" + "".join(f"<value>{v}</value>" for v in vals)
                   + "</field>")
    out.append("</x>")
    return "".join(out)


def rsm(max: Any = None, after: str | None = None, before: str | None = None) -> str:
    s = f"<set xmlns='{NS_RSM}'>"
    if max is not None:
        s += f"<max>{max}</max>"
    if after is not None:
        s += f"<after>{after}</after>"
    if before is not None:
        s += f"<before>{before}</before>" if before else "<before/>"
    return s + "</set>"


@dataclass
class Result:
    iq: Element
    messages: list[Element]

    @property
    def ids(self) -> list[str]:
        return [m.find("result", NS_MAM).get("id")  # type: ignore[union-attr]
                for m in self.messages]

    @property
    def bodies(self) -> list[str | None]:
        return [forwarded(m).findtext("body") for m in self.messages]  # type: ignore[union-attr]

    @property
    def fin(self) -> Element:
        f = self.iq.find("fin", NS_MAM)
        assert f is not None, self.iq
        return f

    @property
    def complete(self) -> bool:
        return self.fin.get("complete") == "true"

    @property
    def first(self) -> str | None:
        return self.fin.find("set", NS_RSM).findtext("first", NS_RSM)  # type: ignore[union-attr]

    @property
    def first_index(self) -> str | None:
        f = self.fin.find("set", NS_RSM).find("first", NS_RSM)  # type: ignore[union-attr]
        return None if f is None else f.get("index")

    @property
    def last(self) -> str | None:
        return self.fin.find("set", NS_RSM).findtext("last", NS_RSM)  # type: ignore[union-attr]

    @property
    def count(self) -> int | None:
        t = self.fin.find("set", NS_RSM).findtext("count", NS_RSM)  # type: ignore[union-attr]
        return None if t is None else int(t)

    @property
    def error(self) -> str | None:
        return error_condition(self.iq)


def forwarded(m: Element) -> Element | None:
    """The archived message inside a result message."""
    res = m.find("result", NS_MAM)
    fwd = None if res is None else res.find("forwarded", NS_FORWARD)
    return None if fwd is None else fwd.find("message", NS_CLIENT)


def error_condition(s: Element) -> str | None:
    err = s.find("error")
    if err is None:
        return None
    for c in err.elements():
        if c.ns == NS_STANZAS and c.tag != "text":
            return c.tag
    return None


def stanza_id(m: Element) -> Element | None:
    return m.find("stanza-id", NS_STANZA_ID)


async def query(h: ServerHarness, c: FakeClient, payload: str = "", *, to: str | None = None,
                queryid: str | None = "q1", flip: bool = False, type: str = "set") -> Result:
    iq_id = new_id()
    qid = f" queryid='{queryid}'" if queryid is not None else ""
    to_attr = f" to='{to}'" if to else ""
    fp = "<flip-page/>" if flip else ""
    h.send(c, f"<iq type='{type}' id='{iq_id}'{to_attr}><query xmlns='{NS_MAM}'{qid}>"
              f"{payload}{fp}</query></iq>")
    iq = await c.expect(lambda s: s.tag == "iq" and s.get("id") == iq_id)
    msgs = [s for s in c.received if s.tag == "message" and s.find("result", NS_MAM) is not None]
    for m in msgs:
        c.received.remove(m)
    return Result(iq, msgs)


async def iq(h: ServerHarness, c: FakeClient, xml: str, type: str = "get",
             to: str | None = None) -> Element:
    iq_id = new_id()
    to_attr = f" to='{to}'" if to else ""
    h.send(c, f"<iq type='{type}' id='{iq_id}'{to_attr}>{xml}</iq>")
    return await c.expect(lambda s: s.tag == "iq" and s.get("id") == iq_id)


async def fill(h: ServerHarness, owner: str, n: int, with_: str = B + "/r1",
               start: float | None = None, step: float = 1.0) -> list[str]:
    """``n`` archived chat messages at explicit times (from ``start``, default: a whole second
    one day ago, well inside the retention), through the storage API; returns ids."""
    if start is None:
        start = float(int(time.time()) - 86400)
    arch = h.server.module("mam").archive  # type: ignore[union-attr]
    ids = []
    for i in range(n):
        when = start + i * step
        body = (f"<message xmlns='jabber:client' from='{with_}' to='{owner}' type='chat' "
                f"id='m{i}'><body>{i}</body></message>").encode()
        id_ = arch.new_id(when)
        arch.append(owner, [body], with_=with_, id=id_)
        ids.append(id_)
    await h.server.storage.flush()
    return ids
