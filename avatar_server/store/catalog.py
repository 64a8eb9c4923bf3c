"""The catalog's Redis layer: what the server keeps about avatars and knowledge documents (which
live upstream; ``catalog.sync`` keeps the two in step).

    kb:avatar:<id>              hash: json (last upstream avatar object seen), name, imageUrl, status, member
    kb:avatar:<id>:documents    set of linked document ids
    kb:avatars                  sorted set, all scores 0, ``<registered ms>:<id>`` (lex order = our list order)
    kb:document:<id>            hash: tokens, name, type, createdAt, updatedAt, member
    kb:document:<id>:avatars    set of avatar ids using it (``usedBy``)
    kb:documents                sorted set, like kb:avatars
    kb:lock                     the catalog lock (see ``CatalogLock``)

Links and token counts change only through the Lua scripts below, each of which checks
the 50,000-token budget and applies the change in one step: a link, a new ``documentIds``
list, or a document's new token count that would put any avatar over the limit changes
nothing. The scripts walk links, so they build keys from ``keys`` templates (one Redis,
not a cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import Conflict
from . import keys
from .connection import Redis
from .lex_index import index_member, page
from .lua import SET_IF_EXISTS

_K = "local function k(t, id) return (string.gsub(t, '{id}', id)) end\n"

# KEYS: record hash, index; ARGV: member candidate, then field/value pairs → the member used
_PUT = """
local m = redis.call('HGET', KEYS[1], 'member')
if not m then
  m = ARGV[1]
  redis.call('ZADD', KEYS[2], 0, m)
  redis.call('HSET', KEYS[1], 'member', m)
end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return m
"""

# KEYS: avatar documents set, avatar record
# ARGV: document template, document-avatars template, avatar id, limit (-1: no check), new ids...
# → {-1} no avatar · {-2, i} new id i (1-based) unknown · {0, current, adding, after} over budget
#   · {1, current, adding, after, old ids...} applied
_SET_LINKS = _K + """
if redis.call('EXISTS', KEYS[2]) == 0 then return {-1} end
local old = redis.call('SMEMBERS', KEYS[1])
local limit = tonumber(ARGV[4])
local isold, isnew, new = {}, {}, {}
local current, after, adding = 0, 0, 0
for _, d in ipairs(old) do
  isold[d] = true
  current = current + (tonumber(redis.call('HGET', k(ARGV[1], d), 'tokens')) or 0)
