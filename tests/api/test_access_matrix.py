"""Every route × {no credential, publishable key, another session's clientToken, own clientToken,
admin}: the expected status. Routes are read from the running app's router, so a route added later
is covered as admin-only unless it is one of the browser-facing ones listed here."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest

from ..harness import ServerHarness

ORIGIN = "https://shop.example.com"
PRESET = {"type": "runway-preset", "presetId": "cooking-teacher"}
CREDS = ("none", "publishable", "other_client", "own_client", "admin")

STARTS = {("POST", "/v1/sessions"), ("POST", "/v1/sessions/connect")}
CLIENT_ROUTES = {("GET", "/v1/sessions/{id}"), ("DELETE", "/v1/sessions/{id}")}
SIGNAL = ("GET", "/v1/sessions/{id}/signal")


def _expected(method: str, path: str, cred: str) -> set[int] | str:
    if (method, path) in STARTS:
        ok = {201} if path == "/v1/sessions" else {200}
        return {"none": {401}, "publishable": ok, "other_client": {403}, "own_client": {403}, "admin": ok}[cred]
    if (method, path) in CLIENT_ROUTES:
        return {"none": {401}, "publishable": {403}, "other_client": {403}, "own_client": {200},
                "admin": {200}}[cred]
    if (method, path) == SIGNAL:
        return {"none": {401}, "publishable": {403}, "other_client": {403}, "own_client": {101},
                "admin": {403}}[cred]
    if cred == "admin":
        return "not-auth-error"
    return {"none": {401}}.get(cred, {403})


def _order(route: tuple[str, str]) -> tuple[int, str, str]:
    method, path = route
    if route in STARTS:
        rank = 0
    elif method == "GET":
        rank = 1
    elif path.endswith("/rotate-key"):
        rank = 3
    elif method == "DELETE":
        rank = 5 if path.startswith("/v1/sites") else 4
    else:
        rank = 2
    return rank, path, method


def _routes(server: ServerHarness) -> list[tuple[str, str]]:
    assert server.app is not None
    found = set()
    for route in server.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/v1/") and route.method not in ("HEAD", "OPTIONS", "*"):
            found.add((route.method, path))
    assert STARTS | CLIENT_ROUTES | {SIGNAL} <= found
    assert ("POST", "/v1/sites/{id}/rotate-key") in found
    return sorted(found, key=_order)


async def test_access_matrix(server: ServerHarness) -> None:
    status, site = await server.admin("POST", "/v1/sites", {"name": "m", "allowedOrigins": [ORIGIN],
                                                            "avatarIds": ["cooking-teacher"],
                                                            "maxConcurrentSessions": 50})
    assert status == 201
    _, own = await server.admin("POST", "/v1/sessions", {"avatar": PRESET})
    _, other = await server.admin("POST", "/v1/sessions", {"avatar": PRESET})
    tokens = {"none": None, "publishable": site["publishableKey"], "other_client": other["clientToken"],
              "own_client": own["clientToken"], "admin": server.settings.admin_token}
    started: list[str] = [own["id"], other["id"]]
    failures: list[str] = []
    seen = 0
    for method, template in _routes(server):
        for cred in CREDS:
            path = _fill(template, own["id"], site["id"])
            if (method, template) == SIGNAL:
                status = await _ws_status(server, path, tokens[cred])
                body: Any = None
            else:
                json_body = _body(method, template)
                headers = {"Origin": ORIGIN} if cred == "publishable" else {}
                status, body, _ = await server.call(method, path, token=tokens[cred], json_body=json_body,
                                                    headers=headers)
                if isinstance(body, dict) and status in (200, 201) and (method, template) in STARTS:
                    started.append(body.get("id") or body.get("sessionId"))
                if template.endswith("/rotate-key") and status == 200:
                    tokens["publishable"] = body["publishableKey"]  # later rows try the live key
            want = _expected(method, template, cred)
            seen += 1
            if want == "not-auth-error":
                if status in (401, 403) or status >= 500:
                    failures.append(f"{method} {template} as {cred}: {status} {body}")
            elif status not in want:
                failures.append(f"{method} {template} as {cred}: {status} (want {sorted(want)}) {body}")
    for sid in started:
        await server.admin("DELETE", f"/v1/sessions/{sid}")
    assert not failures, "\n".join(failures)
    assert seen >= 5 * 12


def _fill(template: str, session_id: str, site_id: str) -> str:
    out = template
    if template.startswith("/v1/sessions/"):
        out = template.replace("{id}", session_id)
    elif template.startswith("/v1/sites/"):
        out = template.replace("{id}", site_id)
    while "{" in out:
        start = out.index("{")
        out = out[:start] + str(uuid.uuid4()) + out[out.index("}", start) + 1:]
    return out


def _body(method: str, template: str) -> Any:
    if template == "/v1/sessions":
        return {"avatar": PRESET} if method == "POST" else None
    if template == "/v1/sessions/connect":
        return {"avatarId": "cooking-teacher"}
    return {} if method in ("POST", "PATCH", "PUT") else None


async def _ws_status(server: ServerHarness, path: str, token: str | None) -> int:
    url = server.base.replace("http", "ws", 1) + path + (f"?token={token}" if token else "")
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json"])
async def test_public_routes(server: ServerHarness, path: str) -> None:
    status, _, _ = await server.call("GET", path)
    assert status == 200
