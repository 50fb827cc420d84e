"""Word error rate of kept rows against the reference transcripts a source listing provides.

Per recording, the kept segments' texts are joined in time order and scored against the
listing's ``text`` (word and character edit distances, as jiwer counts them), both normalised
in the recording's language by the project's one text normalisation
(:func:`granary_pipe.text.normalize`: Whisper's convention, numbers in one written form, so
``21`` against a reference's ``twenty one`` is no error). Recordings with a reference but no kept row are counted apart (their words
are not scored), so the figure is the quality of what would be released, and
``recordings_unscored`` says what was lost.

Each unit's digest (:mod:`granary_pipe.digest`, computed when the unit is committed) holds its
recordings' edit operations (substitutions + deletions + insertions) and reference lengths per
language (a recording lies in one unit); the report sums them: WER = errors / reference words
(and CER likewise over characters), the number ``jiwer.wer``/``jiwer.cer`` give for all the
recordings at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from granary_pipe.report.totals import RunTotals, collect


def wer_table(totals: RunTotals) -> dict[str, Any]:
    """``{lang: {wer, cer, recordings, ref_words, recordings_unscored}}`` of merged ``totals``."""
    out = {}
    for lang in sorted(totals.wer):
        recordings, unscored, word_errors, word_ref, char_errors, char_ref = totals.wer[lang]
        scored = recordings > 0
        out[lang] = {"wer": word_errors / word_ref if scored else None,
                     "cer": char_errors / char_ref if scored else None,
                     "recordings": recordings, "ref_words": word_ref, "recordings_unscored": unscored}
    return out


def reference_wer(run: Path | RunTotals) -> dict[str, Any]:
    """Per-language WER of kept text vs references: ``{lang: {wer, cer, recordings, ...}}``.
    ``run``: a run directory or its merged totals (:func:`granary_pipe.report.totals.collect`)."""
    return wer_table(run if isinstance(run, RunTotals) else collect(Path(run)))
