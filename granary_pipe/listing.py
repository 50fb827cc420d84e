"""A run's listing, planned into units without being held by the driver.

Ingest needs every entry at once: it sorts by id and refuses duplicates. It runs in a child
process (``spawn``) and out of core (``ingest.manifest.sort_recordings``: entries spilled to
disk as the reader yields them, checked for duplicates by DuckDB under a memory limit, sorted by
merging sorted runs from disk; ``ingest/spill.py``). The child
then writes the sorted recording rows to an Arrow IPC file, one record batch per unit (the
``unit`` column set), streaming from the sorted rows, and computes the run's fingerprint from that
file one column at a time (:func:`file_fingerprint`, the same digest :func:`fingerprint` gives
for the whole table). The child's memory is bounded (it does not grow with the listing), and it
exits before Ray starts; the driver keeps only the file's path and reads one unit's batch when an
executor asks for that unit (:meth:`ListingFile.units`). Driver memory and per-unit work
therefore do not grow with the number of recordings (``benchmarks/driver_scale.py``).

The file lives in the run's work directory (about 300 bytes per recording; the spill and
DuckDB's temporary files beside it, about twice that, are removed as soon as the file is
written), which the run removes when it ends (``ingest.spill.listing_workdir``: the next run
removes the one of a run killed with SIGKILL).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa

from granary_pipe import schema
from granary_pipe.rundir import unit_id
from granary_pipe.units import Unit

ENGINE_KNOBS = ("resources", "workers")
"""Stage settings that change where work runs, not what it outputs: a resumed run may change them."""

FINGERPRINT_SKIPS = ("unit", "pipeline_version")
"""Ingest columns the fingerprint leaves out: ``unit`` is set after planning, and the package
version alone does not make a run another run (an upgraded tool may resume it)."""


def _config_digest(resolved: dict) -> Any:
    """The fingerprint's hash, fed with the stages and their parameters and the unit size."""
    content = {
        "stages": [{k: v for k, v in s.items() if k not in ENGINE_KNOBS} for s in resolved["stages"]],
        "recordings_per_unit": resolved["units"]["recordings_per_unit"],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode())


def _json_values(values: list) -> str:
    """A column's values as the fingerprint writes them (a JSON list)."""
    return json.dumps(values, ensure_ascii=False, default=str)


def fingerprint(resolved: dict, recordings: pa.Table) -> str:
    """What a run's output depends on: stages and their parameters, unit size, and the input:
    every value ingest put in the recording rows (id, paths absolute and corpus-relative, raw and
    normalised license, language hint, reference text, ...), each column by name and as JSON, so
    editing one listing line (its ``lang``, ``text`` or ``license``) makes another run. The stages
    go in as validated (every default filled in, under their current parameter names).
    :func:`file_fingerprint` gives the same digest from a listing file without loading it."""
    digest = _config_digest(resolved)
    for col in recordings.column_names:
        if col not in FINGERPRINT_SKIPS:
            digest.update(f"\0{col}\0{_json_values(recordings.column(col).to_pylist())}".encode())
    return digest.hexdigest()


def file_fingerprint(resolved: dict, path: Path) -> str:
    """:func:`fingerprint` of the rows of the Arrow IPC file ``path``, read one column of one
    record batch at a time: each column's JSON list is written piecewise (``[``, then each batch's
    values joined by ``", "``, then ``]``), which is byte for byte the whole column's JSON."""
    digest = _config_digest(resolved)
    with pa.OSFile(str(path)) as src:  # read, not mapped: mapped pages would count as the child's memory
        reader = pa.ipc.open_file(src)
        for col in reader.schema.names:
            if col in FINGERPRINT_SKIPS:
                continue
            digest.update(f"\0{col}\0[".encode())
            sep = ""
            for k in range(reader.num_record_batches):
                values = reader.get_batch(k).column(col).to_pylist()
                if values:
                    digest.update((sep + _json_values(values)[1:-1]).encode())
                    sep = ", "
            digest.update(b"]")
    return digest.hexdigest()


@dataclass
class ListingFile:
    """The planned listing of a run: recording rows on disk, one record batch per unit."""

    path: Path
    manifest: dict[str, Any]
    recordings: int
    fingerprint: str
    unit_ids: list[str]
    ingest: dict[str, float]  # the child's seconds and peak RSS (MB)

    def units(self, wanted: Iterable[str]) -> Iterator[Unit]:
        """The units named in ``wanted`` (in the listing's order), each read when it is asked for."""
        wanted = set(wanted)
        with pa.OSFile(str(self.path)) as src:
            reader = pa.ipc.open_file(src)
            for k, uid in enumerate(self.unit_ids):
                if uid in wanted:
                    yield Unit(uid, pa.Table.from_batches([reader.get_batch(k)]))


def _ingest(source_path: str, resolved: dict, per_unit: int, out: str) -> dict[str, Any]:
    """In the child: list and sort out of core, write one batch per unit, fingerprint the file;
    return what the driver keeps."""
    from granary_pipe.ingest.manifest import sort_recordings

    t0 = time.monotonic()
    spill_dir = Path(out).parent / "listing-spill"
    try:
        manifest, rows = sort_recordings(Path(source_path), spill_dir)
        ids = []
        with pa.OSFile(out, "wb") as sink, pa.ipc.new_file(sink, schema.SCHEMA) as writer:
            for k, part in enumerate(rows.tables(per_unit)):
                ids.append(unit_id(k))
                part = schema.set_column(part, "unit", [ids[-1]] * part.num_rows)
                writer.write_table(part, max_chunksize=max(part.num_rows, 1))
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
    fp = file_fingerprint(resolved, Path(out))
    return {"manifest": manifest.model_dump(), "recordings": rows.count, "fingerprint": fp,
            "unit_ids": ids, "ingest": {"seconds": round(time.monotonic() - t0, 3),
                                        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}}


def plan_listing(source_path: Path, resolved: dict, per_unit: int, workdir: Path) -> ListingFile:
    """Ingest ``source_path`` in a child process into ``workdir/listing.arrow``.

    Errors of ingest (a ``ConfigError`` naming file and line) are raised here as the child raised them."""
    out = Path(workdir) / "listing.arrow"
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        got = pool.submit(_ingest, str(source_path), resolved, per_unit, str(out)).result()
    return ListingFile(path=out, **got)
