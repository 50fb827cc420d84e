"""Pure text rules for hallucination filtering (no I/O, no models, no tables), one question each; the word
rules assume a language written with spaces. Design: docs/architecture.md, "Data flow" (filter.hallucination)."""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

from granary_pipe.text import APOSTROPHES, fold

COMPOUNDING_LANGS = ("de", "nl", "fi", "hu", "et", "da", "sv", "no", "nb", "nn")  # Geschwindigkeitsbegrenzung

_URL = re.compile(
    r"^(?:[a-z][a-z0-9+.-]*://\S+|www\.\S+|[^@\s]+@[^@\s]+\.[a-z]{2,}"
    r"|[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}(?:/\S*)?)$",
    re.IGNORECASE)
_NUMERAL = re.compile(r"\d+(?:[.,:]\d+)*")


def repeated_ngrams(ws: list[str], max_unique_ratio: float, min_words: int) -> bool:
    """Granary's rule: at least ``min_words`` words and distinct/total ≤ ``max_unique_ratio``."""
    unique_ratio = len(set(ws)) / len(ws) if ws else 1.0
    return len(ws) >= min_words and unique_ratio <= max_unique_ratio


def longest_run(ws: list[str], n: int) -> int:
    """Most consecutive occurrences of any ``n``-word pattern (``a b a b a b`` → 3 for n=2)."""
    best = 1 if len(ws) >= n else 0
    for start in range(min(n, len(ws))):  # every phase of the n-word grid
        run, prev = 0, None
        for i in range(start, len(ws) - n + 1, n):
            gram = tuple(ws[i : i + n])
            run = run + 1 if gram == prev else 1
            prev = gram
            best = max(best, run)
    return best


def ngram_loop(ws: list[str], ranges: list[tuple[int, int, int]]) -> bool:
    """MOSEL's rule: for some ``(min_n, max_n, min_repeats)`` of ``ranges`` (``[(1, 2, 4), (3, 5, 2)]``),
    an n-word pattern with min_n ≤ n ≤ max_n occurs ``min_repeats`` times in a row."""
    return any(longest_run(ws, n) >= reps for lo, hi, reps in ranges for n in range(lo, hi + 1))


def is_url(token: str) -> bool:
    """Web address, e-mail or domain name (``www.amara.org``, ``https://…``, ``a@b.de``)."""
    return bool(_URL.match(token))


class Token(NamedTuple):
    """A word and its length for the long-word rule (a numeral's digits; None for a web address or e-mail)."""

    text: str
    length: int | None


def word_tokens(text: str | None) -> list[Token]:
    """Words of ``text`` (folded by :func:`granary_pipe.text.fold`) for the repetition and long-word
    rules: outer punctuation and symbols stripped; web addresses and e-mails whole; otherwise split at
    inner punctuation or symbols except ``.`` ``,`` ``:`` between digits; apostrophes deleted."""
    out = []
    for chunk in fold(text).split():
        chunk = _strip_punct(chunk)
        if not chunk:
            continue
        if is_url(chunk):
            out.append(Token(chunk, None))
            continue
        for piece in _split_inner(chunk):
            length = sum(ch.isdigit() for ch in piece) if _NUMERAL.fullmatch(piece) else len(piece)
            out.append(Token(piece, length))
    return out


def _split_inner(tok: str) -> list[str]:
    kept = []
    for i, ch in enumerate(tok):
        if ch in APOSTROPHES:
            continue
        splits = unicodedata.category(ch)[0] in "PS" and not (
            ch in ".,:" and 0 < i < len(tok) - 1 and tok[i - 1].isdigit() and tok[i + 1].isdigit())
        kept.append(" " if splits else ch)
    return "".join(kept).split()


def _strip_punct(tok: str) -> str:
    lo, hi = 0, len(tok)
    while lo < hi and unicodedata.category(tok[lo])[0] in "PS":
        lo += 1
    while hi > lo and unicodedata.category(tok[hi - 1])[0] in "PS":
        hi -= 1
    return tok[lo:hi]


def long_word(lengths: list[int], min_chars: int | None, ratio: float | None, ratio_min_chars: int) -> bool:
    """Longest word ≥ ``min_chars``, or ≥ ``ratio`` × the second-longest and ≥ ``ratio_min_chars``
    (below that one long word among short ones is ordinary: "I am a photographer")."""
    if not lengths:
        return False
    top = sorted(lengths, reverse=True)
    if min_chars is not None and top[0] >= min_chars:
        return True
    return ratio is not None and len(top) > 1 and top[0] >= ratio_min_chars and top[0] >= ratio * top[1]


def letter_count(text: str | None) -> int:
    """Letters of any script, ideographs included, and the combining marks written on them
    (Unicode categories L*, M*); not digits, punctuation or symbols."""
    return sum(1 for ch in (text or "") if ch.isalpha() or unicodedata.category(ch)[0] == "M")


def whisper_silence(no_speech_prob: float | None, avg_logprob: float | None, prob_max: float | None,
                    logprob_max: float, alone: bool = False) -> bool:
    """Whisper's silence rule: ``no_speech_prob`` > ``prob_max`` and (unless ``alone``)
    ``avg_logprob`` < ``logprob_max``. Missing scores or ``prob_max`` None never fire."""
    if prob_max is None or no_speech_prob is None or no_speech_prob <= prob_max:
        return False
    return alone or (avg_logprob is not None and avg_logprob < logprob_max)


def char_count(text: str | None) -> int:
    """Characters that are not whitespace."""
    return sum(1 for ch in (text or "") if not ch.isspace())


def char_rate(text: str | None, duration_s: float | None) -> float | None:
    """Non-space characters per second; None without a positive duration or without text."""
    n = char_count(text)
    if not n or not duration_s or duration_s <= 0:
        return None
    return n / duration_s
