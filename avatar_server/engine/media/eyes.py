"""Finding the eyes in a reference photo, so that a photo avatar blinks too.

No model and no landmark library: a head-and-shoulders portrait is assumed, and a heuristic
has to be sure before it paints anything. On a quarter-size copy of the canvas:

1. skin — pixels whose YCbCr chroma lies in the classic skin range;
2. the face — the widest run of skin in the rows around the picture's centre, and the first
   row from the top where a run is at least half that wide (hair and forehead above it);
3. the eyes — in a band below the face top, in each half of the face, the spot with the
   most "eye": dark (iris, pupil, lashes) with something bright beside it (the sclera),
   against the skin's own brightness;
4. sure enough? — both spots clearly darker than the skin, at about the same height, a
   plausible distance apart and about symmetric around the face's centre. Otherwise
   ``find_eyes`` answers None and the photo simply does not blink (it still sways, breathes
   and glows with the speech).

``portrait.photo_portrait`` then pre-renders the blink: half and closed lids painted over each eye in the
colour of the skin just above it, with a soft edge and a lash line. Runs once per avatar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SCALE = 4  # the search runs on a 1/SCALE copy


@dataclass(frozen=True)
class EyePair:
    """Eye centres and the eye half-size, in canvas pixels."""

    left: tuple[float, float]  # (y, x)
    right: tuple[float, float]
    ry: float
    rx: float
    skin: tuple[int, int, int]  # median RGB of the face's skin


def _ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return y, cb, cr


def _filter(img: np.ndarray, h: int, w: int, fn: str) -> np.ndarray:
    """A min/max/mean filter over (h, w) windows, same size as ``img`` (edges padded)."""
    padded = np.pad(img, ((h // 2, h - 1 - h // 2), (w // 2, w - 1 - w // 2)), mode="edge")
    windows = sliding_window_view(padded, (h, w))
    return getattr(windows, fn)(axis=(2, 3))


def _longest_run(row: np.ndarray, around: int) -> tuple[int, int]:
    """(start, end) of the run of True in ``row`` holding index ``around`` (end exclusive)."""
    if not row[around]:
        return around, around
    start = around
    while start > 0 and row[start - 1]:
        start -= 1
    end = around + 1
    while end < len(row) and row[end]:
        end += 1
    return start, end


def find_eyes(canvas: np.ndarray) -> EyePair | None:
    """The eyes of a head-and-shoulders photo (``canvas``: (N, N, 3) uint8 RGB), or None."""
    small = canvas[SCALE // 2 :: SCALE, SCALE // 2 :: SCALE]
    n = small.shape[0]
    y, cb, cr = _ycbcr(small)
    skin = (cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173) & (y > 35)
    # tidy the mask: a pixel is skin when most of its 3x3 neighbourhood is
    skin = _filter(skin.astype(np.float32), 3, 3, "mean") > 0.5
    centre = n // 2

    # the face's width: the widest skin run through the centre column in the middle rows
    widths = []
    for r in range(int(n * 0.2), int(n * 0.75)):
        s, e = _longest_run(skin[r], centre)
        if s > 0 and e < n:  # a run that reaches the border is backdrop, not face
            widths.append((e - s, r, s, e))
    if not widths:
        return None
    width, _, _, _ = max(widths)
    if width < n * 0.18 or width > n * 0.9:
        return None
    # the face top: the first row (from the top) whose run through the centre is half as wide
    top = next((r for w_, r, _, _ in sorted(widths, key=lambda t: t[1]) if w_ >= width * 0.5), None)
    if top is None:
        return None
    # the face's horizontal extent where it is widest in the upper face
    upper = [t for t in widths if top <= t[1] <= top + width]
    _, _, left, right = max(upper)
    face_cx = (left + right) / 2
    face_w = right - left
    box = (slice(top, min(n, top + face_w)), slice(left, right))
    face_skin = skin[box]
    if face_skin.sum() < 30:
        return None
    # the face's own skin: the brighter part of the skin-coloured pixels (brown hair, beards and
    # shadows share the skin's hue, but are darker)
    lum = y[box][face_skin]
    bright = lum >= np.percentile(lum, 60)
    skin_rgb = tuple(int(c) for c in np.median(small[box][face_skin][bright], axis=0))
    skin_y = float(np.median(lum[bright]))

    # the eye band, and the "eye" score of every spot in it
    band_top, band_bottom = int(top + face_w * 0.12), int(min(n - 2, top + face_w * 0.75))
    if band_bottom - band_top < 4:
        return None
    dark = _filter(y, 3, 3, "mean")
    low = _filter(dark, 3, 5, "min")
    high = _filter(y, 3, 7, "max")
    score = (skin_y - low) + 0.5 * (high - low)
    eyes = []
    for lo, hi in ((left + face_w * 0.08, face_cx - face_w * 0.06), (face_cx + face_w * 0.06, right - face_w * 0.08)):
        lo_i, hi_i = int(lo), int(hi)
        if hi_i - lo_i < 3:
            return None
        region = score[band_top:band_bottom, lo_i:hi_i]
        ry, rx = np.unravel_index(int(np.argmax(region)), region.shape)
        ey, ex = band_top + ry, lo_i + rx
        # centre it on the eye: the middle of what is not skin around the spot (sclera, iris)
        dy, dx = max(1, int(face_w * 0.06)), max(2, int(face_w * 0.16))
        win = (slice(max(0, ey - dy), ey + dy + 1), slice(max(0, ex - dx), ex + dx + 1))
        ys, xs = np.nonzero(~skin[win])
        if len(ys):
            ey, ex = int(round(win[0].start + ys.mean())), int(round(win[1].start + xs.mean()))
        eyes.append((ey, ex, float(low[ey, ex])))
    (ly, lx, ldark), (ry_, rx_, rdark) = eyes

    # sure enough?
    if max(ldark, rdark) > skin_y * 0.7:  # no iris, pupil or lashes: nothing clearly darker than skin
        return None
    if abs(ly - ry_) > face_w * 0.09:
        return None
    gap = rx_ - lx
    if not face_w * 0.25 <= gap <= face_w * 0.7:
        return None
    if abs((lx + rx_) / 2 - face_cx) > face_w * 0.12:
        return None

    def full(yx: tuple[int, int]) -> tuple[float, float]:
        return yx[0] * SCALE + SCALE / 2, yx[1] * SCALE + SCALE / 2

    return EyePair(left=full((ly, lx)), right=full((ry_, rx_)), ry=face_w * SCALE * 0.055,
                   rx=face_w * SCALE * 0.1, skin=skin_rgb)  # type: ignore[arg-type]
