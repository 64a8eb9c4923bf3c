"""Pure parts of the engine's media peer: knowledge ranking, speech, portraits, frames, audio."""

from __future__ import annotations

import base64
import io
import logging
import struct

import av
import numpy as np
import pytest

from avatar_server.engine.media import conversation as conv
from avatar_server.engine.media import speech
from avatar_server.engine.media.audio import SAMPLES_PER_FRAME, AvatarAudioTrack, rms_level
from avatar_server.engine.media.portrait import (
    CANVAS,
    FRAME,
    generate_portrait,
    image_from_uri,
    load_reference,
    portrait_for,
)
from avatar_server.engine.media.video import FrameRenderer, rgb_to_yuv420

DOCS = [
    (
        "policies.md",
        "# Refunds\n\nRefunds are paid to the original card within 30 days.\n\n"
        "# Shipping\n\nStandard shipping takes 3 to 5 business days. Express shipping arrives next day.\n\n"
        "- Returns of **opened** items need the [form](https://example.com/form).",
    ),
    ("hours.txt", "The support desk is open Monday to Friday, 9am to 6pm."),
]


# ---------------------------------------------------------------- conversation


def test_passages_keep_headings_for_ranking_and_strip_markdown() -> None:
    passages = conv.split_passages(DOCS)
    texts = [p.text for p in passages]
    assert "Refunds are paid to the original card within 30 days." in texts
    assert "Returns of opened items need the form." in texts  # list marker, bold and link removed
    shipping = next(p for p in passages if p.text.startswith("Standard shipping"))
    assert "ship" in shipping.terms and shipping.doc == "policies.md"
    # the heading "Refunds" is a ranking term of the paragraph under it, not a passage of its own
    assert not any(t == "Refunds" for t in texts)


def test_long_paragraphs_become_sentence_windows() -> None:
    text = " ".join(f"Sentence number {i} talks about topic{i}." for i in range(60))
    passages = conv.split_passages([("long", text)])
    assert len(passages) > 1
    assert all(len(p.text.split()) <= conv.PASSAGE_WORDS + 10 for p in passages)
    best = conv.rank("what about topic42", passages)[0]
    assert "topic42" in best.passage.text


def test_rank_prefers_the_passage_about_the_question() -> None:
    passages = conv.split_passages(DOCS)
    hits = conv.rank("How long does shipping take?", passages)
    assert hits[0].passage.text.startswith("Standard shipping")
    assert hits[0].coverage == pytest.approx(1.0)
    hits = conv.rank("When is the desk open on Monday?", passages)
    assert hits[0].passage.doc == "hours.txt"


def test_stemming_matches_word_forms() -> None:
    assert conv.stem("refunds") == conv.stem("refunded") == conv.stem("refunding") == "refund"
    assert conv.stem("purr") == conv.stem("purrs") == conv.stem("purring") == conv.stem("purred")
    assert conv.stem("ship") == conv.stem("shipping") == conv.stem("shipped") == conv.stem("ships")
    assert conv.stem("shipping") == conv.stem("ship")
    assert conv.stem("policies") == "policy"
    assert conv.stem("received") == conv.stem("receive")


def test_reply_is_grounded_and_in_the_personality_voice() -> None:
    reply = conv.answer("how long do refunds take", DOCS, "You are a formal, professional concierge.")
    assert reply.grounded and reply.sources == ("policies.md",)
    assert reply.text == "Certainly. Refunds are paid to the original card within 30 days."


def test_nothing_matches_says_so_plainly() -> None:
    for question in ("What is the capital of Mongolia?", "Who won the football match yesterday?"):
        reply = conv.answer(question, DOCS, None)
        assert not reply.grounded
        assert reply.text == "I don't have anything about that in my knowledge."
    # one shared word is not enough when most of the question is about something else
    assert not conv.answer("what's the capital city of the card of Mongolia", DOCS, None).grounded
    assert not conv.answer("refund", [], None).grounded


def test_greeting_and_tones() -> None:
    assert conv.answer("hello!", DOCS, "cheerful and upbeat").text.startswith("Hi there!")
    for small_talk in ("Hello there!", "hey, how are you?", "good morning"):
        reply = conv.answer(small_talk, DOCS, None)
        assert reply.text.startswith("Hello!") and not reply.grounded, small_talk
    assert conv.answer("thanks a lot!", DOCS, None).text.startswith("You're welcome")
    # a greeting with a question in it is answered from the documents
    assert conv.answer("hi, how long does a refund take?", DOCS, None).grounded
    assert conv.tone_for("A patient cooking teacher").opener == "Of course."  # first matching tone wins
    assert conv.tone_for(None) == conv.tone_for("") == conv.tone_for("Someone.")


