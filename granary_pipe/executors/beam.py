"""Beam executor: the Ray executor's stages and units as one Apache Beam pipeline.

``Create(unit ids) -> LoadUnit -> StageDoFn per stage -> CommitUnit``, one element per unit.
Design: docs/architecture.md, "Beam executor".
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import struct
import threading
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from granary_pipe import rundir
from granary_pipe.io import sink
from granary_pipe.stage import Stage
from granary_pipe.units import OnResult, Unit, UnitStats, apply_stage

log = logging.getLogger(__name__)


def _not_import_noise(record: logging.LogRecord) -> bool:
    """False for Beam's import warnings about optional GCP client libraries (we use none)."""
    return not str(record.msg).startswith(("apitools not found", "Failed to import GCSFileSystem"))


_noisy = [logging.getLogger(), logging.getLogger("apache_beam.io.filesystems")]
for _logger in _noisy:
    _logger.addFilter(_not_import_noise)
try:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.runner import create_runner
finally:
    for _logger in _noisy:
        _logger.removeFilter(_not_import_noise)

DEFAULT_OPTIONS = ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]
"""Defaults put before the caller's flags (a later flag wins): in-process, one unit at a time."""

RESULTS = "results"
INPUTS = "inputs"


@dataclass
class UnitElement:
    """What flows between the DoFns: one unit's table and its ``UnitStats``, or its error."""

    unit: str
    table: pa.Table | None
    stats: UnitStats = field(default_factory=UnitStats)
    error: str | None = None


def table_to_ipc(table: pa.Table) -> bytes:
    """``table`` as one Arrow IPC stream (the inverse of :func:`table_from_ipc`)."""
    out = pa.BufferOutputStream()
    with pa.ipc.new_stream(out, table.schema) as writer:
        writer.write_table(table)
    return out.getvalue().to_pybytes()


def table_from_ipc(data: bytes | memoryview | pa.Buffer) -> pa.Table:
    """Zero-copy over ``data``."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


class UnitElementCoder(beam.coders.Coder):
    """``UnitElement`` ↔ bytes: ``>I`` header length, JSON header, then Arrow IPC stream (if any)."""

    def encode(self, value: UnitElement) -> bytes:
        header = json.dumps({"unit": value.unit, "stats": value.stats, "error": value.error,
                             "table": value.table is not None}).encode()
        body = table_to_ipc(value.table) if value.table is not None else b""
        return struct.pack(">I", len(header)) + header + body

    def decode(self, encoded: bytes) -> UnitElement:
        (n,) = struct.unpack_from(">I", encoded)
        header = json.loads(encoded[4:4 + n])
        table = table_from_ipc(memoryview(encoded)[4 + n:]) if header["table"] else None
        return UnitElement(header["unit"], table, header["stats"], header["error"])

    def is_deterministic(self) -> bool:
        return False  # never used as a key; Arrow IPC bytes are not guaranteed canonical

    def to_type_hint(self):
        return UnitElement


beam.coders.registry.register_coder(UnitElement, UnitElementCoder)


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {(lines[-1] if lines else '')[:500]}"


class LoadUnit(beam.DoFn):
    """Unit id → ``UnitElement`` with the unit's recording rows from the scratch directory."""

    def __init__(self, scratch: str) -> None:
        self.scratch = scratch

    def process(self, unit: str) -> Iterable[UnitElement]:
        try:
            with pa.OSFile(str(Path(self.scratch) / INPUTS / f"{unit}.arrow")) as src:
                table = pa.ipc.open_file(src).read_all()  # recording metadata only: small
            yield UnitElement(unit, table)
        except Exception as exc:  # reported per unit, the pipeline goes on
            yield UnitElement(unit, None, error=f"load: {_describe(exc)}")


