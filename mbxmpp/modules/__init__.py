"""The explicit registry of feature modules: name -> "module.path:Class" (no import scanning)."""

REGISTRY: dict[str, str] = {
    "disco": "mbxmpp.modules.disco:Disco",
    "ping": "mbxmpp.modules.ping:Ping",
    "version": "mbxmpp.modules.version:Version",
    "time": "mbxmpp.modules.time:EntityTime",
    "last": "mbxmpp.modules.last:LastActivity",
    "sm": "mbxmpp.modules.sm:StreamManagement",
    "roster": "mbxmpp.modules.roster:Roster",
    "presence": "mbxmpp.modules.presence:Presence",
    "offline": "mbxmpp.modules.offline:Offline",
    "carbons": "mbxmpp.modules.carbons:Carbons",
    "csi": "mbxmpp.modules.csi:CSI",
    "blocking": "mbxmpp.modules.blocking:Blocking",
    "mam": "mbxmpp.modules.mam:MAM",
    "pep": "mbxmpp.modules.pep:PEP",
    "vcard": "mbxmpp.modules.vcard:VCard",
    "private": "mbxmpp.modules.private:Private",
    "bookmarks": "mbxmpp.modules.bookmarks:Bookmarks",
    "push": "mbxmpp.modules.push:Push",
    "webchat": "mbxmpp.modules.webchat:WebChat",
    "metrics": "mbxmpp.modules.metrics:Metrics",
}
