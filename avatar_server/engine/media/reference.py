"""An avatar's reference image, processed once when the avatar is created or its image replaced.

The engine is offline: it never fetches ``https://`` or ``runway://`` references (the avatar
still becomes READY and the media peer draws a generated portrait). A ``data:image/...;base64,``
reference is decoded here (JPEG, PNG or WebP by their magic bytes, see ``portrait.load_reference``);
one it cannot decode makes the avatar FAILED.

For a decoded image the engine keeps:

- ``processed``: the face the media peer shows, a JPEG data URI cover-cropped to the portrait
  canvas (``portrait.CANVAS`` square) — what Runway's "optimize" step would produce;
- ``reference_preview`` / ``processed_preview``: low-resolution JPEG data URIs for the avatar
  object's ``referenceImageUri`` / ``processedImageUri`` (Runway documents both as previews).
"""

from __future__ import annotations

import base64
import fractions
from dataclasses import dataclass

import av
import numpy as np

from avatar_server.engine.media.portrait import CANVAS, cover_resize, image_from_uri, load_reference

PREVIEW_EDGE = 128

UNDECODABLE = "The reference image could not be decoded: expected a base64 JPEG, PNG or WebP image"


@dataclass(frozen=True)
class ProcessedReference:
    ok: bool
    failure_reason: str | None = None
    reference_preview: str | None = None  # referenceImageUri
    processed_preview: str | None = None  # processedImageUri (once READY)
    processed: str | None = None  # the media peer's face


def process_reference(uri: str) -> ProcessedReference:
    """Blocking (run it in an executor). Remote references are not fetched: ``ok`` with no image."""
    if not uri.startswith("data:"):
        return ProcessedReference(ok=True, reference_preview=uri)
    rgb = load_reference(image_from_uri(uri))
    if rgb is None:
        return ProcessedReference(ok=False, failure_reason=UNDECODABLE)
    square = cover_resize(rgb, CANVAS)
    return ProcessedReference(
        ok=True,
        reference_preview=_jpeg_uri(_fit(rgb, PREVIEW_EDGE)),
        processed_preview=_jpeg_uri(cover_resize(rgb, PREVIEW_EDGE)),
        processed=_jpeg_uri(square),
    )


def _fit(rgb: np.ndarray, edge: int) -> np.ndarray:
    """Scale so the longer side is at most ``edge`` (aspect kept, even dimensions for 4:2:0)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, edge / max(h, w))
    width, height = max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


def _jpeg_uri(rgb: np.ndarray) -> str:
    h, w = rgb.shape[:2]
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = w - w % 2, h - h % 2
    codec.pix_fmt = "yuvj420p"
    codec.time_base = fractions.Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: codec.height, : codec.width]), format="rgb24")
    packets = [*codec.encode(frame.reformat(format="yuvj420p")), *codec.encode(None)]
    data = b"".join(bytes(p) for p in packets)
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
