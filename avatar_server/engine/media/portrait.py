"""The avatar's face: a generated portrait, or a decoded reference image.

Everything here runs once per avatar (cached) and never per frame. A
``Portrait`` is an RGB canvas a little larger than the video frame (the margin
lets the video track sway by moving a crop window) plus, for generated faces,
pre-rendered variants of the eye region (open / half / closed) and the mouth
region (closed → wide open), which the video track pastes per frame.

Reference images are decoded with PyAV (an aiortc dependency): only JPEG, PNG
and WebP, recognised by their magic bytes, with the matching FFmpeg demuxer
forced so untrusted bytes never reach format probing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import random
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import av
import numpy as np

from .eyes import EyePair, find_eyes

log = logging.getLogger(__name__)

FRAME = 512  # video frame edge (pixels)
MARGIN = 16  # sway room on each side
CANVAS = FRAME + 2 * MARGIN
MOUTH_LEVELS = 6  # mouth variants: 0 = closed … 5 = wide open
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_IMAGE_EDGE = 8192

_DEMUXERS = {"png": "png_pipe", "jpeg": "jpeg_pipe", "webp": "webp_pipe"}


@dataclass(frozen=True)
class Patch:
    """Pre-rendered variants of one canvas region (even-aligned for YUV 4:2:0)."""

    top: int
    left: int
    variants: tuple[np.ndarray, ...]  # each (h, w, 3) uint8 RGB


@dataclass(frozen=True)
class Portrait:
    canvas: np.ndarray  # (CANVAS, CANVAS, 3) uint8 RGB, mouth closed, eyes open
    eyes: Patch | None  # variants: open, half, closed
    mouth: Patch | None  # MOUTH_LEVELS variants
    accent: tuple[int, int, int]  # RGB of the speech glow
    generated: bool


# ---------------------------------------------------------------- image decode


def sniff_image(data: bytes) -> str | None:
    """``"png"``, ``"jpeg"``, ``"webp"`` from magic bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def load_reference(image: bytes | None) -> np.ndarray | None:
    """Decode a JPEG/PNG/WebP into an (h, w, 3) uint8 RGB array; None if unusable."""
    if not image or len(image) > MAX_IMAGE_BYTES:
        return None
    kind = sniff_image(image)
    if kind is None:
        return None
    try:
        with av.open(io.BytesIO(image), format=_DEMUXERS[kind]) as container:
            frame = next(container.decode(video=0))
            if not (0 < frame.width <= MAX_IMAGE_EDGE and 0 < frame.height <= MAX_IMAGE_EDGE):
                return None
            return frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, StopIteration, ValueError, IndexError) as exc:
        log.info("reference image not decodable (%s): %s", kind, type(exc).__name__)
        return None


def image_from_uri(uri: str | None) -> bytes | None:
    """Bytes of a ``data:image/...;base64,`` URI. Remote URLs are never fetched here."""
    if not uri or not uri.startswith("data:image/"):
        return None
    head, sep, payload = uri.partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


def cover_resize(rgb: np.ndarray, edge: int) -> np.ndarray:
    """Centre-crop to a square and scale to ``edge``×``edge`` (FFmpeg swscale)."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = np.ascontiguousarray(rgb[top : top + side, left : left + side])
    frame = av.VideoFrame.from_ndarray(square, format="rgb24")
    return frame.reformat(width=edge, height=edge, format="rgb24").to_ndarray()


# ---------------------------------------------------------------- drawing


def _grid(h: int, w: int, top: int = 0, left: int = 0) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[top : top + h, left : left + w].astype(np.float32)
    return yy, xx


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Anti-aliased coverage (0..1) of an ellipse."""
    d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    return np.clip((1.0 - d) * min(ry, rx) + 0.5, 0.0, 1.0)


def _paint(img: np.ndarray, mask: np.ndarray, color: tuple[float, float, float], alpha: float = 1.0) -> None:
    m = (mask * alpha)[..., None]
    img *= 1.0 - m
    img += m * np.asarray(color, dtype=np.float32)


def _shade(color: tuple[int, int, int], factor: float) -> tuple[float, float, float]:
    return tuple(float(min(255.0, c * factor)) for c in color)  # type: ignore[return-value]


