"""Units and what travels with them, shared by ``pipeline`` and the executors (which it does not import):
a unit is the grain of commit and resume, and :func:`apply_stage` runs one stage over it on every executor.
Design: docs/architecture.md, "Contracts"."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from granary_pipe import counters, schema
from granary_pipe.stage import Stage


class UnitStats(TypedDict, total=False):
    """What a unit has recorded about itself so far (JSON-ready): seconds and
    :data:`granary_pipe.counters.StageCounts` per stage name; the sink writes it into the marker."""

    stage_s: dict[str, float]
    counts: dict[str, counters.StageCounts]


Payload = tuple[pa.Table, UnitStats]
"""What travels between stages: the unit's table and its :class:`UnitStats` so far."""

OnResult = Callable[[str, "dict | None", "str | None"], None]
"""``on_result(unit, marker, error)``: an executor's report that a unit ended, committed (the
figures of its commit marker, error None) or failed (marker None, a one-line error)."""


@dataclass
class Unit:
    """A deterministic slice of the input: the grain of commit and resume."""

    id: str
    table: pa.Table


def add_stage_stats(stats: UnitStats, stage: str, seconds: float, counts: counters.StageCounts) -> UnitStats:
    """``stats`` with one more call of ``stage`` (its seconds and counts added to any before)."""
    stage_s = dict(stats.get("stage_s") or {})
    stage_s[stage] = stage_s.get(stage, 0.0) + seconds
    return {"stage_s": stage_s, "counts": counters.merge_stages(stats.get("counts"), {stage: counts})}


def batches(table: pa.Table, batch_size: int) -> list[pa.Table]:
    """Split rows (sorted by recording) into batches of ≤ ``batch_size`` rows without
    splitting a recording; a recording with more rows than that is a batch of its own."""
    rec = table.column("recording_id").to_pylist()
    out, first, last = [], 0, 0  # the batch being filled is [first, last): whole recordings
    for end in range(1, len(rec) + 1):
        if end < len(rec) and rec[end] == rec[end - 1]:
            continue  # inside a recording
        if end - first > batch_size and last > first:
            out.append(table.slice(first, last - first))
            first = last
        last = end
    if last > first:
        out.append(table.slice(first, last - first))
    return out


def apply_stage(stage: Stage, payload: Payload) -> Payload:
    """Run one stage over a unit's table in batches; add its time and counts to the payload."""
    table, stats = payload
    t0 = time.perf_counter()
    order = pc.sort_indices(table, sort_keys=[("recording_id", "ascending"), ("offset_s", "ascending")])
    if not np.array_equal(order.to_numpy(), np.arange(table.num_rows)):  # take() copies every sample
        table = table.take(order)
    counts = counters.empty(stage.RULES)
    parts = []
    for b in batches(table, stage.batch_size) if table.num_rows else []:
        part, c = stage.apply(b)
        parts.append(part)
        counts = counters.merge(counts, c)
    out = pa.concat_tables(parts) if parts else schema.conform(table)
    return out, add_stage_stats(stats, stage.name, time.perf_counter() - t0, counts)
