"""Plan a release out of core with DuckDB: which kept rows go out, in which order, cut into which shards
(the row assignment :mod:`granary_pipe.io.release_gather` cuts into gather jobs).
Design: docs/architecture.md, "After the run" (Release, Plan).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from granary_pipe import licenses
from granary_pipe.io.release_gather import ASSIGN_COLUMNS, GatherJob, write_gather_jobs
from granary_pipe.rundir import MARKER, committed_units, unit_dir

DUCKDB_MEMORY = os.environ.get("GRANARY_RELEASE_DUCKDB_MEMORY", "64MB")
"""DuckDB's ``memory_limit`` while planning (``$GRANARY_RELEASE_DUCKDB_MEMORY``); beyond it the sort spills."""
DUCKDB_THREADS = 2  # the scan and sort are I/O bound; more threads hold more memory
BATCH_ROWS = 8192  # rows per Arrow batch streamed out of a query
CHUNK_FILES = 1000  # unit files read by one DuckDB query (it holds per-file state for the length of a query)

_LANG_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_NEEDED = {"id": "VARCHAR", "lang": "VARCHAR", "lang_hint": "VARCHAR", "license": "VARCHAR",
           "drop_reason": "VARCHAR", "audio_file": "VARCHAR"}  # NULL where a unit file has none
_ASSIGN_SCHEMA = pa.schema([("filename", pa.string()), ("file_row_number", pa.int64()), ("lang", pa.string()),
                            ("n", pa.int64()), ("pos", pa.int64())])


@dataclass(frozen=True)
class PlannedShard:
    """Shard ``n`` of language ``lang``: ``rows`` rows."""

    lang: str
    n: int
    rows: int


@dataclass
class Plan:
    """What the planner decided: the shards (languages sorted, then by number) and what stayed out."""

    shards: list[PlannedShard] = field(default_factory=list)
    excluded_by_license: dict[str, int] = field(default_factory=dict)
    excluded_by_lang: dict[str, int] = field(default_factory=dict)
    digest: str = ""  # sha256 over every shard's rows in plan order: the same rows, order and cuts
    gather_jobs: list[GatherJob] = field(default_factory=list)


def _connect(work_dir: Path) -> Any:
    import duckdb

    spill = work_dir / "duckdb"
    spill.mkdir(parents=True, exist_ok=True)
    db = spill / "plan.duckdb"  # a database file: the rows table lives on disk beyond the memory limit
    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db), config={"memory_limit": DUCKDB_MEMORY, "threads": DUCKDB_THREADS,
                                          "temp_directory": str(spill), "preserve_insertion_order": False})
    con.execute("SET enable_progress_bar = false")
    con.execute("SET allocator_flush_threshold = '8MB'")  # hand freed memory back (default: above 128 MB)
    return con


def _load_kept(con: Any, run_dir: Path, units: list[str]) -> None:
    """Table ``kept``: the planning columns of every kept row of ``units``, its file and row number there,
    its language (``lang_``: lang, else lang_hint, else und) and license (``lic_``)."""
    files = [str(unit_dir(run_dir, u) / "kept.parquet") for u in units]
    files = [f for f in files if os.path.isfile(f)]  # a unit that kept nothing may have no file
    table = ", ".join(f"{c} {t}" for c, t in _NEEDED.items())
    con.execute(f"CREATE TABLE kept ({table}, filename VARCHAR, file_row_number BIGINT)")
    for start in range(0, len(files), CHUNK_FILES):
        _insert_files(con, files[start:start + CHUNK_FILES])
    con.execute("ALTER TABLE kept ADD COLUMN lang_ VARCHAR")
    con.execute("ALTER TABLE kept ADD COLUMN lic_ VARCHAR")
    con.execute(f"UPDATE kept SET lang_ = coalesce(lang, lang_hint, 'und'), "
                f"lic_ = coalesce(nullif(license, ''), '{licenses.UNKNOWN}')")


def _insert_files(con: Any, files: list[str]) -> None:
    con.execute("SET VARIABLE kept_files = ?::VARCHAR[]", [files])  # a parameter, not a SQL literal per file
    # union_by_name keeps every file's schema reader (≈ 75 KB a file, twice the time): only when the files'
    # columns differ (units written by different versions); else DuckDB takes the first file's columns.
    mixed = con.execute("SELECT name FROM parquet_schema(getvariable('kept_files')) GROUP BY name "
                        "HAVING count(DISTINCT file_name) <> ? LIMIT 1", [len(files)]).fetchall()
    union = ", union_by_name=true" if mixed else ""
    source = f"read_parquet(getvariable('kept_files'){union}, filename=true, file_row_number=true)"
    have = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    columns = ", ".join(c if c in have else f"NULL::{t} AS {c}" for c, t in _NEEDED.items())
    con.execute(f"INSERT INTO kept SELECT {columns}, filename, file_row_number FROM {source}")


