"""Room configuration (XEP-0045 §10.2, muc#roomconfig) and room information (§6.4, muc#roominfo):
the settings, their data forms (XEP-0004), and the parsing of a submitted form.

A room's configuration is a ``RoomConfig``; ``to_record``/``from_record`` give the plain dict that
is stored for persistent rooms.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ...errors import StanzaError
from ...jid import JID, JIDError
from ...xml.element import Element
from ...xml.ns import NS_DATA, NS_MUC_ROOMCONFIG, NS_MUC_ROOMINFO
from .affiliation import MODERATOR, PARTICIPANT, VISITOR

ALLOWPM = ("anyone", "participants", "moderators", "none")
WHOIS = ("moderators", "anyone")
BROADCAST_ROLES = (MODERATOR, PARTICIPANT, VISITOR)
MAXUSERS_OPTIONS = ("10", "20", "30", "50", "100", "200", "500", "1000")


@dataclass(slots=True)
class RoomConfig:
    name: str = ""
    description: str = ""
    lang: str = ""
    changesubject: bool = False
    allowinvites: bool = False
    allowpm: str = "anyone"
    maxusers: int = 0                          # 0: the service's limit
    presencebroadcast: tuple[str, ...] = BROADCAST_ROLES
    getmemberlist: tuple[str, ...] = BROADCAST_ROLES
    publicroom: bool = True
    persistentroom: bool = False
    moderatedroom: bool = False
    membersonly: bool = False
    passwordprotectedroom: bool = False
    roomsecret: str = ""
    whois: str = "moderators"
    enablelogging: bool = False               # public logs: not offered by this service
    enablearchiving: bool = False             # MAM (XEP-0313) for the room
    allowvoicerequests: bool = True
    maxhistoryfetch: int = 50
    pubsub: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["presencebroadcast"] = list(self.presencebroadcast)
        d["getmemberlist"] = list(self.getmemberlist)
        return d

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> RoomConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("presencebroadcast", "getmemberlist"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    @property
    def nonanonymous(self) -> bool:
        return self.whois == "anyone"


def _field(x: Element, var: str, type_: str, label: str, values: list[str] | str | None = None,
           options: tuple[str, ...] = ()) -> Element:
    f = x.add("field", attrs={"var": var, "type": type_, "label": label})
    if isinstance(values, str):
        values = [values]
    for v in values or ():
        f.add("value", text=v)
    for o in options:
        f.add("option", attrs={"label": o}).add("value", text=o)
    return f


def _b(v: bool) -> str:
    return "1" if v else "0"


def config_form(cfg: RoomConfig, owners: list[str], admins: list[str], max_users: int,
                archiving_available: bool) -> Element:
    """The ``<x type='form'/>`` an owner gets (§10.1.3 reserved room, §10.2 configuration)."""
    x = Element("x", NS_DATA, {"type": "form"})
    x.add("title", text=f"Configuration of {cfg.name or 'the room'}")
    _field(x, "FORM_TYPE", "hidden", "", NS_MUC_ROOMCONFIG).attrs.pop("label")
    p = "muc#roomconfig_"
    _field(x, p + "roomname", "text-single", "Natural-Language Room Name", cfg.name)
    _field(x, p + "roomdesc", "text-single", "Short Description of Room", cfg.description)
    _field(x, p + "lang", "text-single", "Natural Language for Room Discussions", cfg.lang)
    _field(x, p + "enablelogging", "boolean", "Enable Public Logging?", _b(cfg.enablelogging))
    if archiving_available:
        _field(x, p + "enablearchiving", "boolean", "Archive the room's messages (MAM)?",
               _b(cfg.enablearchiving))
    _field(x, p + "changesubject", "boolean", "Allow Occupants to Change Subject?", _b(cfg.changesubject))
    _field(x, p + "allowinvites", "boolean", "Allow Members to Invite Others?", _b(cfg.allowinvites))
    _field(x, p + "allowpm", "list-single", "Who Can Send Private Messages?", cfg.allowpm, ALLOWPM)
    opts = tuple(o for o in MAXUSERS_OPTIONS if int(o) <= max_users)
    _field(x, p + "maxusers", "list-single", f"Maximum Number of Occupants (at most {max_users})",
           str(cfg.maxusers or max_users), opts)
    _field(x, p + "presencebroadcast", "list-multi", "Roles for which Presence is Broadcasted",
           list(cfg.presencebroadcast), BROADCAST_ROLES)
    _field(x, p + "getmemberlist", "list-multi", "Roles and Affiliations that May Retrieve Member List",
           list(cfg.getmemberlist), BROADCAST_ROLES)
    _field(x, p + "publicroom", "boolean", "Make Room Publicly Searchable?", _b(cfg.publicroom))
    _field(x, p + "persistentroom", "boolean", "Make Room Persistent?", _b(cfg.persistentroom))
    _field(x, p + "moderatedroom", "boolean", "Make Room Moderated?", _b(cfg.moderatedroom))
    _field(x, p + "membersonly", "boolean", "Make Room Members-Only?", _b(cfg.membersonly))
    _field(x, p + "allowvoicerequests", "boolean", "Allow Visitors to Request Voice?",
           _b(cfg.allowvoicerequests))
    _field(x, p + "passwordprotectedroom", "boolean", "Password Required to Enter?",
           _b(cfg.passwordprotectedroom))
    _field(x, p + "roomsecret", "text-private", "Password", cfg.roomsecret)
    _field(x, p + "whois", "list-single", "Who May Discover Real JIDs?", cfg.whois, WHOIS)
    _field(x, "muc#maxhistoryfetch", "text-single", "Maximum Number of History Messages Returned by Room",
           str(cfg.maxhistoryfetch))
    _field(x, p + "pubsub", "text-single", "XMPP URI of Associated Publish-Subscribe Node", cfg.pubsub)
    _field(x, p + "roomadmins", "jid-multi", "Room Admins", admins)
    _field(x, p + "roomowners", "jid-multi", "Room Owners", owners)
    return x


def _values(f: Element) -> list[str]:
    return [v.text for v in f.findall("value", NS_DATA)]


def _one(var: str, vals: list[str]) -> str:
    if len(vals) > 1:
        raise StanzaError("bad-request", f"field {var} takes one value")
    return vals[0].strip() if vals else ""


def _bool(var: str, vals: list[str]) -> bool:
    v = _one(var, vals).lower()
    if v in ("1", "true"):
        return True
    if v in ("0", "false"):
        return False
    raise StanzaError("bad-request", f"field {var} is boolean, got {v!r}")


def _choice(var: str, vals: list[str], options: tuple[str, ...]) -> str:
    v = _one(var, vals)
    if v not in options:
        raise StanzaError("bad-request", f"field {var} must be one of {', '.join(options)}, got {v!r}")
    return v


def _int(var: str, vals: list[str], lo: int, hi: int, none_value: int | None = None) -> int:
    v = _one(var, vals)
    if none_value is not None and v.lower() == "none":
        return none_value
    if not (v.isascii() and v.isdigit()) or not lo <= int(v) <= hi:
        raise StanzaError("bad-request", f"field {var} must be a number from {lo} to {hi}, got {v!r}")
    return int(v)


def _jids(var: str, vals: list[str]) -> list[str]:
    out = []
    for v in vals:
        v = v.strip()
        if not v:
            continue
        try:
            out.append(JID.parse(v).bare)
        except JIDError as e:
            raise StanzaError("bad-request", f"field {var}: {v!r} is not a JID") from e
    return out


class Submitted:
    """A parsed configuration form: the new settings plus the full owner/admin lists if given."""

    __slots__ = ("config", "owners", "admins")

    def __init__(self, config: RoomConfig, owners: list[str] | None, admins: list[str] | None) -> None:
        self.config = config
        self.owners = owners
        self.admins = admins


def parse_config(x: Element, current: RoomConfig, max_users: int, max_history: int,
                 archiving_available: bool) -> Submitted:
    """Apply a submitted form to a copy of ``current``; fields not in the form keep their value
    (XEP-0004 partial submission).  bad-request for a malformed field, not-acceptable for a
    combination the service refuses (§10.1.3: a password-protected room without a password)."""
    if x.get("type") != "submit":
        raise StanzaError("bad-request", "the configuration form must be of type 'submit'")
    cfg = dataclasses.replace(current)
    owners: list[str] | None = None
    admins: list[str] | None = None
    seen: set[str] = set()
    p = "muc#roomconfig_"
    for f in x.findall("field", NS_DATA):
        var = f.get("var")
        if not var:
            continue  # fixed fields have no var
        if var in seen:
            raise StanzaError("bad-request", f"field {var} given twice")
        seen.add(var)
        vals = _values(f)
        if var == "FORM_TYPE":
            if _one(var, vals) != NS_MUC_ROOMCONFIG:
                raise StanzaError("bad-request", f"FORM_TYPE must be {NS_MUC_ROOMCONFIG}")
        elif var == p + "roomname":
            cfg.name = _one(var, vals)[:200]
        elif var == p + "roomdesc":
            cfg.description = _one(var, vals)[:1000]
        elif var == p + "lang":
            cfg.lang = _one(var, vals)[:35]
        elif var == p + "pubsub":
            cfg.pubsub = _one(var, vals)[:1000]
        elif var == p + "allowpm":
            cfg.allowpm = _choice(var, vals, ALLOWPM)
        elif var == p + "whois":
            cfg.whois = _choice(var, vals, WHOIS)
        elif var == p + "maxusers":
            n = _int(var, vals, 1, 1 << 31, none_value=0)
            if n > max_users:
                raise StanzaError("not-acceptable", f"at most {max_users} occupants per room on this service")
            cfg.maxusers = n
        elif var == "muc#maxhistoryfetch" or var == p + "historylength":
            cfg.maxhistoryfetch = _int(var, vals, 0, max_history)
        elif var in (p + "presencebroadcast", p + "getmemberlist"):
            roles = tuple(v.strip() for v in vals if v.strip())
            bad = [r for r in roles if r not in BROADCAST_ROLES]
            if bad:
                raise StanzaError("bad-request", f"field {var}: unknown role {bad[0]!r}")
            setattr(cfg, var[len(p):], roles)
        elif var == p + "roomsecret":
            cfg.roomsecret = _one(var, vals)
        elif var == p + "roomowners":
            owners = _jids(var, vals)
        elif var == p + "roomadmins":
            admins = _jids(var, vals)
        elif var == p + "enablearchiving":
            on = _bool(var, vals)
            if on and not archiving_available:
                raise StanzaError("not-acceptable", "archiving is not available on this service")
            cfg.enablearchiving = on
        elif var.startswith(p) and var[len(p):] in _BOOLS:
            setattr(cfg, var[len(p):], _bool(var, vals))
        # Other fields (other services' extensions) are ignored, as XEP-0004 §3.3 allows.
    if cfg.passwordprotectedroom and not cfg.roomsecret:
        raise StanzaError("not-acceptable", "a password-protected room needs a password")
    if not cfg.passwordprotectedroom:
        cfg.roomsecret = ""
    if owners is not None and not owners:
        raise StanzaError("not-acceptable", "a room needs at least one owner")
    return Submitted(cfg, owners, admins)


_BOOLS = frozenset(("enablelogging", "changesubject", "allowinvites", "publicroom", "persistentroom",
                    "moderatedroom", "membersonly", "passwordprotectedroom", "allowvoicerequests"))


def room_features(cfg: RoomConfig) -> list[str]:
    """The muc_* disco features of a room (§6.4, registrar §13.4)."""
    return [
        "muc_public" if cfg.publicroom else "muc_hidden",
        "muc_persistent" if cfg.persistentroom else "muc_temporary",
        "muc_membersonly" if cfg.membersonly else "muc_open",
        "muc_moderated" if cfg.moderatedroom else "muc_unmoderated",
        "muc_nonanonymous" if cfg.nonanonymous else "muc_semianonymous",
        "muc_passwordprotected" if cfg.passwordprotectedroom else "muc_unsecured",
    ]


def roominfo_form(cfg: RoomConfig, occupants: int, subject: str, subject_mod: bool,
                  avatar_hash: str = "", contacts: list[str] | None = None) -> Element:
    """The muc#roominfo extended disco#info form (§6.4, XEP-0128)."""
    x = Element("x", NS_DATA, {"type": "result"})
    _field(x, "FORM_TYPE", "hidden", "", NS_MUC_ROOMINFO).attrs.pop("label")
    _field(x, "muc#roominfo_description", "text-single", "Description", cfg.description)
    _field(x, "muc#roominfo_occupants", "text-single", "Number of occupants", str(occupants))
    _field(x, "muc#roominfo_subject", "text-single", "Current Subject", subject)
    _field(x, "muc#roominfo_subjectmod", "boolean", "Occupants May Change the Subject", _b(subject_mod))
    _field(x, "muc#roominfo_lang", "text-single", "Language of discussion", cfg.lang)
    _field(x, "muc#roomconfig_roomname", "text-single", "Natural-Language Room Name", cfg.name)
    _field(x, "muc#roomconfig_allowinvites", "boolean", "Occupants may invite others", _b(cfg.allowinvites))
    _field(x, "muc#roomconfig_allowpm", "list-single", "Who may send private messages", cfg.allowpm)
    _field(x, "muc#maxhistoryfetch", "text-single", "Maximum Number of History Messages Returned by Room",
           str(cfg.maxhistoryfetch))
    if contacts:  # the owners; only for non-anonymous rooms (no real JIDs otherwise)
        _field(x, "muc#roominfo_contactjid", "jid-multi", "Contact Addresses", contacts)
    if avatar_hash:  # XEP-0486: only when the room has an avatar
        _field(x, "muc#roominfo_avatarhash", "text-multi", "Avatar hash", avatar_hash)
    return x
