"""A listing sorted and checked for duplicates out of core, in a work directory locked by its process.
Design: docs/architecture.md, "Data flow" (Ingest)."""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import itertools
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from granary_pipe import schema
from granary_pipe.ingest.readers_base import Entry, _file_id, duplicate_error
from granary_pipe.io.run_lock import pid_alive

BATCH_ROWS = 10_000
"""Entries buffered in memory before they are spilled (and the size of a sorted run)."""

CHUNK_ROWS = 64
"""Rows per record batch of a run: what the merge holds in memory per run."""

FAN_IN = 32
"""Runs merged at once; more are first merged into longer runs on disk."""

MEMORY_LIMIT = "32MB"
"""DuckDB's memory limit for the duplicate checks (beyond it, it spills to its temp directory)."""

RETRY_MEMORY_LIMIT = "1GB"
"""The limit of a second try when DuckDB runs out of memory under :data:`MEMORY_LIMIT` (very long keys or paths)."""

ROW_COLUMNS = ("id", "recording_id", "source", "audio_path", "audio_relpath", "offset_s", "license",
               "license_raw", "lang_hint", "ref_text")
"""The recording row's columns ingest sets (the others of ``schema.SCHEMA`` stay null)."""

WORKDIR_PREFIX = "granary-listing-"
"""Name prefix of a listing's temporary work directory (then the owner's PID, ``-``, random)."""

_LOCK = ".lock"
_OWNED = re.compile(re.escape(WORKDIR_PREFIX) + r"(\d+)-")

_CHECK_SCHEMA = pa.schema([("seq", pa.int64()), ("key", pa.string()), ("path", pa.string()),
                           ("where_", pa.string()), ("fid", pa.string())])
_RUN_SCHEMA = pa.schema([schema.SCHEMA.field(c) for c in ROW_COLUMNS] + [("seq", pa.int64())])
_BUFFER_SCHEMA = pa.schema([*_CHECK_SCHEMA, *(f for f in _RUN_SCHEMA if f.name != "seq")])
_SORT_KEYS = [("id", "ascending"), ("seq", "ascending")]


def _write_run(path: Path, tables: Iterable[pa.Table]) -> None:
    """A run file: ``tables`` (already in order) as record batches of :data:`CHUNK_ROWS` rows."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, _RUN_SCHEMA) as writer:
        for table in tables:
            writer.write_table(table, max_chunksize=CHUNK_ROWS)


def _read_run(path: Path) -> Iterator[tuple[str, int, dict]]:
    """A run's rows in order as ``(id, seq, row)``, one chunk in memory at a time."""
    with pa.OSFile(str(path)) as src:
        reader = pa.ipc.open_file(src)
        for k in range(reader.num_record_batches):
            batch = reader.get_batch(k)
            yield from zip(batch.column("id").to_pylist(), batch.column("seq").to_pylist(), batch.to_pylist(),
                           strict=True)


def _merged(runs: list[Path]) -> Iterator[dict]:
    """The rows of ``runs`` merged in ``(id, seq)`` order (``seq`` is unique: rows never compare)."""
    return (row for _, _, row in heapq.merge(*(_read_run(p) for p in runs)))


def _chunks(rows: Iterator[dict], size: int) -> Iterator[list[dict]]:
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


@dataclass
class SortedRows:
    """The recording rows on disk in sorted runs; read them in id order with :meth:`tables`."""

    runs: list[Path]
    count: int

    def tables(self, rows: int) -> Iterator[pa.Table]:
        """Recording rows (``schema.make_table``) in id order, ``rows`` at a time (the last may be fewer)."""
        for chunk in _chunks(_merged(self.runs), rows):
            for row in chunk:
                del row["seq"]
            yield schema.make_table(chunk)


