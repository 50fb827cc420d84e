"""The Beam executor (DirectRunner) against the Ray executor.

``granary run --executor beam`` runs the full demo pipeline on the demo subset (``conftest.py``:
8 clips, 4 units) and is compared with the shared uninterrupted Ray run (``demo_reference``) on
every column, every audio byte and the release cut from it. A run started on Ray and finished on
Beam is tested in ``test_faults.py``. The failure tests below drive ``BeamExecutor`` directly on
cheap stages: a stage that raises for one unit must mark that unit failed (after ``max_attempts``
tries) while the other commits.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import ClassVar

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
import yaml

from granary_pipe import schema
from granary_pipe.config import load_pipeline
from granary_pipe.executors.beam import (BeamExecutor, UnitElement, UnitElementCoder, check_options,
                                         normalize_options, table_from_ipc, table_to_ipc)
from granary_pipe import rundir
from granary_pipe.units import plan_units
from granary_pipe.stage import Stage
from granary_pipe.ingest.manifest import list_recordings

from fault_helpers import demo_run_args, finish, rows, start_cli
from run_compare import assert_same_release, assert_same_units

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "manifests" / "demo"
CLIPS = ["en_01.flac", "en_02.opus", "en_nc_01.flac", "de_01.flac", "de_02.mp3", "it_03.mp3", "es_04.mp3",
         "noise_music_01.mp3"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the demo manifest listing only ``CLIPS`` (audio copied next to it)."""
    d = tmp_path_factory.mktemp("source")
    (d / "audio").mkdir()
    lines = []
    for raw in (DEMO / "listing.jsonl").read_text().splitlines():
        entry = json.loads(raw)
        if Path(entry["path"]).name in CLIPS:
            shutil.copy(DEMO / entry["path"], d / "audio")
            lines.append(raw)
    assert len(lines) == len(CLIPS)
    (d / "listing.jsonl").write_text("\n".join(lines) + "\n")
    manifest = yaml.safe_load((DEMO / "demo.yaml").read_text())
    (d / "demo.yaml").write_text(yaml.safe_dump(manifest))
    return d / "demo.yaml"


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory) -> Path:
    cfg = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    cfg["units"]["recordings_per_unit"] = 4
    path = tmp_path_factory.mktemp("cfg") / "demo-2-units.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def drive(engine_factory, stages: list[Stage], units, out: Path, max_in_flight: int = 3,
          max_attempts: int = 2) -> dict[str, tuple[dict | None, str | None]]:
    """What ``run_pipeline`` does around an executor: run the units, collect ``on_result``
    (unit → (stats, error)), each unit once."""
    out.mkdir(parents=True)
    results: dict[str, tuple[dict | None, str | None]] = {}

    def on_result(unit: str, stats: dict | None, error: str | None) -> None:
        assert unit not in results, f"on_result called twice for {unit}"
        results[unit] = (stats, error)

    engine = engine_factory(stages, out)
    try:
        engine.run(units, max_in_flight, max_attempts, on_result)
    finally:
        engine.shutdown()
    return results


@pytest.fixture(scope="module")
def beam_run(tmp_path_factory, demo_subset) -> dict:
    """``granary run --executor beam`` on the demo subset, as a user runs it. While it runs, the
    number of committed units is noted each time a progress line (one per reported unit) appears."""
    out = tmp_path_factory.mktemp("beam") / "run"
    log = out.parent / "run.log"
    proc = start_cli(*demo_run_args(demo_subset, out, "--executor", "beam", quiet=False), log=log)
    committed_at_report: dict[int, int] = {}  # progress line k -> units committed when it was seen
    try:
        while proc.poll() is None:
            for k in _progress_lines(log):
                committed_at_report.setdefault(k, len(list(out.glob("units/*/_COMMITTED"))))
            time.sleep(0.02)
    finally:
        rc = finish(proc)
    assert rc == 0, log.read_text()[-3000:]
    return {"dir": out, "log": log, "committed_at_report": committed_at_report}


def _progress_lines(log: Path) -> list[int]:
    return [int(m[1]) for m in re.finditer(r"^demo: (\d+)/\d+ units", log.read_text(), re.M)]


