"""Server administration by ad-hoc commands (XEP-0050/XEP-0133) through aioxmpp.adhoc: the admin
lists and runs commands (a multi-stage form); a normal user sees and runs only the public ping
(which aioxmpp's own end-to-end suite expects of a server)."""

from __future__ import annotations

from typing import Iterator

import aioxmpp
import aioxmpp.adhoc
import aioxmpp.forms
import pytest

from tests.daemon import Daemon
from tests.realclient.conftest import running_daemon
from tests.realclient_aioxmpp.conftest import online

pytestmark = pytest.mark.realclient

ADMIN = "admin@localhost"
NS_ADMIN = "http://jabber.org/protocol/admin"
SERVER = aioxmpp.JID.fromstr("localhost")


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    yield from running_daemon([ADMIN, "alice@localhost"], server_extra=f'admins = ["{ADMIN}"]')


def fill(form: aioxmpp.forms.Data, values: dict[str, str]) -> aioxmpp.forms.Data:
    """The submit answer to ``form``: its FORM_TYPE and the given values."""
    reply = aioxmpp.forms.Data(aioxmpp.forms.DataType.SUBMIT)
    for field in form.fields:
        if field.var == "FORM_TYPE":
            reply.fields.append(aioxmpp.forms.Field(var="FORM_TYPE", values=list(field.values),
                                                    type_=aioxmpp.forms.FieldType.HIDDEN))
        elif field.var in values:
            reply.fields.append(aioxmpp.forms.Field(var=field.var, values=[values[field.var]],
                                                    type_=field.type_))
    return reply


async def test_admin_adds_a_user_who_then_logs_in(daemon):
    async with online(daemon, ADMIN + "/console") as admin:
        adhoc = admin.summon(aioxmpp.adhoc.AdHocClient)
        assert await adhoc.supports_commands(SERVER)
        nodes = {item.node for item in await adhoc.get_commands(SERVER)}
        assert f"{NS_ADMIN}#add-user" in nodes and f"{NS_ADMIN}#announce" in nodes

        session = await adhoc.execute(SERVER, f"{NS_ADMIN}#add-user")
        assert session.status == aioxmpp.adhoc.CommandStatus.EXECUTING
        form = session.first_payload
        assert {"accountjid", "password"} <= {f.var for f in form.fields}
        await session.proceed(
            action=aioxmpp.adhoc.ActionType.COMPLETE,
            payload=fill(form, {"accountjid": "erin@localhost", "password": "erin pass",
                                "password-verify": "erin pass"}))
        assert session.status == aioxmpp.adhoc.CommandStatus.COMPLETED
        await session.close()

    async with online(daemon, "erin@localhost", "erin pass") as erin:
        assert str(erin.local_jid.bare()) == "erin@localhost"


async def test_user_runs_ping_and_no_admin_command(daemon):
    async with online(daemon, "alice@localhost/console") as alice:
        adhoc = alice.summon(aioxmpp.adhoc.AdHocClient)
        assert [item.node for item in await adhoc.get_commands(SERVER)] == ["ping"]
        async with await adhoc.execute(SERVER, "ping") as session:
            assert session.status == aioxmpp.adhoc.CommandStatus.COMPLETED
            assert [n.body for n in session.response.notes] == ["Pong"]
        with pytest.raises(aioxmpp.errors.XMPPError) as err:
            await adhoc.execute(SERVER, f"{NS_ADMIN}#get-registered-users-num")
        assert err.value.condition == aioxmpp.ErrorCondition.FORBIDDEN
