"""Replies grounded in an avatar's knowledge documents. Pure functions, no I/O.

1. ``split_passages``: documents → passages (paragraphs; a Markdown heading
   joins the paragraph under it; long paragraphs become windows of sentences).
2. ``rank``: BM25 (k1 = 1.2, b = 0.75) over lower-cased, stop-word-free,
   lightly stemmed terms. A passage counts as a match only if it covers at
   least ``MIN_COVERAGE`` of the question's IDF weight, where words found in
   no passage weigh as much as the rarest word — so "what's the capital of
   Mongolia?" does not match a refund policy that happens to say "capital".
3. ``compose_reply``: the best passage (and the runner-up when it scores
   nearly as well), trimmed for speech, after a short lead-in whose tone comes
   from the personality text; a plain "I don't have that" when nothing matches.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

K1 = 1.2
B = 0.75
MIN_COVERAGE = 0.4
RUNNER_UP_RATIO = 0.8
PASSAGE_WORDS = 90
SPOKEN_CHARS = 420
MAX_QUESTION_CHARS = 2000


class KnowledgeSource(Protocol):
    async def passages(self, avatar: dict[str, Any]) -> list[tuple[str, str]]:
        """The avatar's knowledge as ``(document name, text)`` pairs."""
        ...


@dataclass
class StaticKnowledge:
    """A fixed set of documents, for every avatar or per avatar id / preset id."""

    documents: list[tuple[str, str]] = field(default_factory=list)
    by_avatar: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    async def passages(self, avatar: dict[str, Any]) -> list[tuple[str, str]]:
        for key in ("id", "avatarId", "presetId"):
            value = avatar.get(key)
            if isinstance(value, str) and value in self.by_avatar:
                return list(self.by_avatar[value])
        return list(self.documents)


# ---------------------------------------------------------------- text → terms

