"""A pipeline run, engine-agnostic: plan units, resume, record ``run.json``, hand units to an executor.
A rerun with the same pipeline and source skips committed units and redoes, with a warning, a damaged one.
Design: docs/architecture.md, "The run directory" and "Contracts"."""

from __future__ import annotations

import logging
import platform
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from granary_pipe import __version__, counters, models, rundir
from granary_pipe.config import ConfigError, PipelineConfig, load_pipeline
from granary_pipe.executors import ExecutorOptions, check_executor, make_executor
from granary_pipe.ingest.spill import listing_workdir
from granary_pipe.io import run_guard
from granary_pipe.listing import ListingFile, plan_listing
from granary_pipe.progress import Progress
from granary_pipe.stage import Stage

log = logging.getLogger(__name__)

RUN_JSON_EVERY_S = 1.0
"""Least seconds between two writes of ``run.json`` while units end (forced at start, interrupt and end)."""

PACKAGES = ["granary_pipe", "faster-whisper", "ctranslate2", "ray", "pyarrow", "numpy", "av", "onnxruntime",
            "soundfile", "pydantic", "apache-beam", "webdataset", "fasttext-predict"]


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


class _Record:
    """``run.json`` while the run goes on: totals of the committed units, errors of the failed ones."""

    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        self.path, self.info, self.last = path, info, float("-inf")
        info.update(units_committed=0, unit_errors={}, failed_units=[], counts={}, stage_s={},
                    totals={k: 0 for k in rundir.UNIT_TOTALS})

    def committed(self, unit: str, marker: dict[str, Any]) -> None:
        info = self.info
        info["units_committed"] += 1
        info["unit_errors"].pop(unit, None)
        for k in rundir.UNIT_TOTALS:
            info["totals"][k] += marker.get(k) or 0
        for name, secs in (marker.get("stage_s") or {}).items():
            info["stage_s"][name] = info["stage_s"].get(name, 0.0) + secs
        info["counts"] = counters.merge_stages(info["counts"], marker.get("counts"))

    def failed(self, unit: str, error: str) -> None:
        """Record a unit that failed, with its one-line error."""
        self.info["unit_errors"][unit] = error

    def write(self, force: bool = False) -> None:
        """Write run.json if forced or if the last write is :data:`RUN_JSON_EVERY_S` old."""
        now = time.monotonic()
        if force or now - self.last >= RUN_JSON_EVERY_S:
            self.info["failed_units"] = sorted(self.info["unit_errors"])
            rundir.write_json_atomic(self.path, self.info)
            self.last = now


def run_pipeline(pipeline_path: Path, source_path: Path, out_dir: Path, *, address: str | None = None,
                 executor: str = "ray", progress: bool = True, num_cpus: int | None = None,
                 beam_options: list[str] | None = None) -> dict:
    """Run (or resume) a pipeline over a source; returns the final ``run.json`` dict. ``executor``:
    ``"ray"`` (``address``, ``num_cpus``) or ``"beam"`` (``beam_options``: Beam pipeline flags)."""
    t0 = time.time()
    opts = ExecutorOptions(address=address, num_cpus=num_cpus, beam_options=list(beam_options or []))
    check_executor(executor, opts)
    config, stages = load_pipeline(pipeline_path)
    resolved = resolved_config(config, stages)
    out_dir = Path(out_dir)
    with listing_workdir() as work:  # a bad listing stops before --out exists; a killed run's is removed next time
        listing = plan_listing(Path(source_path), resolved, config.units.recordings_per_unit, work)
        with run_guard.guarded(out_dir):  # one run per --out (a lock), a foreign directory, orphans, disk errors
            return _run_locked(t0, config, stages, resolved, listing, pipeline_path, source_path, out_dir,
                               executor, opts, progress)


