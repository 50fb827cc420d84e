"""The sink: commit one unit's rows and audio into the run directory, durably, the marker last.
Design: docs/architecture.md, "The run directory" (Commits survive a power loss).
"""

from __future__ import annotations

import io
import os
import shutil
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import soundfile as sf

from granary_pipe import counters, digest, schema
from granary_pipe.rundir import FILES, MARKER, file_record, fsync_path, unit_dir, write_file, write_json_atomic

SYNC_THREADS = 8
"""Files of a unit written and fsynced at once: a journalling filesystem commits concurrent fsyncs together."""
SINK = "sink.write"  # the sink's name in stage_s and counts
_COUNTED = ["drop_reason", "duration_s", "flags"]  # what counters.of_batch reads: no samples copied


def commit_unit(run_dir: Path, unit: str, table: pa.Table, stats: Mapping[str, Any]) -> dict:
    """Write a unit's kept/rejected Parquet and kept audio, then its commit marker: ``stats`` (the unit's
    ``units.UnitStats``) with the sink's time and counts under ``sink.write`` and the unit's totals added.
    Returns the marker's content."""
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    table = schema.conform(table)
    table = schema.set_column(table, "unit", [unit] * table.num_rows)
    table = table.sort_by([("id", "ascending")])
    # a kept row must carry its audio (a pipeline without audio.decode has none): reject, never crash
    lengths = pc.fill_null(pc.binary_length(table.column(schema.TRANSIENT.name)), 0).to_pylist()
    meta, was_active = table.select(_COUNTED), schema.active_mask(table)
    if 0 in lengths:
        table = schema.reject(table, [None if n else "sink:no_audio" for n in lengths])
    sink_counts = counters.of_batch(meta.filter(was_active), table.select(_COUNTED).filter(was_active),
                                    ("sink:no_audio",))
    kept, rejected = schema.split_active(table)
    unit_digest = digest.unit_digest(kept.select(digest.COLUMNS), rejected.select(digest.COLUMNS))  # rows as written
    tmp = run_dir / "units" / f".{unit}.tmp-{uuid.uuid4().hex[:8]}"
    writes: dict[str, Future] = {}
    queued: deque[Future] = deque()
    try:
        (tmp / "audio").mkdir(parents=True)
        with ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="granary-sink") as pool:
            def put(rel: str, data: bytes) -> None:  # encoded here, written + fsynced + hashed on the pool
                while len(queued) >= 2 * SYNC_THREADS:  # encoded bytes waiting for the disk stay few
                    queued.popleft().result()
                writes[rel] = pool.submit(_store, tmp / rel, data)
                queued.append(writes[rel])

            audio_files = []
            for row_id, pcm in zip(kept.column("id").to_pylist(), kept.column(schema.TRANSIENT.name).to_pylist(),
                                   strict=True):
                audio_files.append(f"units/{unit}/audio/{row_id}.flac")
                put(f"audio/{row_id}.flac", _flac(np.frombuffer(pcm, dtype=np.float32)))
            kept = schema.set_column(kept, "audio_file", audio_files)
            put("kept.parquet", _parquet(schema.drop_transient(kept)))
            put("rejected.parquet", _parquet(schema.drop_transient(rejected)))
            records = {rel: w.result() for rel, w in sorted(writes.items())}  # the first error is raised
        fsync_path(tmp / "audio")
        fsync_path(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written unit left, and the space is given back
        raise
    final = unit_dir(run_dir, unit)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(final.parent)
    stats = dict(stats)
    stats["stage_s"] = {**(stats.get("stage_s") or {}), SINK: time.perf_counter() - t0}
    stats["counts"] = counters.merge_stages(stats.get("counts"), {SINK: sink_counts})
    stats.update(unit=unit, rows_kept=kept.num_rows, rows_rejected=rejected.num_rows, rows_in=table.num_rows,
                 recordings=len(pc.unique(table.column("recording_id"))),
                 speech_s_kept=float(pc.sum(kept.column("duration_s")).as_py() or 0.0),
                 audio_s_in=float(_recording_seconds(table)),
                 max_row_s=float(pc.max(table.column("duration_s")).as_py() or 0.0))
    stats.update({FILES: records, digest.KEY: unit_digest})
    write_json_atomic(final / MARKER, stats)
    return stats


def _store(path: Path, data: bytes) -> dict:  # write and fsync one file of the unit; its marker record
    write_file(path, data)
    return file_record(data)


def _flac(samples: np.ndarray) -> bytes:
    """16 kHz mono 16-bit FLAC of float32 samples, encoded in memory."""
    buf = io.BytesIO()
    sf.write(buf, samples, schema.SAMPLE_RATE_HZ, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _parquet(table: pa.Table) -> bytes:
    sink_buf = pa.BufferOutputStream()
    pq.write_table(table, sink_buf)
    return sink_buf.getvalue().to_pybytes()


def _recording_seconds(table: pa.Table) -> float:
    seen = dict(zip(table.column("recording_id").to_pylist(), table.column("recording_duration_s").to_pylist(),
                    strict=True))
    return sum(d or 0.0 for d in seen.values())
