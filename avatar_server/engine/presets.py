"""What the local engine's nine preset avatars are like: a personality, an opening line and a
short sample document each, so that a preset session (the demo's) greets the visitor and has
something to talk about. Custom avatars bring their own; a session's own ``personality`` or
``startScript`` wins over these. Text only, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ABOUT = (
    "About this conversation",
    "I am a demo avatar served by avatar_server's local engine. The picture and voice are made on "
    "this machine, and every conversation ends by itself at its time limit. An admin can give an "
    "avatar its own knowledge documents in the admin console, up to 50,000 tokens per avatar.",
)


@dataclass(frozen=True)
class PresetProfile:
    personality: str
    start_script: str
    document: tuple[str, str]


PRESETS: dict[str, PresetProfile] = {
    "game-character": PresetProfile(
        "A cheerful adventurer from a fantasy game, upbeat and fun.",
        "Hey, traveller! Ask me about quests, the map, or how to level up.",
        ("Adventurer's guide",
         "Quests are given by villagers marked with a star. Finishing a quest gives gold and experience. "
         "You level up every 1,000 experience points. The map shows three regions: the Green Vale, the "
         "Ash Mountains and the Silver Coast. Potions restore health and are sold at every inn."),
    ),
    "music-superstar": PresetProfile(
        "An enthusiastic pop star, energetic and warm with fans.",
        "Hi! So great to see you. Ask me about my tour, my new album or how I write songs.",
        ("Tour and album notes",
         "The new album has twelve songs and was recorded in four months. The tour visits twenty cities "
         "and every show starts at eight in the evening. Songs usually begin with a melody hummed into a "
         "phone, then the lyrics come last. Practise singing every day, even for ten minutes."),
    ),
    "game-character-man": PresetProfile(
        "A calm, seasoned game warrior who gives patient advice.",
        "Greetings. I can tell you about weapons, armour and how to survive a boss fight.",
        ("Warrior's handbook",
         "A sword is fast, an axe is strong, and a shield blocks most arrows. Heavy armour slows you "
         "down. In a boss fight, watch for the wind-up before each attack and dodge sideways. Repair "
         "your weapons at the blacksmith before a long journey."),
    ),
    "cat-character": PresetProfile(
        "A witty, slightly grumpy house cat.",
        "Oh, hello. I suppose you may ask me about cats. Naps, food, that sort of thing.",
        ("Cat facts",
         "Cats sleep twelve to sixteen hours a day. A cat purrs when content, and sometimes when "
         "anxious. Cats should not drink cow's milk; fresh water is best. Scratching posts keep claws "
         "healthy and sofas safe. A slow blink from a cat is a sign of trust."),
    ),
    "influencer": PresetProfile(
        "A bubbly social media influencer, upbeat and friendly.",
        "Hi, lovely to meet you! Ask me about growing an audience or making great videos.",
        ("Creator tips",
         "Post at a regular time so followers know when to expect you. Short videos should hook the "
         "viewer in the first two seconds. Good light matters more than an expensive camera: face a "
         "window. Reply to comments in the first hour after posting."),
    ),
    "tennis-coach": PresetProfile(
        "A patient tennis coach who encourages beginners.",
        "Hi! I'm your tennis coach. Ask me about the serve, the forehand or how scoring works.",
        ("Tennis basics",
         "Tennis scoring works like this: love, fifteen, thirty, forty, then game. A set is won with six "
         "games and a lead "
         "of two. For the serve, toss the ball slightly in front and reach up to hit it. On the "
         "forehand, turn your shoulders early and follow through over the other shoulder."),
    ),
    "human-resource": PresetProfile(
        "A formal, professional HR advisor.",
        "Good day. I can answer questions about leave, onboarding and working hours.",
        ("Staff handbook",
         "Employees have twenty-five days of annual leave. Leave requests should be made two weeks in "
         "advance. Onboarding lasts one week and includes a meeting with a mentor. Core working hours "
         "are ten to four; the rest of the day is flexible."),
    ),
    "fashion-designer": PresetProfile(
        "An enthusiastic fashion designer with a sharp eye for colour.",
        "Hello, darling! Ask me about colours, fabrics or building a capsule wardrobe.",
        ("Style notes",
         "A capsule wardrobe has about thirty pieces that all combine. Navy, grey and white match "
         "nearly everything. Linen is cool in summer; wool keeps warm and resists wrinkles. Choose one "
         "bold colour per outfit and keep the rest calm."),
    ),
    "cooking-teacher": PresetProfile(
        "A warm, patient cooking teacher.",
        "Hello! I'm your cooking teacher. Ask me about pasta, bread, or knife skills.",
        ("Kitchen lessons",
         "Cook pasta in plenty of salted boiling water, and save a cup of the water for the sauce. "
         "Bread dough needs flour, water, salt and yeast, and should rise until doubled in size. "
         "Hold the knife with a pinch grip and curl the fingers of the other hand. Let meat rest for "
         "five minutes after cooking so the juices settle."),
    ),
}


def preset_of(avatar: dict[str, Any]) -> PresetProfile | None:
    """The profile of a ``{"type": "runway-preset", "presetId": …}`` avatar, if it is one we know."""
    if avatar.get("type") != "runway-preset":
        return None
    return PRESETS.get(str(avatar.get("presetId")))


def preset_documents(avatar: dict[str, Any]) -> list[tuple[str, str]]:
    """A preset's sample knowledge (its document, then what this conversation is); [] otherwise."""
    profile = preset_of(avatar)
    return [profile.document, ABOUT] if profile else []
