"""A run's totals merged from its committed units' markers (digests, counters, totals), read one at
a time; seconds summed exactly. Design: docs/architecture.md, "Report"."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeGuard, TypeVar

from granary_pipe import counters
from granary_pipe.digest import EXAMPLES, KEY, marker_digest
from granary_pipe.rundir import MARKER, iter_committed_units, read_marker_or_empty, unit_dir

GROUP_KEYS = ("kept", "lang", "lang_hint", "license", "source", "drop_reason")

K = TypeVar("K", str, tuple[str, str])


def kept_rejected(groups: Iterable[dict[str, Any]],
                  key: Callable[[dict[str, Any]], K]) -> dict[K, tuple[int, float, int, float]]:
    """Rows kept, seconds kept, rows rejected, seconds rejected (each ``math.fsum``) per ``key`` of a group,
    sorted by key; a group's ``kept`` decides (a kept group has no ``drop_reason``: a unit's kept file holds none)."""
    rows: dict[tuple[K, bool], int] = defaultdict(int)
    seconds: dict[tuple[K, bool], list[float]] = defaultdict(list)
    for g in groups:
        k = key(g), bool(g["kept"])
        rows[k] += g["n"]
        seconds[k].append(g["secs"])
    return {k: (rows[k, True], math.fsum(seconds[k, True]), rows[k, False], math.fsum(seconds[k, False]))
            for k in sorted({k for k, _ in rows})}


class ExactSum:
    """A float sum without rounding error until :meth:`value` (``math.fsum`` of everything added)."""

    __slots__ = ("partials", "special")

    def __init__(self) -> None:
        self.partials: list[float] = []
        self.special: list[float] = []  # inf and NaN: math.fsum gives what they make

    def add(self, x: float) -> None:
        """Add ``x`` (inf and NaN too) exactly."""
        if not math.isfinite(x):
            self.special.append(x)
            return
        i = 0
        for y in self.partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                self.partials[i] = lo
                i += 1
            x = hi
        self.partials[i:] = [x]

    def value(self) -> float:
        """The sum of everything added, correctly rounded (NaN for inf + -inf)."""
        try:
            return math.fsum(self.partials + self.special)
        except ValueError:  # inf + -inf
            return math.nan


@dataclass
class RunTotals:
    """What the committed units recorded, merged (see the module doc). :func:`collect` fills it."""

    units: int = 0
    """Committed units merged (counted, not listed: nothing is held per unit)."""
    groups: dict[tuple, list] = field(default_factory=dict)  # GROUP_KEYS -> [rows, rows with duration, ExactSum]
    examples: dict[Any, list[list]] = field(default_factory=dict)  # drop_reason -> first rows by id
    rows_in: int = 0
    recordings: int = 0
    with_kept: int = 0
    with_ref: int = 0
    scored: dict[Any, list] = field(default_factory=dict)  # drop_reason -> [scored, good, ExactSum]
    kept_scored: list = field(default_factory=lambda: [0, 0, ExactSum()])
    wer: dict[str, list[int]] = field(default_factory=dict)
    recordings_planned: int | None = 0  # the markers' own totals, None when a unit lacks one
    rows_recorded: int | None = 0
    audio_in: ExactSum | None = field(default_factory=ExactSum)  # the markers' audio_s_in, summed exactly
    counts: dict[str, Any] | None = field(default_factory=dict)

    def group_rows(self) -> Iterator[dict[str, Any]]:
        """Each group as a dict: :data:`GROUP_KEYS`, ``n`` rows, ``n_dur`` with a duration, ``secs``."""
        for key, (n, n_dur, secs) in self.groups.items():
            yield {**dict(zip(GROUP_KEYS, key, strict=True)), "n": n, "n_dur": n_dur, "secs": secs.value()}

    def example_rows(self, reason: Any) -> list[dict[str, Any]]:
        """The first example rows by id of a raw drop_reason, as the summary lists them."""
        return [dict(zip(("id", "lang", "text", "duration_s"), r, strict=True)) for r in self.examples.get(reason, [])]

    def add(self, d: dict[str, Any]) -> None:
        """Merge one unit's digest."""
        for *key, n, n_dur, secs in d["groups"]:
            _add_counts(self.groups.setdefault(tuple(key), [0, 0, ExactSum()]), n, n_dur, secs)
        for reason, rows in d["examples"]:
            earlier = self.examples.get(reason)
            self.examples[reason] = rows[:EXAMPLES] if earlier is None else sorted(earlier + rows,
                                                                                   key=lambda r: r[0])[:EXAMPLES]
        self.rows_in += d["rows_in"]
        self.recordings += d["recordings"]
        self.with_kept += d["with_kept"]
        self.with_ref += d["with_ref"]
        for reason, n, good, secs in d["scored"]:
            _add_counts(self.scored.setdefault(reason, [0, 0, ExactSum()]), n, good, secs)
        _add_counts(self.kept_scored, *d["kept_scored"])
        for lang, t in d["wer"].items():
            self.wer[lang] = [a + b for a, b in zip(self.wer.get(lang, [0] * 6), t, strict=True)]

    def add_marker(self, marker: dict[str, Any]) -> None:
        """Sum the marker's own totals (recordings planned, rows in, audio in) and counters."""
        for name, value in (("recordings_planned", marker.get("recordings")),
                            ("rows_recorded", marker.get("rows_in"))):
            mine = getattr(self, name)
            if mine is not None:
                setattr(self, name, mine + value if _is_number(value) else None)
        if self.audio_in is not None:  # exactly: the units come in directory order
            value = marker.get("audio_s_in")
            if _is_number(value):
                self.audio_in.add(value)
            else:
                self.audio_in = None
        if self.counts is not None:
            c = marker.get("counts")
            if isinstance(c, dict):
                _add_stages(self.counts, c)
            else:
                self.counts = None

    @property
    def audio_s_in(self) -> float | None:
        """The markers' recorded audio in seconds (None when a marker lacks it)."""
        return None if self.audio_in is None else self.audio_in.value()