def _run_locked(t0: float, config: PipelineConfig, stages: list[Stage], resolved: dict, listing: ListingFile,
                pipeline_path: Path, source_path: Path, out_dir: Path, executor: str, opts: ExecutorOptions,
                progress: bool) -> dict:
    """The body of :func:`run_pipeline`, run while this process holds ``out_dir``'s lock."""
    run_json = out_dir / rundir.RUN_JSON
    previous = rundir.read_run_json(out_dir) if run_json.is_file() else None
    if previous and previous.get("fingerprint") != listing.fingerprint:
        raise ConfigError(f"{out_dir}: holds a run of another pipeline config or source; choose a new --out")
    rundir.clean_debris(out_dir)
    record = _Record(run_json, {
        "granary_pipe": __version__,
        "fingerprint": listing.fingerprint,
        "pipeline": resolved,
        "pipeline_file": str(Path(pipeline_path).resolve()),
        "source": {**listing.manifest, "manifest": str(Path(source_path).resolve()),
                   "recordings": listing.recordings},
        "ingest": listing.ingest,
        "versions": _versions(),
        "git_revision": _git_revision(),
        "models": {m: models.describe(m) for s in stages for m in s.models()},
        "stage_info": {s.name: info for s in stages if (info := s.run_info())},
        "executor": executor,
        "executor_options": opts.beam_options,
        "units_total": len(listing.unit_ids),
        "status": "running",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "wall_s_previous": (previous or {}).get("wall_s_total", 0.0),
    })
    todo = []
    for uid in listing.unit_ids:
        marker, damaged = rundir.check_unit(out_dir, uid)
        if marker is not None:
            record.committed(uid, marker)
            continue
        if damaged:
            log.warning("%s: %s: redoing the unit", uid, damaged)
            shutil.rmtree(rundir.unit_dir(out_dir, uid))
        todo.append(uid)
    record.write(force=True)
    _execute(executor, opts, stages, config, out_dir, listing.units(todo), len(todo), record, progress)
    return _finish(record, t0)


def _execute(executor: str, opts: ExecutorOptions, stages: list[Stage], config: PipelineConfig, out_dir: Path,
             units, n_todo: int, record: _Record, progress: bool) -> None:
    """Hand the units to the executor; keep ``record`` (and the progress line) up to date."""
    info = record.info
    audio_s = {"before": info["totals"]["audio_s_in"], "now": 0.0}
    t_start = time.monotonic()

    def note() -> str:
        hours = (audio_s["before"] + audio_s["now"]) / 3600
        speed = audio_s["now"] / max(time.monotonic() - t_start, 1e-9)
        return f"{hours:.3f} h audio" + (f", {speed:.1f}x real time" if audio_s["now"] else "")

    total = info["units_total"]
    bar = Progress(total, initial=total - n_todo, unit="unit", enabled=progress, desc=config.name, note=note)

    def on_result(unit: str, stats: dict | None, error: str | None) -> None:
        if error is not None:
            record.failed(unit, error)
            bar.write(f"unit {unit} failed: {error}")
        else:
            assert stats is not None, "OnResult: a committed unit comes with its marker"
            record.committed(unit, stats)
            audio_s["now"] += stats["audio_s_in"]
        record.write()
        bar.update(1)

    engine = None
    try:  # Ctrl-C while the engine starts is an interrupt too: run.json says so, the engine is stopped
        engine = make_executor(executor, stages, out_dir, opts)
        engine.run(units, config.units.max_in_flight, config.units.max_attempts, on_result)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C; SIGTERM (Ray's driver handler calls sys.exit)
        info["status"] = "interrupted"
        record.write(force=True)
        raise
    finally:
        bar.close()
        if engine is not None:
            engine.shutdown()


def _finish(record: _Record, t0: float) -> dict:
    info = record.info
    done = info["units_committed"] == info["units_total"] and not info["unit_errors"]
    info["status"] = "complete" if done else "incomplete"
    wall = time.time() - t0
    info["wall_s"] = wall
    info["wall_s_total"] = info.get("wall_s_previous", 0.0) + wall
    info["audio_hours_in"] = info["totals"]["audio_s_in"] / 3600
    info["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record.write(force=True)
    return info
