"""Who is calling: the admin (bearer admin token), a session's client (its clientToken),
or — with the sites work — a site's publishable key. Tokens are compared in constant time
or looked up by their SHA-256, never logged."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from ..appkeys import ADMIN_TOKEN, SESSIONS
from ..errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class Principal:
    kind: Literal["admin", "client", "site"]
    session_id: str | None = None
    site_id: str | None = None


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def is_admin_token(request: web.Request, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(token.encode(), request.app[ADMIN_TOKEN].encode())


def require_admin(request: web.Request) -> Principal:
    token = bearer(request)
    if token is None:
        raise Unauthorized("an admin token is required (Authorization: Bearer <admin token>)")
    if is_admin_token(request, token):
        return Principal("admin")
    if token.startswith(("ct_", "pk_")):
        raise Forbidden("this credential may not do this")
    raise Unauthorized("the admin token is not valid")


async def session_principal(request: web.Request, session_id: str, token: str | None = None) -> Principal:
    """The admin, or the client holding this session's clientToken."""
    token = token if token is not None else bearer(request)
    if token is None:
        raise Unauthorized("a session's clientToken or the admin token is required")
    if is_admin_token(request, token):
        return Principal("admin")
    if token.startswith("ct_"):
        owner = await request.app[SESSIONS].store.session_for_client_token(token)
        if owner is not None and hmac.compare_digest(owner, session_id):
            return Principal("client", session_id=session_id)
        if owner is not None:
            raise Forbidden("this clientToken belongs to another session")
        raise Unauthorized("the clientToken is not valid (or its session is long gone)")
    if token.startswith("pk_"):
        raise Forbidden("a publishable key may only start sessions")
    raise Unauthorized("the credential is not valid")
