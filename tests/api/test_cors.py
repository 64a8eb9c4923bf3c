"""CORS: preflight answered for allowed origins only, on browser-facing routes only; responses carry
the exact origin (never ``*``) with ``Vary: Origin``; admin routes carry no CORS headers at all.
Security headers on every response; body limits per route with 413 in our error shape."""

from __future__ import annotations

import pytest

from ..harness import ServerHarness

SHOP = "https://shop.example.com"
BLOG = "https://blog.example.org"


async def _site(server: ServerHarness, origin: str) -> dict:
    status, site = await server.admin("POST", "/v1/sites", {"name": origin, "allowedOrigins": [origin],
                                                            "avatarIds": ["cooking-teacher"],
                                                            "maxConcurrentSessions": 5})
    assert status == 201
    return site


async def _preflight(server: ServerHarness, path: str, origin: str | None, method: str = "POST") -> tuple[int, dict]:
    headers = {"Access-Control-Request-Method": method,
               "Access-Control-Request-Headers": "authorization, content-type"}
    if origin is not None:
        headers["Origin"] = origin
    status, _, h = await server.call("OPTIONS", path, headers=headers)
    return status, dict(h)


@pytest.mark.parametrize("path,method", [("/v1/sessions", "POST"), ("/v1/sessions/connect", "POST"),
                                         ("/v1/sessions/5b0c6c51-0b8f-4b5e-9a39-1f0f3c1f2a11", "DELETE")])
async def test_preflight_allowed_origin(server: ServerHarness, path: str, method: str) -> None:
    await _site(server, SHOP)
    status, h = await _preflight(server, path, SHOP, method)
    assert status == 204
    assert h["Access-Control-Allow-Origin"] == SHOP
    assert method in h["Access-Control-Allow-Methods"]
    assert "authorization" in h["Access-Control-Allow-Headers"].lower()
    assert "Origin" in h["Vary"]
    assert "Access-Control-Allow-Credentials" not in h


@pytest.mark.parametrize("origin", ["https://evil.example.com", "null", None, "https://shop.example.com:8443"])
async def test_preflight_refused_for_other_origins(server: ServerHarness, origin: str | None) -> None:
    await _site(server, SHOP)
    status, h = await _preflight(server, "/v1/sessions/connect", origin)
    assert status == 403
    assert "Access-Control-Allow-Origin" not in h


@pytest.mark.parametrize("path,method", [("/v1/sites", "POST"), ("/v1/sessions", "GET"),
                                         ("/v1/sites/5b0c6c51-0b8f-4b5e-9a39-1f0f3c1f2a11", "PATCH")])
async def test_admin_routes_have_no_cors(server: ServerHarness, path: str, method: str) -> None:
    await _site(server, SHOP)
    status, h = await _preflight(server, path, SHOP, method)
    assert status in (403, 404, 405)
    assert not [k for k in h if k.lower().startswith("access-control-")]
    status, _, h = await server.call(method, path, token=server.settings.admin_token, headers={"Origin": SHOP},
                                     json_body={} if method != "GET" else None)
    assert not [k for k in h if k.lower().startswith("access-control-")]


