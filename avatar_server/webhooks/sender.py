"""The HTTP client of webhook deliveries: aiohttp's client, in this package of its own.

``httpx`` stays the upstream's alone (its pool is sized to the upstream request budget, and its
gate and observer count every request against Runway's limits); webhook traffic goes to many
unrelated hosts with its own limits, so it has its own client: one ``aiohttp.ClientSession`` per
instance, a connection limit, no redirects, no cookies, a total deadline per attempt, and names
resolved through ``targets.PublicResolver`` unless private targets are allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from .targets import PublicResolver

USER_AGENT = "avatar-server-webhooks/0.1"
MAX_CONNECTIONS = 200
ERROR_MAX = 200


@dataclass(frozen=True)
class Outcome:
    status: int | None  # the receiver's HTTP status; None: no answer
    error: str | None  # why it is not a success, for a person (never a header or the secret)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Sender:
    def __init__(self, *, timeout: float, allow_private: bool) -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        self._http: aiohttp.ClientSession | None = None
        self._closed = False

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=16,
                                             resolver=None if self.allow_private else PublicResolver())
            self._http = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                               headers={"User-Agent": USER_AGENT})
        return self._http

    async def post(self, url: str, body: str, headers: dict[str, str]) -> Outcome:
        refusal = self._refused(url)
        if refusal is not None:
            return Outcome(None, refusal)
        try:
            async with self._session().post(url, data=body.encode(), headers=headers, allow_redirects=False,
                                            timeout=aiohttp.ClientTimeout(total=self.timeout,
                                                                          connect=min(5.0, self.timeout))) as resp:
                await resp.content.read(4096)  # a little of the answer, then the connection goes
                if 200 <= resp.status < 300:
                    return Outcome(resp.status, None)
                return Outcome(resp.status, f"HTTP {resp.status}")
        except TimeoutError:
            return Outcome(None, f"no answer within {self.timeout:g} s")
        except aiohttp.ClientError as exc:
            return Outcome(None, f"{type(exc).__name__}: {str(exc)[:ERROR_MAX]}".rstrip(": "))
        except OSError as exc:
            return Outcome(None, f"{type(exc).__name__}: {str(exc)[:ERROR_MAX]}")

    def _refused(self, url: str) -> str | None:
        """Without private targets: only https to a host name (the resolver checks its addresses)."""
        if self.allow_private:
            return None
        parts = urlsplit(url)
        host = (parts.hostname or "").strip("[]")
        try:
            ipaddress.ip_address(host)
            return "the webhook URL names an IP address (allowed only with AVATAR_SERVER_ALLOW_PRIVATE_TARGETS)"
        except ValueError:
            pass
        if parts.scheme != "https":
            return "the webhook URL is not https (allowed only with AVATAR_SERVER_ALLOW_PRIVATE_TARGETS)"
        return None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._http is not None:
            await self._http.close()
            await asyncio.sleep(0)  # let the connector close its transports
