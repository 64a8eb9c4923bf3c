"""The POST to a site's backend for one ``backend_rpc`` tool call: aiohttp's client (like webhooks';
httpx stays the upstream's), signed as webhooks are (Standard Webhooks headers, the site's
``whsec_…`` secret, ``webhooks.signing``), names resolved through ``targets.PublicResolver`` unless
private targets are allowed, no redirects, the tool's ``timeoutSeconds`` as the whole deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .. import jsonlimits
from ..errors import ToolCallFailed
from ..webhooks.signing import signed_headers
from ..webhooks.targets import PublicResolver

USER_AGENT = "avatar-server-tools/0.1"
MAX_CONNECTIONS = 200
MAX_ANSWER = 262_144  # bytes of a backend's answer


class SiteBackend:
    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._http: aiohttp.ClientSession | None = None
        self._closed = False

    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ToolCallFailed("the server is shutting down")
        if self._http is None:
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=32,
                                             resolver=None if self.allow_private else PublicResolver())
            self._http = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                               headers={"User-Agent": USER_AGENT})
        return self._http

    async def call(self, url: str, body: dict[str, Any], *, secret: str | None, timeout: float) -> Any:
        """POST ``body`` to ``url``; the JSON answer, or ``ToolCallFailed`` saying why not."""
        self._check(url)
        text = json.dumps(body)
        headers = (signed_headers(secret, "msg_" + secrets.token_hex(16), text, time.time()) if secret
                   else {"Content-Type": "application/json"})
        try:
            async with self.session().post(url, data=text.encode(), headers=headers, allow_redirects=False,
                                           timeout=aiohttp.ClientTimeout(total=timeout,
                                                                         connect=min(5.0, timeout))) as resp:
                raw = await resp.content.read(MAX_ANSWER + 1)
                if not 200 <= resp.status < 300:
                    raise ToolCallFailed(f"the site's backend answered HTTP {resp.status}")
        except TimeoutError:
            raise ToolCallFailed(f"the site's backend did not answer within {timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ToolCallFailed(f"the site's backend could not be reached ({type(exc).__name__})") from None
        if len(raw) > MAX_ANSWER:
            raise ToolCallFailed("the site's backend answered too much")
        try:
            return jsonlimits.loads(raw.decode("utf-8")) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            raise ToolCallFailed("the site's backend did not answer JSON") from None

    def _check(self, url: str) -> None:
        if self.allow_private:
            return
        parts = urlsplit(url)
        try:
            ipaddress.ip_address((parts.hostname or "").strip("[]"))
            raise ToolCallFailed("the tool's url names an IP address")
        except ValueError:
            pass
        if parts.scheme != "https":
            raise ToolCallFailed("the tool's url is not https")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._http is not None:
            await self._http.close()
            await asyncio.sleep(0)
