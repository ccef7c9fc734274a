"""Affiliations and roles (XEP-0045 §5) and the privilege rules of §8-§10, as pure functions.

Each check raises the StanzaError the XEP names for a refused change and returns nothing
otherwise; the room applies the change.
"""

from __future__ import annotations

from ...errors import StanzaError

OWNER, ADMIN, MEMBER, NONE, OUTCAST = "owner", "admin", "member", "none", "outcast"
MODERATOR, PARTICIPANT, VISITOR = "moderator", "participant", "visitor"
ROLE_NONE = "none"

AFFILIATIONS = (OWNER, ADMIN, MEMBER, NONE, OUTCAST)
ROLES = (MODERATOR, PARTICIPANT, VISITOR, ROLE_NONE)
AFF_RANK = {OUTCAST: -1, NONE: 0, MEMBER: 1, ADMIN: 2, OWNER: 3}
ROLE_RANK = {ROLE_NONE: 0, VISITOR: 1, PARTICIPANT: 2, MODERATOR: 3}


def default_role(affiliation: str, moderated: bool) -> str:
    """XEP-0045 §5.1.2: the initial role for an affiliation (outcasts do not enter)."""
    if affiliation in (OWNER, ADMIN):
        return MODERATOR
    if affiliation == MEMBER:
        return PARTICIPANT
    return VISITOR if moderated else PARTICIPANT


def check_role_change(actor_role: str, actor_aff: str, target_aff: str, target_role: str,
                      new_role: str) -> None:
    """§8 (moderator use cases) and §9.6-9.7 (moderator status): may the actor set the role?"""
    if actor_role != MODERATOR:
        raise StanzaError("forbidden", "only moderators may change roles")
    if new_role == MODERATOR or target_role == MODERATOR:
        # §9.6/§9.7: granting or revoking moderator status is an admin's privilege, and never
        # against an admin or owner.
        if AFF_RANK[actor_aff] < AFF_RANK[ADMIN]:
            raise StanzaError("not-allowed", "only admins and owners may grant or revoke moderator status")
        if new_role != MODERATOR and target_aff in (OWNER, ADMIN):
            raise StanzaError("not-allowed", "admins and owners keep their moderator status")
    if new_role in (ROLE_NONE, VISITOR):
        # §8.2 kick: never by a moderator with a lower affiliation; §8.4 voice: never from an
        # admin or owner, never from someone at or above the moderator's affiliation.
        if target_aff in (OWNER, ADMIN):
            raise StanzaError("not-allowed", "admins and owners cannot be kicked or silenced")
        if new_role == VISITOR and AFF_RANK[target_aff] >= AFF_RANK[actor_aff] and target_aff != NONE:
            raise StanzaError("not-allowed", "cannot revoke voice from someone of equal or higher affiliation")
        if new_role == ROLE_NONE and AFF_RANK[target_aff] > AFF_RANK[actor_aff]:
            raise StanzaError("not-allowed", "cannot kick someone with a higher affiliation")


def check_affiliation_change(actor_aff: str, target_old: str, new: str) -> None:
    """§9 (admin) and §10 (owner) use cases: may the actor set the affiliation?"""
    if actor_aff not in (OWNER, ADMIN):
        raise StanzaError("forbidden", "only admins and owners may change affiliations")
    if actor_aff == ADMIN:
        if new in (OWNER, ADMIN):
            raise StanzaError("forbidden", "only owners may grant admin or owner status")
        if target_old in (OWNER, ADMIN):
            # §9.1: a user cannot be banned (or demoted) by an admin with a lower or equal affiliation.
            raise StanzaError("not-allowed", "admins cannot change the affiliation of admins or owners")


def may_read_list(actor_aff: str, actor_role: str, affiliation: str, getmemberlist: tuple[str, ...],
                  members_only: bool) -> None:
    """Who may retrieve which list (§9.3, §9.5, §10.5, §10.8; muc#roomconfig_getmemberlist)."""
    if affiliation == MEMBER:
        if AFF_RANK[actor_aff] >= AFF_RANK[ADMIN]:
            return
        if actor_role in getmemberlist or (members_only and actor_aff == MEMBER):
            return
        raise StanzaError("forbidden", "you may not see the member list")
    if affiliation in (OUTCAST, NONE):
        if AFF_RANK[actor_aff] < AFF_RANK[ADMIN]:
            raise StanzaError("forbidden", "only admins and owners may see this list")
        return
    # owner and admin lists: §10.5/§10.8 owners; admins may read them too (common practice).
    if AFF_RANK[actor_aff] < AFF_RANK[ADMIN]:
        raise StanzaError("forbidden", "only admins and owners may see this list")


def may_read_role_list(actor_role: str) -> None:
    """§8.5 voice list and §9.8 moderator list: moderators only."""
    if actor_role != MODERATOR:
        raise StanzaError("forbidden", "only moderators may see this list")
