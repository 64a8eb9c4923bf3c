"""A conservative token count for knowledge documents.

Runway does not publish the tokenizer behind its 50,000-token knowledge limit, so we
estimate an upper bound: a count that is not below what common byte-level BPE tokenizers
give for the same text. It was fitted and checked against OpenAI's cl100k_base and
o200k_base, Anthropic's legacy tokenizer and DeepSeek-V3's, on English prose, code,
Markdown, twenty-odd other languages and random strings (docs/knowledge.md has the method
and the figures). For English prose it reads about 1.7x cl100k's count.

The estimate is a weighted sum of features of the UTF-8 bytes, counted with
``bytes.translate``/``bytes.count`` and one regular expression, so 200,000 characters
take ~10-15 ms. Features (weights in ``WEIGHTS``):

ASCII
    letter runs, letters, 8-letter blocks of long runs, and "breaks" inside a run —
    letter pairs rare in English (``xq``), lower→upper case changes (``camelCase``) and
    acronym ends (``HTTPServer``): rare pairs are where BPE vocabularies split words, so
    random strings (hashes, base64, keys) cost close to what the tokenizers charge while
    prose stays cheap. Digit runs plus one per three digits (cl100k/o200k split numbers
    in groups of at most three). Punctuation characters, line breaks, runs of 2+ spaces,
    pairs of spaces, tabs.
Non-ASCII, per character, by the block its UTF-8 lead byte starts
    accented Latin / Greek / Cyrillic / other 2-byte scripts (Hebrew, Arabic, ...) /
    combining marks / CJK (kana, ideographs, hangul) / other 3-byte characters (Indic,
    Thai, Georgian, symbols, ...) / 4-byte characters (emoji) — the last two close to
    their byte count, which no byte-level BPE exceeds. Plus one per run of non-ASCII.

The weighted sum is raised by ``MARGIN``, rounded up, and ``PER_TEXT`` is added once.

A floor guards the weighted sum against text built to slip under it (repeated one-letter
lines, control characters, CRLF line ends, digit lists): byte-level BPE tokenizers first cut
text into pieces — words, numbers of up to three digits, punctuation runs, line breaks,
spaces — and never merge across them, so every piece costs at least one token. ``pieces``
counts them with a cut at least as fine as cl100k's (each ``\r`` and ``\n`` alone, each
control character alone, a C1 control as its two bytes), and the count is never below it.
Known limit: text made mostly of *rare* CJK ideographs or hangul syllables (random
characters, not language) can cost up to ~2.5 tokens per character in cl100k and is
under-counted; ordinary CJK text is not.
"""

from __future__ import annotations

import math
import re

# Weights per feature: fitted by linear programming so that the sum is at least the largest
# reference count on every calibration sample, then rounded up (see docs/knowledge.md).
WEIGHTS: dict[str, float] = {
    # ASCII
    "words": 0.5,  # per run of letters
    "letters": 0.3,  # per letter
    "long_runs": 0.1,  # per full block of 8 letters in a run
    "breaks": 0.95,  # per rare letter pair or case break inside a run
    "digits": 1.2,  # per run of digits and per 3 digits in it
    "punct": 0.8,  # per punctuation character
    "newlines": 0.65,  # per line break (CRLF counts once)
    "space_runs": 1.15,  # per run of 2+ spaces
    "double_spaces": 0.05,  # per two spaces in a row
    "tabs": 1.25,  # per tab
    # non-ASCII, per character unless said otherwise
    "other_words": 2.05,  # per run of non-ASCII characters
    "latin": 1.0,  # U+0080-02FF: accented Latin letters, Latin-1 symbols, IPA (runs of them split per character)
    "greek": 1.4,
    "cyrillic": 0.85,
    "two_byte": 0.9,  # U+0540-07FF: Armenian, Hebrew, Arabic, Syriac, Thaana, N'Ko
    "combining": 2.0,  # U+0300-037F combining marks: their UTF-8 byte count
    "cjk": 1.05,  # kana, CJK ideographs, hangul, CJK punctuation
    "three_byte": 2.65,  # other 3-byte characters: Indic, Thai, Georgian, Ethiopic, symbols, ...
    "four_byte": 4.0,  # emoji and other astral characters: their UTF-8 byte count
}
MARGIN = 0.10  # on top of the weighted sum: the weights were fitted tightly
PER_TEXT = 4  # added once per text: short texts round unevenly

