"""Every rule measured: what each rule rejected, and how much of it was good speech.

**Counters.** Each committed unit's marker holds per-stage counters (:mod:`granary_pipe.counters`);
the report sums them over the committed units (:mod:`granary_pipe.report.totals`), in pipeline
order (:func:`stage_order`: ``run.json``'s stages, then any other stage, the sink last). A run
whose units carry none is measured from its rejected rows alone (no rows in, no flags).

**Scoring against references.** Where the source listing gave a reference transcript
(``text`` → the row's ``ref_text``), it is the whole recording's, while a row is a segment of it.
A row is scored against the span of the reference that matches it best
(:func:`granary_pipe.scoring.span_wer`: an alignment over words with a free start and end in the
reference; the fewest edits, then the longest span among equally good ones), after the
project's one normalisation in the row's language (:func:`granary_pipe.text.normalize`, numbers
in one written form; characters instead of words for languages written without spaces). A rejected row scoring WER ≤ ``GOOD_WER_MAX`` was good speech
with a good label: a false reject of its rule. A kept row scoring WER > ``GARBAGE_WER_MIN`` is
garbage that got through. Rows without text (rejected before transcription) or without a
reference are not scored. Each unit is scored when it is committed (its marker's ``digest``,
:mod:`granary_pipe.digest`); the report merges the units' figures.

Each rule's entry: its stage, the stage's rows in, rows and hours it rejected, rows it flagged
(rejecting or not), rows scored, rows (hours) of those good, the false-reject rate = good /
scored. A rejection reason no counter holds is listed under stage None.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from granary_pipe import counters
from granary_pipe.io.sink import SINK
from granary_pipe.report.fmt import hms, rate, text_table
from granary_pipe.report.totals import RunTotals, collect
from granary_pipe.scoring import GARBAGE_WER_MIN, GOOD_WER_MAX

# ---------------------------------------------------------------- counters


def stage_order(run: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """``names`` in pipeline order: ``run.json``'s stages first, then the others sorted, the sink last."""
    listed = [s.get("use") or s.get("name") for s in (run.get("pipeline") or {}).get("stages") or []]
    order = {name: i for i, name in enumerate(dict.fromkeys(n for n in listed if n))}
    last = len(order) + 1
    return sorted(names, key=lambda n: (last + 1 if n == SINK else order.get(n, last), n))


# ---------------------------------------------------------------- the table


def _entry(rule: str, stage: str | None, c: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"rule": rule, "stage": stage,
            "stage_rows_in": None if c is None else c.get("rows_in", 0),
            "rows_rejected": 0 if c is None else (c.get("rejected") or {}).get(rule, 0),
            "hours_rejected": 0.0 if c is None else (c.get("rejected_s") or {}).get(rule, 0.0) / 3600,
            "rows_flagged": None if c is None else (c.get("flagged") or {}).get(rule, 0),
            "rows_scored": 0, "rows_good": 0, "hours_good": 0.0, "false_reject_rate": None}


def rule_table(totals: RunTotals, groups: list[dict[str, Any]],
               counts: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """:func:`rule_quality` of merged ``totals`` (``groups``: :meth:`RunTotals.group_rows`)."""
    entries: dict[str, dict[str, Any]] = {}
    for stage, c in (counts or {}).items():
        for rule in dict.fromkeys([*(c.get("rejected") or {}), *(c.get("flagged") or {})]):
            entries.setdefault(rule, _entry(rule, stage, c))
    known = list(entries)
    rule_of: dict[str, str] = {}

    def entry_of(reason: str | None) -> dict[str, Any]:
        reason = reason or "(no reason)"
        if reason not in rule_of:
            rule_of[reason] = counters.rule_of(reason, known)
        rule = rule_of[reason]
        if rule not in entries:
            entries[rule] = _entry(rule, None, None)
        return entries[rule]

    kept = {"rows": 0, "hours": 0.0, "rows_scored": 0, "rows_garbage": 0, "hours_garbage": 0.0, "garbage_rate": None}
    kept_s: list[float] = []
    rejected_s: dict[str, list[float]] = {}
    for g in groups:
        if g["kept"]:
            kept["rows"] += g["n"]
            kept_s.append(g["secs"])
            continue
        d = entry_of(g["drop_reason"])
        if counts is None or d["stage"] is None:
            d["rows_rejected"] += g["n"]
            rejected_s.setdefault(d["rule"], []).append(g["secs"])
    kept["hours"] = math.fsum(kept_s) / 3600
    for rule, secs in rejected_s.items():
        entries[rule]["hours_rejected"] = math.fsum(secs) / 3600
    good_s: dict[str, list[float]] = {}
    for reason, (n, good, secs) in totals.scored.items():
        d = entry_of(reason)
        d["rows_scored"] += n
        d["rows_good"] += good
        good_s.setdefault(d["rule"], []).append(secs.value())
    for rule, secs in good_s.items():
        entries[rule]["hours_good"] = math.fsum(secs) / 3600
    kept["rows_scored"], kept["rows_garbage"] = totals.kept_scored[0], totals.kept_scored[1]
    kept["hours_garbage"] = totals.kept_scored[2].value() / 3600
    for d in entries.values():
        d["false_reject_rate"] = d["rows_good"] / d["rows_scored"] if d["rows_scored"] else None
    kept["garbage_rate"] = kept["rows_garbage"] / kept["rows_scored"] if kept["rows_scored"] else None
    stages = list(counts or {})
    order = sorted(entries.values(), key=lambda d: (
        stages.index(d["stage"]) if d["stage"] in stages else len(stages), -d["rows_rejected"], d["rule"]))
    return {"good_wer_max": GOOD_WER_MAX, "garbage_wer_min": GARBAGE_WER_MIN,
            "counters": counts is not None, "rows_with_reference": totals.with_ref, "rules": order, "kept": kept}


def rule_quality(run: Path | RunTotals, counts: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """Per rule: rows/hours rejected and flagged (from ``counts``, the markers' counters summed in :func:`stage_order`; else
    from the rejected rows), and against references, how many rejected rows were good; for
    kept rows, how many are garbage. See the module doc. ``run``: a run directory or its merged
    totals (:func:`granary_pipe.report.totals.collect`): the units' digests, no row."""
    totals = run if isinstance(run, RunTotals) else collect(Path(run))
    return rule_table(totals, list(totals.group_rows()), counts)


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
