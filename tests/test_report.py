"""Run and release summaries: invariants, per-language hours, reasons, licenses, rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from granary_pipe.io.release import build_release
from granary_pipe.report.summary import summarize
from granary_pipe.report.text import format_summary

try:
    from tests.helpers_rundir import DEFAULT_UNITS, Row, make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import DEFAULT_UNITS, Row, make_run

ROWS = [r for rows in DEFAULT_UNITS.values() for r in rows]


def _lang(r: Row) -> str:
    return r.lang or r.lang_hint or "und"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def summary(run_dir: Path) -> dict:
    return summarize(run_dir)


def test_rows_invariant_and_recordings(summary):
    assert summary["kind"] == "run"
    assert summary["rows"] == {"in": 22, "kept": 14, "rejected": 8, "recorded_in": None,
                               "balanced": True}
    assert summary["recordings"] == {"expected": 9, "in": 9, "with_kept_rows": 5, "balanced": True}
    assert summary["rows_unknown_duration"] == 1


def test_units(summary):
    u = summary["units"]
    assert (u["committed"], u["failed"], u["pending"], u["total"]) == (2, 1, 1, 4)
    assert u["failed_units"] == [{"unit": "u000003", "error": "RuntimeError: worker died"}]
    assert u["pending_units"] == ["u000002"] and u["notes"] == []


def test_hours_per_language(summary):
    per = summary["per_lang"]
    assert set(per) == {"en", "de", "und"}
    for lang, v in per.items():
        mine = [r for r in ROWS if _lang(r) == lang]
        kept = [r for r in mine if r.drop_reason is None]
        assert v["rows_in"] == len(mine) == v["rows_kept"] + v["rows_rejected"]
        assert v["rows_kept"] == len(kept)
        assert v["hours_kept"] == pytest.approx(sum(r.duration_s for r in kept) / 3600, abs=1e-6)
        assert v["hours_in"] == pytest.approx(v["hours_kept"] + v["hours_rejected"], abs=1e-6)
        assert v["hours_in"] == pytest.approx(sum(r.duration_s or 0 for r in mine) / 3600, abs=1e-6)
    assert per["de"]["rows_rejected"] == 4  # lang_hint used for the no-speech recording
    assert per["und"] == {"rows_in": 1, "rows_kept": 0, "rows_rejected": 1,
                          "hours_in": 0.0, "hours_kept": 0.0, "hours_rejected": 0.0}
    h = summary["hours"]
    assert h["in"] == pytest.approx(h["kept"] + h["rejected"], abs=1e-5)


def test_rejection_reasons(summary):
    rj = summary["rejected"]
    assert rj["by_category"] == {"filter": 2, "license": 2, "decode_error": 1,
                                 "hallucination": 1, "lang": 1, "segment": 1}
    assert rj["by_reason"]["license:CC-BY-NC-4.0"] == 2
    assert rj["by_reason"]["decode_error: invalid data found"] == 1
    assert sum(rj["by_reason"].values()) == summary["rows"]["rejected"]
    assert list(rj["by_category"])[:2] == ["filter", "license"]  # most frequent first


def test_license_mix(summary):
    lic = summary["licenses"]
    assert lic["CC-BY-NC-4.0"]["rows_kept"] == 0 and lic["CC-BY-NC-4.0"]["rows_rejected"] == 2
    assert lic["CC-BY-4.0"]["rows_kept"] == 12 and lic["CC0-1.0"]["rows_kept"] == 2
    assert sum(v["rows_kept"] + v["rows_rejected"] for v in lic.values()) == 22


def test_wall_time_and_rtf(summary):
    seconds = sum(r.duration_s or 0 for r in ROWS)
    assert summary["wall_s"] == 12.5
    assert summary["real_time_factor"] == pytest.approx(12.5 / seconds, rel=1e-4)


def test_format_summary(summary):
    text = format_summary(summary, color=False)
    assert "rows in = kept + rejected: 22 = 14 + 8 ✓" in text
    for needle in ("en", "de", "und", "license:CC-BY-NC-4.0", "segment:no_speech",
                   "decode_error", "CC0-1.0", "u000003: RuntimeError: worker died",
                   "2 committed, 1 failed, 1 pending", "real-time factor"):
        assert needle in text, needle
    assert "\033[" not in text
    assert "\033[" in format_summary(summary, color=True)


def test_duplicate_row_breaks_the_invariant(tmp_path):
    units = {"u000000": [Row("a-s000", "a", "en", 0.5), Row("a-s001", "a", "en", 0.5),
                         Row("a-s001", "a", "en", 0.5, drop_reason="filter:dup")]}
    s = summarize(make_run(tmp_path, units, uncommitted={}, failed={}, wall_s=None))
    assert s["rows"] == {"in": 2, "kept": 2, "rejected": 1, "recorded_in": None, "balanced": False}
    text = format_summary(s, color=False)
    assert "rows in = kept + rejected: 2 = 2 + 1 ✗" in text
    assert "wall time" not in text


def test_sink_marker_stats_are_used(tmp_path):
    run = make_run(tmp_path)
    (run / "units" / ".u000009.tmp-1234").mkdir()  # sink debris: not a unit
    stats = {"u000000": {"rows_in": 10, "recordings": 6, "audio_s_in": 30.0},
             "u000001": {"rows_in": 12, "recordings": 3, "audio_s_in": 20.0}}
    for unit, st in stats.items():
        (run / "units" / unit / "_COMMITTED").write_text(json.dumps(st))
    s = summarize(run)
    assert s["units"]["total"] == 4 and s["units"]["pending_units"] == ["u000002"]
    assert s["rows"]["recorded_in"] == 22 and s["rows"]["balanced"]
    assert s["hours"]["recordings_in"] == pytest.approx(50 / 3600)
    assert s["real_time_factor"] == pytest.approx(12.5 / 50)
    assert "recorded audio in: 0:00:50" in format_summary(s, color=False)
    (run / "units" / "u000001" / "_COMMITTED").write_text(json.dumps({**stats["u000001"], "rows_in": 13}))
    s = summarize(run)
    assert not s["rows"]["balanced"]
    assert "commit markers record 23 rows in ✗" in format_summary(s, color=False)


def test_release_summary(run_dir, tmp_path):
    build_release(run_dir, tmp_path / "rel", shard_rows=3, progress=False)
    s = summarize(tmp_path / "rel")
    assert s["kind"] == "release" and s["rows"] == 14
    assert s["shards"] == {"parquet": 5, "wds": 5}
    assert s["per_lang"]["en"]["rows"] == 8 and s["per_lang"]["de"]["shards"] == 2
    assert s["licenses"] == {"CC-BY-4.0": 12, "CC0-1.0": 2}
    text = format_summary(s, color=False)
    for needle in ("en", "de", "CC-BY-4.0", "5 parquet", "5 wds", "total"):
        assert needle in text, needle


def test_unknown_directory_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        summarize(tmp_path)
