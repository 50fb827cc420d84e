"""Gather a release's rows into shard order before the shards are written, each unit file read once: one
Arrow IPC stream per shard in ``gather/{g:06d}.arrows``, indexed by the record ``gather/{g:06d}.json``.
Design: docs/architecture.md, "After the run" (Release, Gather).
"""

from __future__ import annotations

import itertools
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from granary_pipe.rundir import atomic_path, write_json_atomic
from granary_pipe.schema import conform

if TYPE_CHECKING:
    from granary_pipe.io.release_plan import PlannedShard

GATHER_ROWS = int(os.environ.get("GRANARY_RELEASE_GATHER_ROWS", "20000"))
"""Rows per gather job (``$GRANARY_RELEASE_GATHER_ROWS``): a gather task holds this many rows' metadata."""
COMPACT_FILES = 256  # unit files' rows held as separate tables before a merge: many small tables cost memory
ASSIGN_COLUMNS = ("filename", "file_row_number", "lang", "n", "pos")  # unit file, row there, shard, position
_KEYS = ("_lang", "_n", "_pos")  # the assignment's shard and position, carried beside the row schema's columns


@dataclass(frozen=True)
class GatherJob:
    """One gather task: job ``g`` under the release's work directory ``root``."""

    root: str
    g: int

    def spec(self) -> Path:
        """The job's rows of the assignment."""
        return Path(self.root) / "gather" / f"{self.g:06d}.job.parquet"

    def output(self) -> Path:
        """The gathered rows, one Arrow IPC stream per shard."""
        return Path(self.root) / "gather" / f"{self.g:06d}.arrows"

    def record(self) -> Path:
        """The done-record: the output's size and each shard's offset and length in it."""
        return Path(self.root) / "gather" / f"{self.g:06d}.json"


def write_gather_jobs(assignment: Iterable[pa.RecordBatch], root: Path) -> list[GatherJob]:
    """Cut the row assignment (:data:`ASSIGN_COLUMNS`, sorted by unit file and row number) into gather
    jobs of about :data:`GATHER_ROWS` rows under ``root/gather``, never splitting a unit file."""
    gather_dir = root / "gather"
    gather_dir.mkdir(parents=True, exist_ok=True)
    for entry in gather_dir.glob("*.job.parquet"):  # the specs are rewritten; what they made is kept for resume
        entry.unlink()
    jobs: list[GatherJob] = []
    parts: list[pa.RecordBatch] = []
    rows = 0
    for batch in assignment:
        names = batch.column("filename")
        start = 0
        while rows + batch.num_rows - start >= GATHER_ROWS:
            cut = _cut_at_file_end(names, start + GATHER_ROWS - rows)
            if cut is None:
                break
            parts.append(batch.slice(start, cut - start))
            jobs.append(_write_job(root, len(jobs), parts))
            parts, rows, start = [], 0, cut
        parts.append(batch.slice(start))
        rows += batch.num_rows - start
    if rows:
        jobs.append(_write_job(root, len(jobs), parts))
    return jobs


def _cut_at_file_end(names: pa.Array, k: int) -> int | None:
    """The first index ``>= k`` where a new unit file begins in ``names`` (None: not in this batch)."""
    if k <= 0:
        return 0
    j = pc.index(pc.not_equal(names.slice(k), names[k - 1]), True).as_py()
    return None if j < 0 else k + j


def _write_job(root: Path, g: int, parts: list[pa.RecordBatch]) -> GatherJob:
    job = GatherJob(str(root), g)
    pq.write_table(pa.Table.from_batches([p for p in parts if p.num_rows]), job.spec(), compression="zstd")
    return job


def gather(job: GatherJob) -> dict[str, Any]:
    """Run ``job``: read each of its unit files once, write its rows in shard order, then its record (returned)."""
    spec = pq.read_table(job.spec())
    names = spec.column("filename").to_pylist()
    numbers = spec.column("file_row_number").to_numpy()
    parts: list[pa.Table] = []
    compact: list[pa.Table] = []
    for start, end in _runs(names):  # the spec is sorted by file: one read per file
        # ParquetFile.read: a quarter of read_table's cost on a small file
        parts.append(pq.ParquetFile(names[start]).read().take(pa.array(numbers[start:end], pa.int64())))
        if len(parts) == COMPACT_FILES or end == len(names):
            compact.append(_conformed(parts))
            parts = []
    rows = pa.concat_tables(compact)
    for key, column in zip(_KEYS, ("lang", "n", "pos"), strict=True):
        rows = rows.append_column(key, spec.column(column))
    rows = rows.sort_by([(k, "ascending") for k in _KEYS])
    index = _write_by_shard(rows, job.output())
    record = {"spec_bytes": job.spec().stat().st_size, "bytes": job.output().stat().st_size, "shards": index}
    write_json_atomic(job.record(), record)
    return record