_SKIN = [(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 134, 96), (141, 85, 54), (99, 62, 40)]
_HAIR = [
    (40, 28, 22),
    (86, 58, 36),
    (150, 102, 58),
    (214, 178, 110),
    (120, 40, 30),
    (60, 60, 70),
    (200, 200, 205),
]
_IRIS = [(70, 110, 160), (90, 130, 80), (110, 75, 45), (60, 50, 40), (120, 120, 130)]
_CLOTHES = [(52, 92, 160), (160, 60, 70), (60, 130, 100), (90, 70, 140), (200, 150, 60), (60, 60, 70)]
_BACKDROP = [
    ((30, 40, 70), (90, 110, 160)),
    ((60, 30, 60), (170, 110, 150)),
    ((20, 60, 60), (90, 160, 150)),
    ((50, 50, 50), (140, 140, 150)),
    ((70, 45, 25), (200, 150, 100)),
]

_FACE_CY, _FACE_CX = 250.0, CANVAS / 2
_EYE_Y, _EYE_DX = 246.0, 44.0
_MOUTH_Y = 330.0
_EYE_BOX = (226, _FACE_CX - 74, 40, 148)  # top, left, h, w (even)
_MOUTH_BOX = (302, _FACE_CX - 48, 56, 96)


def _even(v: float) -> int:
    return int(v) // 2 * 2


def _rng_for(seed: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))


