"""A committed unit's digest: every figure the report and the license audit need of its rows, computed
once by the sink and stored in the unit's marker, so the report merges markers instead of reading rows.
Layout (keys, record order): docs/architecture.md, "After the run"."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import pyarrow as pa

from granary_pipe.rundir import read_unit_table
from granary_pipe.scoring import GARBAGE_WER_MIN, GOOD_WER_MAX, edit_counts, span_wer
from granary_pipe.text import normalize, tokens

VERSION = 3
"""The digest's layout and meaning; a marker whose digest has another is digested again from its files."""
KEY = "digest"
"""The marker's key holding the digest."""
EXAMPLES = 2
"""Example rows kept per rejection reason (the first ones by id)."""
COLUMNS = ["id", "recording_id", "lang", "lang_hint", "license", "source", "drop_reason", "duration_s",
           "offset_s", "text", "ref_text"]


def unit_digest(kept: pa.Table, rejected: pa.Table) -> dict[str, Any]:
    """The digest of a unit's kept and rejected rows, in the order its files hold them."""
    sides = [(True, _columns(kept)), (False, _columns(rejected))]
    groups: dict[tuple, list] = {}
    examples: dict[Any, list[list]] = {}
    ids: set[str] = set()
    recordings: set[str] = set()
    with_kept: set[str] = set()
    for is_kept, c in sides:
        ids.update(c["id"])
        recordings.update(c["recording_id"])
        if is_kept:
            with_kept.update(c["recording_id"])
        for i, dur in enumerate(c["duration_s"]):
            key = (is_kept, c["lang"][i], c["lang_hint"][i], c["license"][i], c["source"][i], c["drop_reason"][i])
            g = groups.setdefault(key, [0, []])  # rows, durations
            g[0] += 1
            if dur is not None:
                g[1].append(dur)
            if not is_kept:
                _example(examples, c, i)
    out: dict[str, Any] = {
        "v": VERSION,
        "groups": [[*key, n, len(secs), math.fsum(secs)] for key, (n, secs) in groups.items()],
        "examples": [[reason, rows] for reason, rows in examples.items()],
        "rows_in": len(ids), "recordings": len(recordings), "with_kept": len(with_kept),
    }
    out.update(_score(sides))
    return out


def digest_of_unit(run_dir: Path, unit: str) -> dict[str, Any]:
    """The digest of a committed unit computed from its own Parquet files (for a marker without one)."""
    return unit_digest(read_unit_table(run_dir, unit, "kept", COLUMNS),
                       read_unit_table(run_dir, unit, "rejected", COLUMNS))


def marker_digest(run_dir: Path, unit: str, marker: dict[str, Any]) -> dict[str, Any]:
    """The marker's digest when it has one of this :data:`VERSION` and layout, else :func:`digest_of_unit`."""
    d = marker.get(KEY)
    return d if _well_formed(d) else digest_of_unit(run_dir, unit)


def _well_formed(d: Any) -> TypeGuard[dict[str, Any]]:
    try:
        return (d["v"] == VERSION and all(len(g) == 9 for g in d["groups"])
                and all(len(e) == 2 for e in d["examples"]) and all(len(s) == 4 for s in d["scored"])
                and len(d["kept_scored"]) == 3 and all(len(t) == 6 for t in d["wer"].values())
                and all(isinstance(d[k], int) for k in ("rows_in", "recordings", "with_kept", "with_ref")))
    except (KeyError, TypeError, AttributeError):
        return False


def lang_of(lang: str | None, lang_hint: str | None) -> str:
    """A row's language: ``lang``, else ``lang_hint``, else ``und``."""
    return lang if lang is not None else lang_hint if lang_hint is not None else "und"


def _columns(table: pa.Table) -> dict[str, list]:
    return {name: table.column(name).to_pylist() for name in COLUMNS}


def _example(examples: dict[Any, list[list]], c: dict[str, list], i: int) -> None:
    """Keep row ``i`` among its reason's first :data:`EXAMPLES` rows by id."""
    lang = lang_of(c["lang"][i], c["lang_hint"][i])
    rows = examples.setdefault(c["drop_reason"][i], [])
    if len(rows) < EXAMPLES or c["id"][i] < rows[-1][0]:
        rows.append([c["id"][i], lang, c["text"][i], c["duration_s"][i]])
        rows.sort(key=lambda r: r[0])
        del rows[EXAMPLES:]


@dataclass
class _Tally:
    """Rows scored against their reference, and the seconds of those past the threshold (one per row)."""

    rows: int = 0
    seconds: list[float] = field(default_factory=list)

    def add(self, hit: bool, seconds: float) -> None:
        self.rows += 1
        if hit:
            self.seconds.append(seconds)

    def record(self) -> list[Any]:
        return [self.rows, len(self.seconds), math.fsum(self.seconds)]


def _score(sides: list[tuple[bool, dict[str, list]]]) -> dict[str, Any]:
    """Rule scoring per row and reference WER per recording, over the rows with a reference."""
    with_ref = 0
    scored: dict[Any, _Tally] = {}  # per drop_reason of the rejected rows: good ones
    kept = _Tally()  # garbage ones
    hyps: dict[str, list[tuple[float, str]]] = defaultdict(list)
    refs: dict[str, tuple[str, str]] = {}
    last: tuple[Any, list[str]] = (None, [])  # a recording's rows come together: its reference tokenised once
    for is_kept, c in sides:
        for i, ref in enumerate(c["ref_text"]):
            if not ref:
                continue
            with_ref += 1
            lang, rid = c["lang"][i], c["recording_id"][i]
            if is_kept:
                hyps[rid].append((c["offset_s"][i] or 0.0, c["text"][i] or ""))
                refs[rid] = (lang or "und", ref)
            else:
                refs.setdefault(rid, (lang or "und", ref))
            if (ref, lang) != last[0]:
                last = ((ref, lang), tokens(ref, lang))
            wer = span_wer(tokens(c["text"][i], lang), last[1])
            if wer is None:
                continue
            secs = c["duration_s"][i] or 0.0
            if is_kept:
                kept.add(wer > GARBAGE_WER_MIN, secs)
            else:
                scored.setdefault(c["drop_reason"][i], _Tally()).add(wer <= GOOD_WER_MAX, secs)
    return {"with_ref": with_ref,
            "scored": [[reason, *t.record()] for reason, t in scored.items()],
            "kept_scored": kept.record(),
            "wer": _reference_wer(refs, hyps)}


def _reference_wer(refs: dict[str, tuple[str, str]], hyps: dict[str, list[tuple[float, str]]]) -> dict[str, list[int]]:
    """Per language: recordings scored and unscored, and the edit counts of their joined kept texts."""
    totals: dict[str, list[int]] = {}
    for rid, (lang, ref) in refs.items():
        t = totals.setdefault(lang, [0] * 6)
        if rid not in hyps:
            t[1] += 1
            continue
        ref = normalize(ref, lang)
        if ref:
            errors = edit_counts(ref, normalize(" ".join(text for _, text in sorted(hyps[rid])), lang))
            t[0] += 1
            for k, v in enumerate(errors, start=2):
                t[k] += v
    return totals
