"""A pipeline run, engine-agnostic: plan units, resume, record ``run.json``, hand units to an executor.

A run directory holds ``run.json`` and ``units/UNIT/`` (see ``granary_pipe.io.sink``). Input is
split deterministically into units of ``recordings_per_unit`` recordings sorted by id; a rerun
with the same pipeline and source skips committed units, so a killed run loses at most the
units in flight and never duplicates a row.

A unit travels between stages as a :data:`Payload`: its table and its :class:`UnitStats`
(seconds and counters per stage, :mod:`granary_pipe.counters`), which the sink writes into the
unit's commit marker; ``run.json`` keeps per unit its status and totals, and ``counts``, the
counters summed over every committed unit.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from granary_pipe import __version__, counters, models, registry, renames, schema
from granary_pipe.config import ConfigError, PipelineConfig, load_pipeline
from granary_pipe.executors import EXECUTORS
from granary_pipe.io import run_guard, sink
from granary_pipe.progress import Progress
from granary_pipe.stage import Stage
from granary_pipe.ingest.manifest import list_recordings


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


def add_stage_stats(stats: UnitStats, stage: str, seconds: float, counts: counters.StageCounts) -> UnitStats:
    """``stats`` with one more call of ``stage`` (its seconds and counts added to any before)."""
    stage_s = dict(stats.get("stage_s") or {})
    stage_s[stage] = stage_s.get(stage, 0.0) + seconds
    return {"stage_s": stage_s, "counts": counters.merge_stages(stats.get("counts"), {stage: counts})}


PACKAGES = ["granary_pipe", "faster-whisper", "ctranslate2", "ray", "pyarrow", "numpy", "av", "onnxruntime",
            "soundfile", "pydantic", "apache-beam", "webdataset", "fasttext-predict"]


@dataclass
class Unit:
    """A deterministic slice of the input: the grain of commit and resume."""

    id: str
    table: pa.Table


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
    """Cut sorted recording rows into units ``u000000, u000001, ...``."""
    units = []
    for k, start in enumerate(range(0, recordings.num_rows, per_unit)):
        uid = f"u{k:06d}"
        part = recordings.slice(start, per_unit)
        units.append(Unit(uid, schema.set_column(part, "unit", [uid] * part.num_rows)))
    return units


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def resolved_config(config: PipelineConfig, stages: list[Stage]) -> dict[str, Any]:
    """The pipeline with every stage's defaults filled in."""
    return {
        "name": config.name,
        "description": config.description,
        "units": config.units.model_dump(),
        "stages": [{"use": s.name, **s.model_dump(mode="json")} for s in stages],
    }


ENGINE_KNOBS = ("resources", "workers")
"""Stage settings that change where work runs, not what it outputs: a resumed run may change them."""


FINGERPRINT_SKIPS = ("unit", "pipeline_version")
"""Ingest columns the fingerprint leaves out: ``unit`` is set after planning, and the package
version alone does not make a run another run (an upgraded tool may resume it)."""


def _fingerprint(resolved: dict, recordings: pa.Table) -> str:
    """What a run's output depends on: stages and their parameters, unit size, and the input:
    every value ingest put in the recording rows (id, paths absolute and corpus-relative, raw and
    normalised license, language hint, reference text, ...), each column by name and as JSON, so
    editing one listing line (its ``lang``, ``text`` or ``license``) makes another run. Parameters
    go in under the names the previous release used (``renames.previous_names``), so a run it
    started can be resumed after a rename."""
    content = {
        "stages": [renames.previous_names({k: v for k, v in s.items() if k not in ENGINE_KNOBS},
                                          registry.get(s["use"]).RENAMED) for s in resolved["stages"]],
        "recordings_per_unit": resolved["units"]["recordings_per_unit"],
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode())
    for col in recordings.column_names:
        if col not in FINGERPRINT_SKIPS:
            values = json.dumps(recordings.column(col).to_pylist(), ensure_ascii=False, default=str)
            digest.update(f"\0{col}\0{values}".encode())
    return digest.hexdigest()


def run_pipeline(pipeline_path: Path, source_path: Path, out_dir: Path, *, address: str | None = None,
                 executor: str = "ray", progress: bool = True, num_cpus: int | None = None,
                 beam_options: list[str] | None = None) -> dict:
    """Run (or resume) a pipeline over a source; returns the final ``run.json`` dict.

    ``executor`` is ``"ray"`` (``address``, ``num_cpus``) or ``"beam"`` (``beam_options``: Beam
    pipeline flags, ``KEY=VALUE`` or ``--KEY=VALUE``; DirectRunner by default). Both give the same
    output, so a run may be resumed with the other executor."""
    t0 = time.time()
    _check_executor(executor, address, num_cpus, beam_options)
    config, stages = load_pipeline(pipeline_path)
    manifest, recordings = list_recordings(source_path)
    resolved = resolved_config(config, stages)
    out_dir = Path(out_dir)
    with run_guard.guarded(out_dir):  # one run per --out, leftovers of a killed run, disk errors
        return _run_locked(t0, config, stages, manifest, recordings, resolved, pipeline_path, source_path, out_dir,
                           address=address, executor=executor, progress=progress, num_cpus=num_cpus,
                           beam_options=beam_options)


