"""Helpers for the engine-catalog tests: real images, the OpenAPI schemas, polling an avatar."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import jsonschema
import numpy as np

from .harness import EngineHarness

VERSION = {"X-Runway-Version": "2024-11-06"}
_ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = _ROOT / "tests" / "data" / "runway-characters-openapi.json"  # Runway's published OpenAPI subset
# the keys of Runway's avatar object (the engine's, and the server's that passes it through)
AVATAR_KEYS = frozenset({"id", "name", "personality", "startScript", "voice", "referenceImageUri",
                         "processedImageUri", "documentIds", "createdAt", "updatedAt", "status"})


def png_uri(rgb: tuple[int, int, int] = (200, 30, 40), size: tuple[int, int] = (96, 64)) -> str:
    """A real PNG (``size`` = width, height) of one colour, as a data URI."""
    w, h = size
    frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), rgb, np.uint8), format="rgb24")
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = w, h, "rgb24", Fraction(1, 25)
    data = b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])
    return "data:image/png;base64," + base64.b64encode(data).decode()


def mean_rgb(data_uri: str) -> tuple[float, float, float]:
    """Decode a JPEG/PNG data URI and return its mean colour."""
    raw = base64.b64decode(data_uri.split(",", 1)[1])
    with av.open(io.BytesIO(raw)) as container:
        rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")
    r, g, b = rgb.reshape(-1, 3).mean(axis=0)
    return float(r), float(g), float(b)


def avatar_body(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Ada",
        "referenceImage": png_uri(),
        "personality": "A cheerful guide to the Acme museum.",
        "voice": {"type": "runway-live-preset", "presetId": "clara"},
    }
    body.update(kw)
    return body


@functools.cache
def spec() -> dict[str, Any]:
    """Runway's OpenAPI subset (a copy of the published file, kept with the tests)."""
    return json.loads(SPEC_PATH.read_text())


def response_schema(path: str, method: str, status: str = "200") -> dict[str, Any]:
    return spec()["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]


def validate(instance: Any, path: str, method: str) -> None:
    """The body matches Runway's response schema (additionalProperties false: no extra keys)."""
    jsonschema.Draft202012Validator(response_schema(path, method)).validate(instance)


async def call(engine: EngineHarness, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, data, _ = await engine.call(method, path, token=engine.key, json_body=body, headers=VERSION)
    return status, data


async def wait_status(engine: EngineHarness, avatar_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        code, last = await call(engine, "GET", f"/v1/avatars/{avatar_id}")
        assert code == 200, last
        if last["status"] == status:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"avatar never became {status}: {last}")
