"""A run's listing, planned into units without being held by the driver.

Ingest (``ingest.manifest.list_recordings``) needs every entry at once: it sorts by id and
refuses duplicates. It runs in a child process (``spawn``), which also computes the run's
fingerprint and writes the sorted recording rows to an Arrow IPC file, one record batch per unit
(the ``unit`` column set). The child exits, so its memory goes with it; the driver keeps only
the file's path and reads one unit's batch when an executor asks for that unit
(:meth:`ListingFile.units`). Driver memory and per-unit work therefore do not grow with the
number of recordings (``benchmarks/driver_scale.py``).

The file lives in a temporary directory (``$TMPDIR``; about 300 bytes per recording) that the
run removes when it ends.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa

from granary_pipe import registry, renames, schema
from granary_pipe.rundir import unit_id
from granary_pipe.units import Unit

ENGINE_KNOBS = ("resources", "workers")
"""Stage settings that change where work runs, not what it outputs: a resumed run may change them."""

FINGERPRINT_SKIPS = ("unit", "pipeline_version")
"""Ingest columns the fingerprint leaves out: ``unit`` is set after planning, and the package
version alone does not make a run another run (an upgraded tool may resume it)."""


def fingerprint(resolved: dict, recordings: pa.Table) -> str:
    """What a run's output depends on: stages and their parameters, unit size, and the input:
    every value ingest put in the recording rows (id, paths absolute and corpus-relative, raw and
    normalised license, language hint, reference text, ...), each column by name and as JSON, so
    editing one listing line (its ``lang``, ``text`` or ``license``) makes another run. Parameters
    go in under the names the previous release used (``renames.previous_names``), so a run it
    started can be resumed after a rename."""
    content = {
        "stages": [renames.previous_names({k: v for k, v in s.items() if k not in ENGINE_KNOBS}, _renamed(s["use"]))
                   for s in resolved["stages"]],
        "recordings_per_unit": resolved["units"]["recordings_per_unit"],
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode())
    for col in recordings.column_names:
        if col not in FINGERPRINT_SKIPS:
            values = json.dumps(recordings.column(col).to_pylist(), ensure_ascii=False, default=str)
            digest.update(f"\0{col}\0{values}".encode())
    return digest.hexdigest()


def _renamed(stage: str) -> dict[str, str]:
    """The stage's option renames; none for a stage this process does not know (a stage registered
    at run time by the driver, which checked the name already; this may run in a child process)."""
    try:
        return registry.get(stage).RENAMED
    except KeyError:
        return {}


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
    """In the child: list, fingerprint, write one batch per unit; return what the driver keeps."""
    from granary_pipe.ingest.manifest import list_recordings

    t0 = time.monotonic()
    manifest, recordings = list_recordings(Path(source_path))
    fp = fingerprint(resolved, recordings)
    ids = []
    with pa.OSFile(out, "wb") as sink, pa.ipc.new_file(sink, recordings.schema) as writer:
        for k, start in enumerate(range(0, recordings.num_rows, per_unit)):
            part = recordings.slice(start, per_unit)
            ids.append(unit_id(k))
            part = schema.set_column(part, "unit", [ids[-1]] * part.num_rows)
            writer.write_table(part, max_chunksize=max(part.num_rows, 1))
    return {"manifest": manifest.model_dump(), "recordings": recordings.num_rows, "fingerprint": fp,
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
