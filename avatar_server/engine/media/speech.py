"""Text to speech: Debian's ``espeak-ng``, or a soft synthetic babble without it.

Output is always 48 kHz mono signed 16-bit PCM (``numpy.int16``), the rate of
the audio track. ``espeak-ng --stdout`` writes a streamed WAV (22.05 kHz, its
length fields unset), which is parsed here and resampled linearly.

Voices: a Runway voice preset name (``victoria``, ``max``, …) or a custom
voice id is hashed to an espeak-ng voice (en-us / en-gb …), a variant (the
``+f*``/``+m*`` family matching the preset's usual gender), a speed and a pitch —
the same name always sounds the same.

When the binary is missing or fails, ``babble`` produces a hum with the
rhythm of the text's syllables, and one log line says why.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import re
import shutil
import struct
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
ESPEAK_BINARY = os.environ.get("AVATAR_SERVER_ESPEAK", "espeak-ng")
MAX_TEXT_CHARS = 1500
SYNTH_TIMEOUT_SECONDS = 15.0

_FEMALE_PRESETS = frozenset(
    "victoria clara skye mia summer ruby aurora nina emma maya georgia petra violet luna morgan".split()
)
_LANGUAGES = ("en-us", "en-us", "en-gb", "en-gb-x-rp", "en-029")
_FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "Annie", "linda")
_MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m7", "adam", "david")


@dataclass(frozen=True)
class Voice:
    language: str
    variant: str
    speed: int  # words per minute
    pitch: int  # 0..99

    @property
    def espeak_name(self) -> str:
        return f"{self.language}+{self.variant}"


def voice_for(preset: str | None) -> Voice:
    """A stable espeak-ng voice for a preset name or custom voice id."""
    name = (preset or "default").strip().lower()
    digest = hashlib.sha256(name.encode()).digest()
    variants = _FEMALE_VARIANTS if name in _FEMALE_PRESETS else _MALE_VARIANTS
    return Voice(
        language=_LANGUAGES[digest[0] % len(_LANGUAGES)],
        variant=variants[digest[1] % len(variants)],
        speed=150 + digest[2] % 31,
        pitch=35 + digest[3] % 31,
    )


def voice_of_avatar(avatar: dict) -> Voice:
    mapped = avatar.get("espeakVoice")  # a custom voice the engine described (engine.voices)
    if isinstance(mapped, Voice):
        return mapped
    voice = avatar.get("voice")
    if isinstance(voice, dict):
        return voice_for(str(voice.get("presetId") or voice.get("id") or ""))
    return voice_for(str(avatar.get("presetId") or avatar.get("name") or ""))


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """PCM16 WAV bytes → (mono int16 samples, sample rate); tolerates streamed (unset) sizes."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    pos, rate, channels, width = 12, 0, 0, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if chunk == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", data[body : body + 8])
            width = struct.unpack("<H", data[body + 14 : body + 16])[0]
            if fmt != 1 or width != 16:
                raise ValueError("only PCM16 WAV is supported")
        elif chunk == b"data":
            if not rate:
                raise ValueError("WAV data before fmt")
            end = min(len(data), body + size)
            raw = data[body:end]
            raw = raw[: len(raw) // (2 * channels) * (2 * channels)]
            samples = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)
            mono = samples.mean(axis=1) if channels > 1 else samples[:, 0]
            return mono.astype(np.int16), rate
        pos = body + size + (size & 1)
    raise ValueError("WAV without data")