async def test_responses_echo_only_the_right_sites_origin(server: ServerHarness) -> None:
    shop = await _site(server, SHOP)
    await _site(server, BLOG)
    body = {"avatarId": "cooking-teacher"}
    # the key's own origin: allowed, exact origin echoed
    status, created, h = await server.call("POST", "/v1/sessions", token=shop["publishableKey"],
                                           json_body={"avatar": {"type": "runway-preset",
                                                                 "presetId": "cooking-teacher"}},
                                           headers={"Origin": SHOP})
    assert status == 201
    assert h["Access-Control-Allow-Origin"] == SHOP and "Origin" in h["Vary"]
    assert "Retry-After" in h["Access-Control-Expose-Headers"]
    # another site's origin with this key: refused, and the refusal is not readable from there
    status, err, h = await server.call("POST", "/v1/sessions/connect", token=shop["publishableKey"],
                                       json_body=body, headers={"Origin": BLOG})
    assert status == 403 and err["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in h and "Origin" in h["Vary"]
    # a client token: its session's site decides
    ct = created["clientToken"]
    for origin, allowed in ((SHOP, True), (BLOG, False), ("https://evil.example.com", False)):
        status, _, h = await server.call("GET", f"/v1/sessions/{created['id']}", token=ct,
                                         headers={"Origin": origin})
        assert status == 200
        assert h.get("Access-Control-Allow-Origin") == (origin if allowed else None)
    # no credential from a site's origin: the error is readable (the widget can show it), never '*'
    status, _, h = await server.call("POST", "/v1/sessions", json_body=body, headers={"Origin": BLOG})
    assert status == 401 and h["Access-Control-Allow-Origin"] == BLOG
    status, _, h = await server.call("DELETE", f"/v1/sessions/{created['id']}", token=ct,
                                     headers={"Origin": SHOP})
    assert status == 200 and h["Access-Control-Allow-Origin"] == SHOP
    # the admin token on a browser route: answered, but for no site's page to read
    for method in ("GET", "DELETE"):
        status, _, h = await server.call(method, f"/v1/sessions/{created['id']}",
                                         token=server.settings.admin_token, headers={"Origin": SHOP})
        assert status == 200 and "Access-Control-Allow-Origin" not in h, (method, dict(h))
    status, started, h = await server.call("POST", "/v1/sessions", token=server.settings.admin_token,
                                     json_body={"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}},
                                     headers={"Origin": SHOP})
    assert status == 201 and "Access-Control-Allow-Origin" not in h
    await server.admin("DELETE", f"/v1/sessions/{started['id']}")


async def test_origin_removed_from_site_stops_preflight(server: ServerHarness) -> None:
    site = await _site(server, SHOP)
    assert (await _preflight(server, "/v1/sessions", SHOP))[0] == 204
    status, _ = await server.admin("PATCH", f"/v1/sites/{site['id']}", {"allowedOrigins": [BLOG]})
    assert status == 200
    assert (await _preflight(server, "/v1/sessions", SHOP))[0] == 403
    assert (await _preflight(server, "/v1/sessions", BLOG))[0] == 204
    await server.admin("DELETE", f"/v1/sites/{site['id']}")
    assert (await _preflight(server, "/v1/sessions", BLOG))[0] == 403


async def test_security_headers_everywhere(server: ServerHarness) -> None:
    for method, path, token in [("GET", "/healthz", None), ("GET", "/v1/sites", server.settings.admin_token),
                                ("GET", "/v1/nothing-here", None), ("POST", "/v1/sessions", None)]:
        status, _, h = await server.call(method, path, token=token)
        assert h["X-Content-Type-Options"] == "nosniff", path
        assert h["X-Frame-Options"] == "DENY", path
        assert h["Referrer-Policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in h["Content-Security-Policy"], path
    _, _, h = await server.call("GET", "/v1/sites", token=server.settings.admin_token)
    assert h["Cache-Control"] == "no-store"


async def test_body_limits(server: ServerHarness) -> None:
    big = b'{"name": "' + b"x" * (70 * 1024) + b'"}'
    status, err, _ = await server.call("POST", "/v1/sites", token=server.settings.admin_token, data=big,
                                       headers={"Content-Type": "application/json"})
    assert status == 413 and err["error"]["code"] == "payload_too_large" and err["error"]["limit"] == 64 * 1024

    async def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(70):
            yield b"x" * 1024

    status, err, _ = await server.call("POST", "/v1/sessions", token=server.settings.admin_token, data=chunks(),
                                       headers={"Content-Type": "application/json"})
    assert status == 413 and err["error"]["code"] == "payload_too_large"
    # avatar routes have room for a 5 MB data-URI image: a 5.5 MB body is read (and judged on its content)
    huge = b'{"name": "' + b"x" * (5 * 1024 * 1024 + 512 * 1024) + b'"}'
    status, err, _ = await server.call("POST", "/v1/avatars", token=server.settings.admin_token, data=huge,
                                       headers={"Content-Type": "application/json"})
    assert status != 413, err
    too_big = b"x" * (6 * 1024 * 1024 + 1)
    status, err, _ = await server.call("POST", "/v1/avatars", token=server.settings.admin_token, data=too_big,
                                       headers={"Content-Type": "application/json"})
    assert status == 413 and err["error"]["limit"] == 6 * 1024 * 1024 and err["error"]["field"] == "referenceImage"
