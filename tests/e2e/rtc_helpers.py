"""An aiortc "visitor" for end-to-end tests of the engine's media peer.

``RtcClient`` plays the browser: it offers (non-trickle) a receive-only video
m-line, a send/receive audio m-line carrying a microphone track, and a data
channel; it records what arrives (video frames, audio levels, data-channel
messages) and lets a test wait for a condition on them.

aioice leaves 127.0.0.1 out of its host candidates, so two peers in one
process on a machine without another interface could not connect.
``use_loopback_candidates(monkeypatch)`` makes both peers gather loopback
only: deterministic, and independent of the machine's network.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import aioice.ice
import numpy as np
from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

WAIT_SECONDS = 20.0


def use_loopback_candidates(monkeypatch: Any) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


class MicTrack(AudioStreamTrack):
    """A visitor microphone: silence, or a 440 Hz tone while ``talking`` is set."""

    RATE = 48_000
    SAMPLES = 960

    def __init__(self) -> None:
        super().__init__()
        self.talking = False
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._n * self.SAMPLES / self.RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        t = (np.arange(self.SAMPLES) + self._n * self.SAMPLES) / self.RATE
        amp = 12_000 if self.talking else 0
        samples = (amp * np.sin(2 * np.pi * 440 * t)).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.RATE
        frame.pts = self._n * self.SAMPLES
        frame.time_base = fractions.Fraction(1, self.RATE)
        self._n += 1
        return frame


@dataclass
class VideoSample:
    width: int
    height: int
    luma: np.ndarray  # Y plane, downsampled 8×
    rgb_corner: tuple[float, float, float]  # mean RGB of the listening-dot area (top right)


class RtcClient:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = MicTrack()
        self.channel = self.pc.createDataChannel("events")
        self.messages: list[dict[str, Any]] = []
        self.video: list[VideoSample] = []
        self.audio_levels: list[float] = []
        self.video_frames_received = 0
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    async def offer(self) -> dict[str, str]:
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTrack(self.mic)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}

    async def accept(self, answer: dict[str, str]) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def wait_open(self) -> None:
        await self.wait_for(lambda: self.channel.readyState == "open")

    def transcripts(self, role: str) -> list[str]:
        return [
            m["text"] for m in self.messages if m.get("type") == "transcription" and m.get("role") == role
        ]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _on_message(self, message: str | bytes) -> None:
        self.messages.append(json.loads(message))
        self._tasks.append(asyncio.ensure_future(self._notify()))

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                y = frame.to_ndarray(format="gray")
                corner = frame.to_ndarray(format="rgb24")[26:46, -46:-26].reshape(-1, 3).mean(axis=0)
                self.video_frames_received += 1
                self.video.append(VideoSample(frame.width, frame.height, y[::8, ::8].copy(), tuple(corner)))
                del self.video[:-200]
            else:
                pcm = frame.to_ndarray().astype(np.float32)
                self.audio_levels.append(float(np.sqrt(np.mean(pcm**2))) / 32768.0)
            await self._notify()

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()


async def connect(answer_fn: Callable[[dict[str, str]], Any]) -> RtcClient:
    """A client whose offer ``answer_fn`` answers (awaitable → answer dict)."""
    client = RtcClient()
    answer = await answer_fn(await client.offer())
    await client.accept(answer)
    return client


async def connect_over_http(http: aiohttp.ClientSession, url: str, token: str) -> RtcClient:
    """A client whose offer is POSTed to ``url`` (the WebRTC credentials' URL and bearer token)."""

    async def answer(offer: dict[str, str]) -> dict[str, str]:
        async with http.post(url, json=offer, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    return await connect(answer)
