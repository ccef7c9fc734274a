"""Message archive (XEP-0313) and HTTP upload (XEP-0363) from aioxmpp. aioxmpp 0.13 has no MAM
service, so the query is built from its XSO toolkit (data forms, RSM, forwarding), as an
application on it would; upload uses aioxmpp.httpupload and an HTTPS PUT/GET that verifies the
daemon's certificate."""

from __future__ import annotations

import os
import ssl

import aiohttp
import aioxmpp
import aioxmpp.forms
import aioxmpp.httpupload
import aioxmpp.misc
import aioxmpp.misc.stanzaid  # noqa: F401 (Message.xep0359_stanza_ids)
import aioxmpp.rsm.xso
import aioxmpp.xso
import pytest

from tests.realclient_aioxmpp.conftest import body, chat, inbox, next_match, online

pytestmark = pytest.mark.realclient

NS_MAM = "urn:xmpp:mam:2"
NS_UPLOAD = "urn:xmpp:http:upload:0"


class MAMQuery(aioxmpp.xso.XSO):
    TAG = (NS_MAM, "query")
    queryid = aioxmpp.xso.Attr("queryid", default=None)
    form = aioxmpp.xso.Child([aioxmpp.forms.Data])
    rsm = aioxmpp.xso.Child([aioxmpp.rsm.xso.ResultSetMetadata])


class MAMFin(aioxmpp.xso.XSO):
    TAG = (NS_MAM, "fin")
    complete = aioxmpp.xso.Attr("complete", type_=aioxmpp.xso.Bool(), default=False)
    rsm = aioxmpp.xso.Child([aioxmpp.rsm.xso.ResultSetMetadata])


class MAMResult(aioxmpp.xso.XSO):
    TAG = (NS_MAM, "result")
    queryid = aioxmpp.xso.Attr("queryid", default=None)
    id_ = aioxmpp.xso.Attr("id")
    forwarded = aioxmpp.xso.Child([aioxmpp.misc.Forwarded])


aioxmpp.IQ.as_payload_class(MAMQuery)
aioxmpp.IQ.as_payload_class(MAMFin)
aioxmpp.Message.xep0313_result = aioxmpp.xso.Child([MAMResult])


def mam_query(queryid: str, with_: str | None = None,
              rsm: aioxmpp.rsm.xso.ResultSetMetadata | None = None) -> MAMQuery:
    form = aioxmpp.forms.Data(aioxmpp.forms.DataType.SUBMIT)
    form.fields.append(aioxmpp.forms.Field(var="FORM_TYPE", type_=aioxmpp.forms.FieldType.HIDDEN,
                                           values=[NS_MAM]))
    if with_ is not None:
        form.fields.append(aioxmpp.forms.Field(var="with", values=[with_]))
    q = MAMQuery()
    q.queryid, q.form, q.rsm = queryid, form, rsm
    return q


async def query_archive(client: aioxmpp.Client, q: MAMQuery) -> tuple[list[MAMResult], MAMFin]:
    results: list[MAMResult] = []
    dispatcher = client.summon(aioxmpp.dispatcher.SimpleMessageDispatcher)
    own = client.local_jid.bare()

    def on_message(msg: aioxmpp.Message) -> None:
        r = msg.xep0313_result
        if r is not None and r.queryid == q.queryid:
            results.append(r)
    dispatcher.register_callback(aioxmpp.MessageType.NORMAL, own, on_message)
    try:
        fin = await client.send(aioxmpp.IQ(type_=aioxmpp.IQType.SET, payload=q))
    finally:
        dispatcher.unregister_callback(aioxmpp.MessageType.NORMAL, own)
    return results, fin


async def test_mam_query_with_filter_and_paging(daemon):
    async with online(daemon, "carol@localhost/mam") as c, online(daemon, "dave@localhost/mam") as d:
        d_in = inbox(d)
        for i in range(3):
            await c.send(chat("dave@localhost", f"archived {i}"))
        await d.send(chat("carol@localhost", "archived reply"))
        live = await next_match(d_in, lambda m: body(m) == "archived 2")
        # XEP-0359: the server stamps the delivered copy with the id of dave's archive entry.
        [sid] = [s for s in live.xep0359_stanza_ids if s.by == d.local_jid.bare()]
        dave_archive, _fin = await query_archive(d, mam_query("d", with_="carol@localhost"))
        assert sid.id_ in {r.id_ for r in dave_archive}

        results, fin = await query_archive(c, mam_query("all", with_="dave@localhost"))
        assert fin.complete
        bodies = [body(r.forwarded.stanza) for r in results]
        assert bodies == ["archived 0", "archived 1", "archived 2", "archived reply"]
        assert all(r.forwarded.delay is not None for r in results), "XEP-0297 delay stamp"
        assert results[3].forwarded.stanza.from_.bare() == aioxmpp.JID.fromstr("dave@localhost")

        page1, fin1 = await query_archive(
            c, mam_query("p1", "dave@localhost", aioxmpp.rsm.xso.ResultSetMetadata.limit(2)))
        assert [body(r.forwarded.stanza) for r in page1] == ["archived 0", "archived 1"]
        assert not fin1.complete and fin1.rsm.last.value == page1[-1].id_
        page2, fin2 = await query_archive(c, mam_query("p2", "dave@localhost",
                                                       fin1.rsm.next_page(2)))
        assert [body(r.forwarded.stanza) for r in page2] == ["archived 2", "archived reply"]
        assert fin2.complete

        with pytest.raises(aioxmpp.errors.XMPPError) as err:
            await query_archive(c, mam_query("bad", "not a jid@@"))
        assert err.value.condition == aioxmpp.ErrorCondition.BAD_REQUEST


async def upload_service(client: aioxmpp.Client) -> aioxmpp.JID:
    disco = client.summon(aioxmpp.DiscoClient)
    for item in (await disco.query_items(aioxmpp.JID.fromstr("localhost"))).items:
        if NS_UPLOAD in (await disco.query_info(item.jid)).features:
            return item.jid
    raise AssertionError("no XEP-0363 service in the server's disco#items")


async def test_http_upload_slot_put_get(daemon):
    https = ssl.create_default_context(cafile=os.path.join(daemon.dir, "data", "selfsigned.crt"))
    data = os.urandom(4096)
    async with online(daemon, "alice@localhost/up") as a:
        service = await upload_service(a)
        slot = await aioxmpp.httpupload.request_slot(a, service, "notes.bin", len(data),
                                                     "application/octet-stream")
        assert slot.get.url.startswith(f"https://localhost:{daemon.http}/")
        async with aiohttp.ClientSession() as http:
            headers = {"Content-Type": "application/octet-stream", **dict(slot.put.headers.items())}
            async with http.put(slot.put.url, data=data, headers=headers, ssl=https) as r:
                assert r.status == 201
            async with http.get(slot.get.url, ssl=https) as r:
                assert r.status == 200 and await r.read() == data

        with pytest.raises(aioxmpp.errors.XMPPError) as err:
            await aioxmpp.httpupload.request_slot(a, service, "huge.iso", 10 ** 12,
                                                  "application/octet-stream")
        # XEP-0363 §4.1: too large is <not-acceptable/> with <file-too-large/>
        assert err.value.condition == aioxmpp.ErrorCondition.NOT_ACCEPTABLE