def _add_counts(total: list, n: int, m: int, secs: float) -> None:
    """Add two counts and seconds into ``total`` (``[n, m, ExactSum]``) in place."""
    total[0] += n
    total[1] += m
    total[2].add(secs)


def _add_stages(total: dict[str, Any], stages: dict[str, Any]) -> None:
    """:func:`granary_pipe.counters.merge_stages` of ``total`` and a unit's ``{stage: counts}``, in place."""
    for stage, c in stages.items():
        mine = total.get(stage)
        if mine is None:
            mine = total[stage] = counters.empty()
        for key, m in mine.items():  # counters.empty()'s keys: totals, and per-rule maps
            if isinstance(m, dict):
                for rule, n in (c.get(key) or {}).items():
                    m[rule] = m.get(rule, 0) + n
            else:
                mine[key] = m + c.get(key, 0)


def _is_number(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def collect(run_dir: Path, run: dict[str, Any] | None = None) -> RunTotals:
    """Merge the committed units of ``run_dir``: their digests and, given ``run`` (run.json), the
    markers' own totals and counters (:meth:`RunTotals.add_marker`). Each marker is read once."""
    run_dir = Path(run_dir)
    totals = RunTotals()
    for unit in iter_committed_units(run_dir):
        totals.units += 1
        marker = read_marker_or_empty(run_dir, unit)
        try:
            totals.add(marker_digest(run_dir, unit, marker))
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{unit_dir(run_dir, unit) / MARKER}: its {KEY!r} holds a value of the wrong type "
                             f"({exc}); remove that key and the unit is digested from its files") from exc
        if run is not None:
            totals.add_marker(marker)
    if not totals.units:
        totals.recordings_planned = totals.rows_recorded = totals.audio_in = totals.counts = None
    return totals
