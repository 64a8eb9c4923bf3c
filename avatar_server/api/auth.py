"""Who is calling: the admin (bearer admin token), a session's client (its clientToken),
or a site's publishable key. Tokens are compared in constant time or looked up by their
SHA-256, never logged.

    admin token        every route
    pk_ (publishable)  POST /v1/sessions and /v1/sessions/connect only (api.admission checks
                       origin, avatar, concurrency); 403 elsewhere. There alone it may also come
                       in the URL, ``?key=pk_…`` (Runway's SDKs cannot set a header)
    in the URL         nothing else, ever: 401 ``credential_in_url`` (the signal socket's
                       ``?token=<clientToken>`` is its own rule)
    ct_ (client)       GET/DELETE its own session and its signal socket, while the session is
                       not ENDED (the socket of an ENDED one only says ``ended`` and closes);
                       403 for another session, 401 once its session has ended
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from ..appkeys import ADMIN_TOKEN, SESSIONS, SITES
from ..bearer import MalformedCredential, parse_bearer
from ..errors import BadRequest, Forbidden, Unauthorized
from ..models.sessions import SessionStatus
from ..models.sites import Site
from .cors import close_to_browsers, scope_to_site


@dataclass(frozen=True)
class Principal:
    kind: Literal["admin", "client", "site"]
    session_id: str | None = None
    site_id: str | None = None


def bearer(request: web.Request) -> str | None:
    try:
        return parse_bearer(request.headers.get("Authorization", ""))
    except MalformedCredential:
        raise Unauthorized("the credential is not valid") from None


def is_admin_token(request: web.Request, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(token.encode(), request.app[ADMIN_TOKEN].encode())


# Query parameters that would carry a credential. Only two are ever read: a publishable key's
# ``?key=`` on the two start routes (``starter_credential``) and the signal socket's ``?token=``.
URL_CREDENTIAL_PARAMS = frozenset({"key", "token", "access_token", "api_key", "apikey", "auth",
                                   "authorization", "bearer", "clienttoken", "client_token", "admin_token"})
_TOKEN_PREFIXES = ("adm_", "ct_", "pk_", "sk_")


def credential_in_url(request: web.Request) -> str | None:
    """The name of a query parameter that carries (or is meant to carry) a credential, else None.
    Such a request is refused with a message saying so, never served as anonymous."""
    for name, value in request.query.items():
        if (name.lower() in URL_CREDENTIAL_PARAMS or value.startswith(_TOKEN_PREFIXES)
                or (value.isascii() and is_admin_token(request, value))):
            return name
    return None


def _no_credential_in_url(request: web.Request, what: str) -> None:
    name = credential_in_url(request)
    if name is not None:
        raise Unauthorized(f"credentials are never accepted in the URL (?{name}=…): send {what} as "
                           "Authorization: Bearer <token>", code="credential_in_url")


def starter_credential(request: web.Request) -> tuple[str | None, bool]:
    """The credential of a session start and whether it came in the URL.

    ``Authorization: Bearer <token>``, or — for callers that cannot set a header, such as
    Runway's SDKs posting to a ``connectUrl`` — a publishable key as ``?key=pk_…``, which is then
    the same as the header. Nothing else is accepted in the URL: the admin token or a client token
    there is 401 ``credential_in_url``; a key both in the URL and the header (or twice) is 400."""
    header = bearer(request)
    keys = request.query.getall("key", [])
    if not keys:
        if header is None:
            _no_credential_in_url(request, "the admin token")
        return header, False
    if len(keys) > 1 or header is not None:
        raise BadRequest("send one credential: the publishable key in the URL (?key=pk_…) or "
                         "Authorization: Bearer <token>, not both", code="ambiguous_credential")
    key = keys[0]
    if not (key.isascii() and key.isprintable()):
        raise Unauthorized("the credential is not valid")
    if is_admin_token(request, key):
        raise Unauthorized("the admin token is never accepted in the URL: send it as Authorization: Bearer "
                           "<admin token> (and rotate it now: URLs end up in logs and browser histories)",
                           code="credential_in_url")
    if not key.startswith("pk_"):
        raise Unauthorized("only a site's publishable key (pk_…) is accepted in the URL (?key=); any other "
                           "credential goes in Authorization: Bearer <token>", code="credential_in_url")
    return key, True


def require_admin(request: web.Request) -> Principal:
    token = bearer(request)
    if token is None:
        _no_credential_in_url(request, "the admin token")
        raise Unauthorized("an admin token is required (Authorization: Bearer <admin token>)")
    if is_admin_token(request, token):
        close_to_browsers(request)
        return Principal("admin")
    if token.startswith(("ct_", "pk_")):
        raise Forbidden("this credential may not do this")
    raise Unauthorized("the admin token is not valid")


async def session_principal(request: web.Request, session_id: str, token: str | None = None) -> Principal:
    """The admin, or the client holding this session's clientToken."""
    token = token if token is not None else bearer(request)
    if token is None:
        _no_credential_in_url(request, "the session's clientToken (only its signal socket takes ?token=)")
        raise Unauthorized("a session's clientToken or the admin token is required")
    if is_admin_token(request, token):
        close_to_browsers(request)
        return Principal("admin")
    if token.startswith("ct_"):
        principal = await _client_principal(request, session_id, token)
        rec = await request.app[SESSIONS].find(session_id)
        if rec is None or rec.status is SessionStatus.ENDED:
            raise Unauthorized("the session has ended; its clientToken is no longer valid",
                               code="client_token_expired")
        scope_to_site(request, rec.siteId)
        return principal
    if token.startswith("pk_"):
        raise Forbidden("a publishable key may only start sessions", code="publishable_key_not_allowed")
    raise Unauthorized("the credential is not valid")


async def _client_principal(request: web.Request, session_id: str, token: str) -> Principal:
    owner = await request.app[SESSIONS].session_of_client_token(token)
    if owner is not None and hmac.compare_digest(owner, session_id):
        return Principal("client", session_id=session_id)
    if owner is not None:
        raise Forbidden("this clientToken belongs to another session")
    raise Unauthorized("the clientToken is not valid (or its session is long gone)")


async def signal_principal(request: web.Request, session_id: str) -> Principal:
    """The signal socket: ``?token=<clientToken>`` of this session, nothing else.

    A client token of an ENDED session is still let in: the socket only tells it ``ended``
    (with the reason) and closes."""
    token = request.query.get("token")
    if not token:
        raise Unauthorized("the signal socket needs ?token=<clientToken>")
    if not (token.isascii() and token.isprintable()):
        raise Unauthorized("the clientToken is not valid for this session")
    if token.startswith("ct_"):
        return await _client_principal(request, session_id, token)
    if token.startswith("pk_") or is_admin_token(request, token):
        raise Forbidden("only the session's clientToken opens its signal socket")
    raise Unauthorized("the clientToken is not valid for this session")


async def site_for_key(request: web.Request, token: str) -> tuple[Principal, Site]:
    """The site whose current publishable key this is (a rotated-out key is unknown at once)."""
    site = await request.app[SITES].by_publishable_key(token)
    if site is None:
        raise Unauthorized("the publishable key is not valid (it may have been rotated)",
                           code="invalid_publishable_key")
    return Principal("site", site_id=site.id), site
