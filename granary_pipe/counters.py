"""Per-stage counters: what each stage did to a unit's rows (rows in and out, rejected rows and seconds and
flagged rows per rule), counted from the rows a stage saw and returned (:func:`of_batch`).
Design: docs/architecture.md, "Contracts"."""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping

import pyarrow as pa

StageCounts = dict[str, Any]
"""``{"rows_in", "rows_out", "rejected": {rule: rows}, "rejected_s": {rule: seconds}, "flagged": {rule: rows}}``."""

_MAPS = ("rejected", "rejected_s", "flagged")
_INTS = ("rows_in", "rows_out")


def reason_key(reason: str) -> str:
    """A reason as a counter key: itself, or its category when it is a message (holds a space)."""
    reason = reason.strip()
    return reason.split(":", 1)[0].strip() if any(c.isspace() for c in reason) else reason


def rule_of(reason: str, rules: Iterable[str] = ()) -> str:
    """The rule ``reason`` falls under: the longest of ``rules`` that it equals or extends by
    ``:<detail>`` (``license:CC-BY-NC-4.0`` under ``license``), else :func:`reason_key`."""
    best = max((rule for rule in rules if reason == rule or reason.startswith(rule + ":")), key=len, default="")
    return best or reason_key(reason)


def empty(rules: Iterable[str] = ()) -> StageCounts:
    """Counts of a stage that saw no row: every declared rule at 0."""
    rules = list(rules)
    return {"rows_in": 0, "rows_out": 0, "rejected": dict.fromkeys(rules, 0),
            "rejected_s": dict.fromkeys(rules, 0.0), "flagged": dict.fromkeys(rules, 0)}


def of_batch(seen: pa.Table, out: pa.Table, rules: Iterable[str] = ()) -> StageCounts:
    """Counts of one stage call given the active rows ``seen`` and returning ``out``: rows of ``out``
    with a ``drop_reason`` were rejected by it; a flag counts when ``out`` holds it more often."""
    rules = list(rules)
    counts = empty(rules)
    counts["rows_in"], counts["rows_out"] = seen.num_rows, out.num_rows
    reasons = out.column("drop_reason").to_pylist()
    durations = out.column("duration_s").to_pylist()
    for reason, dur in zip(reasons, durations, strict=True):
        if reason is not None:
            rule = rule_of(reason, rules)
            counts["rejected"][rule] = counts["rejected"].get(rule, 0) + 1
            counts["rejected_s"][rule] = counts["rejected_s"].get(rule, 0.0) + (dur or 0.0)
    before = Counter(rule_of(f, rules) for fl in seen.column("flags").to_pylist() for f in (fl or []))
    after = Counter(rule_of(f, rules) for fl in out.column("flags").to_pylist() for f in (fl or []))
    for rule, n in (after - before).items():
        counts["flagged"][rule] = counts["flagged"].get(rule, 0) + n
    return counts


def merge(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> StageCounts:
    """Sum of two stages' counts (either may be None or empty)."""
    out = empty()
    for c in (a or {}, b or {}):
        for key in _INTS:
            out[key] += c.get(key, 0)
        for key in _MAPS:
            for rule, n in (c.get(key) or {}).items():
                out[key][rule] = out[key].get(rule, 0) + n
    return out


def merge_stages(a: Mapping[str, Mapping] | None, b: Mapping[str, Mapping] | None) -> dict[str, StageCounts]:
    """Sum of two ``{stage: counts}`` maps, stage by stage (insertion order: ``a``'s, then ``b``'s new ones)."""
    out: dict[str, StageCounts] = {}
    for stage in dict.fromkeys([*(a or {}), *(b or {})]):
        out[stage] = merge((a or {}).get(stage), (b or {}).get(stage))
    return out
