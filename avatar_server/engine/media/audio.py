"""The avatar's microphone: queued utterances at 48 kHz, silence between them.

``level`` is the RMS (0..1, scaled so ordinary speech reaches ~0.5–1) of the
frame most recently handed to the encoder — what the visitor hears now — and
drives the video track's mouth and glow. ``MicLevel`` is the reverse
direction: a reader of the visitor's microphone track that keeps a level and
a "listening" flag for the video track.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections import deque

import av
import numpy as np
from aiortc import AudioStreamTrack
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from avatar_server.engine.media.speech import SAMPLE_RATE

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.020
SAMPLES_PER_FRAME = int(SAMPLE_RATE * FRAME_SECONDS)
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
LEVEL_GAIN = 4.0
MAX_QUEUED_SECONDS = 120.0


def rms_level(samples: np.ndarray) -> float:
    """RMS of int16 samples as a 0..1 level (with ``LEVEL_GAIN``)."""
    if samples.size == 0:
        return 0.0
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float32))))) / 32768.0
    return min(1.0, rms * LEVEL_GAIN)


class AvatarAudioTrack(AudioStreamTrack):
    """20 ms mono s16 frames at 48 kHz from a queue of utterances."""

    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[np.ndarray] = deque()
        self._current = np.zeros(0, np.int16)
        self._pos = 0
        self._queued_samples = 0
        self._start: float | None = None
        self._pts = 0
        self.level = 0.0
        self.utterances_played = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def speaking(self) -> bool:
        return not self._idle.is_set()

    def enqueue(self, pcm: np.ndarray) -> bool:
        """Queue one utterance (48 kHz mono int16); False if the backlog is full."""
        if pcm.size == 0:
            return True
        if (self._queued_samples + pcm.size) / SAMPLE_RATE > MAX_QUEUED_SECONDS:
            log.info("speech backlog full; dropping an utterance")
            return False
        self._queue.append(pcm.astype(np.int16, copy=False))
        self._queued_samples += pcm.size
        self._idle.clear()
        return True

    def clear(self) -> None:
        self._queue.clear()
        self._current = np.zeros(0, np.int16)
        self._pos = 0
        self._queued_samples = 0
        self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def _next_samples(self) -> np.ndarray:
        out = np.zeros(SAMPLES_PER_FRAME, np.int16)
        filled = 0
        while filled < SAMPLES_PER_FRAME:
            if self._pos >= self._current.size:
                if not self._queue:
                    break
                if self._current.size:
                    self.utterances_played += 1
                self._current = self._queue.popleft()
                self._pos = 0
            take = min(SAMPLES_PER_FRAME - filled, self._current.size - self._pos)
            out[filled : filled + take] = self._current[self._pos : self._pos + take]
            self._pos += take
            self._queued_samples -= take
            filled += take
        if self._pos >= self._current.size and not self._queue and self._current.size:
            self.utterances_played += 1
            self._current = np.zeros(0, np.int16)
            self._pos = 0
            self._idle.set()
        return out

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
            self._pts = 0
        else:
            self._pts += SAMPLES_PER_FRAME
            wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        samples = self._next_samples()
        self.level = rms_level(samples)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = TIME_BASE
        return frame

    def stop(self) -> None:
        self.level = 0.0
        self._idle.set()
        super().stop()


class MicLevel:
    """Consumes a remote audio track (like a blackhole) and measures its level."""

    THRESHOLD = 0.04
    HOLD_SECONDS = 0.6

    def __init__(self) -> None:
        self.level = 0.0
        self.frames = 0
        self._heard_at = -1e9
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def listening(self) -> bool:
        return time.monotonic() - self._heard_at < self.HOLD_SECONDS

    def consume(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames += 1
            if isinstance(frame, av.AudioFrame):
                self.level = rms_level(frame.to_ndarray())
                if self.level >= self.THRESHOLD:
                    self._heard_at = time.monotonic()

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