def generate_portrait(seed: str) -> Portrait:
    """A deterministic cartoon portrait for ``seed`` (a preset id or a name)."""
    rng = _rng_for(seed)
    skin = rng.choice(_SKIN)
    hair = rng.choice(_HAIR)
    iris = rng.choice(_IRIS)
    clothes = rng.choice(_CLOTHES)
    bg_top, bg_bottom = rng.choice(_BACKDROP)
    hair_style = rng.choice(["short", "long", "bun", "bob"])
    face_rx = 100.0 + rng.uniform(-8, 8)
    face_ry = 132.0 + rng.uniform(-8, 8)

    yy, xx = _grid(CANVAS, CANVAS)
    img = np.empty((CANVAS, CANVAS, 3), dtype=np.float32)
    t = (yy / CANVAS)[..., None]
    img[:] = np.asarray(bg_top, np.float32) * (1 - t) + np.asarray(bg_bottom, np.float32) * t
    vignette = np.sqrt(((yy - CANVAS / 2) / CANVAS) ** 2 + ((xx - CANVAS / 2) / CANVAS) ** 2)
    img *= (1.0 - 0.5 * np.clip(vignette - 0.25, 0, 1))[..., None]

    cy, cx = _FACE_CY, _FACE_CX
    # hair behind the head
    if hair_style == "long":
        _paint(img, _ellipse(yy, xx, cy + 60, cx, face_ry + 90, face_rx + 34), hair)
    elif hair_style == "bob":
        _paint(img, _ellipse(yy, xx, cy + 10, cx, face_ry + 22, face_rx + 30), hair)
    elif hair_style == "bun":
        _paint(img, _ellipse(yy, xx, cy - face_ry - 8, cx, 42, 46), hair)
    # shoulders and neck
    _paint(img, _ellipse(yy, xx, CANVAS + 70, cx, 200, 250), clothes)
    neck = ((xx > cx - 38) & (xx < cx + 38) & (yy > cy + 60) & (yy < CANVAS - 110)).astype(np.float32)
    _paint(img, neck, _shade(skin, 0.86))
    _paint(img, _ellipse(yy, xx, CANVAS - 108, cx, 22, 40), _shade(skin, 0.86))
    # ears, face
    for side in (-1, 1):
        _paint(img, _ellipse(yy, xx, cy + 4, cx + side * (face_rx - 4), 22, 14), _shade(skin, 0.93))
    _paint(img, _ellipse(yy, xx, cy, cx, face_ry, face_rx), skin)
    # hair on top (fringe)
    fringe = _ellipse(yy, xx, cy - face_ry * 0.62, cx, face_ry * 0.55, face_rx + 6)
    fringe *= (yy < cy - face_ry * 0.38 + 10 * np.cos((xx - cx) / 30.0)).astype(np.float32)
    _paint(img, fringe, hair)
    # cheeks, nose
    for side in (-1, 1):
        _paint(img, _ellipse(yy, xx, cy + 42, cx + side * 52, 14, 20), (230, 120, 120), 0.18)
    _paint(img, _ellipse(yy, xx, cy + 40, cx + 4, 18, 7), _shade(skin, 0.85), 0.5)
    # eyebrows
    brow = _shade(hair, 0.8)
    for side in (-1, 1):
        arc = _ellipse(yy, xx, _EYE_Y - 22, cx + side * _EYE_DX, 5, 22)
        arc *= (yy < _EYE_Y - 20).astype(np.float32)
        _paint(img, arc, brow)

    # eyes: open variant drawn on the canvas, then half/closed derived from the skin
    top, left, h, w = _EYE_BOX
    left = _even(left)
    bare_eyes = img[top : top + h, left : left + w].copy()
    ey, ex = _grid(h, w, top, left)
    open_eyes = bare_eyes.copy()
    for side in (-1, 1):
        ecx = cx + side * _EYE_DX
        _paint(open_eyes, _ellipse(ey, ex, _EYE_Y, ecx, 12, 21), (250, 250, 250))
        _paint(open_eyes, _ellipse(ey, ex, _EYE_Y + 1, ecx, 10, 10), iris)
        _paint(open_eyes, _ellipse(ey, ex, _EYE_Y + 1, ecx, 4.5, 4.5), (15, 15, 20))
        _paint(open_eyes, _ellipse(ey, ex, _EYE_Y - 3, ecx + 3, 2.2, 2.2), (255, 255, 255))
    half_eyes = open_eyes.copy()
    closed_eyes = bare_eyes.copy()
    lid = _shade(skin, 0.95)
    for side in (-1, 1):
        ecx = cx + side * _EYE_DX
        upper = _ellipse(ey, ex, _EYE_Y, ecx, 13, 22) * (ey < _EYE_Y + 1).astype(np.float32)
        _paint(half_eyes, upper, lid)
        _paint(half_eyes, _ellipse(ey, ex, _EYE_Y + 1, ecx, 1.6, 21), (40, 30, 30))
        _paint(closed_eyes, _ellipse(ey, ex, _EYE_Y + 5, ecx, 1.8, 20), (40, 30, 30))
    img[top : top + h, left : left + w] = open_eyes
    eyes = Patch(
        top, left, tuple(np.clip(v, 0, 255).astype(np.uint8) for v in (open_eyes, half_eyes, closed_eyes))
    )

    # mouth variants
    top, left, h, w = _MOUTH_BOX
    left = _even(left)
    bare_mouth = img[top : top + h, left : left + w].copy()
    my, mx = _grid(h, w, top, left)
    lips = (196, 92, 96) if skin[0] > 200 else (150, 70, 70)
    variants = []
    for level in range(MOUTH_LEVELS):
        a = level / (MOUTH_LEVELS - 1)
        m = bare_mouth.copy()
        if level == 0:
            smile = _ellipse(my, mx, _MOUTH_Y - 8, cx, 12, 26) * (my > _MOUTH_Y - 2).astype(np.float32)
            _paint(m, smile, lips)
            _paint(m, _ellipse(my, mx, _MOUTH_Y + 2, cx, 1.8, 24), (90, 40, 45))
        else:
            ry, rx = 3 + 15 * a, 22 + 4 * a
            _paint(m, _ellipse(my, mx, _MOUTH_Y + ry / 2, cx, ry + 3, rx + 3), lips)
            _paint(m, _ellipse(my, mx, _MOUTH_Y + ry / 2, cx, ry, rx), (70, 20, 30))
            if a > 0.3:
                teeth = _ellipse(my, mx, _MOUTH_Y + ry / 2, cx, ry, rx) * (my < _MOUTH_Y + 4).astype(
                    np.float32
                )
                _paint(m, teeth, (240, 240, 235))
            _paint(m, _ellipse(my, mx, _MOUTH_Y + ry * 1.2, cx, ry * 0.4, rx * 0.5), (200, 90, 100), 0.6)
        variants.append(np.clip(m, 0, 255).astype(np.uint8))
    img[top : top + h, left : left + w] = variants[0]
    mouth = Patch(top, left, tuple(variants))

    canvas = np.clip(img, 0, 255).astype(np.uint8)
    accent = tuple(int(c) for c in _shade(clothes, 1.4))
    return Portrait(canvas=canvas, eyes=eyes, mouth=mouth, accent=accent, generated=True)  # type: ignore[arg-type]


def photo_portrait(rgb: np.ndarray, seed: str) -> Portrait:
    """A reference photo, cover-cropped to the canvas. It blinks when ``eyes.find_eyes`` is sure
    where its eyes are; it has no mouth patch (the speech shows as the glow)."""
    canvas = cover_resize(rgb, CANVAS)
    accent = _rng_for(seed).choice(_CLOTHES)
    found = find_eyes(canvas)
    eyes = photo_eye_patch(canvas, found) if found is not None else None
    return Portrait(canvas=canvas, eyes=eyes, mouth=None, accent=_shade_int(accent), generated=False)