# For each lowercase letter, the letters that commonly follow it in English words
# (pairs at or above 3 in 100,000 letter pairs of English prose and technical text).
# Any other pair counts as a break.
_COMMON_FOLLOWERS = {
    "a": "bcdfgiklmnprstuvwxyz",
    "b": "abcdeijlmnoprstuyz",
    "c": "acdehiklmopqrstuy",
    "d": "abcdefgijlmnoprstuvy",
    "e": "abcdefghijklmnopqrstuvwxy",
    "f": "adefiloprstuy",
    "g": "aefghilnoprstuvz",
    "h": "aeilmnorstuy",
    "i": "abcdefgiklmnopqrstuvxz",
    "j": "aeosu",
    "k": "aefgilnpsuw",
    "l": "abcdefghiklmnoprstuvwy",
    "m": "abcdeilmnopstuy",
    "n": "abcdefghijklmnoprstuvy",
    "o": "abcdefghiklmnoprstuvwxy",
    "p": "acdefhiloprstuy",
    "q": "u",
    "r": "abcdefgiklmnoprstuvwy",
    "s": "acefghiklmnopqrstuwy",
    "t": "abcdefghilmnoprstuwxy",
    "u": "abcdefgilmnoprstu",
    "v": "aeio",
    "w": "aehilnorswx",
    "x": "aceilprty",
    "y": "acdegilmnoprstw",
    "z": "aeiu",
}
_LOWER = "abcdefghijklmnopqrstuvwxyz"


def _rare_pair_pattern() -> re.Pattern[bytes]:
    """Matches the first letter of every rare pair (overlapping pairs all count)."""
    alternatives = []
    for first, common in _COMMON_FOLLOWERS.items():
        rare = "".join(c for c in _LOWER if c not in common)
        if rare:
            alternatives.append(f"{first}(?=[{rare}])")
    return re.compile("|".join(alternatives).encode("ascii"))


_RARE_PAIR = _rare_pair_pattern()  # applied to the lower-cased UTF-8 bytes


def _table(classes: dict[bytes, bytes], default: bytes) -> bytes:
    """A 256-byte ``bytes.translate`` table mapping each byte to a one-letter class."""
    table = bytearray(default * 256)
    for members, symbol in classes.items():
        for byte in members:
            table[byte] = symbol[0]
    return bytes(table)


def _span(first: int, last: int) -> bytes:
    return bytes(range(first, last + 1))


_LOWER_B = b"abcdefghijklmnopqrstuvwxyz"
_UPPER_B = _LOWER_B.upper()
_PUNCT_B = _span(0x21, 0x2F) + _span(0x3A, 0x40) + _span(0x5B, 0x60) + _span(0x7B, 0x7E)
# UTF-8 lead bytes by the block they start (continuation bytes 0x80-0xBF map to "-").
#   C2-CB U+0080-02FF Latin-1, Latin Extended, IPA     CC-CD U+0300-037F combining marks
#   CE-CF U+0380-03FF Greek                            D0-D4 U+0400-053F Cyrillic
#   D5-DF U+0540-07FF Armenian, Hebrew, Arabic, ...    E3-E9 U+3000-9FFF kana, CJK ideographs
#   EB-ED U+B000-D7FF hangul                           other E0-EF: other 3-byte characters
#   F0-F4 4-byte characters (emoji, rare ideographs)
_CLASS_TABLE = _table(
    {
        _LOWER_B: b"l",
        _UPPER_B: b"U",
        _PUNCT_B: b".",
        _span(0xC2, 0xCB): b"L",
        _span(0xCC, 0xCD): b"M",
        _span(0xCE, 0xCF): b"G",
        _span(0xD0, 0xD4): b"C",
        _span(0xD5, 0xDF): b"T",
        _span(0xE3, 0xE9) + _span(0xEB, 0xED): b"K",
        _span(0xE0, 0xE2) + b"\xea" + _span(0xEE, 0xEF): b"H",
        _span(0xF0, 0xF4): b"F",
    },
    b"-",
)
_LETTER_TABLE = _table({_LOWER_B + _UPPER_B: b"a"}, b"-")
_DIGIT_TABLE = _table({b"0123456789": b"0"}, b"-")
_NON_ASCII_TABLE = _table({_span(0x80, 0xFF): b"n"}, b"-")
_SPACE_TABLE = _table({b" ": b"s"}, b"-")
_LONG_RUN = b"a" * 8


