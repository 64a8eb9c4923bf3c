"""The one reader of ``Authorization: Bearer <token>``, for the API, the engine and the engine's
media route. Pure: no aiohttp, no I/O."""

from __future__ import annotations


class MalformedCredential(ValueError):
    """A bearer token that no issuer of ours could have made (not printable ASCII: a header of
    raw bytes reaches Python as surrogates, which no comparison or hash should ever see)."""


def parse_bearer(header: str) -> str | None:
    """The token of a ``Bearer`` header; None when the header is absent, empty or of another
    scheme; ``MalformedCredential`` for a token that is not printable ASCII."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    if not (token.isascii() and token.isprintable()):
        raise MalformedCredential
    return token