_STOP = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just let me more most
    my myself no nor not now of off on once only or other our ours out over own same she should so some
    such than that the their theirs them then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours yourself
    tell know please thanks thank hi hello hey ok okay like get got want need much many also us one
    long take takes took make makes made go goes going say says said anything something still ever way
    really actually kind sort thing things lot bit there's what's where's how's who's i'm you're
    explain describe mean means""".split()
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def stem(word: str) -> str:
    """A tiny suffix stripper: enough to match refund/refunds/refunded/refunding."""
    word = word.split("'")[0]
    for suffix in ("ingly", "edly", "ing", "ies", "ied", "ed", "es", "ly", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            if suffix in ("ies", "ied"):
                return word[: -len(suffix)] + "y"
            if suffix == "s" and word.endswith("ss"):
                return word
            return _undouble(word[: -len(suffix)])
    if len(word) > 4 and word.endswith("e"):
        return word[:-1]  # receive → receiv, like receiv(ed)
    return _undouble(word)


def _undouble(word: str) -> str:
    """shipp(ing) → ship; applied to every word so that purr, purrs and purring all give pur."""
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1]


# ---------------------------------------------------------------- documents → passages


@dataclass(frozen=True)
class Passage:
    doc: str
    text: str
    terms: tuple[str, ...]


_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")


def _clean(block: str) -> str:
    lines = [re.sub(r"^\s*(?:[-*+]|\d+[.)])\s+", "", _HEADING.sub("", line)) for line in block.splitlines()]
    text = " ".join(line.strip() for line in lines if line.strip())
    text = re.sub(r"[*_`]{1,3}([^*_`]+)[*_`]{1,3}", r"\1", text)
    return re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)


def split_passages(docs: Iterable[tuple[str, str]]) -> list[Passage]:
    out: list[Passage] = []
    for name, content in docs:
        heading = ""
        for block in re.split(r"\n\s*\n", content.replace("\r\n", "\n")):
            if not block.strip():
                continue
            is_heading = bool(_HEADING.match(block)) and len(block.strip().splitlines()) == 1
            text = _clean(block)
            if is_heading:
                heading = text
                continue
            for chunk in _windows(text):
                context = f"{heading} {chunk}" if heading else chunk
                out.append(Passage(doc=name, text=chunk, terms=tuple(terms(context))))
            heading = ""
    return [p for p in out if p.terms]


def _windows(text: str) -> list[str]:
    if len(text.split()) <= PASSAGE_WORDS:
        return [text]
    chunks: list[str] = []
    current: list[str] = []
    count = 0
    for sentence in _SENTENCE.split(text):
        words = len(sentence.split())
        if current and count + words > PASSAGE_WORDS:
            chunks.append(" ".join(current))
            current, count = [], 0
        current.append(sentence)
        count += words
    if current:
        chunks.append(" ".join(current))
    return chunks


# ---------------------------------------------------------------- ranking


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float
    coverage: float


def rank(question: str, passages: Sequence[Passage]) -> list[Hit]:
    """Passages scored by BM25, best first, with each one's share of the question's IDF weight."""
    query = list(dict.fromkeys(terms(question[:MAX_QUESTION_CHARS])))
    if not query or not passages:
        return []
    n = len(passages)
    avg_len = sum(len(p.terms) for p in passages) / n
    df = Counter(t for p in passages for t in set(p.terms))
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in query}
    total = sum(idf.values())
    hits: list[Hit] = []
    for p in passages:
        tf = Counter(p.terms)
        norm = K1 * (1 - B + B * len(p.terms) / avg_len)
        score = 0.0
        covered = 0.0
        for t in query:
            if tf[t]:
                score += idf[t] * tf[t] * (K1 + 1) / (tf[t] + norm)
                covered += idf[t]
        if score > 0:
            hits.append(Hit(p, score, covered / total))
    hits.sort(key=lambda h: h.score, reverse=True)
    return hits


# ---------------------------------------------------------------- personality → tone


@dataclass(frozen=True)
class Tone:
    opener: str
    no_match: str
    greeting: str


_TONES: list[tuple[tuple[str, ...], Tone]] = [
    (("pirate",), Tone("Arr!", "Arr, my charts say nothing about that.", "Ahoy there!")),
    (
        ("cheerful", "enthusiastic", "bubbly", "energetic", "upbeat", "excited", "fun"),
        Tone(
            "Great question!", "Hmm, I couldn't find anything about that in what I know, sorry!", "Hi there!"
        ),
    ),
    (
        ("formal", "professional", "polite", "courteous", "precise"),
        Tone("Certainly.", "I'm afraid I have no information on that in my documents.", "Good day."),
    ),
    (
        ("calm", "gentle", "soothing", "patient", "kind", "warm"),
        Tone(
            "Of course.",
            "I'm sorry, I don't have anything about that in my knowledge.",
            "Hello, it's nice to meet you.",
        ),
    ),
    (
        ("sarcastic", "witty", "dry", "grumpy"),
        Tone("Well, since you ask:", "Nope, nothing about that in my documents.", "Oh, hello."),
    ),
    (
        ("coach", "teacher", "tutor", "mentor", "instructor"),
        Tone(
            "Good question, let's look at it.",
            "That's not something my material covers, I'm afraid.",
            "Hi! Ready to learn?",
        ),
    ),
]
_DEFAULT_TONE = Tone("Sure.", "I don't have anything about that in my knowledge.", "Hello!")


def tone_for(personality: str | None) -> Tone:
    words = set(_WORD.findall((personality or "").lower()))
    for keys, tone in _TONES:
        if words.intersection(keys):
            return tone
    return _DEFAULT_TONE


# ---------------------------------------------------------------- reply


@dataclass(frozen=True)
class Reply:
    text: str
    grounded: bool
    sources: tuple[str, ...] = ()


_GREETING = re.compile(r"^\s*(hi|hello|hey|good (morning|afternoon|evening|day)|greetings)\b", re.I)
_THANKS = re.compile(r"\b(thanks|thank you|cheers)\b", re.I)


def _trim(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    sentences = _SENTENCE.split(text)
    out = ""
    for sentence in sentences:
        if out and len(out) + len(sentence) + 1 > limit:
            break
        out = f"{out} {sentence}".strip()
    if len(out) > limit:
        out = out[:limit].rsplit(" ", 1)[0] + "…"
    return out


def compose_reply(question: str, passages: Sequence[Passage], personality: str | None) -> Reply:
    tone = tone_for(personality)
    if not terms(_GREETING.sub("", question)):  # small talk ("hello there!", "how are you?", "thanks"): nothing to look up
        if _THANKS.search(question):
            return Reply("You're welcome! Anything else you'd like to know?", grounded=False)
        return Reply(f"{tone.greeting} Ask me anything about what I know.", grounded=False)
    hits = [h for h in rank(question, passages) if h.coverage >= MIN_COVERAGE]
    if not hits:
        return Reply(tone.no_match, grounded=False)
    chosen = [hits[0]]
    if len(hits) > 1 and hits[1].score >= RUNNER_UP_RATIO * hits[0].score:
        chosen.append(hits[1])
    body = " ".join(_trim(h.passage.text, SPOKEN_CHARS // len(chosen)) for h in chosen)
    sources = tuple(dict.fromkeys(h.passage.doc for h in chosen))
    return Reply(f"{tone.opener} {body}", grounded=True, sources=sources)


def answer(question: str, docs: Iterable[tuple[str, str]], personality: str | None) -> Reply:
    """``compose_reply`` over freshly split documents."""
    return compose_reply(question, split_passages(docs), personality)


# ---------------------------------------------------------------- tools

# The engine's avatar calls a tool when the visitor's message names it: every word of the tool's
# name (``lookup_order`` → lookup, order; ``openTicket`` → open, ticket) appears in the message, a
# word possibly split ("look up order 1234" names ``lookup`` and ``order``). Deterministic, so tests
# and demos know exactly which message calls which tool. Arguments come from the rest of the message.

_NAME_PART = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-./#]*")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_FILLER = frozenset("a an the my our your for of to with about on please me us called named is it".split())
_YES = frozenset("yes true on enable enabled please".split())
_NO = frozenset("no false off disable disabled not".split())
MAX_SPLIT = 3  # a name word may be spoken as up to three words ("look up", "sign in")


@dataclass(frozen=True)
class ToolCall:
    tool: dict[str, Any]
    args: dict[str, Any]
    missing: tuple[str, ...] = ()  # required parameters the message did not give

    @property
    def name(self) -> str:
        return str(self.tool["name"])


def name_words(name: str) -> list[str]:
    """``lookup_order`` → [lookup, order]; ``showProduct`` → [show, product]."""
    return [p.lower() for part in name.split("_") for p in _NAME_PART.findall(part)]


def _span_of(word: str, words: Sequence[str], start: int = 0) -> tuple[int, int] | None:
    """Where ``word`` is said in ``words`` (from ``start``): one word, or up to ``MAX_SPLIT`` joined."""
    for i in range(start, len(words)):
        joined = ""
        for j in range(i, min(i + MAX_SPLIT, len(words))):
            joined += words[j]
            if joined == word or (j == i and stem(words[j]) == stem(word)):
                return i, j + 1
            if not word.startswith(joined):
                break
    return None


def match_tool(text: str, tools: Sequence[dict[str, Any]]) -> ToolCall | None:
    """The tool the message asks for (the one whose name words it says, most words first), or None."""
    raw = _TOKEN.findall(text[:MAX_QUESTION_CHARS])
    words = [w.lower().strip(".-/#") for w in raw]
    best: tuple[int, dict[str, Any], int] | None = None
    for tool in tools:
        parts = name_words(str(tool.get("name", "")))
        if not parts:
            continue
        end = 0
        for part in parts:
            span = _span_of(part, words)
            if span is None:
                break
            end = max(end, span[1])
        else:
            if best is None or len(parts) > best[0]:
                best = (len(parts), tool, end)
    if best is None:
        return None
    _, tool, end = best
    args, missing = _arguments(tool, raw, words, end)
    return ToolCall(tool=tool, args=args, missing=tuple(missing))


def _arguments(tool: dict[str, Any], raw: list[str], words: list[str],
               after: int) -> tuple[dict[str, Any], list[str]]:
    args: dict[str, Any] = {}
    missing: list[str] = []
    used: set[int] = set()
    rest = list(range(after, len(words)))
    for param in tool.get("parameters") or []:
        name, kind = str(param["name"]), param.get("type")
        value: Any = None
        # a value named after the parameter ("order 1234", "product Blue Kettle") comes first
        pwords = name_words(name)
        anchor = _span_of(pwords[-1], words) if pwords else None
        candidates = ([anchor[1]] if anchor else []) + rest
        enum = param.get("enum")
        if enum:
            lowered = {str(e).lower(): e for e in enum}
            value = next((lowered[words[i]] for i in range(len(words)) if words[i] in lowered), None)
        elif kind in ("integer", "number"):
            for i in candidates:
                if i < len(words) and i not in used and _NUMBER.fullmatch(words[i]):
                    used.add(i)
                    value = float(words[i]) if kind == "number" else int(float(words[i]))
                    break
        elif kind == "boolean":
            value = True if set(words) & _YES else False if set(words) & _NO else None
        else:
            idish = any(c.isdigit() for w in raw for c in w)
            picked = next((i for i in candidates if i < len(words) and i not in used
                           and (not idish or any(c.isdigit() for c in raw[i]))
                           and words[i] not in _FILLER), None)
            if picked is not None:
                if any(c.isdigit() for c in raw[picked]):
                    used.add(picked)
                    value = raw[picked].strip(".,;:!?")
                else:  # free text: the rest of the message from there
                    span = [i for i in range(picked, len(words)) if i not in used]
                    while span and words[span[-1]] in _FILLER:
                        span.pop()
                    used.update(span)
                    value = " ".join(raw[i] for i in span).strip(".,;:!?") or None
        if value is None:
            if param.get("required", True):
                missing.append(name)
        else:
            args[name] = value
    return args, missing


def describe_result(value: Any) -> str:
    """A tool's result said aloud: a string as is, an object as ``key: value`` pairs."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "; ".join(f"{k}: {describe_result(v)}" for k, v in value.items()) or "nothing"
    if isinstance(value, list):
        return ", ".join(describe_result(v) for v in value) or "nothing"
    if value is None:
        return "nothing"
    return json.dumps(value)
