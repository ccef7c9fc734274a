"""aioxmpp's In-Band Registration service (XEP-0077) for registered entities: read the
registration, change the password, cancel the account."""

from __future__ import annotations

import contextlib

import aioxmpp
import aioxmpp.errors
import aioxmpp.ibr
import aiosasl
import pytest

from tests.realclient_aioxmpp.conftest import PASSWORD, online

pytestmark = pytest.mark.realclient


async def test_client_info_says_registered(daemon):
    async with online(daemon, "alice@localhost") as c:
        info = await c.summon(aioxmpp.ibr.RegistrationService).get_client_info()
        assert info.registered and info.username == "alice"


async def test_change_pass_then_log_in_with_it(daemon):
    async with online(daemon, "bob@localhost") as c:
        await c.summon(aioxmpp.ibr.RegistrationService).change_pass("bob's new one")
    with pytest.raises(aiosasl.AuthenticationFailure):
        async with online(daemon, "bob@localhost", PASSWORD):
            pass
    async with online(daemon, "bob@localhost", "bob's new one") as c:
        assert str(c.local_jid.bare()) == "bob@localhost"


async def test_cancel_registration(daemon):
    # The result comes, then <not-authorized/> ends the stream (§3.2): aioxmpp says that its
    # cancel_registration raises then (the stream it was waiting on is gone).
    with contextlib.suppress(ConnectionError, aioxmpp.errors.StreamError):
        async with online(daemon, "carol@localhost") as c:
            await c.summon(aioxmpp.ibr.RegistrationService).cancel_registration()
    with pytest.raises(aiosasl.AuthenticationFailure):
        async with online(daemon, "carol@localhost"):
            pass
