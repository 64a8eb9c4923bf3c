"""The avatar's camera: a 512×512, 25 fps track made from a pre-rendered portrait.

Per frame the work is a crop and a few small pastes, all in YUV 4:2:0 (the
encoder's own format, so there is no per-frame colour conversion):

- idle motion: the crop window over the slightly larger canvas follows two
  slow sines (sway left/right, breathing up/down);
- blinking: the eye region is swapped for its half/closed variants for a few
  frames at random intervals (generated faces only — photos have no landmarks);
- speech: the mouth region is swapped for one of ``MOUTH_LEVELS`` openings
  chosen from the avatar's current speech level, and a ring glows with it;
- listening: while the visitor's microphone carries sound, a green dot pulses
  in the corner and the ring turns green (when the avatar is not speaking).

``FrameRenderer.render`` is pure CPU work; ``AvatarVideoTrack.recv`` runs it in
the loop's default executor, so the event loop never renders.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import random
import time
from collections.abc import Callable

import av
import numpy as np
from aiortc import VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

from avatar_server.engine.media.portrait import FRAME, MARGIN, MOUTH_LEVELS, Portrait

FPS = 25
CLOCK_RATE = 90_000
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)
TICKS_PER_FRAME = CLOCK_RATE // FPS
RING_WIDTH = 16
LISTEN_COLOR = (60, 220, 110)


def rgb_to_yuv420(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(h, w, 3) RGB (even h, w) → Y (h, w), U (h/2, w/2), V (h/2, w/2), via FFmpeg's swscale."""
    h, w = rgb.shape[:2]
    packed = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
    flat = packed.to_ndarray()
    y = flat[:h].copy()
    u = flat[h : h + h // 4].reshape(h // 2, w // 2).copy()
    v = flat[h + h // 4 :].reshape(h // 2, w // 2).copy()
    return y, u, v


def _color_yuv(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    r, g, b = rgb
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return y, u, v


class _Overlay:
    """Sparse alpha mask over a plane: ``apply`` blends a colour into the masked pixels."""

    def __init__(self, alpha: np.ndarray) -> None:
        self.index = np.nonzero(alpha > 0.01)
        self.alpha = alpha[self.index].astype(np.float32)

    def apply(self, plane: np.ndarray, value: float, strength: float) -> None:
        a = self.alpha * strength
        current = plane[self.index].astype(np.float32)
        plane[self.index] = (current + (value - current) * a).astype(np.uint8)


def _ring_alpha(size: int, width: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    edge = np.minimum(np.minimum(yy, xx), np.minimum(size - 1 - yy, size - 1 - xx))
    return np.clip(1.0 - edge / width, 0.0, 1.0) ** 1.5


def _dot_alpha(size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip(r - d + 0.5, 0.0, 1.0)


class FrameRenderer:
    """Pre-computed YUV planes of one portrait; ``render`` composes one frame (thread-safe)."""

    def __init__(self, portrait: Portrait) -> None:
        self.portrait = portrait
        self.y, self.u, self.v = rgb_to_yuv420(portrait.canvas)
        self.eyes = self._patch_planes(portrait.eyes)
        self.mouth = self._patch_planes(portrait.mouth)
        self.accent = _color_yuv(portrait.accent)
        self.listen = _color_yuv(LISTEN_COLOR)
        self.ring_y = _Overlay(_ring_alpha(FRAME, RING_WIDTH))
        self.ring_c = _Overlay(_ring_alpha(FRAME // 2, RING_WIDTH / 2))
        self.dot_y = _Overlay(_dot_alpha(FRAME, 36, FRAME - 36, 11))
        self.dot_c = _Overlay(_dot_alpha(FRAME // 2, 18, FRAME // 2 - 18, 5.5))

    @staticmethod
    def _patch_planes(patch):  # type: ignore[no-untyped-def]
        if patch is None:
            return None
        return patch.top, patch.left, [rgb_to_yuv420(v) for v in patch.variants]

    def render(self, *, t: float, eyes: int, mouth: int, glow: float, listening: float) -> np.ndarray:
        """One (FRAME*3/2, FRAME) yuv420p array for time ``t`` (seconds) and the given states."""
        ox = int(round(MARGIN + MARGIN * 0.55 * math.sin(t * 2 * math.pi / 7.0)))
        oy = int(round(MARGIN + MARGIN * 0.35 * math.sin(t * 2 * math.pi / 4.2 + 1.0)))
        out = np.empty((FRAME * 3 // 2, FRAME), dtype=np.uint8)
        y = out[:FRAME]
        u = out[FRAME : FRAME + FRAME // 4].reshape(FRAME // 2, FRAME // 2)
        v = out[FRAME + FRAME // 4 :].reshape(FRAME // 2, FRAME // 2)
        y[:] = self.y[oy : oy + FRAME, ox : ox + FRAME]
        cx, cy = ox // 2, oy // 2
        u[:] = self.u[cy : cy + FRAME // 2, cx : cx + FRAME // 2]
        v[:] = self.v[cy : cy + FRAME // 2, cx : cx + FRAME // 2]
        if self.eyes is not None and eyes:
            self._paste(y, u, v, self.eyes, eyes, oy, ox)
        if self.mouth is not None and mouth:
            self._paste(y, u, v, self.mouth, min(mouth, MOUTH_LEVELS - 1), oy, ox)
        if glow > 0.02:
            self._blend(self.ring_y, self.ring_c, y, u, v, self.accent, min(1.0, glow))
        elif listening > 0.02:
            self._blend(self.ring_y, self.ring_c, y, u, v, self.listen, 0.6 * listening)
        if listening > 0.02:
            self._blend(self.dot_y, self.dot_c, y, u, v, self.listen, listening)
        return out

    @staticmethod
    def _paste(y, u, v, planes, index, oy, ox) -> None:  # type: ignore[no-untyped-def]
        top, left, variants = planes
        py, pu, pv = variants[index]
        h, w = py.shape
        ty, tx = top - oy, left - ox
        y[ty : ty + h, tx : tx + w] = py
        cty, ctx = top // 2 - oy // 2, left // 2 - ox // 2
        u[cty : cty + h // 2, ctx : ctx + w // 2] = pu
        v[cty : cty + h // 2, ctx : ctx + w // 2] = pv

    @staticmethod
    def _blend(over_y, over_c, y, u, v, color, strength) -> None:  # type: ignore[no-untyped-def]
        cy_, cu, cv = color
        over_y.apply(y, cy_, strength)
        over_c.apply(u, cu, strength)
        over_c.apply(v, cv, strength)


class BlinkSchedule:
    """Eye state per frame: 0 open, 1 half, 2 closed; a blink every 2–6 s."""

    SEQUENCE = (1, 2, 2, 1)

    def __init__(self, seed: str) -> None:
        self._rng = random.Random(seed)
        self._next = self._rng.uniform(1.0, 3.0)
        self._frame = -1

    def eyes_at(self, t: float) -> int:
        if self._frame < 0 and t >= self._next:
            self._frame = 0
        if self._frame >= 0:
            state = self.SEQUENCE[self._frame]
            self._frame += 1
            if self._frame >= len(self.SEQUENCE):
                self._frame = -1
                self._next = t + self._rng.uniform(2.0, 6.0)
            return state
        return 0


class AvatarVideoTrack(VideoStreamTrack):
    """25 fps frames of ``renderer``, animated by the speech level and the listening flag."""

    def __init__(
        self,
        renderer: FrameRenderer,
        *,
        speech_level: Callable[[], float],
        listening: Callable[[], bool],
        seed: str = "avatar",
    ) -> None:
        super().__init__()
        self._renderer = renderer
        self._speech_level = speech_level
        self._listening = listening
        self._blink = BlinkSchedule(seed)
        self._level = 0.0
        self._listen = 0.0
        self._start: float | None = None
        self._pts = 0
        self.frames_sent = 0

    async def next_timestamp(self) -> tuple[int, fractions.Fraction]:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
            self._pts = 0
        else:
            self._pts += TICKS_PER_FRAME
            wait = self._start + self._pts / CLOCK_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        return self._pts, TIME_BASE

    def _states(self, t: float) -> dict[str, float | int]:
        target = max(0.0, min(1.0, self._speech_level()))
        rate = 0.6 if target > self._level else 0.3
        self._level += (target - self._level) * rate
        heard = 1.0 if self._listening() else 0.0
        self._listen += (heard - self._listen) * 0.25
        pulse = 0.75 + 0.25 * math.sin(t * 2 * math.pi * 1.5)
        mouth = int(round(self._level * (MOUTH_LEVELS - 1)))
        return {
            "t": t,
            "eyes": self._blink.eyes_at(t),
            "mouth": mouth,
            "glow": self._level,
            "listening": self._listen * pulse,
        }

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        states = self._states(pts / CLOCK_RATE)
        loop = asyncio.get_running_loop()
        frame = await loop.run_in_executor(None, self._make_frame, states)
        frame.pts = pts
        frame.time_base = time_base
        self.frames_sent += 1
        return frame

    def _make_frame(self, states: dict[str, float | int]) -> av.VideoFrame:
        data = self._renderer.render(**states)  # type: ignore[arg-type]
        return av.VideoFrame.from_ndarray(data, format="yuv420p")