def _runs(keys: list[Any]) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each run of equal consecutive ``keys``."""
    start = 0
    for _, run in itertools.groupby(keys):
        end = start + sum(1 for _ in run)
        yield start, end
        start = end


def _conformed(parts: list[pa.Table]) -> pa.Table:
    """``parts`` (rows of unit files, whose columns may differ) as one row-schema table in one chunk."""
    return conform(pa.concat_tables(parts, promote_options="permissive"), with_samples=False).combine_chunks()


def _write_by_shard(rows: pa.Table, path: Path) -> dict[str, list[int]]:
    """Write ``rows`` (sorted by shard) to ``path`` as one Arrow IPC stream per shard, one after the
    other; return each shard's ``[offset, length]`` in the file, keyed ``lang/n``."""
    shards = [f"{lang}/{n}" for lang, n in zip(rows.column("_lang").to_pylist(), rows.column("_n").to_pylist(),
                                                   strict=True)]
    index: dict[str, list[int]] = {}
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with atomic_path(path, durable=False) as tmp, open(tmp, "wb") as fh:
        for start, end in _runs(shards):
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, rows.schema, options=options) as writer:
                writer.write_table(rows.slice(start, end - start))
            data = sink.getvalue()
            index[shards[start]] = [fh.tell(), data.size]
            fh.write(data)
    return index


def read_gathered(job: GatherJob) -> dict[str, tuple[int, int]] | None:
    """The ``lang/n`` -> (offset, length) index of a finished gather job; None when its record or file is
    missing or of another size than recorded."""
    try:
        record = json.loads(job.record().read_text(encoding="utf-8"))
        if (job.output().stat().st_size, job.spec().stat().st_size) != (record["bytes"], record["spec_bytes"]):
            return None
        return {str(k): (int(v[0]), int(v[1])) for k, v in record["shards"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def forget_gathered(root: Path) -> None:
    """Remove the gather files and records under ``root`` (the plan changed), keeping the job specs."""
    for entry in (root / "gather").glob("*"):
        if not entry.name.endswith(".job.parquet"):
            entry.unlink()


def shard_sources(jobs: list[GatherJob]) -> dict[tuple[str, int], list[tuple[int, int, int]]]:
    """``(lang, n) -> [(gather job, offset, length), ...]``: where each shard's rows are (every job done)."""
    sources: dict[tuple[str, int], list[tuple[int, int, int]]] = defaultdict(list)
    for job in jobs:
        index = read_gathered(job)
        if index is None:
            raise RuntimeError(f"gather job {job.g} has no valid record in {job.record()}")
        for key, (offset, length) in index.items():
            lang, n = key.rsplit("/", 1)
            sources[(lang, int(n))].append((job.g, offset, length))
    return dict(sources)


def read_shard_rows(root: Path, shard: PlannedShard, sources: list[tuple[int, int, int]]) -> pa.Table:
    """The rows of ``shard`` (row schema, release order) from its streams in the gather files."""
    parts = []
    for g, offset, length in sources:
        with open(GatherJob(str(root), g).output(), "rb") as fh:
            fh.seek(offset)
            parts.append(pa.ipc.open_stream(pa.py_buffer(fh.read(length))).read_all())
    if not parts:
        raise RuntimeError(f"shard {shard.lang}/{shard.n}: no gathered rows under {root / 'gather'}")
    table = pa.concat_tables(parts).sort_by("_pos")
    if table.num_rows != shard.rows or pc.any(pc.not_equal(table.column("_n"), shard.n)).as_py():
        raise RuntimeError(f"shard {shard.lang}/{shard.n}: gathered {table.num_rows} rows, planned {shard.rows}")
    return conform(table.drop_columns(list(_KEYS)), with_samples=False).combine_chunks()
