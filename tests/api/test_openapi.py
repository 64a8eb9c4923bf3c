"""/openapi.json describes every served route from the pydantic models; docs/api.md is in step with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from avatar_server.api.openapi import build_spec, served_routes, to_markdown, undocumented
from avatar_server.api.openapi.cli import spec_for_default_app
from avatar_server.models.session_views import SessionConnected, SessionCreated, SessionView
from avatar_server.models.sites import Site

from ..harness import ServerHarness

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_docs_api_md_is_in_step() -> None:
    expected = to_markdown(spec_for_default_app())
    assert DOCS.read_text() == expected, (
        "docs/api.md is out of step: python -m avatar_server.api.openapi --markdown > docs/api.md"
    )


async def test_live_document_covers_every_route(server: ServerHarness) -> None:
    assert server.app is not None
    assert undocumented(server.app) == [], "add rows for these routes with avatar_server.api.openapi.register(...)"
    status, spec, headers = await server.call("GET", "/openapi.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert spec == build_spec(served_routes(server.app))
    assert spec["openapi"].startswith("3.1")
    for path in ("/v1/sessions", "/v1/sessions/connect", "/v1/sessions/{id}", "/v1/sites", "/v1/sites/{id}",
                 "/v1/sites/{id}/rotate-key"):
        assert path in spec["paths"], path
    site_create = spec["components"]["schemas"]["SiteCreate"]
    assert set(site_create["required"]) == {"name", "allowedOrigins", "avatarIds", "maxConcurrentSessions"}
    post = spec["paths"]["/v1/sessions"]["post"]
    assert {"admin": []} in post["security"] and {"publishableKey": []} in post["security"]
    assert "429" in post["responses"]


@pytest.mark.parametrize("model", [SessionCreated, SessionConnected, SessionView, Site])
def test_documented_models_have_no_secret_fields_by_accident(model: type) -> None:
    # the only credential fields a browser ever receives are these, on purpose
    allowed = {"clientToken", "token", "publishableKey", "keyRotatedAt"}
    names = {n for n in model.model_fields if "token" in n.lower() or "key" in n.lower() or "secret" in n.lower()}
    assert names <= allowed, names


async def test_live_answers_match_their_models(server: ServerHarness) -> None:
    _, site = await server.admin("POST", "/v1/sites", {"name": "x", "allowedOrigins": ["https://a.example"],
                                                       "avatarIds": ["cooking-teacher"], "maxConcurrentSessions": 2})
    Site.model_validate(site)
    _, created = await server.admin("POST", "/v1/sessions", {"avatar": {"type": "runway-preset",
                                                                       "presetId": "cooking-teacher"}})
    SessionCreated.model_validate(created)
    _, connected = await server.admin("POST", "/v1/sessions/connect", {"avatarId": "cooking-teacher"})
    SessionConnected.model_validate(connected)
    for sid in (created["id"], connected["sessionId"]):
        _, rec = await server.admin("DELETE", f"/v1/sessions/{sid}")
        assert set(rec) == set(SessionView.model_fields)
        SessionView.model_validate(rec)
