"""Every XML namespace the server speaks, as constants (a typo is an ImportError)."""

NS_CLIENT = "jabber:client"
NS_SERVER = "jabber:server"
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_XML = "http://www.w3.org/XML/1998/namespace"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"
NS_DIALBACK = "jabber:server:dialback"
NS_DIALBACK_FEATURE = "urn:xmpp:features:dialback"

NS_ROSTER = "jabber:iq:roster"
NS_ROSTER_VER = "urn:xmpp:features:rosterver"
NS_PRE_APPROVAL = "urn:xmpp:features:pre-approval"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_PING = "urn:xmpp:ping"
NS_VERSION = "jabber:iq:version"
NS_TIME = "urn:xmpp:time"
NS_LAST = "jabber:iq:last"
NS_DELAY = "urn:xmpp:delay"
NS_OFFLINE = "msgoffline"
NS_DATA = "jabber:x:data"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"
NS_STANZA_ID = "urn:xmpp:sid:0"
NS_HINTS = "urn:xmpp:hints"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_SM = "urn:xmpp:sm:3"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_CSI = "urn:xmpp:csi:0"
NS_PUSH = "urn:xmpp:push:0"
NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
NS_MAM = "urn:xmpp:mam:2"
NS_MAM_EXT = "urn:xmpp:mam:2#extended"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_PUBSUB_OWNER = "http://jabber.org/protocol/pubsub#owner"
NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
NS_VCARD = "vcard-temp"
NS_PRIVATE = "jabber:iq:private"
NS_MUC = "http://jabber.org/protocol/muc"
NS_UPLOAD = "urn:xmpp:http:upload:0"
NS_BYTESTREAMS = "http://jabber.org/protocol/bytestreams"
# Multi-User Chat (XEP-0045) and the extensions rooms speak (XEP-0249, 0359, 0410, 0421, 0424, 0425).
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_MUC_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
NS_MUC_ROOMINFO = "http://jabber.org/protocol/muc#roominfo"
NS_MUC_REQUEST = "http://jabber.org/protocol/muc#request"
NS_MUC_REGISTER = "http://jabber.org/protocol/muc#register"
NS_MUC_UNIQUE = "http://jabber.org/protocol/muc#unique"
NS_MUC_STABLE_ID = "http://jabber.org/protocol/muc#stable_id"
NS_CONFERENCE = "jabber:x:conference"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"
NS_RETRACT = "urn:xmpp:message-retract:1"
NS_MODERATE = "urn:xmpp:message-moderate:1"
# XEP-0425 0.2 (fastening, XEP-0422), still sent and accepted for the clients that speak only it
NS_FASTEN = "urn:xmpp:fasten:0"
NS_MODERATE_0 = "urn:xmpp:message-moderate:0"
NS_RETRACT_0 = "urn:xmpp:message-retract:0"
NS_REGISTER = "jabber:iq:register"
NS_MUC_SELF_PING_OPT = "http://jabber.org/protocol/muc#self-ping-optimization"  # XEP-0410

# Publish-subscribe forms (XEP-0060 §16.4), data-form validation (XEP-0122).
NS_PUBSUB_NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
NS_PUBSUB_PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
NS_DATA_VALIDATE = "http://jabber.org/protocol/xdata-validate"

NS_VCARD_UPDATE = "vcard-temp:x:update"        # XEP-0153
NS_BOOKMARKS2 = "urn:xmpp:bookmarks:1"         # XEP-0402
NS_BOOKMARKS_LEGACY = "storage:bookmarks"      # XEP-0048
NS_PUSH_SUMMARY = "urn:xmpp:push:summary"      # XEP-0357 §7
NS_REPORTING = "urn:xmpp:reporting:1"          # XEP-0377
NS_PRIVACY = "jabber:iq:privacy"               # XEP-0016 (migrated, not served)

# Message payloads the archive, carbons, CSI and push look at.
NS_RECEIPTS = "urn:xmpp:receipts"              # XEP-0184
NS_CHAT_MARKERS = "urn:xmpp:chat-markers:0"    # XEP-0333
NS_REACTIONS = "urn:xmpp:reactions:0"          # XEP-0444
NS_JINGLE_MESSAGE_0 = "urn:xmpp:jingle-message:0"  # XEP-0353
NS_JINGLE_MESSAGE_1 = "urn:xmpp:jingle-message:1"
NS_EME = "urn:xmpp:eme:0"                      # XEP-0380
NS_OMEMO = "urn:xmpp:omemo:2"                  # XEP-0384
NS_OMEMO_LEGACY = "eu.siacs.conversations.axolotl"
NS_OPENPGP = "urn:xmpp:openpgp:0"              # XEP-0373
NS_LEGACY_PGP = "jabber:x:encrypted"           # XEP-0027

# Account export (XEP-0227) and what it carries.
NS_PIE = "urn:xmpp:pie:0"
NS_PIE_OLD = "http://www.xmpp.org/extensions/xep-0227.html#ns"  # ejabberd before the urn
NS_PIE_SCRAM = "urn:xmpp:pie:0#scram"
NS_PIE_MAM = "urn:xmpp:pie:0#mam"
NS_XINCLUDE = "http://www.w3.org/2001/XInclude"
NS_MBXMPP_PIE = "urn:mbxmpp:pie:0"

# Host metadata (XEP-0156): the XRD document and its link relations.
NS_XRD = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
REL_WEBSOCKET = "urn:xmpp:alt-connections:websocket"
REL_BOSH = "urn:xmpp:alt-connections:xbosh"

# Ad-Hoc Commands (XEP-0050) and service administration (XEP-0133).
NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_ADMIN = "http://jabber.org/protocol/admin"
