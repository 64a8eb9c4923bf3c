"""Photo avatars blink: ``find_eyes`` locates the eyes of a head-and-shoulders picture (checked on
generated faces turned into noisy "photos", whose eye positions are known), refuses pictures it
is not sure of, and the blink it pre-renders closes the eyes and nothing else."""

from __future__ import annotations

import base64
import zlib

import av
import numpy as np
import pytest

from avatar_server.engine.media.eyes import find_eyes
from avatar_server.engine.media.portrait import (
    _EYE_DX,
    _EYE_Y,
    CANVAS,
    FRAME,
    MARGIN,
    generate_portrait,
    photo_portrait,
    portrait_for,
)
from avatar_server.engine.media.video import FrameRenderer

TRUE_EYES = ((_EYE_Y, CANVAS / 2 - _EYE_DX), (_EYE_Y, CANVAS / 2 + _EYE_DX))


def _photo(seed: str) -> np.ndarray:
    """A generated face as a photo would arrive: no patches, sensor-like noise on every pixel."""
    rng = np.random.default_rng(zlib.crc32(seed.encode()))
    noisy = generate_portrait(seed).canvas.astype(np.int16) + rng.integers(-14, 15, (CANVAS, CANVAS, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def test_eyes_are_found_where_they_are() -> None:
    found = 0
    seeds = [f"face-{i}" for i in range(40)]
    for seed in seeds:
        eyes = find_eyes(_photo(seed))
        if eyes is None:
            continue  # not sure (e.g. a skin-coloured backdrop): no blink, never a wrong one
        found += 1
        for (y, x), (ty, tx) in zip((eyes.left, eyes.right), TRUE_EYES, strict=True):
            assert abs(y - ty) <= 6 and abs(x - tx) <= 6, (seed, eyes)
        assert 6 <= eyes.ry <= 20 and 12 <= eyes.rx <= 36, eyes
    assert found >= len(seeds) // 2, f"eyes found in only {found} of {len(seeds)} faces"


def _blank(colour: tuple[int, int, int]) -> np.ndarray:
    return np.full((CANVAS, CANVAS, 3), colour, np.uint8)


def _faceless() -> np.ndarray:
    yy, xx = np.mgrid[:CANVAS, :CANVAS]
    img = _blank((40, 60, 90))
    img[((yy - 272) / 170) ** 2 + ((xx - 272) / 130) ** 2 < 1] = (224, 172, 130)
    return img


def _specks() -> np.ndarray:
    img = _faceless()
    rng = np.random.default_rng(3)
    for _ in range(40):
        y, x = rng.integers(150, 400, 2)
        img[y : y + 6, x : x + 6] = (30, 20, 20)
    return img


@pytest.mark.parametrize("picture", [
    lambda: np.random.default_rng(1).integers(0, 256, (CANVAS, CANVAS, 3), dtype=np.uint8),
    lambda: _blank((224, 172, 130)),  # all skin
    lambda: _blank((0, 0, 0)),
    lambda: np.dstack([np.linspace(80, 200, CANVAS)[:, None].repeat(CANVAS, 1)] * 2
                      + [np.full((CANVAS, CANVAS), 240.0)]).astype(np.uint8),  # sky
    _faceless,  # a face-coloured oval with no eyes
    _specks,  # ... with dark specks scattered over it
], ids=["noise", "skin", "black", "sky", "faceless", "specks"])
def test_pictures_without_a_sure_face_do_not_blink(picture) -> None:  # type: ignore[no-untyped-def]
    img = picture()
    assert find_eyes(img) is None
    assert photo_portrait(img, "x").eyes is None


def test_a_photo_avatar_blinks_and_only_its_eyes_change() -> None:
    png = av.VideoFrame.from_ndarray(_photo("Ada"), format="rgb24")
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = CANVAS, CANVAS, "rgb24"
    data = b"".join(bytes(p) for p in codec.encode(png))
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    portrait = portrait_for({"id": "photo-ada", "referenceImageUri": uri})
    assert not portrait.generated and portrait.eyes is not None and len(portrait.eyes.variants) == 3
    renderer = FrameRenderer(portrait)
    frames = [renderer.render(t=0.0, eyes=e, mouth=0, glow=0.0, listening=0.0)[:FRAME].astype(np.int16)
              for e in (0, 1, 2)]
    open_, half, closed = frames
    # where the pupils are (canvas → frame: the crop window sits at MARGIN at t=0)
    for ey, ex in TRUE_EYES:
        y, x = int(ey) - MARGIN, int(ex) - MARGIN
        pupil = (slice(y - 4, y + 1), slice(x - 3, x + 4))  # above the lash line the lid draws
        assert open_[pupil].mean() < 90  # dark iris and pupil
        assert closed[pupil].mean() > open_[pupil].mean() + 50  # the lid covers it
        assert half[pupil].mean() < closed[pupil].mean()  # half: the lid's edge, lower than closed
    changed = np.abs(closed - open_) > 12
    rows, cols = np.nonzero(changed)
    assert rows.min() >= _EYE_Y - MARGIN - 40 and rows.max() <= _EYE_Y - MARGIN + 40  # the eye band only
    assert changed.mean() < 0.03
