"""Units and what travels with them: the vocabulary shared by ``pipeline`` and the executors.

A unit is a deterministic slice of the input (``recordings_per_unit`` recordings sorted by id),
the grain of commit and resume. It travels between stages as a :data:`Payload`: its table and its
:class:`UnitStats` (seconds and counters per stage, :mod:`granary_pipe.counters`), which the sink
writes into the unit's commit marker. :func:`apply_stage` runs one stage over a unit, the same way
on every executor; an executor reports each unit's end through an :data:`OnResult` callback.

This module imports no executor and no pipeline driver, so both import it without a circle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from granary_pipe import counters, schema
from granary_pipe.rundir import unit_id
from granary_pipe.stage import Stage


class UnitStats(TypedDict, total=False):
    """What a unit has recorded about itself so far; JSON-ready (Beam's coder writes it as JSON).

    Attributes:
        stage_s: seconds spent per stage name.
        counts: per stage name, :data:`granary_pipe.counters.StageCounts` (rows in, rows
            rejected / flagged per rule).
    """

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
    groups, start = [], 0
    for i in range(1, len(rec) + 1):
        if i == len(rec) or rec[i] != rec[i - 1]:
            groups.append((start, i))
            start = i
    out, first, last = [], 0, 0
    for g_start, g_end in groups:
        if g_end - first > batch_size and last > first:
            out.append(table.slice(first, last - first))
            first = g_start
        last = g_end
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


def plan_units(recordings: pa.Table, per_unit: int) -> list[Unit]:
    """Cut sorted recording rows into units ``u000000, u000001, ...`` (all in memory; a run
    streams them from its listing file instead, :mod:`granary_pipe.listing`)."""
    units = []
    for k, start in enumerate(range(0, recordings.num_rows, per_unit)):
        part = recordings.slice(start, per_unit)
        units.append(Unit(unit_id(k), schema.set_column(part, "unit", [unit_id(k)] * part.num_rows)))
    return units