def _runs(mapped: bytes, symbol: bytes) -> int:
    """How many runs of ``symbol`` the mapped text holds."""
    return mapped.count(b"-" + symbol) + (1 if mapped[:1] == symbol else 0)


def features(text: str) -> dict[str, int]:
    """The counts the estimate weighs (exposed for calibration and tests)."""
    raw = text.encode("utf-8", "surrogatepass")
    classes = raw.translate(_CLASS_TABLE)
    letters = raw.translate(_LETTER_TABLE)
    digits = raw.translate(_DIGIT_TABLE)
    counts = dict.fromkeys(WEIGHTS, 0)
    counts.update(
        words=_runs(letters, b"a"),
        letters=classes.count(b"l") + classes.count(b"U"),
        long_runs=letters.count(_LONG_RUN),
        breaks=len(_RARE_PAIR.findall(raw.lower())) + classes.count(b"lU") + classes.count(b"UUl"),
        digits=_runs(digits, b"0") + digits.count(b"000"),
        punct=classes.count(b"."),
        newlines=raw.count(b"\n") + raw.count(b"\r") - raw.count(b"\r\n"),
        space_runs=_runs(raw.translate(_SPACE_TABLE), b"ss"),
        double_spaces=raw.count(b"  "),
        tabs=raw.count(b"\t"),
    )
    if not text.isascii():
        counts.update(
            other_words=_runs(raw.translate(_NON_ASCII_TABLE), b"n"),
            latin=classes.count(b"L"),
            combining=classes.count(b"M"),
            greek=classes.count(b"G"),
            cyrillic=classes.count(b"C"),
            two_byte=classes.count(b"T"),
            cjk=classes.count(b"K"),
            three_byte=classes.count(b"H"),
            four_byte=classes.count(b"F"),
        )
    return counts


# Pieces no BPE tokenizer merges across: a control character (C0, DEL, C1), a line-break
# character, a letter run with an optional leading space, up to three digits, a run of other
# symbols with an optional leading space, a run of other whitespace.
_PIECE = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r|\n| ?[^\W\d_]+|\d{1,3}"
    r"| ?(?:[^\s\w\x00-\x1f\x7f-\x9f]|_)+|[^\S\r\n]+"
)
_C1 = re.compile(r"[\x80-\x9f]")  # two UTF-8 bytes each, and no vocabulary has them merged


def pieces(text: str) -> int:
    """A floor on any byte-level BPE count: the pieces ``text`` is cut into before merging."""
    n = len(_PIECE.findall(text))
    if not text.isascii():
        n += len(_C1.findall(text))
    return n


def count_tokens(text: str) -> int:
    """A conservative (upper-bound) token count of ``text``; 0 for the empty string."""
    if not text:
        return 0
    estimate = sum(WEIGHTS[name] * n for name, n in features(text).items())
    return max(math.ceil(estimate * (1.0 + MARGIN)), pieces(text)) + PER_TEXT
