"""Word error rate of kept rows against the reference transcripts a source listing provides.

Per recording, the kept segments' texts are joined in time order and scored against the
listing's ``text`` with jiwer, both normalised by the project's one text normalisation
(``stages.filters.rules.normalize``: NFKC, casefold, apostrophes dropped, punctuation and
symbols stripped). Recordings with a reference but no kept row are counted apart (their words
are not scored), so the figure is the quality of what would be released, and
``recordings_unscored`` says what was lost.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import jiwer

from granary_pipe.rundir import committed_units, read_unit_table
from granary_pipe.stages.filters.rules import normalize

_COLUMNS = ["recording_id", "offset_s", "lang", "text", "ref_text"]


def reference_wer(run_dir: Path) -> dict[str, Any]:
    """Per-language WER of kept text vs references: ``{lang: {wer, cer, recordings, ...}}``."""
    hyps: dict[str, list[tuple[float, str]]] = defaultdict(list)
    refs: dict[str, tuple[str, str]] = {}
    for unit in committed_units(Path(run_dir)):
        for row in read_unit_table(run_dir, unit, "kept", _COLUMNS).to_pylist():
            if row["ref_text"]:
                hyps[row["recording_id"]].append((row["offset_s"] or 0.0, row["text"] or ""))
                refs[row["recording_id"]] = (row["lang"] or "und", row["ref_text"])
        for row in read_unit_table(run_dir, unit, "rejected", _COLUMNS).to_pylist():
            if row["ref_text"] and row["recording_id"] not in refs:
                refs.setdefault(row["recording_id"], (row["lang"] or "und", row["ref_text"]))
    by_lang: dict[str, dict[str, list]] = defaultdict(lambda: {"ref": [], "hyp": [], "unscored": []})
    for rid, (lang, ref) in sorted(refs.items()):
        if rid in hyps:
            by_lang[lang]["ref"].append(normalize(ref))
            by_lang[lang]["hyp"].append(normalize(" ".join(t for _, t in sorted(hyps[rid]))))
        else:
            by_lang[lang]["unscored"].append(rid)
    out = {}
    for lang, d in sorted(by_lang.items()):
        scored = [(r, h) for r, h in zip(d["ref"], d["hyp"]) if r]
        out[lang] = {
            "wer": jiwer.wer([r for r, _ in scored], [h for _, h in scored]) if scored else None,
            "cer": jiwer.cer([r for r, _ in scored], [h for _, h in scored]) if scored else None,
            "recordings": len(scored),
            "ref_words": sum(len(r.split()) for r, _ in scored),
            "recordings_unscored": len(d["unscored"]),
        }
    return out