@pytest.mark.e2e
def test_cli_beam_run_equals_ray_run_on_every_column_and_audio_byte(beam_run, demo_reference, tmp_path):
    """The same units, the same kept and rejected Parquet (every column, and byte for byte), the
    same FLAC bytes, the same commit markers but for stage seconds, and the same release (shards of
    every format, ATTRIBUTION.md, README.md; release.json but for ``run.executor``)."""
    beam_dir = beam_run["dir"]
    assert_same_units(beam_dir, demo_reference)
    kept, rejected = rows(beam_dir, "kept"), rows(beam_dir, "rejected")
    assert kept and rejected and list(beam_dir.glob("units/*/audio/*.flac"))  # the comparison is not empty
    reasons = {r["drop_reason"] for r in rejected}
    assert "license:CC-BY-NC-4.0" in reasons
    assert any(r.startswith(("segment:", "lang:")) for r in reasons), reasons
    info = json.loads((beam_dir / "run.json").read_text())
    assert info["executor"] == "beam" and info["status"] == "complete"
    ref = json.loads((demo_reference / "run.json").read_text())
    assert info["counts"] == ref["counts"] and info["fingerprint"] == ref["fingerprint"]
    assert_same_release(beam_dir, demo_reference, tmp_path, executor_differs=True)


@pytest.mark.e2e
def test_every_unit_committed_and_reported_once(beam_run, demo_reference):
    beam_dir = beam_run["dir"]
    info = json.loads((beam_dir / "run.json").read_text())
    units = rundir.committed_units(beam_dir)
    assert units == rundir.committed_units(demo_reference)
    assert info["units_total"] == info["units_committed"] == len(units) and not info["unit_errors"]
    assert _progress_lines(beam_run["log"]) == list(range(1, len(units) + 1)), "a unit reported twice or never"
    _, stages = load_pipeline(ROOT / "pipelines" / "demo.yaml")
    for unit in units:
        marker = rundir.read_marker(beam_dir, unit)
        assert marker["rows_in"] == marker["rows_kept"] + marker["rows_rejected"]
        assert set(marker["stage_s"]) == set(marker["counts"]) == {*(s.name for s in stages), "sink.write"}
    assert sorted(p.name for p in (beam_dir / "units").iterdir()) == units, "scratch or temp dirs left"


@pytest.mark.e2e
def test_beam_reports_units_while_the_pipeline_runs(beam_run):
    """The driver polls result files: the first unit is reported while later units are not yet
    committed, not only after the pipeline finished."""
    seen = beam_run["committed_at_report"]
    assert seen, "no progress line seen while the run was going"
    assert seen[min(seen)] < len(_progress_lines(beam_run["log"])), seen


class Boom(Stage):
    """Raises on any batch holding one of ``fail_recordings``; counts its tries in ``tries_dir``."""

    name: ClassVar[str] = "test.boom"
    fail_recordings: list[str]
    tries_dir: str

    def process(self, active: pa.Table) -> pa.Table:
        if set(self.fail_recordings) & set(active.column("recording_id").to_pylist()):
            tries = Path(self.tries_dir)
            (tries / f"try-{len(list(tries.iterdir()))}").touch()
            raise RuntimeError("boom")
        return active


@pytest.mark.parametrize("mode", ["in_memory", "multi_threading"])
def test_a_failing_stage_fails_only_its_unit(tmp_path, source, pipeline_file, mode):
    config, stages = load_pipeline(pipeline_file)
    _, recordings = list_recordings(source)
    units = plan_units(recordings, 4)
    victims = units[1].table.column("recording_id").to_pylist()
    (tmp_path / "tries").mkdir()
    cheap = [s for s in stages if s.name in ("audio.decode", "license.gate")]
    cheap.append(Boom(fail_recordings=victims, tries_dir=str(tmp_path / "tries")))
    options = [f"direct_running_mode={mode}", f"direct_num_workers={1 if mode == 'in_memory' else 2}"]
    results = drive(lambda s, d: BeamExecutor(s, d, options), cheap, units, tmp_path / "run",
                    max_attempts=3)
    assert sorted(results) == ["u000000", "u000001"]
    stats, error = results["u000000"]
    assert error is None and rundir.is_committed(tmp_path / "run", "u000000")
    assert stats["rows_in"] == 4
    stats, error = results["u000001"]
    assert stats is None
    assert error == "test.boom: RuntimeError: boom"
    assert not (tmp_path / "run" / "units" / "u000001").exists()
    assert len(list((tmp_path / "tries").iterdir())) == 3  # retried up to max_attempts
    assert [p.name for p in (tmp_path / "run" / "units").iterdir()] == ["u000000"]


