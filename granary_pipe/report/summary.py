"""Summaries of a run directory or a release directory as a dict (:func:`summarize`); definitions of
the figures: docs/architecture.md, "Contracts" (Nothing silently dropped) and "Report"."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from granary_pipe.digest import EXAMPLES, lang_of
from granary_pipe.report.rule_quality import rule_table, stage_order
from granary_pipe.report.totals import RunTotals, collect, kept_rejected
from granary_pipe.rundir import MARKER, open_units, read_run_json, run_sources, unit_dir, unit_errors


def summarize(path: Path) -> dict[str, Any]:
    """Summarize a run directory (``run.json`` + ``units/``) or a release (``release.json``): a
    JSON-serialisable dict with ``kind`` = ``"run"`` or ``"release"`` (see the module doc)."""
    path = Path(path)
    if (path / "release.json").is_file():
        return _summarize_release(path)
    if (path / "run.json").is_file():
        return _summarize_run(path)
    raise FileNotFoundError(f"{path} is neither a run (no run.json) nor a release (no release.json)")


def _desc(counts: dict[str, int]) -> dict[str, int]:
    """``counts`` by count, largest first, then by key."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _or(value: str | None, default: str) -> str:
    return default if value is None else value


def _hours(seconds: float | None) -> float:
    return (seconds or 0.0) / 3600


def _unit_states(run_dir: Path, run: dict[str, Any], committed: int) -> dict[str, Any]:
    """Committed (``committed`` of them), failed and pending units; notes where run.json and the
    markers disagree. Only the units not committed are listed (a large run holds few of them)."""
    errors = unit_errors(run)
    notes = [f"{unit}: run.json says 'failed' but {MARKER} exists" for unit in sorted(errors)
             if (unit_dir(run_dir, unit) / MARKER).is_file()]
    total = run.get("units_total")
    not_committed = open_units(run_dir, total if isinstance(total, int) else None)
    failed = [{"unit": unit, "error": errors[unit]} for unit in not_committed if unit in errors]
    pending = [unit for unit in not_committed if unit not in errors]
    return {"total": committed + len(failed) + len(pending), "committed": committed, "failed": len(failed),
            "pending": len(pending), "failed_units": failed, "pending_units": pending, "notes": notes}


