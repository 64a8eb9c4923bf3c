"""The knowledge token count: OpenAI's ``o200k_base`` BPE, counted exactly.

Runway does not publish the tokenizer behind its 50,000-token knowledge limit. We count with
``o200k_base`` — the byte-level BPE of OpenAI's current models, whose pre-tokenizer keeps
ordinary English at about 1.2–1.3 tokens a word — through ``bpe-openai`` (Python bindings of
GitHub's ``bpe-openai`` Rust crate). Its wheel carries the vocabulary (``bpe_openai/data/
o200k_base.tiktoken.gz``), so nothing is downloaded, ever; the count is the same as
``tiktoken``'s for ``o200k_base``. 200,000 characters are counted in ~25 ms.

Special-token text (``<|endoftext|>``) in a document is counted as ordinary text.

The count is the server's *estimate* of the upstream's: the budget is checked against it before
anything is sent, and the upstream's own verdict stands last — a change the upstream refuses for
its knowledge limit becomes the same 422 ``knowledge_budget_exceeded`` (``catalog.sync``).
The vocabulary (~1.7 MB compressed) is loaded once per process, at the first count (~0.7 s).
"""

from __future__ import annotations

import threading
from typing import Any

import bpe_openai

ENCODING = "o200k_base"

_lock = threading.Lock()
_encoding: Any = None


def encoding() -> Any:
    """The ``o200k_base`` encoding, loaded once (thread-safe)."""
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                _encoding = bpe_openai.get_encoding(ENCODING)
    return _encoding


def count_tokens(text: str) -> int:
    """The number of ``o200k_base`` tokens of ``text``; 0 for the empty string."""
    if not text:
        return 0
    return len(encoding().encode_ordinary(text))