class NoModel(Stage):
    """A stage whose model cannot load."""

    name: ClassVar[str] = "test.no_model"

    def setup(self) -> None:
        raise RuntimeError("model weights not found")

    def process(self, active: pa.Table) -> pa.Table:
        return active


def test_a_pipeline_that_cannot_start_reports_every_unit_failed(tmp_path, source):
    _, recordings = list_recordings(source)
    units = plan_units(recordings, 4)
    results = drive(lambda s, d: BeamExecutor(s, d), [NoModel()], units, tmp_path / "run")
    assert sorted(results) == ["u000000", "u000001"]
    for stats, error in results.values():
        assert stats is None
        assert error.startswith("beam pipeline failed: ") and "model weights not found" in error, error
    assert list((tmp_path / "run" / "units").iterdir()) == []


def test_coder_round_trips_tables_with_audio():
    rows = [{"id": f"r{i}", "recording_id": "r", "offset_s": float(i), "duration_s": 1.0, "text": "héllo",
             "flags": ["a"], "samples": np.arange(16, dtype=np.float32).tobytes()} for i in range(3)]
    table = schema.make_table(rows, with_samples=True)
    coder = beam.coders.registry.get_coder(UnitElement)
    assert isinstance(coder, UnitElementCoder)
    stats = {"stage_s": {"audio.decode": 0.5},
             "counts": {"audio.decode": {"rows_in": 3, "rows_out": 3, "rejected": {"decode_error": 1},
                                         "rejected_s": {"decode_error": 0.0}, "flagged": {}}}}
    back = coder.decode(coder.encode(UnitElement("u000007", table, stats)))
    assert back.unit == "u000007" and back.stats == stats and back.error is None
    assert back.table.equals(table) and back.table.schema == schema.WORK_SCHEMA
    failed = coder.decode(coder.encode(UnitElement("u1", None, {"stage_s": {"x": 1.0}}, "asr.whisper: OSError: gone")))
    assert failed.table is None and failed.error == "asr.whisper: OSError: gone"
    assert table_from_ipc(table_to_ipc(table)).equals(table)


def test_stage_collections_use_the_arrow_coder(tmp_path, pipeline_file):
    _, stages = load_pipeline(pipeline_file)
    executor = BeamExecutor(stages, tmp_path)
    p = beam.Pipeline(options=executor.options)
    executor.build(p, ["u000000"], tmp_path, max_attempts=1)
    labels = ["load"] + [f"{i:02d} {s.name}" for i, s in enumerate(stages)]
    by_label = {t.full_label: t for t in _transforms(p)}
    for label in labels:
        pcoll = by_label[label].outputs[None]
        assert isinstance(beam.coders.registry.get_coder(pcoll.element_type), UnitElementCoder), label


def _transforms(p: beam.Pipeline):
    out, todo = [], [p._root_transform()]
    while todo:
        t = todo.pop()
        out.append(t)
        todo.extend(t.parts)
    return out


def test_options():
    assert normalize_options(["runner=FlinkRunner", "--direct_num_workers=2", "--save_main_session"]) == [
        "--runner=FlinkRunner", "--direct_num_workers=2", "--save_main_session"]
    ex = BeamExecutor([], Path("/nonexistent"), ["direct_num_workers=2", "direct_running_mode=multi_threading"])
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    assert ex.options.view_as(StandardOptions).runner == "DirectRunner"
    assert ex.options.view_as(DirectOptions).direct_num_workers == 2
    assert ex.options.view_as(DirectOptions).direct_running_mode == "multi_threading"
    with pytest.raises(ValueError, match="NoSuchRunner"):
        BeamExecutor([], Path("/nonexistent"), ["runner=NoSuchRunner"])
    with pytest.raises(ValueError, match="invalid choice: 'bogus'"):
        check_options(["direct_running_mode=bogus"])