def test_long_passages_are_trimmed_for_speech() -> None:
    doc = "Warranty. " + " ".join(f"The warranty clause {i} covers part {i}." for i in range(80))
    reply = conv.answer("what does the warranty cover", [("w", doc)], None)
    assert reply.grounded and len(reply.text) <= conv.SPOKEN_CHARS + 20


async def test_static_knowledge_per_avatar() -> None:
    source = conv.StaticKnowledge(documents=[("all", "x")], by_avatar={"a1": [("mine", "y")]})
    assert await source.passages({"id": "a1"}) == [("mine", "y")]
    assert await source.passages({"presetId": "other"}) == [("all", "x")]


# ---------------------------------------------------------------- speech


def test_resample_length_and_shape() -> None:
    pcm = (np.sin(np.arange(22050) / 10) * 10000).astype(np.int16)
    out = speech.resample(pcm, 22050)
    assert out.dtype == np.int16 and len(out) == 48000
    assert len(speech.resample(pcm[:441], 22050)) == 960
    assert abs(int(out.max()) - 10000) < 200
    assert len(speech.resample(np.zeros(0, np.int16), 22050)) == 0


def _wav(samples: np.ndarray, rate: int, channels: int = 1, streamed: bool = False) -> bytes:
    data = samples.astype("<i2").tobytes()
    size = 0x7FFFFFFF if streamed else len(data)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return (
        b"RIFF"
        + struct.pack("<I", size)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", size)
        + data
    )


def test_parse_wav_handles_streamed_sizes_and_stereo() -> None:
    pcm, rate = speech.parse_wav(_wav(np.arange(100, dtype=np.int16), 22050, streamed=True))
    assert rate == 22050 and list(pcm[:3]) == [0, 1, 2] and len(pcm) == 100
    stereo = np.array([[100, 300]] * 10, dtype=np.int16).reshape(-1)
    pcm, _ = speech.parse_wav(_wav(stereo, 16000, channels=2))
    assert len(pcm) == 10 and int(pcm[0]) == 200
    with pytest.raises(ValueError):
        speech.parse_wav(b"not a wav")


def test_voices_are_stable_and_follow_the_preset() -> None:
    assert speech.voice_for("victoria") == speech.voice_for("Victoria")
    assert speech.voice_for("victoria").variant in speech._FEMALE_VARIANTS
    assert speech.voice_for("vincent").variant in speech._MALE_VARIANTS
    assert len({speech.voice_for(n) for n in ("max", "leo", "adam", "zach", "roman")}) > 1
    custom = {"voice": {"type": "custom", "id": "0d6c0b9e-0000-4000-8000-000000000000"}}
    assert speech.voice_of_avatar(custom) == speech.voice_for(custom["voice"]["id"])


async def test_espeak_speaks_at_48k() -> None:
    # the README's test command installs espeak-ng: its absence is a failure, not a skip
    if not speech.SpeechSynth().available:
        pytest.fail("espeak-ng is required for this test (apt-get install espeak-ng; scripts/install.sh does)")
    pcm = await speech.SpeechSynth().synthesize("Hello, how are you today?", speech.voice_for("clara"))
    assert pcm.dtype == np.int16
    assert 0.5 * speech.SAMPLE_RATE < len(pcm) < 5 * speech.SAMPLE_RATE
    assert rms_level(pcm) > 0.05


async def test_missing_espeak_falls_back_to_babble(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(speech, "ESPEAK_BINARY", "/nonexistent/espeak-ng")
    synth = speech.SpeechSynth()
    assert not synth.available
    voice = speech.voice_for("max")
    with caplog.at_level(logging.WARNING, logger=speech.__name__):
        short = await synth.synthesize("Hi there.", voice)
        long = await synth.synthesize("Hi there. This sentence has quite a lot more syllables in it.", voice)
    assert rms_level(short) > 0.05
    assert len(long) > 2 * len(short)  # the babble keeps the text's rhythm
    warnings = [r for r in caplog.records if "espeak-ng not found" in r.getMessage()]
    assert len(warnings) == 1  # one clear line, not one per utterance


async def test_failing_espeak_falls_back_too(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "espeak-ng"
    broken.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    broken.chmod(0o755)
    pcm = await speech.SpeechSynth(binary=str(broken)).synthesize("Testing one two.", speech.voice_for("sam"))
    assert rms_level(pcm) > 0.05


# ---------------------------------------------------------------- portraits and frames


def _encode(rgb: np.ndarray, codec: str, fmt: str, pix_fmt: str) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec)
        stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], pix_fmt
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("codec", "fmt", "pix_fmt"),
    [("png", "image2pipe", "rgb24"), ("mjpeg", "image2pipe", "yuvj420p"), ("libwebp", "webp", "yuv420p")],
)
def test_load_reference_decodes_jpeg_png_webp(codec: str, fmt: str, pix_fmt: str) -> None:
    rgb = np.zeros((120, 200, 3), np.uint8)
    rgb[:, :, 0] = 200
    decoded = load_reference(_encode(rgb, codec, fmt, pix_fmt))
    assert decoded is not None and decoded.shape == (120, 200, 3)
    assert abs(float(decoded[..., 0].mean()) - 200) < 10