def resample(pcm: np.ndarray, src_rate: int, dst_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Linear resampling of mono int16; the result has ``round(len * dst / src)`` samples."""
    if src_rate == dst_rate or len(pcm) == 0:
        return pcm.astype(np.int16, copy=True)
    n_out = int(round(len(pcm) * dst_rate / src_rate))
    positions = np.arange(n_out, dtype=np.float64) * (src_rate / dst_rate)
    out = np.interp(positions, np.arange(len(pcm), dtype=np.float64), pcm.astype(np.float64))
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


_SYLLABLE = re.compile(r"[aeiouy]+", re.IGNORECASE)


def syllables(word: str) -> int:
    return max(1, len(_SYLLABLE.findall(word)))


def babble(text: str, voice: Voice, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A soft hum, one pulse per syllable, pauses between words and after punctuation."""
    pitch_hz = 110.0 + voice.pitch * 2.2 + (90.0 if voice.variant.startswith("f") else 0.0)
    syllable_s = 60.0 / voice.speed / 1.9  # ~0.2 s: espeak-like pace
    pieces: list[np.ndarray] = [np.zeros(int(0.05 * rate), np.float32)]
    for index, word in enumerate(re.findall(r"[\w']+|[.,;:!?]", text)):
        if word in ".,;:!?":
            pieces.append(np.zeros(int((0.3 if word in ".!?" else 0.15) * rate), np.float32))
            continue
        for s in range(syllables(word)):
            n = int(syllable_s * rate)
            t = np.arange(n, dtype=np.float32) / rate
            f0 = pitch_hz * (1.0 + 0.06 * math.sin(index * 1.7 + s))
            tone = (
                np.sin(2 * np.pi * f0 * t)
                + 0.5 * np.sin(2 * np.pi * 2 * f0 * t)
                + 0.25 * np.sin(2 * np.pi * 3 * f0 * t)
            )
            envelope = np.sin(np.pi * np.arange(n, dtype=np.float32) / n) ** 2
            pieces.append((tone * envelope * 0.18).astype(np.float32))
        pieces.append(np.zeros(int(0.07 * rate), np.float32))
    pcm = np.concatenate(pieces)
    return np.clip(pcm * 32767, -32768, 32767).astype(np.int16)


class SpeechSynth:
    """Asynchronous TTS. ``binary`` defaults to ``ESPEAK_BINARY`` (env ``AVATAR_SERVER_ESPEAK``)."""

    def __init__(self, *, binary: str | None = None, timeout: float = SYNTH_TIMEOUT_SECONDS) -> None:
        self._binary = binary
        self._timeout = timeout
        self._warned = False

    @property
    def binary_path(self) -> str | None:
        return shutil.which(self._binary or ESPEAK_BINARY)

    @property
    def available(self) -> bool:
        return self.binary_path is not None

    async def synthesize(self, text: str, voice: Voice) -> np.ndarray:
        """``text`` spoken in ``voice`` as 48 kHz mono int16 (never raises for bad text)."""
        text = " ".join(text.split())[:MAX_TEXT_CHARS]
        if not text:
            return np.zeros(0, np.int16)
        # babble, WAV parsing and resampling cost up to ~150 ms for a long reply: off the loop,
        # so every stream's frames keep their pace meanwhile
        path = self.binary_path
        if path is None:
            self._fallback(f"espeak-ng not found ({self._binary or ESPEAK_BINARY!r})")
            return await asyncio.to_thread(babble, text, voice)
        try:
            wav = await self._run(path, text, voice)
            return await asyncio.to_thread(_decode, wav)
        except (OSError, ValueError, TimeoutError) as exc:
            self._fallback(f"espeak-ng failed: {type(exc).__name__}: {exc}")
            return await asyncio.to_thread(babble, text, voice)

    async def _run(self, path: str, text: str, voice: Voice) -> bytes:
        args = [path, "--stdout", "-v", voice.espeak_name, "-s", str(voice.speed), "-p", str(voice.pitch)]
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(text.encode()), self._timeout)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if proc.returncode != 0:
            raise OSError(f"exit {proc.returncode}: {err.decode(errors='replace').strip()[:200]}")
        return out

    def _fallback(self, reason: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s; speaking with the synthetic babble instead", reason)


def _decode(wav: bytes) -> np.ndarray:
    """espeak-ng's WAV output as 48 kHz mono int16."""
    pcm, rate = parse_wav(wav)
    return resample(pcm, rate)