class StageDoFn(beam.DoFn):
    """One stage as a DoFn: model loaded in ``setup`` (once per DoFn instance), units in ``process``."""

    def __init__(self, stage: Stage, max_attempts: int) -> None:
        self.stage = stage
        self.max_attempts = max_attempts
        self.failed = beam.metrics.Metrics.counter("granary", f"{stage.name}.units_failed")
        self.retried = beam.metrics.Metrics.counter("granary", f"{stage.name}.retries")

    def setup(self) -> None:
        self.stage.setup()

    def process(self, element: UnitElement) -> Iterable[UnitElement]:
        if element.error is not None:
            yield element
            return
        for attempt in range(1, self.max_attempts + 1):
            try:
                table, stats = apply_stage(self.stage, (element.table, element.stats))
                yield UnitElement(element.unit, table, stats)
                return
            except Exception as exc:  # retried, then reported per unit
                if attempt < self.max_attempts:
                    self.retried.inc()
                    log.warning("unit %s: %s failed (attempt %d), retrying: %s", element.unit,
                                self.stage.name, attempt, _describe(exc))
                    continue
                self.failed.inc()
                log.debug("unit %s: %s failed:\n%s", element.unit, self.stage.name, traceback.format_exc())
                yield UnitElement(element.unit, None, element.stats, f"{self.stage.name}: {_describe(exc)}")


class CommitUnit(beam.DoFn):
    """Commit a unit with the sink (as Ray does) and write its result record for the driver."""

    def __init__(self, run_dir: str, scratch: str, max_attempts: int) -> None:
        self.run_dir = run_dir
        self.scratch = scratch
        self.max_attempts = max_attempts

    def process(self, element: UnitElement) -> Iterable[str]:
        stats, error = None, element.error
        if error is None:
            for attempt in range(1, self.max_attempts + 1):
                try:
                    stats = sink.commit_unit(Path(self.run_dir), element.unit, element.table, element.stats)
                    break
                except Exception as exc:  # retried, then reported per unit
                    if attempt == self.max_attempts:
                        error = f"commit: {_describe(exc)}"
        record = {"unit": element.unit, "stats": stats, "error": error}
        rundir.write_json_atomic(Path(self.scratch) / RESULTS / f"{element.unit}.json", record, durable=False)
        yield json.dumps(record, default=str)


def _from_marker(run_dir: Path, unit: str, failure: str | None) -> tuple[dict | None, str | None]:
    """``(stats, error)`` of a unit the pipeline gave no result for: its marker if committed and intact,
    else failed (a damaged unit is removed, so the next run redoes it)."""
    marker, damaged = rundir.check_unit(run_dir, unit)
    if marker is not None:
        return marker, None
    if damaged:
        log.warning("%s: %s: the unit is not committed", unit, damaged)
        shutil.rmtree(rundir.unit_dir(run_dir, unit), ignore_errors=True)
        return None, f"commit: {damaged}"
    return None, failure or "beam pipeline produced no result for this unit"


def normalize_options(options: Iterable[str] | None) -> list[str]:
    """``KEY=VALUE`` or ``--KEY=VALUE`` (or a bare ``--flag``) → Beam argv flags."""
    return [o if o.startswith("-") else f"--{o}" for o in (options or [])]


def check_options(options: Iterable[str] | None) -> PipelineOptions:
    """Beam ``PipelineOptions`` from ``DEFAULT_OPTIONS`` + ``options``; ValueError on a bad value of a known
    option or an unknown runner (Beam would exit). Unknown options are passed on: runners take their own."""
    parsed = PipelineOptions(DEFAULT_OPTIONS + normalize_options(options))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsed.get_all_options()
    except SystemExit:
        last = (err.getvalue().strip().splitlines() or ["invalid"])[-1]
        raise ValueError(f"beam options: {last.split(' error: ', 1)[-1]}") from None
    runner = parsed.view_as(StandardOptions).runner
    try:
        create_runner(runner)
    except (ValueError, ImportError, RuntimeError) as exc:
        raise ValueError(f"beam runner {runner!r}: {exc}") from None
    return parsed


