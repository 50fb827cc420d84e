"""Scoring a row's text against a reference transcript, shared by the digest and the report: a row
against the best-matching span of its recording's reference (:func:`span_wer`), a recording's joined kept
text against the whole reference (:func:`edit_counts`, what jiwer counts)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein

GOOD_WER_MAX = 0.2
"""A rejected row whose text scores at most this WER against its reference was good."""
GARBAGE_WER_MIN = 0.5
"""A kept row whose text scores above this WER against its reference is garbage."""


def span_wer(hyp: Sequence[str], ref: Sequence[str]) -> float | None:
    """WER of ``hyp`` against the span of ``ref`` it matches best; None when either is empty.

    A semi-global alignment (free start and end in ``ref``): the span with the fewest edits
    (substitutions, insertions, deletions), the longest among equally good ones; WER = edits /
    span length (≥ 1). One numpy pass per ``hyp`` token: each cell holds edits × (n+1) + the
    span's start, so a minimum keeps both, and deletions along ``ref`` are a running minimum.
    """
    m, n = len(hyp), len(ref)
    if not m or not n:
        return None
    vocab: dict[str, int] = {}
    ref_ids = np.array([vocab.setdefault(w, len(vocab)) for w in ref], dtype=np.int64)
    width = n + 1
    j = np.arange(n + 1, dtype=np.int64)
    prev = j.copy()  # no hyp token yet: 0 edits, a span starting anywhere
    for word in hyp:
        cost = (ref_ids != vocab.get(word, -1)).astype(np.int64) * width
        step = np.empty(n + 1, dtype=np.int64)
        step[0] = prev[0] + width  # an inserted hyp token before the span
        step[1:] = np.minimum(prev[:-1] + cost, prev[1:] + width)  # match/substitute, insert
        prev = np.minimum.accumulate(step - j * width) + j * width  # delete reference words
    edits, span = prev // width, j - prev % width
    best = edits.min()
    return float(best) / max(int(span[edits == best].max()), 1)


def edit_counts(ref: str, hyp: str) -> tuple[int, int, int, int]:
    """Word errors, reference words, character errors, reference characters of a normalised (non-empty)
    reference and hypothesis: what jiwer's ``process_words`` and ``process_characters`` count."""
    ref_words = ref.split()
    return (Levenshtein.distance(ref_words, hyp.split()), len(ref_words),
            Levenshtein.distance(ref, hyp), len(ref))
