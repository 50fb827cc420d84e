"""DuckDB scans of a run's committed units (the HTML histograms) and of a release's Parquet shards
(the audit), in chunks, under a memory limit. Design: docs/architecture.md, "Report"."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import duckdb
import pyarrow as pa

from granary_pipe.rundir import committed_units, unit_dir
from granary_pipe.schema import SCHEMA

MEMORY_LIMIT = "1GB"
"""DuckDB's memory limit for a report or audit scan, unless ``$GRANARY_REPORT_MEMORY`` gives one."""
CHUNK_UNITS = 1000
"""Units per DuckDB query (each query reads their kept and rejected files)."""
BATCH_ROWS = 8192

_DUCK_TYPES = {pa.string(): "VARCHAR", pa.float64(): "DOUBLE", pa.float32(): "FLOAT", pa.int32(): "INTEGER",
               pa.list_(pa.string()): "VARCHAR[]"}
SIDES = ("kept", "rejected")
Query = Callable[["RunScan"], str]
"""A query: a function of the scan giving its SQL (rebuilt if the files must be read by name)."""


def quote(name: str) -> str:
    """``name`` as a DuckDB identifier: in double quotes, any ``"`` in it doubled."""
    return '"' + name.replace('"', '""') + '"'


def _threads() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def connect() -> tuple[duckdb.DuckDBPyConnection, Path]:
    """An in-memory DuckDB connection that spills under the system temp dir; and that directory."""
    spill = Path(tempfile.mkdtemp(prefix="granary-duckdb-"))
    con = duckdb.connect(":memory:", config={
        "memory_limit": os.environ.get("GRANARY_REPORT_MEMORY") or MEMORY_LIMIT,
        "temp_directory": str(spill),
        "threads": _threads(),
        "preserve_insertion_order": False,
    })
    con.execute("SET enable_progress_bar = false")  # its bar would go to the terminal
    return con, spill


class RunScan:
    """DuckDB over a run's committed units (see the module doc). Use as a context manager."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.units: list[str] = committed_units(self.run_dir)
        self.files: dict[str, list[str]] = {side: [] for side in SIDES}  # the chunk being read
        self._union_by_name: dict[str, bool] = {}
        self._columns: dict[str, set[str]] = {}
        self.con, self._spill = connect()

    def __enter__(self) -> RunScan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and remove its spill directory."""
        self.con.close()
        shutil.rmtree(self._spill, ignore_errors=True)

    def _chunks(self) -> Iterator[None]:
        """Point :attr:`files` at each chunk of :data:`CHUNK_UNITS` units in turn (DuckDB keeps state per
        file of a query: one over every file of a large run would grow with the run)."""
        for start in range(0, len(self.units), CHUNK_UNITS):
            self.files = {side: [] for side in SIDES}
            for unit in self.units[start:start + CHUNK_UNITS]:
                for side in SIDES:
                    path = unit_dir(self.run_dir, unit) / f"{side}.parquet"
                    if path.is_file():
                        self.files[side].append(str(path))
            self._columns = {}
            yield
        self.files = {side: [] for side in SIDES}

    def _present(self, side: str) -> set[str]:
        if side not in self._columns:
            self._union_by_name.setdefault(side, False)
            self._columns[side] = self._describe(side)
        return self._columns[side]

    def _describe(self, side: str) -> set[str]:
        rel = self.con.execute(f"DESCRIBE SELECT * FROM {self._read(side)}", {side: self.files[side]})
        return {r[0] for r in rel.fetchall()}

    def _read(self, side: str) -> str:
        opts = ", union_by_name=true" if self._union_by_name.get(side) else ""
        return f"read_parquet(${side}{opts})"

    def side_sql(self, side: str, columns: Sequence[str]) -> str:
        """A subquery of one side's ``columns`` (typed as the row schema, null where absent) and ``kept``."""
        kept = "true" if side == "kept" else "false"
        if not self.files[side]:
            exprs = [f"NULL::{_DUCK_TYPES[SCHEMA.field(c).type]} AS {quote(c)}" for c in columns]
            return f"(SELECT {', '.join(exprs)}, {kept} AS kept WHERE false)"
        present = self._present(side)
        exprs = [f"CAST({quote(c)} AS {_DUCK_TYPES[SCHEMA.field(c).type]}) AS {quote(c)}" if c in present
                 else f"NULL::{_DUCK_TYPES[SCHEMA.field(c).type]} AS {quote(c)}" for c in columns]
        return f"(SELECT {', '.join(exprs)}, {kept} AS kept FROM {self._read(side)})"

    def rows_sql(self, columns: Sequence[str], sides: Sequence[str] = SIDES) -> str:
        """A subquery of the rows of ``sides`` (kept, rejected or both), see :meth:`side_sql`."""
        return "(" + " UNION ALL ".join(self.side_sql(s, columns) for s in sides) + ")"

    def _execute(self, query: Query, run: Callable[[str, dict], Any] | None = None) -> Any:
        """Run ``query`` with ``run`` (default: execute), again by name (``union_by_name``) when the
        files turn out to differ in columns."""
        run = run or self.con.execute
        sql = query(self)
        try:
            return run(sql, self._params(sql))
        except duckdb.InvalidInputException as exc:
            if "union_by_name" not in str(exc) or all(self._union_by_name.get(s) for s in SIDES):
                raise
        self._union_by_name = dict.fromkeys(SIDES, True)
        self._columns = {side: self._describe(side) for side in SIDES if self.files[side]}
        sql = query(self)
        return run(sql, self._params(sql))

    def _params(self, sql: str) -> dict[str, list[str]]:
        return {side: self.files[side] for side in SIDES if self.files[side] and f"${side}" in sql}

    def fetch(self, query: Query) -> Iterator[dict[str, Any]]:
        """Rows of an aggregate query as dicts, chunk after chunk (each chunk's own aggregates: the
        caller combines them)."""
        for _ in self._chunks():
            yield from _dicts(self._execute(query))

    def batches(self, query: Query, rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """Stream a query's result, chunk after chunk, as Arrow record batches of at most ``rows`` rows
        (only a query that reads every file of its chunk before its first row never fails half-way)."""
        def reader(sql: str, params: dict) -> pa.RecordBatchReader:
            rel = self.con.sql(sql, params=params)
            return rel.to_arrow_reader(rows) if hasattr(rel, "to_arrow_reader") else rel.fetch_arrow_reader(rows)

        for _ in self._chunks():
            yield from self._execute(query, reader)


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def shard_groups(files: list[str]) -> list[dict[str, Any]]:
    """Rows (``n``) and summed seconds (``secs``, nulls as 0) per raw (``source``, ``license``) of
    a release's Parquet shards, :data:`CHUNK_UNITS` files per query (the caller combines them)."""
    con, spill = connect()
    try:
        out: list[dict[str, Any]] = []
        for start in range(0, len(files), CHUNK_UNITS):
            out += _dicts(con.execute("SELECT source, license, count(*) AS n, fsum(coalesce(duration_s, 0.0)) "
                                      "AS secs FROM read_parquet($files) GROUP BY source, license",
                                      {"files": files[start:start + CHUNK_UNITS]}))
        return out
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
