"""Unguessable identifiers from the CSPRNG."""

import secrets


def new_id(nbytes: int = 12) -> str:
    """A URL-safe random id (stanza ids, stream ids, resources, SM resumption ids)."""
    return secrets.token_urlsafe(nbytes)
