"""Bookkeeping that does not grow with the run.

``run.json`` holds totals, not one entry per unit, and is not rewritten after every commit; the
listing is planned in a child process into a file the driver reads one unit at a time. Runs use
the Beam executor (in this process, no Ray to start) on listings of files that do not exist, so
every recording is a quick ``decode_error`` row.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from granary_pipe import pipeline, rundir
from granary_pipe.config import ConfigError
from granary_pipe.listing import plan_listing
from granary_pipe.report.summary import summarize

STAGES = [{"use": "audio.decode"}, {"use": "license.gate"}]


def inputs(d: Path, n: int, per_unit: int = 1) -> tuple[Path, Path]:
    """A pipeline of decode + license gate and a source listing ``n`` missing files."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "listing.jsonl").write_text("".join(f'{{"path": "audio/gone_{k:04d}.flac"}}\n' for k in range(n)))
    (d / "source.yaml").write_text(yaml.safe_dump({"name": "gone", "license": "CC-BY-4.0",
                                                   "listing": "listing.jsonl"}))
    (d / "pipeline.yaml").write_text(yaml.safe_dump({"name": "book", "units": {"recordings_per_unit": per_unit},
                                                     "stages": STAGES}))
    return d / "pipeline.yaml", d / "source.yaml"


def run(d: Path, n: int, per_unit: int = 1) -> tuple[Path, dict]:
    pipe, source = inputs(d, n, per_unit)
    out = d / "run"
    return out, pipeline.run_pipeline(pipe, source, out, executor="beam", progress=False)


@pytest.fixture
def run_json_writes(monkeypatch):
    """Count the driver's writes of run.json (none throttled away: one interval is an hour)."""
    writes = []
    real = rundir.write_json_atomic

    def counting(path, data, **kw):
        if Path(path).name == rundir.RUN_JSON:
            writes.append(len(json.dumps(data, default=str)))
        real(path, data, **kw)

    monkeypatch.setattr(rundir, "write_json_atomic", counting)
    monkeypatch.setattr(pipeline, "RUN_JSON_EVERY_S", 3600.0)
    return writes


def test_run_json_does_not_grow_with_the_number_of_units(tmp_path, run_json_writes):
    small, info_small = run(tmp_path / "small", 3)
    size_small, writes_small = (small / "run.json").stat().st_size, len(run_json_writes)
    big, info_big = run(tmp_path / "big", 15)
    size_big = (big / "run.json").stat().st_size
    assert info_small["status"] == info_big["status"] == "complete"
    assert info_big["units_total"] == info_big["units_committed"] == 15 and "units" not in info_big
    assert abs(size_big - size_small) < 200, (size_small, size_big)  # digits of totals and times only
    assert writes_small == 2 and len(run_json_writes) - writes_small == 2, "run.json rewritten per unit"
    assert info_big["totals"]["rows_in"] == info_big["totals"]["rows_rejected"] == 15
    assert info_big["counts"]["audio.decode"]["rejected"] == {"decode_error": 15}


def test_report_and_release_provenance_read_the_totals_layout(tmp_path):
    out, info = run(tmp_path, 4, per_unit=2)
    s = summarize(out)
    assert s["units"]["total"] == s["units"]["committed"] == 2 and s["rows"]["balanced"]
    assert s["recordings"]["expected"] == s["recordings"]["in"] == 4
    data = json.loads((out / "run.json").read_text())
    data["unit_errors"] = {"u000001": "RuntimeError: worker died"}  # as a failed unit leaves it
    rundir.write_json_atomic(out / "run.json", data)
    import shutil

    shutil.rmtree(rundir.unit_dir(out, "u000001"))
    u = summarize(out)["units"]
    assert u["failed_units"] == [{"unit": "u000001", "error": "RuntimeError: worker died"}]
    assert u["total"] == 2 and u["committed"] == 1 and u["pending"] == 0


def test_the_listing_is_planned_in_a_child_and_read_one_unit_at_a_time(tmp_path):
    _, source = inputs(tmp_path, 7)
    resolved = {"stages": STAGES, "units": {"recordings_per_unit": 3}}
    listing = plan_listing(source, resolved, 3, tmp_path)
    assert listing.recordings == 7 and listing.unit_ids == ["u000000", "u000001", "u000002"]
    assert listing.ingest["peak_rss_mb"] > 0 and listing.path.is_file()
    got = list(listing.units(["u000002", "u000000"]))
    assert [u.id for u in got] == ["u000000", "u000002"]
    assert [u.table.num_rows for u in got] == [3, 1]
    assert set(got[1].table.column("unit").to_pylist()) == {"u000002"}
    ids = [i for u in listing.units(listing.unit_ids) for i in u.table.column("id").to_pylist()]
    assert ids == sorted(ids) and len(set(ids)) == 7


def test_an_ingest_error_in_the_child_reaches_the_caller_as_one_line(tmp_path):
    _, source = inputs(tmp_path, 2)
    (tmp_path / "listing.jsonl").write_text('{"path": "audio/a.flac"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"listing.jsonl:2:1: not valid JSON"):
        plan_listing(source, {"stages": STAGES, "units": {"recordings_per_unit": 1}}, 1, tmp_path)


def test_the_ray_driver_takes_a_unit_from_the_listing_only_when_there_is_room(tmp_path, monkeypatch):
    """At most ``max_in_flight`` units are read from the listing and not yet ended."""
    from granary_pipe.listing import ListingFile

    pipe, source = inputs(tmp_path, 8)
    cfg = yaml.safe_load(pipe.read_text())
    cfg["units"]["max_in_flight"] = 2
    pipe.write_text(yaml.safe_dump(cfg))
    ended, taken_at = [], []
    real_units, real_committed = ListingFile.units, pipeline._Record.committed

    def units(self, wanted):
        for unit in real_units(self, wanted):
            taken_at.append(len(ended))
            yield unit

    def committed(self, unit, marker):
        ended.append(unit)
        real_committed(self, unit, marker)

    monkeypatch.setattr(ListingFile, "units", units)
    monkeypatch.setattr(pipeline._Record, "committed", committed)
    info = pipeline.run_pipeline(pipe, source, tmp_path / "run", executor="ray", num_cpus=2, progress=False)
    assert info["status"] == "complete" and len(taken_at) == 8
    assert all(k - ended_then <= 2 for k, ended_then in enumerate(taken_at)), taken_at
