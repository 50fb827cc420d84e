"""A resumed run may change where work runs, not what it outputs (docs/cluster.md, "Resume").

The run's fingerprint (``listing.fingerprint``) leaves out the engine knobs: stages'
``resources`` and ``workers``, ``units.max_in_flight`` and ``units.max_attempts``, and the
executor's address and CPUs. A run committed with one set of knobs, one unit of it removed as if
it never finished, is resumed with other knobs: it must redo only that unit and end with the same
rows and audio as the uninterrupted run. What output depends on (the stage list, stage parameters,
``batch_size``, ``recordings_per_unit``, the source's recordings: every value ingest puts in a
recording row) must still need a new ``--out``.

The pipeline is the cheapest real one with an actor stage: decode → license gate → Silero VAD →
fastText text LID (an actor, so ``workers`` means something; rows without a language pass it
untouched), on three generated WAV files: speech with pauses, speech under a non-commercial
license (rejected by the gate) and silence (rejected, no speech).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from audio_fixtures import espeak_16k, silence, write_audio
from helpers_rundir import planned_units
from granary_pipe.config import ConfigError
from granary_pipe import rundir
from granary_pipe.pipeline import run_pipeline
from granary_pipe.schema import SAMPLE_RATE_HZ

SR = SAMPLE_RATE_HZ


def stages(cpus: float, workers: int, lid_cpus: float, *, pause_ms: int = 500, batch_size: int = 64) -> list[dict]:
    """The pipeline's stage list: ``cpus`` per task stage, ``workers``/``lid_cpus`` for the LID actor;
    ``pause_ms`` and ``batch_size`` are what output depends on."""
    return [
        {"use": "audio.decode", "params": {"max_duration_s": 600}, "resources": {"cpus": cpus}},
        {"use": "license.gate", "resources": {"cpus": cpus}},
        {"use": "segment.silero", "params": {"max_segment_s": 30, "min_silence_duration_ms": pause_ms,
                                             "max_merge_gap_s": 1.0},
         "resources": {"cpus": cpus}, "batch_size": batch_size},
        {"use": "filter.text_lang", "workers": workers, "resources": {"cpus": lid_cpus}},
    ]


def write_pipeline(path: Path, stage_list: list[dict], *, per_unit: int = 1, in_flight: int = 1,
                   attempts: int = 1) -> Path:
    units = {"recordings_per_unit": per_unit, "max_in_flight": in_flight, "max_attempts": attempts}
    path.write_text(yaml.safe_dump({"name": "resume-knobs", "units": units, "stages": stage_list}, sort_keys=False))
    return path


FIRST = {"stage_list": stages(cpus=0.25, workers=1, lid_cpus=0.5), "in_flight": 1, "attempts": 1}
"""The knobs of the first, uninterrupted run (on 2 CPUs)."""
RESUMED = {"stage_list": stages(cpus=0.5, workers=2, lid_cpus=0.25), "in_flight": 3, "attempts": 3}
"""Other resources, workers, max_in_flight and max_attempts for the resumed run (on 3 CPUs)."""


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """Three generated recordings in a listing: speech (CC-BY), speech (CC-BY-NC), silence."""
    root = tmp_path_factory.mktemp("resume_src")
    (root / "audio").mkdir()
    one = espeak_16k("Curated speech comes out exactly once.", root)
    two = espeak_16k("A resumed run redoes only what is missing.", root)
    pause = np.concatenate([silence(0.3), one, silence(1.5), two, silence(0.3)])  # two segments: gap > merge gap
    write_audio(root / "audio" / "a_speech.wav", pause, SR)
    write_audio(root / "audio" / "b_nc.wav", np.concatenate([silence(0.3), two, silence(0.3)]), SR)
    write_audio(root / "audio" / "c_silence.wav", silence(2.0), SR)
    lines = [{"path": "audio/a_speech.wav"}, {"path": "audio/b_nc.wav", "license": "CC-BY-NC-4.0"},
             {"path": "audio/c_silence.wav"}]
    (root / "listing.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    manifest = root / "source.yaml"
    manifest.write_text(yaml.safe_dump({"name": "resume", "license": "CC-BY-4.0", "listing": "listing.jsonl"}))
    return manifest


def snapshot(run: Path) -> dict[str, object]:
    """Every unit's kept and rejected rows (sorted by id) and the sha256 of each audio file."""
    out: dict[str, object] = {}
    for udir in sorted((run / "units").iterdir()):
        for name in ("kept", "rejected"):
            table = pq.read_table(udir / f"{name}.parquet")
            out[f"{udir.name}/{name}"] = table.sort_by("id").to_pylist() if table.num_rows else []
        for f in sorted((udir / "audio").glob("*")) if (udir / "audio").is_dir() else []:
            out[f"{udir.name}/audio/{f.name}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, source) -> tuple[Path, dict, dict]:
    """The uninterrupted run with the FIRST knobs: (run dir, its run.json, its snapshot)."""
    root = tmp_path_factory.mktemp("resume_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        info = run_pipeline(write_pipeline(root / "first.yaml", **FIRST), source, root / "run", progress=False,
                            num_cpus=2)
    assert info["status"] == "complete" and info["units_total"] == 3
    return root / "run", info, snapshot(root / "run")


def test_resume_with_other_engine_knobs_gives_the_rows_of_the_uninterrupted_run(tmp_path, source, first_run,
                                                                                monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    done, first, whole = first_run
    kept_units = [u for u in planned_units(first) if whole[f"{u}/kept"]]
    assert any(len(whole[f"{u}/kept"]) >= 2 for u in kept_units), "the speech with a pause should give 2 segments"
    assert sum(len(whole[f"{u}/rejected"]) for u in planned_units(first)) >= 2  # the NC recording and the silence
    run = tmp_path / "run"
    shutil.copytree(done, run)
    lost = kept_units[0]
    shutil.rmtree(rundir.unit_dir(run, lost))  # as if the run had died while this unit was in flight
    others = {u: rundir.unit_dir(run, u) / rundir.MARKER for u in planned_units(first) if u != lost}
    stamps = {u: p.stat().st_mtime_ns for u, p in others.items()}

    resumed = run_pipeline(write_pipeline(tmp_path / "resumed.yaml", **RESUMED), source, run, progress=False,
                           num_cpus=3)
    assert resumed["status"] == "complete", resumed.get("failed_units")
    assert resumed["fingerprint"] == first["fingerprint"]
    assert {u: p.stat().st_mtime_ns for u, p in others.items()} == stamps, "committed units were redone"
    assert snapshot(run) == whole
    used = {s["use"]: s for s in json.loads((run / "run.json").read_text())["pipeline"]["stages"]}
    assert used["filter.text_lang"]["workers"] == 2  # run.json records the knobs the last run used


def changed_listing(source: Path) -> Path:
    """The same recordings with one license changed: a second manifest beside the first."""
    listing = source.parent / "listing-relicensed.jsonl"
    listing.write_text((source.parent / "listing.jsonl").read_text().replace("CC-BY-NC-4.0", "CC-BY-SA-4.0"))
    manifest = source.parent / "source-relicensed.yaml"
    manifest.write_text(yaml.safe_dump({"name": "resume", "license": "CC-BY-4.0", "listing": listing.name}))
    return manifest


@pytest.mark.parametrize("change", [
    pytest.param({"stage_list": stages(cpus=0.25, workers=1, lid_cpus=0.5, pause_ms=300)}, id="stage-param"),
    pytest.param({"stage_list": stages(cpus=0.25, workers=1, lid_cpus=0.5, batch_size=32)}, id="batch_size"),
    pytest.param({"stage_list": FIRST["stage_list"][:-1]}, id="stage-list"),
    pytest.param({"stage_list": FIRST["stage_list"], "per_unit": 2}, id="recordings_per_unit"),
    pytest.param({"stage_list": FIRST["stage_list"]}, id="listing"),
])
def test_what_output_depends_on_needs_a_new_out(tmp_path, source, first_run, request, change):
    """Refused from run.json before any engine starts or any file is touched."""
    done, _, whole = first_run
    run = tmp_path / "run"
    shutil.copytree(done, run)
    src = changed_listing(source) if request.node.callspec.id == "listing" else source
    changed = write_pipeline(tmp_path / "changed.yaml", **{"in_flight": 1, "attempts": 1, **change})
    with pytest.raises(ConfigError, match="choose a new --out"):
        run_pipeline(changed, src, run, progress=False, num_cpus=2)
    assert snapshot(run) == whole
