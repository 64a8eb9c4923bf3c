"""Where a site's webhooks may go: the reference-image URL rules (``catalog.images``) — an
``https://`` URL naming a public host by its domain name, no IP literal, no ``localhost`` or other
special-use name, resolving only to public addresses — unless ``AVATAR_SERVER_ALLOW_PRIVATE_TARGETS``
is on (development and tests): then ``http://`` and loopback or private hosts are allowed too.

The check runs when the URL is set, and again at every attempt: the HTTP client resolves names
through ``PublicResolver``, which refuses a name that resolves (now) to a non-public address, so a
DNS answer that changes after the check (rebinding) reaches nothing internal either.
"""

from __future__ import annotations

import asyncio
import re
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from ..catalog.images import URL_MAX, check_https_url, is_public_address
from ..errors import ValidationFailed

FIELD = "webhookUrl"
RESOLVE_TIMEOUT = 3.0
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


def _refuse(message: str, code: str, field: str = FIELD) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", field=field, code=code)


async def check_webhook_url(value: str, *, allow_private: bool, field: str = FIELD) -> str:
    """``value`` if it may receive webhooks, else ``ValidationFailed`` (422, ``field: webhookUrl``,
    code ``invalid_webhook_url``, ``webhook_url_not_allowed`` or ``webhook_host_unresolvable``).

    The same rules hold for a ``backend_rpc`` tool's ``url`` (``field`` names it then)."""
    try:
        return await _check_webhook_url(value, allow_private=allow_private)
    except ValidationFailed as exc:
        if field == FIELD:
            raise
        raise _refuse(exc.message.removeprefix(f"{FIELD}: "), exc.code, field) from None


async def _check_webhook_url(value: str, *, allow_private: bool) -> str:
    if allow_private:
        return _check_any_http(value)
    if not value.startswith("https://"):
        raise _refuse("must be an https:// URL (http and private addresses only with "
                      "AVATAR_SERVER_ALLOW_PRIVATE_TARGETS)", "invalid_webhook_url")
    try:
        host = check_https_url(value)
    except ValidationFailed as exc:  # the image rules, said for this field
        code = "webhook_url_not_allowed" if exc.code == "image_url_not_allowed" else "invalid_webhook_url"
        raise _refuse(exc.message.removeprefix("referenceImage: "), code) from None
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await asyncio.get_running_loop().getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        infos = []
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise _refuse("the URL's host name does not resolve", "webhook_host_unresolvable")
    if not all(is_public_address(a) for a in addresses):
        raise _refuse("the URL's host resolves to a non-public address", "webhook_url_not_allowed")
    return value


def _check_any_http(value: str) -> str:
    if len(value) > URL_MAX:
        raise _refuse(f"a URL must be at most {URL_MAX} characters", "invalid_webhook_url")
    if _FORBIDDEN_CHARS.search(value):
        raise _refuse("must not contain spaces, backslashes or control characters", "invalid_webhook_url")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise _refuse("is not a valid URL", "invalid_webhook_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse("must be an http:// or https:// URL naming a host", "invalid_webhook_url")
    if "@" in parts.netloc:
        raise _refuse("must not contain a user name or password", "webhook_url_not_allowed")
    return value


class PublicResolver(AbstractResolver):
    """aiohttp's resolver, refusing a name that resolves to any non-public address."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results or not all(is_public_address(r["host"]) for r in results):
            raise OSError(f"webhook host {host} resolves to a non-public address")
        return results

    async def close(self) -> None:
        await self._inner.close()
