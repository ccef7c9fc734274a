"""The MUC's sans-IO pieces on their own: the privilege tables (XEP-0045 §5, §8-§10), nickname
comparison, history selection (§7.2.15), the configuration form, and a Room driven without a
server (stanzas in, stanzas out)."""

from __future__ import annotations

import pytest

from mbxmpp.config import MUCConfig
from mbxmpp.errors import StanzaError
from mbxmpp.jid import JID
from mbxmpp.modules.muc.affiliation import check_affiliation_change, check_role_change, default_role, may_read_list
from mbxmpp.modules.muc.config_form import RoomConfig, config_form, parse_config
from mbxmpp.modules.muc.history import History, HistoryRequest
from mbxmpp.modules.muc.occupant import Occupant, nick_key
from mbxmpp.modules.muc.room import Room
from mbxmpp.xml.element import Element
from mbxmpp.xml.ns import NS_DATA, NS_MUC_USER
from tests.harness import parse_stanza
from tests.modules.test_muc_support import form


def refused(fn, *args) -> str | None:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except StanzaError as e:
        return e.condition
    return None


@pytest.mark.parametrize("actor_role,actor_aff,target_aff,target_role,new_role,expected", [
    ("participant", "member", "none", "participant", "none", "forbidden"),       # §8.2
    ("moderator", "member", "none", "participant", "none", None),
    ("moderator", "member", "admin", "moderator", "none", "not-allowed"),      # lower affiliation
    ("moderator", "owner", "admin", "moderator", "none", "not-allowed"),       # admins are not kicked
    ("moderator", "admin", "none", "participant", "visitor", None),            # §8.4 revoke voice
    ("moderator", "member", "member", "participant", "visitor", "not-allowed"),  # at or above
    ("moderator", "member", "owner", "moderator", "visitor", "not-allowed"),
    ("moderator", "member", "none", "visitor", "participant", None),           # §8.3 grant voice
    ("moderator", "member", "none", "participant", "moderator", "not-allowed"),  # §9.6 admins only
    ("moderator", "admin", "member", "participant", "moderator", None),
    ("moderator", "admin", "owner", "moderator", "participant", "not-allowed"),  # §9.7
])
def test_role_privileges(actor_role, actor_aff, target_aff, target_role, new_role, expected):
    assert refused(check_role_change, actor_role, actor_aff, target_aff, target_role, new_role) == expected


@pytest.mark.parametrize("actor,old,new,expected", [
    ("member", "none", "outcast", "forbidden"),
    ("admin", "none", "outcast", None),           # §9.1 ban
    ("admin", "member", "none", None),            # §9.5 revoke membership
    ("admin", "owner", "outcast", "not-allowed"),  # an admin cannot ban an owner
    ("admin", "admin", "none", "not-allowed"),
    ("admin", "none", "admin", "forbidden"),      # §10.6 only owners grant admin
    ("admin", "none", "owner", "forbidden"),
    ("owner", "admin", "outcast", None),
    ("owner", "none", "owner", None),
])
def test_affiliation_privileges(actor, old, new, expected):
    assert refused(check_affiliation_change, actor, old, new) == expected


def test_default_roles_and_list_access():
    assert [default_role(a, False) for a in ("owner", "admin", "member", "none")] == \
        ["moderator", "moderator", "participant", "participant"]
    assert default_role("none", True) == "visitor" and default_role("member", True) == "participant"
    assert refused(may_read_list, "none", "participant", "outcast", ("moderator",), False) == "forbidden"
    assert refused(may_read_list, "admin", "moderator", "outcast", (), False) is None
    assert refused(may_read_list, "none", "participant", "member", ("participant",), False) is None
    assert refused(may_read_list, "none", "visitor", "member", ("participant",), False) == "forbidden"


def test_nick_keys():
    assert nick_key("Alice") == nick_key(" alice ") == nick_key("ＡＬＩＣＥ") == nick_key("аlicе")
    assert nick_key("alice") != nick_key("alice2")
    assert refused(nick_key, "   ") == "not-acceptable"


def test_history_selection():
    hist = History(10)
    for n in range(6):
        hist.add(parse_stanza(f"<message type='groupchat'><body>{n}</body></message>"), str(n), when=1000.0 + n)
    sel = hist.select
    assert [e.id for e in sel(HistoryRequest(None), 4, now=2000)] == ["2", "3", "4", "5"]
    one = hist.entries[0].size
    assert [e.id for e in sel(HistoryRequest(parse_stanza(f"<history maxchars='{2 * one}'/>")), 50)] == ["4", "5"]
    assert [e.id for e in sel(HistoryRequest(parse_stanza("<history seconds='2'/>")), 50, now=1005.5)] == ["4", "5"]
    assert sel(HistoryRequest(parse_stanza("<history maxstanzas='0'/>")), 50) == []
    assert refused(HistoryRequest, parse_stanza("<history maxstanzas='-1'/>")) == "bad-request"
    assert refused(HistoryRequest, parse_stanza("<history since='yesterday'/>")) == "bad-request"
    assert hist.forget("3") is not None and hist.find("3") is None


