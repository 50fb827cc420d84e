"""Every rule measured: per rule its counters and, against reference transcripts, the good rows it
rejected; the garbage among kept rows. Design: docs/architecture.md, "Report"."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from granary_pipe import counters
from granary_pipe.io.sink import SINK
from granary_pipe.report.fmt import hms, rate, text_table
from granary_pipe.report.totals import RunTotals
from granary_pipe.scoring import GARBAGE_WER_MIN, GOOD_WER_MAX

NOT_COUNTED = "(not counted)"
"""The stage shown for a rule, or the retention line for rejected rows, that no stage counter holds."""


def stage_order(run: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """``names`` in pipeline order: ``run.json``'s stages first, then the others sorted, the sink last."""
    listed = [s.get("use") or s.get("name") for s in (run.get("pipeline") or {}).get("stages") or []]
    order = {name: i for i, name in enumerate(dict.fromkeys(n for n in listed if n))}
    last = len(order) + 1
    return sorted(names, key=lambda n: (last + 1 if n == SINK else order.get(n, last), n))


def _entry(rule: str, stage: str | None, c: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"rule": rule, "stage": stage,
            "stage_rows_in": None if c is None else c.get("rows_in", 0),
            "rows_rejected": 0 if c is None else (c.get("rejected") or {}).get(rule, 0),
            "hours_rejected": 0.0 if c is None else (c.get("rejected_s") or {}).get(rule, 0.0) / 3600,
            "rows_flagged": None if c is None else (c.get("flagged") or {}).get(rule, 0),
            "rows_scored": 0, "rows_good": 0, "hours_good": 0.0, "false_reject_rate": None}


class _Entries:
    """The rules' entries: first those the counters name, then any rule a reason maps to."""

    def __init__(self, counts: Mapping[str, Mapping[str, Any]] | None) -> None:
        self.by_rule: dict[str, dict[str, Any]] = {}
        for stage, c in (counts or {}).items():
            for rule in dict.fromkeys([*(c.get("rejected") or {}), *(c.get("flagged") or {})]):
                self.by_rule.setdefault(rule, _entry(rule, stage, c))
        self._known = list(self.by_rule)
        self._rule_of: dict[str, str] = {}

    def of(self, reason: str | None) -> dict[str, Any]:
        """The entry of the rule behind a drop_reason (made, uncounted, if no counter names it)."""
        reason = reason or "(no reason)"
        if reason not in self._rule_of:
            self._rule_of[reason] = counters.rule_of(reason, self._known)
        rule = self._rule_of[reason]
        return self.by_rule.setdefault(rule, _entry(rule, None, None))


def _add_rejected(entries: _Entries, groups: list[dict[str, Any]], counted: bool) -> None:
    """Rows and hours rejected per rule from the rejected groups, for rules no counter counted."""
    rejected_s: dict[str, list[float]] = {}
    for g in groups:
        if g["kept"]:
            continue
        d = entries.of(g["drop_reason"])
        if not counted or d["stage"] is None:
            d["rows_rejected"] += g["n"]
            rejected_s.setdefault(d["rule"], []).append(g["secs"])
    for rule, secs in rejected_s.items():
        entries.by_rule[rule]["hours_rejected"] = math.fsum(secs) / 3600


def _add_scored(entries: _Entries, totals: RunTotals) -> None:
    """Rejected rows scored against references and the good ones, per rule; the false-reject rates."""
    good_s: dict[str, list[float]] = {}
    for reason, (n, good, secs) in totals.scored.items():
        d = entries.of(reason)
        d["rows_scored"] += n
        d["rows_good"] += good
        good_s.setdefault(d["rule"], []).append(secs.value())
    for rule, secs in good_s.items():
        entries.by_rule[rule]["hours_good"] = math.fsum(secs) / 3600
    for d in entries.by_rule.values():
        d["false_reject_rate"] = d["rows_good"] / d["rows_scored"] if d["rows_scored"] else None


def _kept(totals: RunTotals, groups: list[dict[str, Any]]) -> dict[str, Any]:
    kept = [g for g in groups if g["kept"]]
    scored, garbage, garbage_s = totals.kept_scored
    return {"rows": sum(g["n"] for g in kept), "hours": math.fsum(g["secs"] for g in kept) / 3600,
            "rows_scored": scored, "rows_garbage": garbage, "hours_garbage": garbage_s.value() / 3600,
            "garbage_rate": garbage / scored if scored else None}


def rule_table(totals: RunTotals, groups: list[dict[str, Any]],
               counts: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """Per rule: rows/hours rejected and flagged (from ``counts`` in :func:`stage_order`, else from the
    rejected rows) and the good rows among the rejected; for kept rows, the garbage."""
    entries = _Entries(counts)
    _add_rejected(entries, groups, counts is not None)
    _add_scored(entries, totals)
    stages = list(counts or {})
    order = sorted(entries.by_rule.values(), key=lambda d: (
        stages.index(d["stage"]) if d["stage"] in stages else len(stages), -d["rows_rejected"], d["rule"]))
    return {"good_wer_max": GOOD_WER_MAX, "garbage_wer_min": GARBAGE_WER_MIN, "counters": counts is not None,
            "rows_with_reference": totals.with_ref, "rules": order, "kept": _kept(totals, groups)}


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
        row = [d["rule"], d["stage"] or NOT_COUNTED, d["rows_rejected"], hms(d["hours_rejected"]),
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