def _check_rows(con: Any, run_dir: Path) -> None:
    """The checks the sink's contract promises: no ``drop_reason``, an ``audio_file``, unique ids."""
    bad = con.execute("SELECT filename, count(*) FROM kept WHERE drop_reason IS NOT NULL "
                      "GROUP BY filename ORDER BY filename LIMIT 3").fetchall()
    if bad:
        where = ", ".join(f"{f} ({n})" for f, n in bad)
        raise ValueError(f"{run_dir}: rows in kept.parquet have drop_reason set (sink bug): {where}")
    missing = con.execute("SELECT id, filename FROM kept WHERE audio_file IS NULL ORDER BY id LIMIT 5").fetchall()
    if missing:
        raise ValueError(f"{run_dir}: kept rows without audio_file: {[i for i, _ in missing]} "
                         f"(in {sorted({f for _, f in missing})})")
    dup_ids = [row[0] for row in con.execute(  # counts only: this aggregate spills, one over strings would not
        "SELECT id FROM kept GROUP BY id HAVING count(*) > 1 ORDER BY id LIMIT 5").fetchall()]
    dup = con.execute("SELECT id, count(*), min(filename), max(filename) FROM kept WHERE list_contains($ids, id) "
                      "GROUP BY id ORDER BY id", {"ids": dup_ids}).fetchall() if dup_ids else []
    if dup:
        shown = "; ".join(f"{i!r} x{n} ({a}{', ' + b if b != a else ''})" for i, n, a, b in dup)
        raise ValueError(f"{run_dir}: duplicate row ids among kept rows of committed units: {shown}")


def _selection(con: Any, run_dir: Path, langs: list[str] | None,
               release_license: str | None) -> tuple[list[str], list[str], dict[str, int], dict[str, int]]:
    """Languages and licenses that go out, and the rows left out by language and by license."""
    counts = con.execute("SELECT lang_, lic_, count(*) FROM kept GROUP BY ALL ORDER BY ALL").fetchall()
    excluded_lang: dict[str, int] = defaultdict(int)
    excluded_lic: dict[str, int] = defaultdict(int)
    compat = {lic: release_license is None or licenses.compatible(lic, release_license)
              for lic in {lic for _, lic, _ in counts}}
    out_langs: set[str] = set()
    for lang, lic, n in counts:
        if langs is not None and lang not in langs:
            excluded_lang[lang] += n
        elif not compat[lic]:
            excluded_lic[lic] += n
        else:
            out_langs.add(lang)
    if langs is not None:
        _check_asked_langs(run_dir, langs, out_langs, {lang for lang, _, _ in counts}, release_license)
    if not out_langs:
        what = f" for languages {sorted(langs)}" if langs is not None else ""
        if excluded_lic:
            what += f" whose license is compatible with {release_license} (excluded: {dict(excluded_lic)})"
        raise ValueError(f"no kept rows in committed units of {run_dir}{what}")
    for lang in sorted(out_langs):
        if not _LANG_RE.match(lang):
            raise ValueError(f"{run_dir}: language {lang!r} is not usable in a shard name")
    allowed = sorted(lic for lic, ok in compat.items() if ok)
    return sorted(out_langs), allowed, dict(excluded_lic), dict(excluded_lang)


def _check_asked_langs(run_dir: Path, langs: list[str], out_langs: set[str], run_langs: set[str],
                       release_license: str | None) -> None:
    """``ValueError`` naming each language ``--lang`` asks for that would not go out, and why."""
    why = [f"{lang} (not in the run)" if lang not in run_langs else
           f"{lang} (no row with a license compatible with {release_license})"
           for lang in sorted(set(langs)) if lang not in out_langs]
    if why:
        raise ValueError(f"--lang {','.join(langs)}: no kept rows in committed units of {run_dir} for "
                         f"{', '.join(why)}; the run's languages: {', '.join(sorted(run_langs)) or 'none'}")


def _sorted_batches(con: Any, out_langs: list[str], allowed: list[str], seed: int) -> Iterator[pa.RecordBatch]:
    """The released rows, languages sorted, each in ``(sha256(seed \\0 id), id)`` order."""
    query = ("SELECT filename, file_row_number, id, audio_file, lang_ FROM kept WHERE list_contains($langs, lang_) "
             "AND list_contains($lics, lic_) ORDER BY lang_, unhex(sha256($seed || chr(0) || id)), id")
    con.execute("SET threads = 1")  # a sort's memory grows with its threads; it is seconds of a release's minutes
    yield from _batches(con, query, {"langs": out_langs, "lics": allowed, "seed": str(seed)})