def test_config_form_round_trip_and_policies():
    cfg = RoomConfig()
    x = config_form(cfg, ["a@x"], [], 100, True)
    assert x.get("type") == "form" and x.find("field", NS_DATA) is not None
    sub = parse_config(parse_stanza(form(roomname="Ü", membersonly="true", maxusers="none",
                                         presencebroadcast=["moderator"])), cfg, 100, 50, True)
    assert sub.config.name == "Ü" and sub.config.membersonly and sub.config.maxusers == 0
    assert sub.config.presencebroadcast == ("moderator",) and cfg.name == ""  # a copy
    assert refused(parse_config, parse_stanza(form(maxusers="101")), cfg, 100, 50, True) == "not-acceptable"
    assert refused(parse_config, parse_stanza(form(enablearchiving="1")), cfg, 100, 50, False) == "not-acceptable"
    assert refused(parse_config, parse_stanza(form(getmemberlist=["king"])), cfg, 100, 50, True) == "bad-request"
    assert refused(parse_config, parse_stanza(form(**{"muc#maxhistoryfetch": "51"})), cfg, 100, 50,
                   True) == "bad-request"
    assert RoomConfig.from_record(sub.config.to_record()) == sub.config


class FakeService:
    """What a Room needs, recording what it sends."""

    domain = "conference.example"
    archiving_available = False
    admins: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.limits = MUCConfig()
        self.sent: list[Element] = []
        self.forgotten: list[Room] = []

    def send(self, st: Element) -> None:
        self.sent.append(st)

    def save(self, room: Room) -> None:
        pass

    def forget(self, room: Room) -> None:
        self.forgotten.append(room)

    def archive_id(self, room: Room) -> str | None:
        return None

    def archive(self, room: Room, stanza: Element, id: str) -> None:
        raise AssertionError("not archived")

    def occupant_id(self, room: Room, bare: str) -> str:
        return "id-" + bare

    def can_join_more(self, bare: str) -> bool:
        return True

    def occupancy(self, bare: str, delta: int) -> None:
        pass


def test_room_without_a_server():
    svc = FakeService()
    room = Room(svc, "lab", RoomConfig(), {"a@example": "owner"})
    room.presence(parse_stanza("<presence/>"), JID.parse("a@example/1"), "A")
    room.presence(parse_stanza("<presence/>"), JID.parse("b@example/1"), "B")
    assert set(room.occupants) == {"A", "B"} and isinstance(room.occupants["A"], Occupant)
    svc.sent.clear()
    room.message(parse_stanza("<message type='groupchat' id='x'><body>hi</body></message>"),
                 JID.parse("b@example/1"), None)
    assert sorted(m.get("to") for m in svc.sent) == ["a@example/1", "b@example/1"]
    assert {m.get("from") for m in svc.sent} == {"lab@conference.example/B"}
    svc.sent.clear()
    room.presence(parse_stanza("<presence type='unavailable'/>"), JID.parse("b@example/1"), "B")
    gone = [p for p in svc.sent if p.get("to") == "a@example/1"][0]
    assert gone.get("type") == "unavailable" and gone.find("x", NS_MUC_USER) is not None
    room.presence(parse_stanza("<presence type='unavailable'/>"), JID.parse("a@example/1"), "A")
    assert svc.forgotten == [room] and room.destroyed  # temporary and empty


def test_muc_config_section(tmp_path):
    from mbxmpp.config import ConfigError, load_config
    path = tmp_path / "mbxmpp.toml"
    path.write_text('[server]\ndomains = ["example.org"]\n[muc]\nmax_occupants = 50\nmessage_rate = 0\n'
                    'max_message_size = "16KiB"\nmax_rooms_per_user = 3\n')
    cfg = load_config(path).muc
    assert (cfg.max_occupants, cfg.message_rate, cfg.max_message_size, cfg.max_rooms_per_user) == (50, 0, 16384, 3)
    assert cfg.archive_by_default is False and cfg.max_history == 100  # defaults
    path.write_text('[server]\ndomains = ["example.org"]\n[muc]\nmax_occupants = 0\nmax_nick_length = "x"\n')
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert any("max_occupants" in err for err in e.value.errors)
    assert any("max_nick_length" in err for err in e.value.errors)