end
for i = 5, #ARGV do
  local d = ARGV[i]
  local t = redis.call('HGET', k(ARGV[1], d), 'tokens')
  if not t then return {-2, i - 4} end
  new[#new + 1] = d
  isnew[d] = true
  after = after + tonumber(t)
  if not isold[d] then adding = adding + tonumber(t) end
end
-- a change that lowers the total is always allowed (an adopted avatar may start over the limit)
if limit >= 0 and after > limit and after > current then return {0, current, adding, after} end
for _, d in ipairs(old) do
  if not isnew[d] then redis.call('SREM', k(ARGV[2], d), ARGV[3]) end
end
redis.call('DEL', KEYS[1])
for _, d in ipairs(new) do
  redis.call('SADD', KEYS[1], d)
  redis.call('SADD', k(ARGV[2], d), ARGV[3])
end
local out = {1, current, adding, after}
for _, d in ipairs(old) do out[#out + 1] = d end
return out
"""

# KEYS: document record, document-avatars set
# ARGV: avatar-documents template, document template, document id, new tokens, limit (-1: no check)
# → {-1} no document · {0, old tokens, avatar id, avatar total} over budget · {1, old tokens} applied
_SET_TOKENS = _K + """
local old = redis.call('HGET', KEYS[1], 'tokens')
if not old then return {-1} end
old = tonumber(old)
local new = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
if limit >= 0 and new > old then
  for _, a in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    local others = 0
    for _, d in ipairs(redis.call('SMEMBERS', k(ARGV[1], a))) do
      if d ~= ARGV[3] then others = others + (tonumber(redis.call('HGET', k(ARGV[2], d), 'tokens')) or 0) end
    end
    if others + new > limit then return {0, old, a, others + old} end
  end
end
redis.call('HSET', KEYS[1], 'tokens', new)
return {1, old}
"""

# KEYS: record hash, its links set, index; ARGV: template of the other side's links set, id
# → the ids on the other side it was linked to
_DELETE = _K + """
local others = redis.call('SMEMBERS', KEYS[2])
for _, o in ipairs(others) do redis.call('SREM', k(ARGV[1], o), ARGV[2]) end
local m = redis.call('HGET', KEYS[1], 'member')
if m then redis.call('ZREM', KEYS[3], m) end
redis.call('DEL', KEYS[1], KEYS[2])
return others
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_T = keys.ID_PLACEHOLDER


@dataclass(frozen=True)
class LinkResult:
    """Outcome of ``set_links``: ``applied`` or not; token totals of the avatar before and after."""

    applied: bool
    current: int = 0
    adding: int = 0
    after: int = 0
    old: tuple[str, ...] = ()
    missing_index: int | None = None  # 0-based index of an unknown document id
    no_avatar: bool = False


@dataclass(frozen=True)
class TokensResult:
    applied: bool
    old_tokens: int = 0
    avatar_id: str | None = None  # the avatar that would pass the budget
    avatar_total: int = 0  # its current total
    no_document: bool = False


def _member(item_id: str) -> str:
    return index_member(int(time.time() * 1000), item_id)


def _pairs(fields: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in fields.items():
        out += [name, value if isinstance(value, str) else json.dumps(value)]
    return out


class CatalogStore:
    def __init__(self, redis: Redis) -> None:
        self.r = redis
        self._put = redis.register_script(_PUT)
        self._set_if_exists = redis.register_script(SET_IF_EXISTS)
        self._set_links = redis.register_script(_SET_LINKS)
        self._set_tokens = redis.register_script(_SET_TOKENS)
        self._delete = redis.register_script(_DELETE)

    # --- documents ---------------------------------------------------------------------
    async def put_document(self, document_id: str, fields: Mapping[str, Any]) -> None:
        """Register or refresh a document (``tokens``, ``name``, ``type``, ``createdAt``, ``updatedAt``).

        A new one is appended to our list order; an existing one keeps its place."""
        await self._put(keys=[keys.kb_document(document_id), keys.kb_documents_index()],
                        args=[_member(document_id), *_pairs(fields)])

    async def refresh_document(self, document_id: str, fields: Mapping[str, Any]) -> bool:
        """Change cached fields of a known document (never its tokens: see ``set_tokens``)."""
        assert "tokens" not in fields
        return bool(await self._set_if_exists(keys=[keys.kb_document(document_id)], args=_pairs(fields)))

    async def document(self, document_id: str) -> dict[str, Any] | None:
        raw = await self.r.hgetall(keys.kb_document(document_id))
        return _document(document_id, raw) if raw else None

    async def documents(self, ids: Iterable[str]) -> list[dict[str, Any] | None]:
        ids = list(ids)
        async with self.r.pipeline(transaction=False) as p:
            for i in ids:
                p.hgetall(keys.kb_document(i))
            rows = await p.execute()
        return [_document(i, raw) if raw else None for i, raw in zip(ids, rows, strict=True)]

    async def users(self, document_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """``usedBy`` of each document: ``[{id, name, imageUrl}]`` from the links and the avatars' cache."""
        ids = list(document_ids)
        async with self.r.pipeline(transaction=False) as p:
            for i in ids:
                p.smembers(keys.kb_document_avatars(i))
            sets = await p.execute()
        avatar_ids = sorted({a for s in sets for a in s})
        async with self.r.pipeline(transaction=False) as p:
            for a in avatar_ids:
                p.hmget(keys.kb_avatar(a), ["name", "imageUrl", "member"])
            rows = await p.execute()
        info = {a: (name, image, member) for a, (name, image, member) in zip(avatar_ids, rows, strict=True)}
        out: dict[str, list[dict[str, Any]]] = {}
        for doc_id, members in zip(ids, sets, strict=True):
            users = [(info[a][2] or "", {"id": a, "name": info[a][0] or "", "imageUrl": info[a][1] or None})
                     for a in members]
            out[doc_id] = [u for _, u in sorted(users, key=lambda x: x[0])]
        return out

    async def set_tokens(self, document_id: str, tokens: int, *, limit: int | None) -> TokensResult:
        """Set the document's token count unless (with ``limit``) some avatar using it would pass the limit."""
        res = await self._set_tokens(
            keys=[keys.kb_document(document_id), keys.kb_document_avatars(document_id)],
            args=[keys.kb_avatar_documents(_T), keys.kb_document(_T), document_id, tokens,
                  -1 if limit is None else limit],
        )
        if res[0] == -1:
            return TokensResult(False, no_document=True)
        if res[0] == 0:
            return TokensResult(False, int(res[1]), str(res[2]), int(res[3]))
        return TokensResult(True, int(res[1]))

    async def delete_document(self, document_id: str) -> list[str]:
        """Forget the document and detach it from every avatar; returns those avatars' ids."""
        return list(await self._delete(
            keys=[keys.kb_document(document_id), keys.kb_document_avatars(document_id), keys.kb_documents_index()],
            args=[keys.kb_avatar_documents(_T), document_id],
        ))

    # --- avatars -----------------------------------------------------------------------
    async def put_avatar(self, avatar: Mapping[str, Any], image_url: str | None) -> None:
        """Register or refresh an avatar from an upstream avatar object (links are ``set_links``'s)."""
        fields = {"json": json.dumps(avatar), "name": avatar.get("name") or "", "imageUrl": image_url or "",
                  "status": avatar.get("status") or ""}
        await self._put(keys=[keys.kb_avatar(avatar["id"]), keys.kb_avatars_index()],
                        args=[_member(avatar["id"]), *_pairs(fields)])

    async def refresh_avatar(self, avatar: Mapping[str, Any], image_url: str | None) -> bool:
        """Refresh the cache of a known avatar; False (nothing written) if it is not registered."""
        fields = {"json": json.dumps(avatar), "name": avatar.get("name") or "", "imageUrl": image_url or "",
                  "status": avatar.get("status") or ""}
        return bool(await self._set_if_exists(keys=[keys.kb_avatar(avatar["id"])], args=_pairs(fields)))

    async def avatar(self, avatar_id: str) -> dict[str, Any] | None:
        raw = await self.r.hget(keys.kb_avatar(avatar_id), "json")
        return json.loads(raw) if raw else None

    async def avatars(self, ids: Iterable[str]) -> list[dict[str, Any] | None]:
        ids = list(ids)
        async with self.r.pipeline(transaction=False) as p:
            for i in ids:
                p.hget(keys.kb_avatar(i), "json")
            rows = await p.execute()
        return [json.loads(raw) if raw else None for raw in rows]

    async def avatar_status(self, avatar_id: str) -> str | None:
        return await self.r.hget(keys.kb_avatar(avatar_id), "status")

    async def linked(self, avatar_id: str) -> set[str]:
        return set(await self.r.smembers(keys.kb_avatar_documents(avatar_id)))

    async def set_links(self, avatar_id: str, document_ids: Iterable[str], *, limit: int | None) -> LinkResult:
        """Replace the avatar's linked documents in one step — unless a document is unknown, or (with
        ``limit``) the new total passes the limit while raising the current one."""
        ids = list(document_ids)
        res = await self._set_links(
            keys=[keys.kb_avatar_documents(avatar_id), keys.kb_avatar(avatar_id)],
            args=[keys.kb_document(_T), keys.kb_document_avatars(_T), avatar_id,
                  -1 if limit is None else limit, *ids],
        )
        if res[0] == -1:
            return LinkResult(False, no_avatar=True)
        if res[0] == -2:
            return LinkResult(False, missing_index=int(res[1]) - 1)
        current, adding, after = int(res[1]), int(res[2]), int(res[3])
        if res[0] == 0:
            return LinkResult(False, current, adding, after)
        return LinkResult(True, current, adding, after, tuple(str(d) for d in res[4:]))

    async def delete_avatar(self, avatar_id: str) -> list[str]:
        """Forget the avatar and its links; returns the ids of the documents it used."""
        return list(await self._delete(
            keys=[keys.kb_avatar(avatar_id), keys.kb_avatar_documents(avatar_id), keys.kb_avatars_index()],
            args=[keys.kb_document_avatars(_T), avatar_id],
        ))

    # --- lists -------------------------------------------------------------------------
    async def page_documents(self, *, limit: int, cursor: str | None) -> tuple[list[str], str | None]:
        return await self._page(keys.kb_documents_index(), limit, cursor)

    async def page_avatars(self, *, limit: int, cursor: str | None) -> tuple[list[str], str | None]:
        return await self._page(keys.kb_avatars_index(), limit, cursor)

    async def _page(self, index: str, limit: int, cursor: str | None) -> tuple[list[str], str | None]:
        """Ids in our order after ``cursor`` (the last member of the previous page): every item
        present for the whole walk is seen exactly once, whatever is added or deleted meanwhile."""
        return await page(self.r, index, limit, cursor)


def _document(document_id: str, raw: Mapping[str, str]) -> dict[str, Any]:
    return {"id": document_id, "name": raw.get("name", ""), "type": raw.get("type", "text"),
            "tokens": int(raw.get("tokens", 0)), "createdAt": raw.get("createdAt"),
            "updatedAt": raw.get("updatedAt")}


class CatalogLock:
    """One lock for every change of links or token counts, across instances.

    ``hold()`` takes it (``SET NX PX`` with a random token), keeps it alive while held
    (renewed every ``ttl / 3``) and gives it back with a compare-and-delete, so it only
    ever releases its own hold; a holder that dies lets it expire after ``ttl``. Callers
    that wait more than ``wait`` seconds get 409 ``knowledge_busy`` with ``Retry-After``."""

    def __init__(self, redis: Redis, *, ttl: float = 30.0, wait: float = 30.0) -> None:
        self.r = redis
        self.ttl = ttl
        self.wait = wait
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        token = secrets.token_hex(16)
        key = keys.kb_lock()
        ttl_ms = int(self.ttl * 1000)
        deadline = time.monotonic() + self.wait
        while not await self.r.set(key, token, nx=True, px=ttl_ms):
            if time.monotonic() >= deadline:
                raise Conflict("knowledge is being changed by another request; try again",
                               code="knowledge_busy", headers={"Retry-After": "1"})
            await asyncio.sleep(random.uniform(0.005, 0.02))
        keeper = asyncio.create_task(self._keep(key, token, ttl_ms), name="catalog-lock-renew")
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await asyncio.shield(self._release(keys=[key], args=[token]))

    async def _keep(self, key: str, token: str, ttl_ms: int) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            with contextlib.suppress(Exception):
                await self._renew(keys=[key], args=[token, ttl_ms])
