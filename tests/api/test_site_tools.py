"""Sites carry tools (issue 12, step 1): Runway's tool objects validated as Runway does, a ``backend_rpc``
tool's own ``url`` (the webhook target rules) and ``timeoutSeconds``; sessions started with the site's key
get its tools; the ``url`` never goes upstream (checked in the engine that stands in for Runway) and never
reaches a browser (site answers are admin-only; the session's public view has no tools)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from avatar_server.engine import ENGINE_STATE

from ..harness import ENGINE_KEY, EngineHarness, ServerHarness, fast_engine_config, make_settings

ORIGIN = "https://shop.example.com"
LOOKUP = {"type": "backend_rpc", "name": "lookup_order", "description": "Look up an order by its number",
          "parameters": [{"name": "orderId", "description": "the order number", "type": "string"}],
          "url": "https://tools.example.com/rpc", "timeoutSeconds": 5}
SHOW = {"type": "client_event", "name": "show_product", "description": "Show a product card on the page",
        "parameters": [{"name": "product", "description": "which product", "type": "string"}]}


def site_body(**kw: Any) -> dict[str, Any]:
    return {"name": "Shop", "allowedOrigins": [ORIGIN], "avatarIds": ["cooking-teacher"],
            "maxConcurrentSessions": 5, **kw}


@pytest.fixture
async def tools_runway_server(redis_url: str, data_dir: Path, engine: EngineHarness) -> AsyncIterator[ServerHarness]:
    """Runway mode against the separate engine, private targets allowed (no DNS needed for tool urls)."""
    settings = make_settings(data_dir, redis_url, runway_secret=ENGINE_KEY, runway_base_url=engine.base,
                             allow_private_targets=True)
    h = await ServerHarness(settings).start()
    try:
        yield h
    finally:
        await h.stop_all()


@pytest.fixture
async def tools_server(redis_url: str, data_dir: Path) -> AsyncIterator[ServerHarness]:
    """Engine mode, private targets allowed (no DNS here: the tool urls are not resolved then)."""
    h = await ServerHarness(make_settings(data_dir, redis_url, allow_private_targets=True),
                            fast_engine_config()).start()
    try:
        yield h
    finally:
        await h.stop_all()


async def test_tool_urls_follow_the_webhook_target_rules(server: ServerHarness) -> None:
    status, site = await server.admin("POST", "/v1/sites", site_body())
    assert status == 201 and site["tools"] == [], site
    for url, code in (("http://tools.example.com/x", "invalid_webhook_url"),
                      ("https://127.0.0.1/x", "webhook_url_not_allowed"),
                      ("https://localhost/x", "webhook_url_not_allowed")):
        status, err = await server.admin("PATCH", f"/v1/sites/{site['id']}",
                                         {"tools": [SHOW, {**LOOKUP, "url": url}]})
        assert status == 422 and err["error"]["field"] == "tools.1.url" and err["error"]["code"] == code, err
        status, err = await server.admin("POST", "/v1/sites", site_body(tools=[{**LOOKUP, "url": url}]))
        assert status == 422 and err["error"]["field"] == "tools.0.url", err


async def test_site_tools_are_validated_like_runways(tools_server: ServerHarness) -> None:
    server = tools_server
    status, site = await server.admin("POST", "/v1/sites", site_body(tools=[SHOW, LOOKUP]))
    assert status == 201, site
    assert [t["name"] for t in site["tools"]] == ["show_product", "lookup_order"]
    assert site["tools"][1]["url"] == LOOKUP["url"] and site["tools"][1]["timeoutSeconds"] == 5
    cases: list[tuple[list[Any], str]] = [
        ([{**LOOKUP, "url": None}], "tools.0"),  # a backend_rpc tool needs its url
        ([{k: v for k, v in LOOKUP.items() if k != "url"}], "tools.0"),
        ([{**SHOW, "url": "https://tools.example.com/x"}], "tools.0"),  # url only on backend_rpc
        ([{**SHOW, "name": "1bad"}], "tools.0.name"),
        ([{**SHOW, "type": "webhook"}], "tools.0.type"),
        ([{**SHOW, "description": ""}], "tools.0.description"),
        ([{**SHOW, "parameters": [{"name": "p", "description": "d", "type": "string", "required": "yes"}]}],
         "tools.0.parameters.0.required"),
        ([SHOW, SHOW], "tools"),  # names are unique
        ([{**SHOW, "name": f"t{i}"} for i in range(21)], "tools"),
        ([{**LOOKUP, "timeoutSeconds": 0}], "tools.0.timeoutSeconds"),
        ([{**LOOKUP, "timeoutSeconds": 31}], "tools.0.timeoutSeconds"),
        ([{**LOOKUP, "extra": 1}], "tools.0.extra"),
    ]
    for tools, field in cases:
        status, err = await server.admin("POST", "/v1/sites", site_body(tools=tools))
        assert status == 422 and err["error"]["field"] == field, (tools, err)
        status, err = await server.admin("PATCH", f"/v1/sites/{site['id']}", {"tools": tools})
        assert status == 422 and err["error"]["field"] == field, (tools, err)
    status, err = await server.admin("PATCH", f"/v1/sites/{site['id']}", {"tools": None})
    assert status == 422 and err["error"]["field"] == "tools", err
    # PATCH replaces the list; [] removes them
    status, patched = await server.admin("PATCH", f"/v1/sites/{site['id']}", {"tools": [SHOW]})
    assert status == 200 and [t["name"] for t in patched["tools"]] == ["show_product"], patched
    status, got = await server.admin("GET", f"/v1/sites/{site['id']}")
    assert status == 200 and got["tools"] == patched["tools"]
    status, patched = await server.admin("PATCH", f"/v1/sites/{site['id']}", {"tools": []})
    assert status == 200 and patched["tools"] == []
    # a site's GET is admin-only: its publishable key does not read it
    status, _, _ = await server.call("GET", f"/v1/sites/{site['id']}", token=site["publishableKey"],
                                     headers={"Origin": ORIGIN})
    assert status in (401, 403)


async def test_sessions_of_the_site_get_its_tools_without_url_upstream(tools_runway_server: ServerHarness,
                                                                      engine: EngineHarness) -> None:
    server = tools_runway_server
    status, site = await server.admin("POST", "/v1/sites", site_body(tools=[SHOW, LOOKUP]))
    assert status == 201, site
    key = site["publishableKey"]
    browser = {"Origin": ORIGIN}
    # a visitor may not bring tools of its own
    status, err, _ = await server.call("POST", "/v1/sessions", token=key, headers=browser,
                                       json_body={"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"},
                                                  "tools": [SHOW]})
    assert status == 422 and err["error"]["field"] == "tools", err
    status, created, _ = await server.call("POST", "/v1/sessions", token=key, headers=browser,
                                           json_body={"avatar": {"type": "runway-preset",
                                                                 "presetId": "cooking-teacher"}})
    assert status == 201, created
    rec = await server.wait_for(created["id"], lambda r: r["upstreamId"] is not None,
                                token=created["clientToken"])
    # the browser's view of the session: no tools, no url anywhere
    assert "tools" not in rec and "tools.example.com" not in str(rec)
    upstream = engine.app[ENGINE_STATE].sessions[rec["upstreamId"]]
    assert upstream.tools == [
        {k: v for k, v in SHOW.items()} | {"parameters": [{**SHOW["parameters"][0], "required": True}]},
        {k: v for k, v in LOOKUP.items() if k not in ("url", "timeoutSeconds")}
        | {"parameters": [{**LOOKUP["parameters"][0], "required": True}]},
    ]
    # an admin start without tools sends none
    status, admin_start = await server.admin("POST", "/v1/sessions",
                                             {"avatar": {"type": "runway-preset", "presetId": "cooking-teacher"}})
    assert status == 201, admin_start
    arec = await server.wait_for(admin_start["id"], lambda r: r["upstreamId"] is not None)
    assert engine.app[ENGINE_STATE].sessions[arec["upstreamId"]].tools == []
    for sid in (created["id"], admin_start["id"]):
        await server.admin("DELETE", f"/v1/sessions/{sid}")
