"""A run's listing, planned into units in a child process and kept on disk (an Arrow IPC file, one record
batch per unit) rather than by the driver; its resume fingerprint is read from that file a column at a time.
Design: docs/architecture.md, "The run directory"."""

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
"""Ingest columns the fingerprint leaves out: ``unit`` is set after planning; an upgraded tool may resume a run."""


def file_fingerprint(resolved: dict, path: Path) -> str:
    """What a run's output depends on: the stages as validated and the unit size, and every value of the
    listing file ``path``, each column by name and as a JSON list (written piecewise, a batch at a time)."""
    config = {
        "stages": [{k: v for k, v in s.items() if k not in ENGINE_KNOBS} for s in resolved["stages"]],
        "recordings_per_unit": resolved["units"]["recordings_per_unit"],
    }
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
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
                    digest.update((sep + json.dumps(values, ensure_ascii=False, default=str)[1:-1]).encode())
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
    """In the child: list and sort, write one batch per unit, fingerprint the file; what the driver keeps."""
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
    peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return {"manifest": manifest.model_dump(), "recordings": rows.count, "fingerprint": fp, "unit_ids": ids,
            "ingest": {"seconds": round(time.monotonic() - t0, 3), "peak_rss_mb": peak_rss_mb}}


def plan_listing(source_path: Path, resolved: dict, per_unit: int, workdir: Path) -> ListingFile:
    """Ingest ``source_path`` in a child process into ``workdir/listing.arrow``; ingest's errors
    (a ``ConfigError`` naming file and line) are raised here as the child raised them."""
    out = Path(workdir) / "listing.arrow"
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        got = pool.submit(_ingest, str(source_path), resolved, per_unit, str(out)).result()
    return ListingFile(path=out, **got)
