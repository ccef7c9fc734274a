"""Event names fired on the server's HookBus. Constants, so that a typo is an ImportError.

Routing events carry a ``RouteEvent``; the address kind is part of the name (Prosody's
``message/bare``). ``PRE_*`` events fire first for stanzas that a local client sent.
"""

# Stanzas addressed to a local domain, by address kind.
MESSAGE_HOST = "message/host"
MESSAGE_BARE = "message/bare"
MESSAGE_FULL = "message/full"
PRESENCE_HOST = "presence/host"
PRESENCE_BARE = "presence/bare"
PRESENCE_FULL = "presence/full"
# IQs to a local account (bare: handled by the server for it; full: delivered to a resource),
# fired before dispatch or delivery so that filters (blocking) can refuse them.
IQ_BARE = "iq/bare"
IQ_FULL = "iq/full"
# Outgoing from a local client, before routing (carbons, archive, blocking, presence broadcast).
PRE_MESSAGE = "pre-message"
PRE_PRESENCE = "pre-presence"
PRE_IQ = "pre-iq"

# A message for a local user that no available resource takes: offline storage (XEP-0160).
MESSAGE_OFFLINE = "message/offline"
# A stanza is about to be delivered to a session (filters: blocking, CSI, carbons received).
DELIVER = "deliver"

# Session lifecycle: bound (resource assigned), initial presence, closed (after unavailable).
SESSION_BOUND = "session-bound"
SESSION_AVAILABLE = "session-available"
SESSION_CLOSED = "session-closed"
# A stream has been authenticated (SASL success), before binding.
AUTHENTICATED = "authenticated"
# A SASL exchange failed (the arg is the <failure/> condition; never the username).
LOGIN_FAILED = "login-failed"
# Account lifecycle.
ACCOUNT_CREATED = "account-created"
ACCOUNT_DELETED = "account-deleted"
# Stream features offered after authentication (handlers append elements to ev.features).
STREAM_FEATURES = "stream-features"
# An IQ a client sent before authenticating (on a stream secure enough for SASL); the arg has
# ``stream``, ``iq`` and ``reply(el)``. A handler that answers it returns True; unanswered, the
# stream ends with <not-authorized/> (RFC 6120 §4.9.3.12). XEP-0077 registration uses it.
PREAUTH_IQ = "preauth-iq"

ROUTE_EVENTS = {
    ("message", "host"): MESSAGE_HOST,
    ("message", "bare"): MESSAGE_BARE,
    ("message", "full"): MESSAGE_FULL,
    ("presence", "host"): PRESENCE_HOST,
    ("presence", "bare"): PRESENCE_BARE,
    ("presence", "full"): PRESENCE_FULL,
}
PRE_EVENTS = {"message": PRE_MESSAGE, "presence": PRE_PRESENCE, "iq": PRE_IQ}

# A client stream ended (closed or lost). A handler that returns non-None keeps the session
# alive (Stream Management hibernation); otherwise the session is destroyed.
STREAM_CLOSED = "stream-closed"

# Stream Management (XEP-0198) asks, carrying the session: may it hibernate for the longer
# [sm] push_resume_timeout? A handler that returns True says yes (push: it registered).
HIBERNATE_LONGER = "hibernate-longer"
# A session's connection was lost and it now hibernates (``session.stream`` is the stand-in).
SESSION_HIBERNATED = "session-hibernated"
# A hibernated session was resumed on a new stream, after <resumed/> and the re-sent stanzas.
SESSION_RESUMED = "session-resumed"
