"""Reading untrusted JSON with explicit limits (the server's bodies and the local engine's alike).

Python's ``json`` has no limits of its own: a body nested 50,000 deep raises ``RecursionError``,
an integer of 5,000 digits raises a bare ``ValueError`` (CPython refuses int conversions past
4,300 digits), ``1e999`` becomes ``inf`` and ``NaN`` is accepted although it is not JSON. Each
of those reached callers as a 500. ``loads`` refuses them all with :class:`JsonLimitError` (a
``ValueError``) saying which limit was passed:

- nesting: at most ``MAX_DEPTH`` levels of arrays/objects, found by a scan *before* parsing
  (so the parser never recurses that deep);
- integers: at most ``MAX_INT_DIGITS`` digits (every integer field of the API fits in far fewer);
- other numbers: at most ``MAX_NUMBER_CHARS`` characters and finite;
- ``NaN``, ``Infinity``, ``-Infinity``: refused (not JSON).

No dependency on the server's API package: the engine (``engine/http/bodies.py``, ``engine/http/rtc.py``)
imports this module as the server's ``api/bodies.py`` does.
"""

from __future__ import annotations

import json
import math
import operator
import re
from itertools import accumulate, count
from typing import Any

MAX_DEPTH = 64
MAX_INT_DIGITS = 30
MAX_NUMBER_CHARS = 40

# a JSON string literal, escapes included (the unrolled form: linear, no backtracking)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_OPEN_CLOSE = bytes.maketrans(b"[]{}", b"\x02\x00\x02\x00")  # "[" → 2, "]" → 0, as their array pairs
_LEAF_PASSES = 4


class JsonLimitError(ValueError):
    """The text is JSON-shaped but passes one of this module's limits (or is not JSON at all)."""


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays/objects in ``text`` nest deeper than ``limit`` (brackets inside strings
    do not count).

    Cheap for ordinary bodies (two ``str.count`` calls); otherwise linear, and done by the regex
    engine, ``bytes`` methods and ``itertools`` rather than a Python loop over each character:
    strings are dropped, then everything but brackets; a few passes remove the innermost pairs
    (each pass lowers the depth by one and empties a shallow body), and the depth of what is
    left is the highest running sum of +1 per opening and -1 per closing bracket."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _STRING.sub("", text).encode("ascii", "ignore").translate(_OPEN_CLOSE, _NOT_BRACKETS)
    passes = min(_LEAF_PASSES, limit)
    for _ in range(passes):
        if not brackets:
            return False
        brackets = brackets.replace(b"\x02\x00", b"")
    # running sum of the 2/0 codes minus the count so far = depth after each bracket
    depth = max(map(operator.sub, accumulate(brackets), count(1)), default=0)
    return depth > limit - passes


def _int(literal: str) -> int:
    if len(literal) - literal.startswith("-") > MAX_INT_DIGITS:
        raise JsonLimitError(f"a number in the body has more than {MAX_INT_DIGITS} digits")
    return int(literal)


def _float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise JsonLimitError(f"a number in the body is longer than {MAX_NUMBER_CHARS} characters")
    value = float(literal)
    if not math.isfinite(value):
        raise JsonLimitError("a number in the body is too large")
    return value


def _constant(name: str) -> Any:
    raise JsonLimitError(f"{name} is not a JSON value")


def loads(data: str | bytes | bytearray) -> Any:
    """``json.loads`` within this module's limits.

    Raises ``json.JSONDecodeError`` for text that is not JSON, ``UnicodeDecodeError`` for bytes
    that are not text, and :class:`JsonLimitError` for JSON past a limit — all ``ValueError``s."""
    if isinstance(data, bytes | bytearray):
        # as json.loads decodes bytes (UTF-8, or UTF-16/32 recognised by their zero bytes)
        data = bytes(data).decode(json.detect_encoding(data), "surrogatepass")
    if too_deep(data):
        raise JsonLimitError(f"the body is nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(data, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:  # not reachable past the scan above; kept so nothing can become a 500
        raise JsonLimitError(f"the body is nested deeper than {MAX_DEPTH} levels") from None
