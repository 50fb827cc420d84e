"""The Beam executor (DirectRunner) against the Ray executor on the same units of the demo pipeline.

A source of 8 demo clips (including the music clip and the non-commercial clip) is cut into
2 units; both executors run them into their own run directory through a small driver that
mirrors ``run_pipeline``'s unit loop. Kept and rejected rows must be the same. A stage that
raises for one unit must mark that unit failed (after ``max_attempts`` tries) while the other
commits.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import ClassVar

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from granary_pipe import schema
from granary_pipe.config import load_pipeline
from granary_pipe.executors.beam import (BeamExecutor, UnitElement, UnitElementCoder, check_options,
                                         normalize_options, table_from_ipc, table_to_ipc)
from granary_pipe import rundir
from granary_pipe.units import plan_units
from granary_pipe.stage import Stage
from granary_pipe.stages.ingest.manifest import list_recordings

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "manifests" / "demo"
CLIPS = ["en_01.flac", "en_02.opus", "en_nc_01.flac", "de_01.flac", "de_02.mp3", "it_03.mp3", "es_04.mp3",
         "noise_music_01.mp3"]
ROW_KEYS = ("id", "text", "lang", "drop_reason", "offset_s", "duration_s")


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
          max_attempts: int = 2) -> dict:
    """What ``run_pipeline`` does around an executor: run the units, collect ``on_result``.

    Returns ``results`` (unit → (stats, error)), ``reported_s`` (unit → seconds from the start
    when it was reported), ``run_s`` (when ``run`` returned) and ``wall_s`` (with shutdown)."""
    out.mkdir(parents=True)
    results: dict[str, tuple[dict | None, str | None]] = {}
    reported_s: dict[str, float] = {}

    def on_result(unit: str, stats: dict | None, error: str | None) -> None:
        assert unit not in results, f"on_result called twice for {unit}"
        results[unit] = (stats, error)
        reported_s[unit] = time.perf_counter() - t0

    t0 = time.perf_counter()
    engine = engine_factory(stages, out)
    try:
        engine.run(units, max_in_flight, max_attempts, on_result)
        run_s = time.perf_counter() - t0
    finally:
        engine.shutdown()
    return {"results": results, "reported_s": reported_s, "run_s": run_s, "wall_s": time.perf_counter() - t0}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, source, pipeline_file) -> dict:
    from granary_pipe.executors.ray import RayExecutor

    config, stages = load_pipeline(pipeline_file)
    _, recordings = list_recordings(source)
    units = plan_units(recordings, config.units.recordings_per_unit)
    assert len(units) == 2
    base = tmp_path_factory.mktemp("runs")
    out = {"units": [u.id for u in units], "stages": [s.name for s in stages]}
    for name, factory in [("beam", lambda s, d: BeamExecutor(s, d)),
                          ("ray", lambda s, d: RayExecutor(s, d, num_cpus=2))]:
        out[name] = drive(factory, stages, units, base / name, config.units.max_in_flight,
                          config.units.max_attempts)
        out[name]["dir"] = base / name
    print(f"\nwall time on {len(units)} units / {recordings.num_rows} recordings: "
          f"beam {out['beam']['wall_s']:.1f} s, ray {out['ray']['wall_s']:.1f} s; "
          f"reported at (s): beam {out['beam']['reported_s']}, ray {out['ray']['reported_s']}")
    return out


def row_set(run: Path, which: str) -> set[tuple]:
    return {tuple(r[k] for k in ROW_KEYS)
            for f in sorted(run.glob(f"units/*/{which}.parquet")) for r in pq.read_table(f).to_pylist()}


def test_beam_and_ray_give_the_same_rows(runs):
    beam_dir, ray_dir = runs["beam"]["dir"], runs["ray"]["dir"]
    kept, rejected = row_set(beam_dir, "kept"), row_set(beam_dir, "rejected")
    assert kept and rejected
    assert kept == row_set(ray_dir, "kept")
    assert rejected == row_set(ray_dir, "rejected")
    reasons = {r[3] for r in rejected}
    assert "license:CC-BY-NC-4.0" in reasons
    assert any(r.startswith("segment:") or r.startswith("lang:") for r in reasons), reasons
    for unit in runs["units"]:  # same audio files written per kept row
        names = lambda d: sorted(p.name for p in (d / "units" / unit / "audio").iterdir())  # noqa: E731
        assert names(beam_dir) == names(ray_dir)


def test_every_unit_committed_and_reported_once(runs):
    for name in ("beam", "ray"):
        run_dir, results = runs[name]["dir"], runs[name]["results"]
        assert sorted(results) == runs["units"]
        for unit, (stats, error) in results.items():
            assert error is None, (name, unit, error)
            assert rundir.is_committed(run_dir, unit)
            marker = rundir.read_marker(run_dir, unit)
            assert stats == marker
            assert marker["rows_in"] == marker["rows_kept"] + marker["rows_rejected"]
            assert set(marker["stage_s"]) == set(marker["counts"]) == {*runs["stages"], "sink.write"}
        units_dir = run_dir / "units"
        assert sorted(p.name for p in units_dir.iterdir()) == runs["units"], "scratch or temp dirs left"
    counts = lambda name: {u: (s["rows_kept"], s["rows_rejected"], s["recordings"])  # noqa: E731
                           for u, (s, _) in runs[name]["results"].items()}
    assert counts("beam") == counts("ray")
    rows = lambda name: {u: {st: (c["rows_in"], c["rows_out"], c["rejected"], c["flagged"])  # noqa: E731
                             for st, c in s["counts"].items()} for u, (s, _) in runs[name]["results"].items()}
    assert rows("beam") == rows("ray")  # the per-stage counters travel the same way through both engines


def test_beam_reports_units_while_the_pipeline_runs(runs):
    """The driver polls result files: the first unit is reported while the second is still in ASR
    (seconds of work), not only after the pipeline finished."""
    beam_run = runs["beam"]
    first = min(beam_run["reported_s"], key=beam_run["reported_s"].get)
    assert beam_run["reported_s"][first] < beam_run["run_s"] - 1.0, beam_run


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
                    max_attempts=3)["results"]
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
    results = drive(lambda s, d: BeamExecutor(s, d), [NoModel()], units, tmp_path / "run")["results"]
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
