"""The engine's custom voices (Runway's ``/v1/voices``, routes in ``engine.http.voices``), each
mapped to an espeak-ng voice.

A voice is PROCESSING for the engine's ``avatarProcessingDelay``, then READY with a
``previewUrl`` (a WAV of the voice reading a sample line). A voice *described* in text maps to an
espeak-ng voice by the words of its prompt (``describe``): gender (woman, female, girl … / man,
male, boy …), accent (British, Scottish, American, Caribbean …), pace (slow, fast …) and pitch
(deep, low … / high, bright …); what the prompt does not say comes from a hash of the voice's id,
so the same voice always sounds the same. A voice *from audio* cannot be cloned here: it gets a
hashed voice. An avatar with ``voice: {type: "custom", id}`` speaks in that voice in sessions.
Voices and previews live in the engine's memory (a restarted engine forgets them; avatars that
name a forgotten voice speak in a hashed one). Shapes are exactly Runway's OpenAPI document's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import random
import re
import secrets
import time
import uuid
import wave
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avatar_server.engine.config import EngineConfig
from avatar_server.engine.media.speech import SAMPLE_RATE, SpeechSynth, Voice, voice_for
from avatar_server.engine.validation import Issues
from avatar_server.runway import iso_ms

MODELS = ("eleven_ttv_v3", "eleven_multilingual_ttv_v2")
LIMIT_DEFAULT = 50
MAX_VOICES = 1000
MAX_PREVIEWS = 64
PREVIEW_TTL = 3600.0
SAMPLE_LINE = "Hello! This is how I sound. Thanks for listening, and have a lovely day."

_FEMALE = re.compile(r"\b(woman|women|female|feminine|girl|lady|she|her|mother|grandmother|soprano|alto)\b", re.I)
_MALE = re.compile(r"\b(man|men|male|masculine|boy|guy|gentleman|he|his|father|grandfather|baritone|bass|tenor)\b",
                   re.I)
_ACCENTS = (
    (re.compile(r"\b(scottish|scot)\b", re.I), "en-gb-scotland"),
    (re.compile(r"\b(received pronunciation|rp|posh|aristocratic)\b", re.I), "en-gb-x-rp"),
    (re.compile(r"\b(british|english|london|uk)\b", re.I), "en-gb"),
    (re.compile(r"\b(caribbean|jamaican)\b", re.I), "en-029"),
    (re.compile(r"\b(american|us|new york|texan|californian)\b", re.I), "en-us"),
)
_SLOW = re.compile(r"\b(slow|slowly|calm|relaxed|soothing|measured|gentle)\b", re.I)
_FAST = re.compile(r"\b(fast|quick|quickly|energetic|excited|rapid|brisk|upbeat)\b", re.I)
_LOW = re.compile(r"\b(deep|low|husky|gravelly|raspy|bass|baritone|dark)\b", re.I)
_HIGH = re.compile(r"\b(high|bright|squeaky|light|young|youthful|childlike|soprano)\b", re.I)


def describe(prompt: str | None, seed: str) -> Voice:
    """An espeak-ng voice for a text description (the hash of ``seed`` fills what it leaves open)."""
    base = voice_for(seed)
    text = prompt or ""
    female, male = bool(_FEMALE.search(text)), bool(_MALE.search(text))
    variant = base.variant
    digest = uuid.uuid5(uuid.NAMESPACE_URL, seed).bytes
    if female and not male:
        variant = ("f1", "f2", "f3", "f4", "f5")[digest[0] % 5]
    elif male and not female:
        variant = ("m1", "m2", "m3", "m4", "m7")[digest[0] % 5]
    language = next((code for pattern, code in _ACCENTS if pattern.search(text)), base.language)
    speed = 130 if _SLOW.search(text) else 195 if _FAST.search(text) else base.speed
    pitch = 25 if _LOW.search(text) else 75 if _HIGH.search(text) else base.pitch
    return Voice(language=language, variant=variant, speed=speed, pitch=pitch)


def to_wav(pcm: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return out.getvalue()


@dataclass
class EngineVoice:
    id: str
    name: str
    description: str | None
    created_at: float
    ready_at: float
    espeak: Voice
    preview_token: str | None = None


@dataclass
class Preview:
    wav: bytes
    expires: float


@dataclass
class EngineVoices:
    """The engine's voices and preview WAVs (in memory)."""

    config: EngineConfig
    speech: SpeechSynth
    rng: random.Random = field(default_factory=random.Random)
    voices: dict[str, EngineVoice] = field(default_factory=dict)
    previews: OrderedDict[str, Preview] = field(default_factory=OrderedDict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    def prepare(self, voice: EngineVoice) -> None:
        """Render the voice's preview in the background (ready by the time the voice is)."""

        async def prepare() -> None:
            voice.preview_token, _ = await self.render(voice.espeak)

        task = asyncio.ensure_future(prepare())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel the previews still rendering; idempotent."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def espeak_voice(self, voice_id: str) -> Voice | None:
        voice = self.voices.get(voice_id.lower())
        return voice.espeak if voice is not None else None

    async def render(self, espeak: Voice, text: str = SAMPLE_LINE) -> tuple[str, float]:
        """Speak ``text`` in ``espeak``; keep the WAV under a fresh token → (token, seconds)."""
        pcm = await self.speech.synthesize(text, espeak)
        token = secrets.token_urlsafe(18)
        now = time.time()
        for key in [k for k, p in self.previews.items() if p.expires < now]:
            del self.previews[key]
        self.previews[token] = Preview(to_wav(pcm), now + PREVIEW_TTL)
        while len(self.previews) > MAX_PREVIEWS:
            self.previews.popitem(last=False)
        return token, round(len(pcm) / SAMPLE_RATE, 3)

    def wire(self, v: EngineVoice, base: str) -> dict[str, Any]:
        body: dict[str, Any] = {"id": v.id, "name": v.name, "description": v.description,
                                "createdAt": iso_ms(v.created_at)}
        if time.time() < v.ready_at or v.preview_token is None:
            body["status"] = "PROCESSING"
        else:
            body["status"] = "READY"
            body["previewUrl"] = f"{base}/v1/voices/previews/{v.preview_token}.wav"
        return body


def validate_create(body: Any) -> tuple[str, str | None, dict[str, Any]]:
    issues = Issues()
    if not issues.obj(body, []):
        issues.raise_if_any()
    issues.string(body.get("name"), ["name"], 1, 100)
    description = body.get("description")
    if description is not None:
        issues.string(description, ["description"], 1, 1024)
    source = body.get("from")
    if issues.obj(source, ["from"]):
        kind = source.get("type")
        if kind == "text":
            issues.string(source.get("prompt"), ["from", "prompt"], 20, 1000)
            if source.get("model") not in MODELS:
                issues.add("invalid_enum_value", ["from", "model"], f"Expected {' | '.join(MODELS)}")
        elif kind == "audio":
            _check_audio(issues, source.get("audio"))
        else:
            issues.add("invalid_union_discriminator", ["from", "type"], "Expected 'audio' | 'text'")
    issues.raise_if_any()
    return body["name"], description, source


def _check_audio(issues: Issues, audio: Any) -> None:
    path: list[str | int] = ["from", "audio"]
    if not isinstance(audio, str):
        issues.add("invalid_type", path, "Expected string")
    elif audio.startswith("https://"):
        issues.string(audio, path, 13, 2048)
    elif audio.startswith("runway://"):
        issues.string(audio, path, 13, 5000)
    elif audio.startswith("data:"):
        issues.string(audio, path, 13, 16_777_216)
        head, _, data = audio.partition(",")
        if ";base64" not in head or not head[5:].startswith("audio/"):
            issues.add("invalid_string", path, "Expected a base64 data URI of audio")
        else:
            try:
                base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                issues.add("invalid_string", path, "Invalid base64")
    else:
        issues.add("invalid_string", path, "Expected an https URL, a runway:// URI or a data URI")


def validate_preview(body: Any) -> str:
    issues = Issues()
    if not issues.obj(body, []):
        issues.raise_if_any()
    issues.string(body.get("prompt"), ["prompt"], 20, 1000)
    if body.get("model") not in MODELS:
        issues.add("invalid_enum_value", ["model"], f"Expected {' | '.join(MODELS)}")
    issues.raise_if_any()
    return str(body["prompt"])
