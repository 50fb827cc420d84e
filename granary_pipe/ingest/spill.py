"""A listing sorted and checked out of core: entries spilled to Parquet, then sorted and
de-duplicated by DuckDB under a memory limit.

Ingest needs the whole listing at once (rows sorted by recording id; one file listed twice is a
``ConfigError`` naming both lines), but not in memory. :class:`EntrySpill` writes entries, as a
reader yields them, to ``entries.parquet`` in a work directory, ``BATCH_ROWS`` at a time, each
with its place in the reader's order (``seq``) and what makes it one file (``fid``: ``(st_dev,
st_ino)`` when it exists, else the resolved path; see ``readers_base._file_id``).
:meth:`EntrySpill.finish` then finds the first entry (in reader order) that repeats an earlier
one by key or by file, exactly as ``readers_base.check_unique`` would in memory, and raises the
same error; else it writes the rows sorted by ``(id, seq)`` (the in-memory stable sort's order) to
``sorted.parquet``, which :meth:`SortedRows.tables` reads back a few rows at a time. DuckDB runs
with ``memory_limit`` and a ``temp_directory`` in the work directory, so its hash aggregates and
its sort spill to disk: the process's memory stays bounded as the listing grows.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from granary_pipe import schema
from granary_pipe.ingest.readers_base import Entry, _file_id, duplicate_error

BATCH_ROWS = 20_000
"""Entries buffered in memory before they go to the spill file."""

MEMORY_LIMIT = "192MB"
"""DuckDB's memory limit for the checks and the sort (beyond it, it spills to its temp directory)."""

ROW_COLUMNS = ("id", "recording_id", "source", "audio_path", "audio_relpath", "offset_s", "license",
               "license_raw", "lang_hint", "ref_text")
"""The recording row's columns ingest sets (the others of ``schema.SCHEMA`` stay null)."""

_SPILL_SCHEMA = pa.schema([("seq", pa.int64()), ("key", pa.string()), ("path", pa.string()),
                           ("where_", pa.string()), ("fid", pa.string())]
                          + [schema.SCHEMA.field(c) for c in ROW_COLUMNS])


@dataclass
class SortedRows:
    """The recording rows on disk, sorted by id (``sorted.parquet``)."""

    path: Path
    count: int

    def tables(self, rows: int) -> Iterator[pa.Table]:
        """Recording rows (``schema.SCHEMA``) in id order, ``rows`` at a time (the last may be fewer)."""
        pending: list[pa.RecordBatch] = []
        have = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=rows, columns=list(ROW_COLUMNS)):
            pending.append(batch)
            have += batch.num_rows
            while have >= rows:
                table = pa.Table.from_batches(pending).combine_chunks()
                yield _rows_table(table.slice(0, rows))
                rest = table.slice(rows)
                pending, have = rest.to_batches(), rest.num_rows
        if have:
            yield _rows_table(pa.Table.from_batches(pending))


def _rows_table(part: pa.Table) -> pa.Table:
    """``part``'s rows in the row schema, built as ingest always built them (``schema.make_table``)."""
    return schema.make_table(part.to_pylist())


class EntrySpill:
    """Entries and their recording rows, written to ``workdir/entries.parquet`` as they come."""

    def __init__(self, workdir: Path, manifest_path: Path, reader: str | None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.manifest_path = manifest_path
        self.reader = reader
        self.path = self.workdir / "entries.parquet"
        self._writer = pq.ParquetWriter(self.path, _SPILL_SCHEMA)
        self._buffer: list[dict[str, Any]] = []
        self.count = 0

    def add(self, entry: Entry, row: dict[str, Any]) -> None:
        """Spill one entry (``row``: its recording row's :data:`ROW_COLUMNS`)."""
        fid = "\0".join(map(str, _file_id(entry.path))) if entry.path else None
        self._buffer.append({"seq": self.count, "key": entry.key, "path": entry.path, "where_": entry.where,
                             "fid": fid, **row})
        self.count += 1
        if len(self._buffer) >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=_SPILL_SCHEMA))
            self._buffer = []

    def close(self) -> None:
        """Close the spill file (idempotent)."""
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None

    def finish(self) -> SortedRows:
        """Raise the duplicate error ``check_unique`` would raise, else sort the rows to disk."""
        self.close()
        tmp = self.workdir / "duckdb-tmp"
        con = _connect(tmp)
        try:
            con.execute(f"CREATE VIEW spill AS SELECT * FROM read_parquet('{_sql_path(self.path)}')")
            self._check_unique(con)
            out = self.workdir / "sorted.parquet"
            cols = ", ".join(ROW_COLUMNS)
            con.execute(f"COPY (SELECT {cols} FROM spill ORDER BY id, seq) TO '{_sql_path(out)}' "
                        "(FORMAT parquet, ROW_GROUP_SIZE 20000)")
        finally:
            con.close()
            shutil.rmtree(tmp, ignore_errors=True)
        self.path.unlink()
        return SortedRows(out, self.count)

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
        again = self._entry(con, "seq = ?", dup)
        first_by_key = con.execute("SELECT min(seq) FROM spill WHERE key = ?", [again.key]).fetchone()[0]
        if first_by_key < dup:
            raise duplicate_error(self._entry(con, "seq = ?", first_by_key), again, False,
                                  self.manifest_path, self.reader)
        fid = con.execute("SELECT fid FROM spill WHERE seq = ?", [dup]).fetchone()[0]
        first = con.execute("SELECT min(seq) FROM spill WHERE fid = ?", [fid]).fetchone()[0]
        raise duplicate_error(self._entry(con, "seq = ?", first), again, True, self.manifest_path, self.reader)

    @staticmethod
    def _entry(con: Any, where: str, value: Any) -> Entry:
        key, path, where_ = con.execute(f"SELECT key, path, where_ FROM spill WHERE {where}", [value]).fetchone()
        return Entry(key, path or "", where=where_)


def _connect(tmp: Path) -> Any:
    """A DuckDB connection that spills to ``tmp`` beyond :data:`MEMORY_LIMIT`."""
    import duckdb

    tmp.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    con.execute(f"SET temp_directory = '{_sql_path(tmp)}'")
    con.execute(f"SET threads = {max(1, min(2, os.cpu_count() or 1))}")
    con.execute("SET preserve_insertion_order = true")
    return con


def _sql_path(path: Path) -> str:
    """``path`` as a single-quoted SQL string's content."""
    return str(path).replace("'", "''")