def photo_eye_patch(canvas: np.ndarray, eyes: EyePair) -> Patch:
    """Open / half / closed variants of a photo's eye region: lids in the colour of the skin just
    above each eye, soft-edged, with a lash line where they close."""
    ry, rx = eyes.ry, eyes.rx
    (ly, lx), (r_y, r_x) = eyes.left, eyes.right
    top = max(0, _even(min(ly, r_y) - 2.0 * ry))
    bottom = min(CANVAS, _even(max(ly, r_y) + 2.0 * ry) + 2)
    left = max(0, _even(lx - 1.8 * rx))
    right = min(CANVAS, _even(r_x + 1.8 * rx) + 2)
    h, w = bottom - top, right - left
    bare = canvas[top:bottom, left:right].astype(np.float32)
    yy, xx = _grid(h, w, top, left)
    half, closed = bare.copy(), bare.copy()
    for cy, cx in ((ly, lx), (r_y, r_x)):
        lid = _lid_colour(canvas, cy, cx, ry, rx, eyes.skin)
        lash = _shade(tuple(int(c) for c in lid), 0.45)  # type: ignore[arg-type]
        soft = _soft_ellipse(yy, xx, cy, cx, ry * 1.6, rx * 1.35)
        _paint(closed, soft, lid)
        _paint(closed, _ellipse(yy, xx, cy + ry * 0.45, cx, 1.2 + ry * 0.08, rx * 1.05), lash, 0.8)
        _paint(half, soft * (yy < cy).astype(np.float32), lid)
        _paint(half, _ellipse(yy, xx, cy, cx, 1.2 + ry * 0.08, rx * 1.1), lash, 0.7)
    return Patch(top, left, tuple(np.clip(v, 0, 255).astype(np.uint8) for v in (bare, half, closed)))


def _soft_ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Coverage (0..1) of an ellipse whose edge fades over its outer quarter."""
    d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    return np.clip((1.0 - d) * 4.0, 0.0, 1.0)


def _lid_colour(canvas: np.ndarray, cy: float, cx: float, ry: float, rx: float,
                skin: tuple[int, int, int]) -> tuple[float, float, float]:
    """The median colour of the strip between the eye and its brow, or the face's skin."""
    t, b = int(cy - 2.2 * ry), int(cy - 1.2 * ry)
    le, ri = int(cx - 0.8 * rx), int(cx + 0.8 * rx)
    strip = canvas[max(0, t) : max(0, b), max(0, le) : max(0, ri)].reshape(-1, 3).astype(np.float32)
    # only the strip's skin: not the brow, the lashes or hair that may reach into it
    near = strip[np.linalg.norm(strip - np.asarray(skin, np.float32), axis=1) < 60]
    if len(near) < 8:
        return tuple(float(c) for c in skin)  # type: ignore[return-value]
    return tuple(float(c) for c in np.median(near, axis=0))  # type: ignore[return-value]


def _shade_int(color: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = _shade(color, 1.4)
    return int(r), int(g), int(b)


# ---------------------------------------------------------------- avatar → portrait


def avatar_seed(avatar: dict[str, Any]) -> str:
    for key in ("presetId", "id", "avatarId", "name"):
        value = avatar.get(key)
        if isinstance(value, str) and value:
            return value
    return "avatar"


def avatar_image(avatar: dict[str, Any]) -> bytes | None:
    """Bytes of the avatar's reference image when it is carried inline (data URI)."""
    for key in ("processedImageUri", "referenceImage", "referenceImageUri"):
        value = avatar.get(key)
        if isinstance(value, str):
            data = image_from_uri(value)
            if data:
                return data
    return None


def portrait_for(avatar: dict[str, Any]) -> Portrait:
    """The portrait for an avatar record: its decodable inline image, else a generated face."""
    seed = avatar_seed(avatar)
    image = avatar_image(avatar)
    if image is not None:
        return _cached_photo(hashlib.sha256(image).hexdigest(), image, seed)
    return _cached_generated(seed)


@lru_cache(maxsize=64)
def _cached_generated(seed: str) -> Portrait:
    return generate_portrait(seed)


_photo_cache: dict[str, Portrait] = {}
_photo_lock = threading.Lock()


def _cached_photo(digest: str, image: bytes, seed: str) -> Portrait:
    with _photo_lock:
        cached = _photo_cache.get(digest)
    if cached is not None:
        return cached
    rgb = load_reference(image)
    portrait = photo_portrait(rgb, seed) if rgb is not None else _cached_generated(seed)
    with _photo_lock:
        if len(_photo_cache) >= 32:
            _photo_cache.pop(next(iter(_photo_cache)))
        _photo_cache[digest] = portrait
    return portrait
