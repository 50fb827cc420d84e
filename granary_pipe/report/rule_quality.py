"""Every rule measured: what each rule rejected, and how much of it was good speech.

**Counters.** Each committed unit's marker holds per-stage counters (:mod:`granary_pipe.counters`);
:func:`stage_counts` sums them over the committed units, in pipeline order (``run.json``'s
stages, then any other stage, the sink last). A run whose units carry none (made before the
counters existed) is measured from its rejected rows alone (no rows in, no flags).

**Scoring against references.** Where the source listing gave a reference transcript
(``text`` → the row's ``ref_text``), it is the whole recording's, while a row is a segment of it.
A row is scored against the span of the reference that matches it best (:func:`span_wer`: an
alignment over words with a free start and end in the reference; the fewest edits, then the
longest span among equally good ones), after the project's one normalisation
(``stages.filters.rules.normalize``; characters instead of words for languages written without
spaces). A rejected row scoring WER ≤ :data:`GOOD_WER_MAX` was good speech with a good label:
a false reject of its rule. A kept row scoring WER > :data:`GARBAGE_WER_MIN` is garbage that
got through. Rows without text (rejected before transcription) or without a reference are not
scored.

Each rule's entry: its stage, the stage's rows in, rows and hours it rejected, rows it flagged
(rejecting or not), rows scored, rows (hours) of those good, the false-reject rate = good /
scored. A rejection reason no counter holds is listed under stage None.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from granary_pipe import counters
from granary_pipe.io.sink import SINK
from granary_pipe.report.fmt import hms, rate, text_table
from granary_pipe.report.scan import RunScan, scanning
from granary_pipe.stages.filters import rules as text_rules

GOOD_WER_MAX = 0.2
"""A rejected row whose text scores at most this WER against its reference was good."""
GARBAGE_WER_MIN = 0.5
"""A kept row whose text scores above this WER against its reference is garbage."""

COLUMNS = ["lang", "text", "drop_reason", "duration_s"]
"""What :meth:`RuleScorer.add` reads of a row, besides ``kept`` and ``ref_text``."""


# ---------------------------------------------------------------- counters


def stage_order(run: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """``names`` in pipeline order: ``run.json``'s stages first, then the others sorted, the sink last."""
    listed = [s.get("use") or s.get("name") for s in (run.get("pipeline") or {}).get("stages") or []]
    order = {name: i for i, name in enumerate(dict.fromkeys(n for n in listed if n))}
    last = len(order) + 1
    return sorted(names, key=lambda n: (last + 1 if n == SINK else order.get(n, last), n))


def stage_counts(markers: Mapping[str, Mapping[str, Any]], run: Mapping[str, Any]) -> dict[str, Any] | None:
    """Counters summed over the committed units' ``markers`` (unit → marker JSON), in
    pipeline order; None when there is no unit or a unit's marker holds no ``counts``."""
    if not markers or any(not isinstance(m.get("counts"), dict) for m in markers.values()):
        return None
    total: dict[str, Any] = {}
    for marker in markers.values():
        total = counters.merge_stages(total, marker["counts"])
    return {name: total[name] for name in stage_order(run, list(total))}


# ---------------------------------------------------------------- scoring


def tokens(text: str | None, lang: str | None, normalized: str | None = None) -> list[str]:
    """Normalised words of ``text``, or its characters in a language written without spaces
    (``normalized``: ``text`` already normalised, when the caller has it)."""
    norm = text_rules.normalize(text) if normalized is None else normalized
    return list(norm.replace(" ", "")) if lang in text_rules.UNSPACED_LANGS else norm.split()


@lru_cache(maxsize=4096)
def normalized_reference(text: str) -> str:
    """:func:`~granary_pipe.stages.filters.rules.normalize` of a reference transcript, remembered
    for the last few thousand (every segment of a recording carries the recording's reference)."""
    return text_rules.normalize(text)


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


# ---------------------------------------------------------------- the table


def _entry(rule: str, stage: str | None, c: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"rule": rule, "stage": stage,
            "stage_rows_in": None if c is None else c.get("rows_in", 0),
            "rows_rejected": 0 if c is None else (c.get("rejected") or {}).get(rule, 0),
            "hours_rejected": 0.0 if c is None else (c.get("rejected_s") or {}).get(rule, 0.0) / 3600,
            "rows_flagged": None if c is None else (c.get("flagged") or {}).get(rule, 0),
            "rows_scored": 0, "rows_good": 0, "hours_good": 0.0, "false_reject_rate": None}