def _rules(totals: RunTotals, groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Per full drop_reason: rows, rows per language, the first examples by id."""
    out: dict[str, dict[str, Any]] = {}
    for g in groups:
        if not g["kept"]:
            d = out.setdefault(g["drop_reason"] or "(no reason)", {"rows": 0, "per_lang": {}, "examples": []})
            d["rows"] += g["n"]
            lang = lang_of(g["lang"], g["lang_hint"])
            d["per_lang"][lang] = d["per_lang"].get(lang, 0) + g["n"]
    for reason in totals.examples:
        rule = out.get(reason or "(no reason)")
        if rule is not None:
            rule["examples"] = sorted([*rule["examples"], *totals.example_rows(reason)],
                                      key=lambda x: x["id"])[:EXAMPLES]
    for d in out.values():
        d["per_lang"] = _desc(d["per_lang"])
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["rows"], kv[0])))


def _kept_rejected(groups: list[dict[str, Any]], key: Callable[[dict[str, Any]], str],
                   with_in: bool) -> dict[str, dict[str, Any]]:
    """Rows and hours kept and rejected per ``key`` of a group, sorted by key; ``with_in``: their sums too."""
    out = {}
    for k, (rows_kept, kept_s, rows_rej, rej_s) in kept_rejected(groups, key).items():
        out[k] = {"rows_kept": rows_kept, "rows_rejected": rows_rej, "hours_kept": _hours(kept_s),
                  "hours_rejected": _hours(rej_s)}
        if with_in:
            out[k].update(rows_in=rows_kept + rows_rej, hours_in=_hours(kept_s + rej_s))
    return out


def _rejected(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Rejected rows per reason category (and their hours) and per full reason."""
    by_reason: dict[str, int] = defaultdict(int)
    by_cat: dict[str, int] = defaultdict(int)
    secs_cat: dict[str, list[float]] = defaultdict(list)
    for g in groups:
        if not g["kept"]:
            reason = _or(g["drop_reason"], "(no reason)")
            cat = reason.split(":", 1)[0].strip()
            by_reason[reason] += g["n"]
            by_cat[cat] += g["n"]
            secs_cat[cat].append(g["secs"])
    return {"by_category": _desc(by_cat),
            "hours_by_category": {k: _hours(math.fsum(secs_cat[k])) for k in _desc(by_cat)},
            "by_reason": _desc(by_reason)}


def _wer_table(totals: RunTotals) -> dict[str, Any]:
    """Per language, the kept rows' WER and CER against the listing's references: errors / reference
    words (characters) over every scored recording, as ``jiwer.wer`` gives for them at once."""
    out = {}
    for lang in sorted(totals.wer):
        recordings, unscored, word_errors, word_ref, char_errors, char_ref = totals.wer[lang]
        scored = recordings > 0
        out[lang] = {"wer": word_errors / word_ref if scored else None,
                     "cer": char_errors / char_ref if scored else None,
                     "recordings": recordings, "ref_words": word_ref, "recordings_unscored": unscored}
    return out


def _summarize_run(run_dir: Path) -> dict[str, Any]:
    run = read_run_json(run_dir)
    totals = collect(run_dir, run)
    counts = None if totals.counts is None else {name: totals.counts[name]
                                                 for name in stage_order(run, list(totals.counts))}
    groups = list(totals.group_rows())
    n_rows = sum(g["n"] for g in groups)
    kept_n = sum(g["n"] for g in groups if g["kept"])
    langs = _kept_rejected(groups, lambda g: lang_of(g["lang"], g["lang_hint"]), with_in=True)
    rows_in, rec_expected, rows_recorded = totals.rows_in, totals.recordings_planned, totals.rows_recorded
    seconds_in = math.fsum(g["secs"] for g in groups)
    audio_s_in = totals.audio_s_in
    wall_s = run.get("wall_s_total", run.get("wall_s"))
    return {
        "kind": "run",
        "path": str(run_dir),
        "name": run_dir.resolve().name,
        "sources": [s.get("name") for s in run_sources(run)],
        "units": _unit_states(run_dir, run, totals.units),
        "rows": {"in": rows_in, "kept": kept_n, "rejected": n_rows - kept_n, "recorded_in": rows_recorded,
                 "balanced": rows_in == n_rows and rows_recorded in (None, n_rows)},
        "recordings": {"expected": rec_expected, "in": totals.recordings, "with_kept_rows": totals.with_kept,
                       "balanced": None if rec_expected is None else rec_expected == totals.recordings},
        "hours": {"in": _hours(seconds_in), "recordings_in": None if audio_s_in is None else _hours(audio_s_in),
                  "kept": sum(v["hours_kept"] for v in langs.values()),
                  "rejected": sum(v["hours_rejected"] for v in langs.values())},
        "rows_unknown_duration": n_rows - sum(g["n_dur"] for g in groups),
        "per_lang": langs,
        "rejected": _rejected(groups),
        "rules": _rules(totals, groups),
        "counts": counts,
        "rule_quality": rule_table(totals, groups, counts),
        "licenses": _kept_rejected(groups, lambda g: _or(g["license"], "unknown"), with_in=False),
        "reference_wer": _wer_table(totals),
        "stage_s": run.get("stage_s") or {},
        "wall_s": wall_s,
        "real_time_factor": (wall_s / (audio_s_in or seconds_in)) if wall_s and (audio_s_in or seconds_in) else None,
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
        **_presence(rel_dir, rel),
    }


ABSENT_LISTED = 20
"""At most this many absent files are named in a release summary."""


def _presence(rel_dir: Path, rel: dict[str, Any]) -> dict[str, Any]:
    """Which files release.json lists (those the download selected) are absent: ``files_listed``,
    ``files_absent``, the first ``absent`` paths, and the download's ``selection`` (or None)."""
    from granary_pipe.io.verify import SELECTION_JSON, select

    try:
        selection = json.loads((rel_dir / SELECTION_JSON).read_text(encoding="utf-8"))
        langs, formats = selection.get("langs"), selection.get("formats")
    except (OSError, ValueError, AttributeError):
        selection, langs, formats = None, None, None
    entries = select(rel, langs, formats)
    absent = [e["path"] for e in entries if not (rel_dir / str(e.get("path"))).is_file()]
    return {"files_listed": len(entries), "files_absent": len(absent), "absent": absent[:ABSENT_LISTED],
            "selection": {"langs": langs, "formats": formats} if (langs or formats) else None}
