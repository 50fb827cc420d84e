"""Summaries of a run directory or a release directory, as a dict and as terminal text.

Definitions for a run (only committed units, those with ``units/U/_COMMITTED``, count):

* rows kept / rejected: rows of ``kept.parquet`` / ``rejected.parquet``.
* rows in: distinct row ids over kept and rejected. The invariant
  ``rows in == kept + rejected`` fails when a row is written twice or lands in both tables,
  or when the sink's commit markers (JSON stats, ``rows_in``) record a different count.
* recordings in: distinct ``recording_id`` over kept and rejected; compared with the
  ``recordings`` count of each committed unit (run.json, else its commit marker).
* a row's language: ``lang``, else ``lang_hint``, else ``"und"``.
* hours in (per language) = hours kept + hours rejected: the summed ``duration_s`` of every
  row, i.e. speech segments plus recordings rejected whole (decode errors, no speech).
  Silence the segmenter cut between segments is not a row, so it is not counted. Rows with
  no ``duration_s`` (e.g. undecodable files) count as 0 s and are reported separately.
* rejection reasons: counted by category (the text before the first ``:``) and in full.
* rules: per full ``drop_reason``, rows, rows per language and the first two rows (by id)
  as examples (``id``, ``lang``, ``text``, ``duration_s`` as written, null if none).
* recorded audio in: the markers' ``audio_s_in`` (whole recordings, silence included),
  when every committed unit's marker gives it.
* real-time factor: ``wall_s`` / recorded audio in (else / seconds in rows); below 1 is
  faster than real time.
* counts: the per-stage counters of the committed units' markers, summed, in pipeline order
  (rows in, rows rejected / flagged per rule; :mod:`granary_pipe.counters`); None when a unit
  has none (a run made before they existed).
* rule_quality: every rule's rejections and, against reference transcripts, its false-reject
  rate and the garbage left in the kept rows (:mod:`granary_pipe.report.rule_quality`).

:func:`format_summary` (the terminal text, :mod:`granary_pipe.report.text`) is here too.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from granary_pipe.report.reference_wer import reference_wer
from granary_pipe.report.rule_quality import rule_quality, stage_counts
from granary_pipe.report.text import format_summary
from granary_pipe.rundir import (
    MARKER,
    committed_units,
    planned_units,
    read_marker_or_empty,
    read_run_json,
    read_unit_table,
    run_sources,
    unit_errors,
    unit_recordings,
    units_on_disk,
)
from granary_pipe.schema import SCHEMA, row_langs

_COLUMNS = ["id", "recording_id", "lang", "lang_hint", "duration_s", "license", "drop_reason", "text"]
_EXAMPLES = 2

__all__ = ["format_summary", "summarize"]


def _rules(rej: pa.Table) -> dict[str, Any]:
    """Per full drop_reason: rows, rows per language, the first examples by id."""
    out: dict[str, dict[str, Any]] = {}
    rows = rej.select(["id", "lang_eff", "text", "duration_s", "drop_reason"]).to_pylist()
    for r in sorted(rows, key=lambda r: r["id"]):
        d = out.setdefault(r["drop_reason"] or "(no reason)", {"rows": 0, "per_lang": {}, "examples": []})
        d["rows"] += 1
        d["per_lang"][r["lang_eff"]] = d["per_lang"].get(r["lang_eff"], 0) + 1
        if len(d["examples"]) < _EXAMPLES:
            d["examples"].append({"id": r["id"], "lang": r["lang_eff"], "text": r["text"],
                                  "duration_s": r["duration_s"]})
    for d in out.values():
        d["per_lang"] = dict(sorted(d["per_lang"].items(), key=lambda kv: (-kv[1], kv[0])))
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["rows"], kv[0])))


def summarize(path: Path) -> dict[str, Any]:
    """Summarize a run directory (``run.json`` + ``units/``) or a release (``release.json``).

    Returns a JSON-serialisable dict with ``kind`` = ``"run"`` or ``"release"``; see the
    module docstring for what each number means.
    """
    path = Path(path)
    if (path / "release.json").is_file():
        return _summarize_release(path)
    if (path / "run.json").is_file():
        return _summarize_run(path)
    raise FileNotFoundError(f"{path} is neither a run (no run.json) nor a release (no release.json)")


def _unit_states(run_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    listed = planned_units(run)
    statuses = {u: (v or {}).get("status") for u, v in (run.get("units") or {}).items()} \
        if isinstance(run.get("units"), dict) else {}  # a run.json from before units_total
    errors = unit_errors(run)
    committed = set(committed_units(run_dir))
    failed, pending, notes = [], [], []
    for unit in sorted(set(listed) | units_on_disk(run_dir)):
        status = "failed" if unit in errors else statuses.get(unit)
        if unit in committed:
            if status not in (None, "committed"):
                notes.append(f"{unit}: run.json says {status!r} but {MARKER} exists")
        elif status == "failed":
            failed.append({"unit": unit, "error": errors.get(unit)})
        else:
            pending.append(unit)
            if status == "committed":
                notes.append(f"{unit}: run.json says 'committed' but {MARKER} is missing")
    return {
        "total": len(committed) + len(failed) + len(pending),
        "committed": len(committed),
        "failed": len(failed),
        "pending": len(pending),
        "failed_units": failed,
        "pending_units": pending,
        "notes": notes,
    }


def _sum_if_all(values: list[Any]) -> Any:
    """Sum of ``values`` when every one is a number (and there is one), else None."""
    ok = values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return sum(values) if ok else None


def _hours(seconds: float | None) -> float:
    return (seconds or 0.0) / 3600


def _summarize_run(run_dir: Path) -> dict[str, Any]:
    run = read_run_json(run_dir)
    units = committed_units(run_dir)
    parts = []
    for unit in units:
        for which in ("kept", "rejected"):
            t = read_unit_table(run_dir, unit, which, _COLUMNS)
            parts.append(t.append_column("kept", pa.array([which == "kept"] * t.num_rows, pa.bool_())))
    empty = SCHEMA.empty_table().select(_COLUMNS).append_column("kept", pa.array([], pa.bool_()))
    t = pa.concat_tables(parts) if parts else empty
    t = t.append_column("lang_eff", row_langs(t))
    rules = _rules(t.filter(pc.invert(t.column("kept"))))
    t = t.set_column(t.schema.get_field_index("license"), "license",
                     pc.coalesce(t.column("license"), pa.scalar("unknown")))
    unknown_dur = t.num_rows - (pc.count(t.column("duration_s")).as_py() or 0)
    t = t.set_column(t.schema.get_field_index("duration_s"), "duration_s",
                     pc.coalesce(t.column("duration_s"), pa.scalar(0.0)))

    kept_n = pc.sum(pc.cast(t.column("kept"), pa.int64())).as_py() or 0
    rows_in = pc.count_distinct(t.column("id")).as_py() if t.num_rows else 0
    per_lang: dict[str, dict[str, Any]] = {}
    for g in t.group_by(["lang_eff", "kept"]).aggregate([("duration_s", "sum"), ("id", "count")]).to_pylist():
        d = per_lang.setdefault(g["lang_eff"], {"rows_kept": 0, "rows_rejected": 0, "seconds_kept": 0.0, "seconds_rejected": 0.0})
        side = "kept" if g["kept"] else "rejected"
        d[f"rows_{side}"] += g["id_count"]
        d[f"seconds_{side}"] += g["duration_s_sum"] or 0.0
    langs = {}
    for lang in sorted(per_lang):
        d = per_lang[lang]
        langs[lang] = {
            "rows_in": d["rows_kept"] + d["rows_rejected"],
            "rows_kept": d["rows_kept"],
            "rows_rejected": d["rows_rejected"],
            "hours_in": _hours(d["seconds_kept"] + d["seconds_rejected"]),
            "hours_kept": _hours(d["seconds_kept"]),
            "hours_rejected": _hours(d["seconds_rejected"]),
        }

    rej = t.filter(pc.invert(t.column("kept")))
    reasons = pc.coalesce(rej.column("drop_reason"), pa.scalar("(no reason)")).to_pylist()
    by_reason: dict[str, int] = defaultdict(int)
    by_cat: dict[str, int] = defaultdict(int)
    hours_cat: dict[str, float] = defaultdict(float)
    for reason, secs in zip(reasons, rej.column("duration_s").to_pylist()):
        cat = reason.split(":", 1)[0].strip()
        by_reason[reason] += 1
        by_cat[cat] += 1
        hours_cat[cat] += secs

    licenses: dict[str, dict[str, Any]] = {}
    for g in t.group_by(["license", "kept"]).aggregate([("duration_s", "sum"), ("id", "count")]).to_pylist():
        d = licenses.setdefault(g["license"], {"rows_kept": 0, "rows_rejected": 0, "hours_kept": 0.0, "hours_rejected": 0.0})
        side = "kept" if g["kept"] else "rejected"
        d[f"rows_{side}"] += g["id_count"]
        d[f"hours_{side}"] = _hours(g["duration_s_sum"])

    markers = {u: read_marker_or_empty(run_dir, u) for u in units}
    expected = [unit_recordings(run, u, markers[u]) for u in units]
    rec_expected = _sum_if_all(expected)
    rows_recorded = _sum_if_all([markers[u].get("rows_in") for u in units])
    audio_s_in = _sum_if_all([markers[u].get("audio_s_in") for u in units])
    rec_seen = pc.count_distinct(t.column("recording_id")).as_py() if t.num_rows else 0
    kept_rec = t.filter(t.column("kept")).column("recording_id")
    seconds_in = pc.sum(t.column("duration_s")).as_py() or 0.0
    wall_s = run.get("wall_s_total", run.get("wall_s"))
    counts = stage_counts(markers, run)
    _desc = lambda d: dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))  # noqa: E731
    return {
        "kind": "run",
        "path": str(run_dir),
        "name": run_dir.resolve().name,
        "sources": [s.get("name") for s in run_sources(run)],
        "units": _unit_states(run_dir, run),
        "rows": {"in": rows_in, "kept": kept_n, "rejected": t.num_rows - kept_n,
                 "recorded_in": rows_recorded,
                 "balanced": rows_in == t.num_rows and rows_recorded in (None, t.num_rows)},
        "recordings": {
            "expected": rec_expected,
            "in": rec_seen,
            "with_kept_rows": pc.count_distinct(kept_rec).as_py() if len(kept_rec) else 0,
            "balanced": None if rec_expected is None else rec_expected == rec_seen,
        },
        "hours": {
            "in": _hours(seconds_in),
            "recordings_in": None if audio_s_in is None else _hours(audio_s_in),
            "kept": sum(v["hours_kept"] for v in langs.values()),
            "rejected": sum(v["hours_rejected"] for v in langs.values()),
        },
        "rows_unknown_duration": unknown_dur,
        "per_lang": langs,
        "rejected": {
            "by_category": _desc(by_cat),
            "hours_by_category": {k: _hours(hours_cat[k]) for k in _desc(by_cat)},
            "by_reason": _desc(by_reason),
        },
        "rules": rules,
        "counts": counts,
        "rule_quality": rule_quality(run_dir, counts),
        "licenses": dict(sorted(licenses.items())),
        "reference_wer": reference_wer(run_dir),
        "stage_s": run.get("stage_s") or {},
        "wall_s": wall_s,
        "real_time_factor": (wall_s / (audio_s_in or seconds_in))
        if wall_s and (audio_s_in or seconds_in) else None,
    }


def _summarize_release(rel_dir: Path) -> dict[str, Any]:
    with open(rel_dir / "release.json", encoding="utf-8") as fh:
        rel = json.load(fh)
    shards: dict[str, int] = defaultdict(int)
    size: dict[str, int] = defaultdict(int)
    for s in rel.get("shards", []):
        shards[s["format"]] += 1
        size[s["format"]] += s["bytes"]
    totals = rel.get("totals", {})
    return {
        "kind": "release",
        "path": str(rel_dir),
        "name": rel_dir.resolve().name,
        "created_from": rel.get("created_from"),
        "release_license": rel.get("release_license"),
        "rows": totals.get("rows", 0),
        "hours": totals.get("hours", 0.0),
        "per_lang": totals.get("per_lang", {}),
        "shards": dict(sorted(shards.items())),
        "bytes": dict(sorted(size.items())),
        "licenses": rel.get("licenses", {}),
        "sources": [s.get("name") for s in rel.get("sources", [])],
    }