def _run_locked(t0: float, config: PipelineConfig, stages: list[Stage], manifest: Any, recordings: pa.Table,
                resolved: dict, pipeline_path: Path, source_path: Path, out_dir: Path, *, address: str | None,
                executor: str, progress: bool, num_cpus: int | None, beam_options: list[str] | None) -> dict:
    """The body of :func:`run_pipeline`, run while this process holds ``out_dir``'s lock."""
    run_json = out_dir / "run.json"
    fingerprint = _fingerprint(resolved, recordings)
    previous = json.loads(run_json.read_text()) if run_json.is_file() else None
    if previous and previous.get("fingerprint") != fingerprint:
        raise ConfigError(f"{out_dir}: holds a run of another pipeline config or source; choose a new --out")
    sink.clean_debris(out_dir)
    units = plan_units(recordings, config.units.recordings_per_unit)
    info: dict[str, Any] = {
        "granary_pipe": __version__,
        "fingerprint": fingerprint,
        "pipeline": resolved,
        "pipeline_file": str(Path(pipeline_path).resolve()),
        "source": {**manifest.model_dump(), "manifest": str(Path(source_path).resolve()),
                   "recordings": recordings.num_rows},
        "versions": _versions(),
        "git_revision": _git_revision(),
        "models": {m: models.describe(m) for s in stages for m in s.models()},
        "stage_info": {s.name: info for s in stages if (info := s.run_info())},
        "executor": executor,
        "executor_options": list(beam_options or []),
        "units": {u.id: {"status": "pending", "error": None, "recordings": u.table.num_rows} for u in units},
        "status": "running",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
    }
    info["wall_s_previous"] = (previous or {}).get("wall_s_total", 0.0)
    info["counts"] = {}  # per stage, summed over committed units (each unit's own in its marker)
    todo = []
    for u in units:
        if sink.is_committed(out_dir, u.id):
            marker = sink.read_marker(out_dir, u.id)
            info["units"][u.id].update(status="committed", **_stats(marker))
            info["counts"] = counters.merge_stages(info["counts"], marker.get("counts"))
        else:
            todo.append(u)
    sink.write_json_atomic(run_json, info)
    audio_s = {"before": sum(u.get("audio_s_in", 0.0) for u in info["units"].values()), "now": 0.0}
    t_start = time.monotonic()

    def note() -> str:
        hours = (audio_s["before"] + audio_s["now"]) / 3600
        speed = audio_s["now"] / max(time.monotonic() - t_start, 1e-9)
        return f"{hours:.3f} h audio" + (f", {speed:.1f}x real time" if audio_s["now"] else "")

    bar = Progress(len(units), initial=len(units) - len(todo), unit="unit", enabled=progress,
                   desc=config.name, note=note)

    def on_result(unit: str, stats: dict | None, error: str | None) -> None:
        if error is not None:
            info["units"][unit].update(status="failed", error=error)
            bar.write(f"unit {unit} failed: {error}")
        else:
            info["units"][unit].update(status="committed", **_stats(stats))
            info["counts"] = counters.merge_stages(info["counts"], stats.get("counts"))
            audio_s["now"] += stats["audio_s_in"]
        sink.write_json_atomic(run_json, info)
        bar.update(1)

    engine = None
    try:  # Ctrl-C while the engine starts is an interrupt too: run.json says so, the engine is stopped
        engine = _executor(executor, stages, out_dir, address, num_cpus, beam_options)
        engine.run(todo, config.units.max_in_flight, config.units.max_attempts, on_result)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C; SIGTERM (Ray's driver handler calls sys.exit)
        info["status"] = "interrupted"
        sink.write_json_atomic(run_json, info)
        raise
    finally:
        bar.close()
        if engine is not None:
            engine.shutdown()
    return _finish(info, run_json, t0)


def _stats(marker: dict) -> dict:
    keys = ("rows_in", "rows_kept", "rows_rejected", "recordings", "audio_s_in", "speech_s_kept", "stage_s")
    return {k: marker[k] for k in keys if k in marker}


def _finish(info: dict, run_json: Path, t0: float) -> dict:
    statuses = [u["status"] for u in info["units"].values()]
    info["status"] = "complete" if all(s == "committed" for s in statuses) else "incomplete"
    info["failed_units"] = sorted(u for u, d in info["units"].items() if d["status"] == "failed")
    wall = time.time() - t0
    info["wall_s"] = wall
    info["wall_s_total"] = info.get("wall_s_previous", 0.0) + wall
    audio_s = sum(u.get("audio_s_in", 0.0) for u in info["units"].values())
    info["audio_hours_in"] = audio_s / 3600
    info["stage_s"] = {}
    for u in info["units"].values():
        for name, secs in u.get("stage_s", {}).items():
            info["stage_s"][name] = info["stage_s"].get(name, 0.0) + secs
    info["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sink.write_json_atomic(run_json, info)
    return info


def _check_executor(name: str, address: str | None, num_cpus: int | None, beam_options: list[str] | None) -> None:
    """Reject an unknown executor or options of the other one, before anything is written."""
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r} (available: {', '.join(EXECUTORS)})")
    if name == "ray" and beam_options:
        raise ConfigError("beam options given, but the executor is ray (add --executor beam)")
    if name == "beam" and (address or num_cpus):
        raise ConfigError("--ray-address and --num-cpus are for the ray executor; with beam give Beam flags "
                          "as --beam-option (e.g. runner=FlinkRunner, direct_num_workers=2)")
    if name == "ray" and (address or os.environ.get("RAY_ADDRESS")):
        from granary_pipe.executors.ray_address import check_reachable

        check_reachable(address or os.environ["RAY_ADDRESS"])
    if name == "beam":
        from granary_pipe.executors.beam import check_options

        try:
            check_options(beam_options)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def _executor(name: str, stages: list[Stage], out_dir: Path, address: str | None, num_cpus: int | None,
              beam_options: list[str] | None = None):
    if name == "beam":
        from granary_pipe.executors.beam import BeamExecutor

        return BeamExecutor(stages, out_dir, pipeline_options=beam_options)
    from granary_pipe.executors.ray import RayExecutor

    return RayExecutor(stages, out_dir, address=address, num_cpus=num_cpus)
