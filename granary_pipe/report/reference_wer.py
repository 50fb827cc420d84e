"""Word error rate of kept rows against the reference transcripts a source listing provides.

Per recording, the kept segments' texts are joined in time order and scored against the
listing's ``text`` (word and character edit distances, as jiwer counts them), both normalised
by the project's one text normalisation
(``stages.filters.rules.normalize``: NFKC, casefold, apostrophes dropped, punctuation and
symbols stripped). Recordings with a reference but no kept row are counted apart (their words
are not scored), so the figure is the quality of what would be released, and
``recordings_unscored`` says what was lost.

The rows come from a DuckDB scan (:mod:`granary_pipe.report.scan`): only rows with a reference,
unit by unit (a recording lies in one unit), so memory holds one unit's recordings. Each
recording adds its edit operations (substitutions + deletions + insertions) and its reference
length to its language's totals; WER = errors / reference words (and CER likewise over
characters), the number ``jiwer.wer``/``jiwer.cer`` give for all the recordings at once.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from rapidfuzz.distance import Levenshtein

from granary_pipe.report.scan import RunScan, scanning
from granary_pipe.report.rule_quality import normalized_reference
from granary_pipe.stages.filters.rules import normalize

COLUMNS = ["recording_id", "offset_s", "lang", "text"]
"""What :class:`WerScorer` reads of a row, besides ``kept``, ``filename`` and ``ref_text``."""


class _Totals:
    """One language's totals: recordings scored and unscored, word and character edits."""

    def __init__(self) -> None:
        self.recordings = self.unscored = self.ref_words = 0
        self.word_errors = self.word_ref = self.char_errors = self.char_ref = 0

    def add(self, ref: str, hyp: str) -> None:
        """Score one recording's normalised reference and joined hypothesis (non-empty ``ref``).

        What jiwer's ``process_words``/``process_characters`` count, without their per-call
        transforms (a normalised string has single spaces and no outer space, so jiwer's default
        transforms are its words and its characters): substitutions + deletions + insertions of
        an optimal alignment is the Levenshtein distance, hits + substitutions + deletions the
        reference's length."""
        ref_words = ref.split()
        self.recordings += 1
        self.ref_words += len(ref_words)
        self.word_errors += Levenshtein.distance(ref_words, hyp.split())
        self.word_ref += len(ref_words)
        self.char_errors += Levenshtein.distance(ref, hyp)
        self.char_ref += len(ref)

    def result(self) -> dict[str, Any]:
        scored = self.recordings > 0
        return {"wer": self.word_errors / self.word_ref if scored else None,
                "cer": self.char_errors / self.char_ref if scored else None,
                "recordings": self.recordings, "ref_words": self.ref_words,
                "recordings_unscored": self.unscored}


def _score_unit(rows: list[dict[str, Any]], totals: dict[str, _Totals]) -> None:
    """Score the recordings of one unit's rows with a reference (kept rows first, in file order)."""
    hyps: dict[str, list[tuple[float, str]]] = defaultdict(list)
    refs: dict[str, tuple[str, str]] = {}
    for row in rows:
        rid = row["recording_id"]
        if row["kept"]:
            hyps[rid].append((row["offset_s"] or 0.0, row["text"] or ""))
            refs[rid] = (row["lang"] or "und", row["ref_text"])
        else:
            refs.setdefault(rid, (row["lang"] or "und", row["ref_text"]))
    for rid, (lang, ref) in refs.items():
        t = totals[lang]
        if rid not in hyps:
            t.unscored += 1
            continue
        ref = normalized_reference(ref)
        if ref:
            t.add(ref, normalize(" ".join(text for _, text in sorted(hyps[rid]))))


class WerScorer:
    """:func:`reference_wer` in parts: rows with a reference streamed in (:meth:`add`, a unit's
    rows together), then :meth:`result`."""

    def __init__(self) -> None:
        self.totals: dict[str, _Totals] = defaultdict(_Totals)
        self._unit: str | None = None
        self._rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        """One row (``kept``, ``filename`` and :data:`COLUMNS`); a new unit scores the last one's."""
        where = os.path.dirname(row["filename"])
        if where != self._unit:
            _score_unit(self._rows, self.totals)
            self._unit, self._rows = where, []
        self._rows.append(row)

    def result(self) -> dict[str, Any]:
        """``{lang: {wer, cer, recordings, ref_words, recordings_unscored}}``."""
        _score_unit(self._rows, self.totals)
        self._unit, self._rows = None, []
        return {lang: self.totals[lang].result() for lang in sorted(self.totals)}


def reference_wer(run: Path | RunScan) -> dict[str, Any]:
    """Per-language WER of kept text vs references: ``{lang: {wer, cer, recordings, ...}}``.
    ``run``: a run directory or a scan of it."""
    scorer = WerScorer()
    with scanning(run) as scan:
        for batch in scan.ref_rows(COLUMNS):
            for row in batch.to_pylist():
                scorer.add(row)
    return scorer.result()