class _Results:
    """Reports each pending unit once, from its result file (polled while the pipeline runs)."""

    def __init__(self, results: Path, pending: set[str], on_result: OnResult) -> None:
        self.dir = results
        self.pending = pending
        self.on_result = on_result
        self.lock = threading.Lock()

    def report(self, unit: str, stats: dict | None, error: str | None) -> None:
        with self.lock:
            if unit in self.pending:
                self.pending.remove(unit)
                self.on_result(unit, stats, error)

    def sweep(self) -> None:
        """Report the pending units whose result file is there."""
        for unit in sorted(self.pending):
            path = self.dir / f"{unit}.json"
            if path.is_file():
                rec = json.loads(path.read_text())
                self.report(unit, rec["stats"], rec["error"])

    @contextlib.contextmanager
    def polling(self, every_s: float) -> Iterator[None]:
        """Sweep every ``every_s`` on a thread during the block; its error is raised after the block."""
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(every_s):
                self.sweep()

        with ThreadPoolExecutor(1, thread_name_prefix="beam-results") as pool:
            poller = pool.submit(poll)
            try:
                yield
            finally:
                stop.set()
        poller.result()


def _write_inputs(units: Iterable[Unit], inputs: Path) -> set[str]:
    """Each unit's rows as an Arrow file in ``inputs``, one unit in memory at a time; the unit ids."""
    ids = set()
    for u in units:
        ids.add(u.id)
        with pa.OSFile(str(inputs / f"{u.id}.arrow"), "wb") as out, pa.ipc.new_file(out, u.table.schema) as writer:
            writer.write_table(u.table)
    return ids


class BeamExecutor:
    """Runs units as one Beam pipeline; ``pipeline_options`` are Beam flags over ``DEFAULT_OPTIONS``,
    ``poll_s`` how often the driver looks for finished units."""

    def __init__(self, stages: list[Stage], run_dir: Path, pipeline_options: list[str] | None = None,
                 poll_s: float = 1.0) -> None:
        self.stages = stages
        self.run_dir = Path(run_dir)
        self.options = check_options(pipeline_options)
        self.poll_s = poll_s

    def build(self, p: beam.Pipeline, unit_ids: list[str], scratch: Path, max_attempts: int) -> beam.PCollection:
        """Add the unit chain to ``p``; returns the PCollection of JSON result records."""
        pcoll = (p | "units" >> beam.Create(unit_ids).with_output_types(str)
                 | "load" >> beam.ParDo(LoadUnit(str(scratch))).with_output_types(UnitElement))
        for i, stage in enumerate(self.stages):
            pcoll = pcoll | f"{i:02d} {stage.name}" >> beam.ParDo(
                StageDoFn(stage, max_attempts)).with_input_types(UnitElement).with_output_types(UnitElement)
        return pcoll | "commit" >> beam.ParDo(
            CommitUnit(str(self.run_dir), str(scratch), max_attempts)).with_output_types(str)

    def run(self, units: Iterable[Unit], max_in_flight: int, max_attempts: int, on_result: OnResult) -> None:
        """Run ``units`` in one Beam pipeline; ``max_in_flight`` is ignored: the runner controls parallelism."""
        log.debug("beam: max_in_flight=%d not used; the runner controls parallelism", max_in_flight)
        scratch = self.run_dir / "units" / f".beam-{uuid.uuid4().hex[:8]}"
        (scratch / INPUTS).mkdir(parents=True)
        (scratch / RESULTS).mkdir()
        try:
            pending = _write_inputs(units, scratch / INPUTS)
            if not pending:
                return
            results = _Results(scratch / RESULTS, pending, on_result)
            with results.polling(self.poll_s):
                failure = self._run_pipeline(sorted(pending), scratch, max_attempts)
            results.sweep()
            for unit in sorted(pending):
                results.report(unit, *_from_marker(self.run_dir, unit, failure))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _run_pipeline(self, unit_ids: list[str], scratch: Path, max_attempts: int) -> str | None:
        """Run the Beam pipeline to its end; the error for units left without a result, None if it finished."""
        try:
            p = beam.Pipeline(options=self.options)
            self.build(p, unit_ids, scratch, max_attempts)
            p.run().wait_until_finish()
        except Exception as exc:  # units without a result are reported failed
            failure = f"beam pipeline failed: {_describe(exc)}"
            log.error("%s", failure)
            return failure
        return None

    def shutdown(self) -> None:
        """Nothing to release: each ``run`` starts and finishes its own Beam pipeline."""