def test_load_reference_refuses_other_bytes() -> None:
    assert load_reference(None) is None
    assert load_reference(b"GIF89a....") is None
    assert load_reference(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50) is None  # PNG magic, broken body


def test_portrait_from_data_uri_or_generated() -> None:
    rgb = np.full((64, 96, 3), (10, 200, 30), np.uint8)
    uri = "data:image/png;base64," + base64.b64encode(_encode(rgb, "png", "image2pipe", "rgb24")).decode()
    assert image_from_uri(uri) is not None and image_from_uri("https://example.com/a.png") is None
    photo = portrait_for({"id": "a1", "referenceImageUri": uri})
    assert not photo.generated and photo.canvas.shape == (CANVAS, CANVAS, 3)
    assert abs(float(photo.canvas[..., 1].mean()) - 200) < 10
    broken = portrait_for({"id": "a2", "referenceImageUri": "data:image/png;base64,AAAA"})
    assert broken.generated and broken.eyes is not None


def test_generated_portraits_are_deterministic_per_seed() -> None:
    a, b, c = generate_portrait("victoria"), generate_portrait("victoria"), generate_portrait("max")
    assert np.array_equal(a.canvas, b.canvas)
    assert not np.array_equal(a.canvas, c.canvas)
    assert a.mouth is not None and len(a.mouth.variants) == 6
    assert a.eyes is not None and not np.array_equal(a.eyes.variants[0], a.eyes.variants[2])


def test_renderer_animates_eyes_mouth_glow_and_listening() -> None:
    renderer = FrameRenderer(generate_portrait("clara"))
    base = renderer.render(t=0.0, eyes=0, mouth=0, glow=0.0, listening=0.0)
    assert base.shape == (FRAME * 3 // 2, FRAME) and base.dtype == np.uint8
    assert np.array_equal(base, renderer.render(t=0.0, eyes=0, mouth=0, glow=0.0, listening=0.0))
    for changed in (
        {"eyes": 2},
        {"mouth": 4},
        {"glow": 0.9},
        {"listening": 1.0},
        {"t": 1.7},
    ):
        states = {"t": 0.0, "eyes": 0, "mouth": 0, "glow": 0.0, "listening": 0.0, **changed}
        assert not np.array_equal(base, renderer.render(**states)), changed


def test_rgb_to_yuv_round_trips() -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[...] = (255, 0, 0)
    y, u, v = rgb_to_yuv420(rgb)
    assert y.shape == (16, 16) and u.shape == v.shape == (8, 8)
    assert v.mean() > 200 and u.mean() < 128


# ---------------------------------------------------------------- audio track


async def test_audio_track_plays_utterances_then_silence() -> None:
    track = AvatarAudioTrack()
    tone = (np.sin(np.arange(SAMPLES_PER_FRAME * 3) / 5) * 12000).astype(np.int16)
    assert track.enqueue(tone)
    assert track.speaking
    levels = []
    for _ in range(5):
        frame = await track.recv()
        assert frame.sample_rate == 48000 and frame.samples == SAMPLES_PER_FRAME
        levels.append(track.level)
    assert all(level > 0.3 for level in levels[:3]) and levels[3:] == [0.0, 0.0]
    assert not track.speaking and track.utterances_played == 1
    track.stop()


def test_every_session_preset_has_a_profile_that_answers_from_its_own_document() -> None:
    from avatar_server.engine.presets import PRESETS, preset_documents, preset_of
    from avatar_server.models.avatars import SESSION_PRESETS

    assert set(PRESETS) == set(SESSION_PRESETS)
    assert preset_of({"type": "custom", "avatarId": "x"}) is None
    assert preset_documents({"type": "runway-preset", "presetId": "unknown"}) == []
    questions = {"tennis-coach": ("How does scoring work in tennis?", "fifteen"),
                 "cooking-teacher": ("How do I cook pasta?", "salted boiling water"),
                 "cat-character": ("Why do cats purr?", "purrs when content")}
    for preset_id, (question, expected) in questions.items():
        avatar = {"type": "runway-preset", "presetId": preset_id}
        reply = conv.answer(question, preset_documents(avatar), PRESETS[preset_id].personality)
        assert reply.grounded and expected in reply.text, (preset_id, reply)
    # the shared document says what the demo is
    assert "local engine" in conv.answer("What is this conversation?", preset_documents(avatar), None).text