@dataclass
class EntrySpill:
    """Entries and their recording rows, spilled under ``workdir`` as they come: a Parquet file for the
    duplicate checks and sorted Arrow runs to merge (docs/architecture.md, "Data flow", Ingest)."""

    workdir: Path
    manifest_path: Path
    reader: str | None
    count: int = 0
    runs: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.checks = self.workdir / "entries.parquet"
        self._writer = pq.ParquetWriter(self.checks, _CHECK_SCHEMA)
        self._closed = False
        self._buffer: list[dict[str, Any]] = []

    def add(self, entry: Entry, row: dict[str, Any]) -> None:
        """Spill one entry (``row``: its recording row's :data:`ROW_COLUMNS`)."""
        fid = "\0".join(map(str, _file_id(entry.path))) if entry.path else None
        self._buffer.append({"seq": self.count, "key": entry.key, "path": entry.path, "where_": entry.where,
                             "fid": fid, **row})
        self.count += 1
        if len(self._buffer) >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        table = pa.Table.from_pylist(self._buffer, schema=_BUFFER_SCHEMA)
        self._writer.write_table(table.select(_CHECK_SCHEMA.names))
        run = table.select(_RUN_SCHEMA.names).sort_by(_SORT_KEYS)
        self.runs.append(self.workdir / f"run-0-{len(self.runs):06d}.arrow")
        _write_run(self.runs[-1], [run])
        self._buffer = []

    def close(self) -> None:
        """Spill what is buffered and close the checks file (idempotent)."""
        if not self._closed:
            self._flush()
            self._writer.close()
            self._closed = True

    def finish(self) -> SortedRows:
        """Raise the duplicate error ``check_unique`` would raise, else merge the runs down to :data:`FAN_IN`."""
        self.close()
        self._check()
        self.checks.unlink()
        return SortedRows(self._merge_down(), self.count)

    def _check(self) -> None:
        """:meth:`_check_unique`, again under :data:`RETRY_MEMORY_LIMIT` if DuckDB runs out of memory."""
        import duckdb

        tmp = self.workdir / "duckdb-tmp"
        for limit in (MEMORY_LIMIT, RETRY_MEMORY_LIMIT):
            tmp.mkdir(parents=True, exist_ok=True)
            # one thread: each buffers outside the limit, and ingest's Python dominates anyway
            con = duckdb.connect(":memory:", config={"memory_limit": limit, "temp_directory": str(tmp), "threads": 1})
            try:
                con.read_parquet(str(self.checks)).create_view("spill")
                self._check_unique(con)
                break
            except duckdb.OutOfMemoryException:
                if limit == RETRY_MEMORY_LIMIT:
                    raise
            finally:
                con.close()
                shutil.rmtree(tmp, ignore_errors=True)

    def _merge_down(self) -> list[Path]:
        """Merge the runs :data:`FAN_IN` at a time into longer ones until at most :data:`FAN_IN` are left."""
        runs, level = self.runs, 0
        while len(runs) > FAN_IN:
            level += 1
            merged: list[Path] = []
            for start in range(0, len(runs), FAN_IN):
                group = runs[start:start + FAN_IN]
                merged.append(self.workdir / f"run-{level}-{len(merged):06d}.arrow")
                _write_run(merged[-1], (pa.Table.from_pylist(c, schema=_RUN_SCHEMA)
                                        for c in _chunks(_merged(group), CHUNK_ROWS)))
                for p in group:
                    p.unlink()
            runs = merged
        return runs

    def _check_unique(self, con: Any) -> None:
        """The first entry (by ``seq``) whose key, or whose file, an earlier entry already has."""
        dup = con.execute("""
            WITH by_key AS (SELECT key, min(seq) AS first FROM spill GROUP BY key HAVING count(*) > 1),
                 by_file AS (SELECT fid, min(seq) AS first FROM spill WHERE fid IS NOT NULL
                             GROUP BY fid HAVING count(*) > 1)
            SELECT min(seq) FROM (
                SELECT s.seq FROM spill s JOIN by_key d ON s.key = d.key WHERE s.seq > d.first
                UNION ALL
                SELECT s.seq FROM spill s JOIN by_file d ON s.fid = d.fid WHERE s.seq > d.first)
        """).fetchone()[0]
        if dup is None:
            return
        again, fid = self._entry(con, dup)
        first_by_key = con.execute("SELECT min(seq) FROM spill WHERE key = ?", [again.key]).fetchone()[0]
        if first_by_key < dup:
            raise duplicate_error(self._entry(con, first_by_key)[0], again, False, self.manifest_path, self.reader)
        first = con.execute("SELECT min(seq) FROM spill WHERE fid = ?", [fid]).fetchone()[0]
        raise duplicate_error(self._entry(con, first)[0], again, True, self.manifest_path, self.reader)

    @staticmethod
    def _entry(con: Any, seq: int) -> tuple[Entry, str | None]:
        """The entry spilled as ``seq`` (what the error names) and its ``fid``."""
        key, path, where, fid = con.execute("SELECT key, path, where_, fid FROM spill WHERE seq = ?", [seq]).fetchone()
        return Entry(key, path or "", where=where), fid


def _remove_if_orphaned(path: Path) -> bool:
    """Remove the listing work directory ``path`` when its owner is gone (its PID not running and its
    lock free); True if removed."""
    m = _OWNED.match(path.name)
    if not m or pid_alive(int(m[1])):
        return False
    try:
        fd = os.open(path / _LOCK, os.O_RDWR)
    except OSError:
        return False  # no lock file: not made by listing_workdir, or removed meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # still held: the owner lives (in another PID namespace)
    finally:
        os.close(fd)
    shutil.rmtree(path, ignore_errors=True)
    return True


def remove_orphaned_workdirs(parent: Path | None = None) -> list[Path]:
    """Remove the listing work directories under ``parent`` (default: the temporary directory)
    whose owner was killed; return them."""
    parent = Path(parent or tempfile.gettempdir())
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(WORKDIR_PREFIX)]
    except OSError:
        return []
    return [p for p in candidates if _remove_if_orphaned(p)]


@contextlib.contextmanager
def listing_workdir(parent: Path | None = None) -> Iterator[Path]:
    """A temporary work directory for a listing, ``granary-listing-PID-XXXX`` under ``parent``
    (default: the temporary directory), held by this process (a lock) and removed on exit;
    orphans of killed processes are removed first (:func:`remove_orphaned_workdirs`)."""
    remove_orphaned_workdirs(parent)
    with tempfile.TemporaryDirectory(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=parent) as work:
        fd = os.open(Path(work) / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield Path(work)
        finally:
            os.close(fd)