def _batches(con: Any, query: str, params: dict[str, Any]) -> Iterator[pa.RecordBatch]:
    rel = con.sql(query, params=params)
    yield from rel.to_arrow_reader(BATCH_ROWS) if hasattr(rel, "to_arrow_reader") else rel.record_batch(BATCH_ROWS)


class _ShardCutter:
    """Cuts the sorted stream into shards and appends each to the assignment file (one shard in memory)."""

    def __init__(self, run_dir: Path, assign: pq.ParquetWriter, shard_rows: int, shard_bytes: int | None) -> None:
        self.run_dir, self.assign = run_dir, assign
        self.shard_rows, self.shard_bytes = shard_rows, shard_bytes
        self.shards: list[PlannedShard] = []
        self.digest = hashlib.sha256()
        self.lang = ""  # no shard yet: every language is a new one
        self.n = self.rows = self.bytes = 0
        self.parts: list[pa.RecordBatch] = []

    def _size(self, rid: str, rel: str) -> int:
        path = self.run_dir / rel
        try:
            return path.stat().st_size
        except FileNotFoundError:
            raise FileNotFoundError(f"audio of kept row {rid!r} is missing: {path}") from None

    def feed(self, batch: pa.RecordBatch) -> None:
        langs = batch.column("lang_").to_pylist()
        sizes = [0] * len(langs)
        if self.shard_bytes:
            ids, files = batch.column("id").to_pylist(), batch.column("audio_file").to_pylist()
            sizes = [self._size(i, f) for i, f in zip(ids, files, strict=True)]
        start = 0
        for k, lang in enumerate(langs):
            new_lang = lang != self.lang
            full = self.rows >= self.shard_rows or (
                self.shard_bytes and self.rows and self.bytes + sizes[k] > self.shard_bytes)
            if new_lang or full:
                self.parts.append(batch.slice(start, k - start))
                start = k
                self.flush()
                self.n = 0 if new_lang else self.n + 1
                self.lang = lang
            self.rows += 1
            self.bytes += sizes[k]
        self.parts.append(batch.slice(start, len(langs) - start))

    def flush(self) -> None:
        if self.rows:
            table = pa.Table.from_batches([p for p in self.parts if p.num_rows])
            table = table.drop_columns(["lang_"]).combine_chunks()
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd", row_group_size=max(1, table.num_rows))
            shard = PlannedShard(self.lang, self.n, table.num_rows)
            self.assign.write_table(pa.table({
                "filename": table.column("filename"), "file_row_number": table.column("file_row_number"),
                "lang": pa.array([shard.lang] * shard.rows, pa.string()),
                "n": pa.array([shard.n] * shard.rows, pa.int64()),
                "pos": pa.array(range(shard.rows), pa.int64())}).cast(_ASSIGN_SCHEMA))
            self.digest.update(f"{shard.lang}/{shard.n}/{len(buf.getvalue())}\n".encode())
            self.digest.update(buf.getvalue())
            self.shards.append(shard)
        self.parts, self.rows, self.bytes = [], 0, 0


def plan_release(run_dir: Path, work_dir: Path, *, langs: list[str] | None, release_license: str | None,
                 seed: int, shard_rows: int, shard_bytes: int | None) -> Plan:
    """Select, order and cut the kept rows of ``run_dir``'s committed units into shards; write the gather
    jobs under ``work_dir``. ``ValueError`` for no committed unit, no row to release, a language that
    cannot name a shard, or a broken unit; ``FileNotFoundError`` for a missing audio file ``shard_bytes`` needs."""
    units = committed_units(run_dir)
    if not units:
        raise ValueError(f"no committed unit in {run_dir / 'units'} (no {MARKER} markers)")
    assign = work_dir / "assign.parquet"
    con = _connect(work_dir)
    try:
        _load_kept(con, run_dir, units)
        _check_rows(con, run_dir)
        out_langs, allowed, excluded_lic, excluded_lang = _selection(con, run_dir, langs, release_license)
        with pq.ParquetWriter(assign, _ASSIGN_SCHEMA, compression="zstd") as writer:
            cutter = _ShardCutter(run_dir, writer, shard_rows, shard_bytes)
            for batch in _sorted_batches(con, out_langs, allowed, seed):
                cutter.feed(batch)
            cutter.flush()
        jobs = write_gather_jobs(_batches(con, f"SELECT {', '.join(ASSIGN_COLUMNS)} FROM read_parquet($f) "
                                          "ORDER BY filename, file_row_number", {"f": str(assign)}), work_dir)
    finally:
        con.close()
        shutil.rmtree(work_dir / "duckdb", ignore_errors=True)
        assign.unlink(missing_ok=True)
    return Plan(cutter.shards, excluded_lic, excluded_lang, cutter.digest.hexdigest(), jobs)

