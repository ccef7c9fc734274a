"""The explicit registry of feature modules: name -> "module.path:Class" (no import scanning)."""

REGISTRY: dict[str, str] = {
    "disco": "mbxmpp.modules.disco:Disco",
    "ping": "mbxmpp.modules.ping:Ping",
    "version": "mbxmpp.modules.version:Version",
    "time": "mbxmpp.modules.time:EntityTime",
    "last": "mbxmpp.modules.last:LastActivity",
}