class RuleScorer:
    """:func:`rule_quality` in parts: the rows counted from the scan's groups, then each row with a
    reference scored as it streams (:meth:`add`), then :meth:`result`."""

    def __init__(self, groups: list[dict[str, Any]], counts: Mapping[str, Mapping[str, Any]] | None) -> None:
        self.counts = counts
        self.entries: dict[str, dict[str, Any]] = {}
        for stage, c in (counts or {}).items():
            for rule in dict.fromkeys([*(c.get("rejected") or {}), *(c.get("flagged") or {})]):
                self.entries.setdefault(rule, _entry(rule, stage, c))
        self.known = list(self.entries)
        self.kept = {"rows": 0, "hours": 0.0, "rows_scored": 0, "rows_garbage": 0, "hours_garbage": 0.0,
                     "garbage_rate": None}
        self.with_ref = 0
        self._rule_of: dict[str, str] = {}
        self._ref: tuple[Any, list[str]] = (None, [])  # rows of a recording come together: tokenised once
        kept_s: list[float] = []
        rejected_s: dict[str, list[float]] = {}
        for g in groups:
            if g["kept"]:
                self.kept["rows"] += g["n"]
                kept_s.append(g["secs"])
                continue
            d = self._entry_of(g["drop_reason"])
            if counts is None or d["stage"] is None:
                d["rows_rejected"] += g["n"]
                rejected_s.setdefault(d["rule"], []).append(g["secs"])
        self.kept["hours"] = math.fsum(kept_s) / 3600
        for rule, secs in rejected_s.items():
            self.entries[rule]["hours_rejected"] = math.fsum(secs) / 3600

    def _entry_of(self, reason: str | None) -> dict[str, Any]:
        reason = reason or "(no reason)"
        if reason not in self._rule_of:
            self._rule_of[reason] = counters.rule_of(reason, self.known)
        rule = self._rule_of[reason]
        if rule not in self.entries:
            self.entries[rule] = _entry(rule, None, None)
        return self.entries[rule]

    def add(self, row: Mapping[str, Any]) -> None:
        """Score one row with a reference (``kept``, ``ref_text`` and :data:`COLUMNS`)."""
        self.with_ref += 1
        d = self.kept if row["kept"] else self._entry_of(row["drop_reason"])
        key = (row["ref_text"], row["lang"])
        if key != self._ref[0]:
            self._ref = (key, tokens(row["ref_text"], row["lang"], normalized_reference(row["ref_text"])))
        wer = span_wer(tokens(row["text"], row["lang"]), self._ref[1])
        if wer is None:
            return
        hours = (row["duration_s"] or 0.0) / 3600
        d["rows_scored"] += 1
        if row["kept"] and wer > GARBAGE_WER_MIN:
            d["rows_garbage"] += 1
            d["hours_garbage"] += hours
        elif not row["kept"] and wer <= GOOD_WER_MAX:
            d["rows_good"] += 1
            d["hours_good"] += hours

    def result(self) -> dict[str, Any]:
        """The table :func:`rule_quality` returns."""
        for d in self.entries.values():
            d["false_reject_rate"] = d["rows_good"] / d["rows_scored"] if d["rows_scored"] else None
        kept = self.kept
        kept["garbage_rate"] = kept["rows_garbage"] / kept["rows_scored"] if kept["rows_scored"] else None
        stages = list(self.counts or {})
        order = sorted(self.entries.values(), key=lambda d: (
            stages.index(d["stage"]) if d["stage"] in stages else len(stages), -d["rows_rejected"], d["rule"]))
        return {"good_wer_max": GOOD_WER_MAX, "garbage_wer_min": GARBAGE_WER_MIN,
                "counters": self.counts is not None, "rows_with_reference": self.with_ref, "rules": order,
                "kept": kept}


def rule_quality(run: Path | RunScan, counts: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """Per rule: rows/hours rejected and flagged (from ``counts``, :func:`stage_counts`; else
    from the rejected rows), and against references, how many rejected rows were good; for
    kept rows, how many are garbage. See the module doc. ``run``: a run directory or a scan of it;
    rows are counted by the scan's aggregates and only rows with a reference come back, in batches."""
    with scanning(run) as scan:
        scorer = RuleScorer(scan.groups(), counts)
        for batch in scan.ref_rows(COLUMNS):
            for row in batch.to_pylist():
                scorer.add(row)
    return scorer.result()


def format_rule_quality(rq: Mapping[str, Any]) -> list[str]:
    """The per-rule table as terminal lines (empty when there is no rule and no reference)."""
    if not rq["rules"] and not rq["rows_with_reference"]:
        return []
    scored = rq["rows_with_reference"] > 0
    headers = ["rule", "stage", "rejected", "audio", "flagged"]
    if scored:
        headers += ["scored", f"good (WER≤{rq['good_wer_max']:g})", "false rejects"]
    rows = []
    for d in rq["rules"]:
        row = [d["rule"], d["stage"] or "(not counted)", d["rows_rejected"], hms(d["hours_rejected"]),
               "-" if d["rows_flagged"] is None else d["rows_flagged"]]
        if scored:
            row += [d["rows_scored"], d["rows_good"], rate(d["false_reject_rate"])]
        rows.append(row)
    lines = text_table(headers, rows) if rows else ["  (no rule)"]
    k = rq["kept"]
    if scored:
        lines.append(f"  kept rows scored against references: {k['rows_scored']} of {k['rows']}; garbage "
                     f"(WER>{rq['garbage_wer_min']:g}): {k['rows_garbage']} ({rate(k['garbage_rate'])}, "
                     f"{hms(k['hours_garbage'])})")
    else:
        lines.append("  (no reference transcripts in the source listing: false rejects not measured)")
    if not rq["counters"]:
        lines.append("  (this run's units carry no per-stage counters: counted from the rejected rows)")
    return lines
