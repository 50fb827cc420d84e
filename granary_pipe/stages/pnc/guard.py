"""The guard between an LLM's punctuated text and the corpus: words may not change."""

from __future__ import annotations

import re

from granary_pipe.text import edit_distance, normalize

MAX_CER = 0.10
MAX_UPPER_RATIO = 0.60

_FENCE = re.compile(r"^```[\w-]*\s*\n?(.*?)\n?```$", re.S)
_QUOTE_PAIRS = {'"': '"', "'": "'", "\u201c": "\u201d", "\u00ab": "\u00bb", "\u201e": "\u201c"}


def cer(original: str, restored: str, lang: str | None = None) -> float:
    """Character error rate of ``restored`` against ``original``, both normalised in ``lang``."""
    ref, hyp = normalize(original, lang), normalize(restored, lang)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def upper_ratio(text: str) -> float:
    """Share of upper-case letters among letters that have a case (0 when there are none)."""
    upper, lower = sum(ch.isupper() for ch in text), sum(ch.islower() for ch in text)
    return upper / (upper + lower) if upper + lower else 0.0


def clean_output(text: str | None, original: str = "") -> str | None:
    """Strip what chat models wrap around an answer: whitespace, a code fence, and enclosing
    quotes that the ``original`` did not have."""
    if text is None:
        return None
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    quoted = len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1] and text.count(text[0]) <= 2
    if quoted and not original.lstrip().startswith(text[0]):
        text = text[1:-1].strip()
    return text


def check(original: str, restored: str | None, max_cer: float = MAX_CER,
          max_upper_ratio: float = MAX_UPPER_RATIO, lang: str | None = None) -> str | None:
    """The first rule ``restored`` breaks (``call_failed``, ``empty``, ``upper_case``, ``words_changed``: CER over
    ``max_cer`` after ``text.normalize`` in ``lang``), or None when it may replace ``original``."""
    if restored is None:
        return "call_failed"
    if not normalize(restored):
        return "empty"
    if upper_ratio(restored) > max_upper_ratio:
        return "upper_case"
    if cer(original, restored, lang) > max_cer:
        return "words_changed"
    return None
