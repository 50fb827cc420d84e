"""Build a committed run of N units by replicating the committed units of a real run.

New unit ``k`` (``u000000`` …) is a copy of source unit ``k mod S`` (S committed source units):

* its rows are the source unit's rows (``--rows-per-unit R``: the first R of them, or repeated
  until there are R, kept and rejected in the source's proportion), each with a unique ``id``
  and ``recording_id`` (``~UNIT`` appended; ``~UNITrK`` for the K-th repeat), ``unit`` and
  ``audio_file`` rewritten, written back with pyarrow in the schema read from the source file;
* each kept row's FLAC is hard-linked from the source's under its new name (a copy when the work
  directory is on another file system). With ``audio_s`` and/or ``variants`` K > 1 it is linked
  from a FLAC made once per source file and variant instead: the source's first ``audio_s``
  seconds, variant ``v`` with its first ``7 v`` samples cut off (so its bytes differ); copy ``c``
  of a unit uses variant ``c mod K``, and the row's ``duration_s`` becomes that file's length.
  Why variants: a release compresses (Parquet shards: zstd) across rows, and copies of one FLAC
  compress to almost nothing; with K variants a shard holds K times more distinct audio;
* its marker is the source's with ``unit`` and the row figures (rows in/kept/rejected,
  recordings, seconds, longest row) recomputed from the new rows, ``counts`` and ``stage_s``
  scaled by new rows / source rows when R differs, ``files`` ({path in the unit: {"bytes",
  "sha256"}}) and ``digest`` (the report's per-unit figures, :mod:`granary_pipe.digest`) computed
  for the copy.

``run.json`` is the source's with the totals of the new markers, ``units_total`` =
``units_committed`` = N, no failed unit, status ``complete``. Units are written by a pool of
``jobs`` processes (each unit's Parquet once, straight from memory).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from granary_pipe import counters, digest, rundir
from granary_pipe.io.verify import sha256_file

_ROW_TOTALS = ("rows_in", "rows_kept", "rows_rejected", "recordings", "audio_s_in", "speech_s_kept", "max_row_s")


def _entry(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


Variants = dict[str, list[tuple[Path, float]]]
"""Source audio path -> its made files, one per variant: (path, seconds)."""


class SourceUnit:
    """One committed unit of the source run, in memory: its tables, marker and audio files."""

    def __init__(self, run: Path, unit: str, variants: Variants | None = None) -> None:
        udir = rundir.unit_dir(run, unit)
        self.name = unit
        self.marker = rundir.read_marker_or_empty(run, unit)
        self.kept = pq.read_table(udir / "kept.parquet")
        rej = udir / "rejected.parquet"
        self.rejected = pq.read_table(rej) if rej.is_file() else self.kept.schema.empty_table()
        files = self.marker.get(rundir.FILES) if isinstance(self.marker.get(rundir.FILES), dict) else {}
        # per kept row, per variant: (file to link from, its size and sha256, its seconds or None: keep duration_s)
        self.audio: list[list[tuple[Path, dict[str, Any], float | None]]] = []
        for rel in self.kept.column("audio_file").to_pylist():
            src = run / rel
            if variants is not None:
                self.audio.append([(p, _file_entry(p), secs)
                                   for p, secs in variants[str(src)]])
            else:
                self.audio.append([(src, files.get(f"audio/{src.name}") or _file_entry(src), None)])


def _file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def make_variants(run: Path, units: list[str], seconds: float | None, k: int, out: Path) -> Variants:
    """``k`` FLACs of every kept row's audio (its first ``seconds``, all when None; variant ``v``
    without its first ``7 v`` samples), made once under ``out``."""
    made: Variants = {}
    for unit in units:
        kept = pq.read_table(rundir.unit_dir(run, unit) / "kept.parquet", columns=["audio_file"])
        for rel in kept.column("audio_file").to_pylist():
            src = run / rel
            made[str(src)] = []
            data = None
            for v in range(k):
                dest = out / unit / f"{src.stem}.v{v}.flac"
                if not dest.is_file():
                    if data is None:
                        info = sf.info(src)
                        frames = -1 if seconds is None else int(seconds * info.samplerate)
                        data, sr = sf.read(src, dtype="int16", frames=frames)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(dest, data[7 * v:], sr, format="FLAC", subtype="PCM_16")
                made[str(src)].append((dest, sf.info(dest).duration))
    return made


def _pick(n: int, want: int) -> list[tuple[int, int]]:
    """(source row, repeat) for ``want`` rows cycled over ``n`` source rows."""
    return [(i % n, i // n) for i in range(want)] if n else []


def _rows_wanted(src: SourceUnit, rows_per_unit: int | None) -> tuple[int, int]:
    k, r = src.kept.num_rows, src.rejected.num_rows
    if rows_per_unit is None or k + r == 0:
        return k, r
    kept = round(rows_per_unit * k / (k + r))
    return kept, rows_per_unit - kept


def _copy_table(table: pa.Table, picks: list[tuple[int, int]], unit: str) -> pa.Table:
    """The source rows ``picks`` with ids, recording ids and unit of the copy ``unit``."""
    rows = [i for i, _ in picks]
    if rows != list(range(table.num_rows)):
        table = table.take(pa.array(rows, pa.int64()))
    sfx = [f"~{unit}" if k == 0 else f"~{unit}r{k}" for _, k in picks]
    out = table
    for col in ("id", "recording_id"):
        vals = [None if v is None else v + s for v, s in zip(table.column(col).to_pylist(), sfx)]
        out = _set(out, col, vals)
    return _set(out, "unit", [unit] * table.num_rows)


def _set(table: pa.Table, name: str, values: list) -> pa.Table:
    i = table.schema.get_field_index(name)
    field = table.schema.field(i)
    return table.set_column(i, field, pa.array(values, field.type))


def _parquet(table: pa.Table) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    return buf.getvalue().to_pybytes()


def _row_totals(kept: pa.Table, rejected: pa.Table) -> dict[str, Any]:
    """The figures the sink records for a unit, from its rows."""
    both = [kept.select(["recording_id", "recording_duration_s", "duration_s"]),
            rejected.select(["recording_id", "recording_duration_s", "duration_s"])]
    recs: dict[str, float] = {}
    longest = 0.0
    for t in both:
        for rid, rd, d in zip(*(t.column(c).to_pylist() for c in t.column_names)):
            recs[rid] = rd or 0.0
            longest = max(longest, d or 0.0)
    return {"rows_in": kept.num_rows + rejected.num_rows, "rows_kept": kept.num_rows,
            "rows_rejected": rejected.num_rows, "recordings": len(recs), "audio_s_in": float(sum(recs.values())),
            "speech_s_kept": float(sum(d or 0.0 for d in kept.column("duration_s").to_pylist())),
            "max_row_s": longest}


def _scaled(obj: Any, f: float) -> Any:
    """Numbers of a nested dict scaled by ``f`` (ints rounded)."""
    if isinstance(obj, dict):
        return {k: _scaled(v, f) for k, v in obj.items()}
    if isinstance(obj, bool) or not isinstance(obj, (int, float)):
        return obj
    return round(obj * f) if isinstance(obj, int) else obj * f


def write_copy(out: Path, src: SourceUnit, unit: str, rows_per_unit: int | None, copy: int = 0) -> dict[str, Any]:
    """Write unit ``unit`` of the new run ``out`` as copy number ``copy`` of ``src``; returns its marker."""
    n_kept, n_rej = _rows_wanted(src, rows_per_unit)
    kpicks, rpicks = _pick(src.kept.num_rows, n_kept), _pick(src.rejected.num_rows, n_rej)
    kept = _copy_table(src.kept, kpicks, unit)
    rejected = _copy_table(src.rejected, rpicks, unit)
    udir = out / "units" / unit
    (udir / "audio").mkdir(parents=True)
    names = [f"{i}.flac" for i in kept.column("id").to_pylist()]
    kept = _set(kept, "audio_file", [f"units/{unit}/audio/{n}" for n in names])
    audio = [src.audio[i][copy % len(src.audio[i])] for i, _ in kpicks]
    if any(secs is not None for _, _, secs in audio):
        durs = kept.column("duration_s").to_pylist()
        kept = _set(kept, "duration_s", [secs if secs is not None else d for (_, _, secs), d in zip(audio, durs)])
    files: dict[str, Any] = {}
    for name, (path, entry, _secs) in zip(names, audio):
        try:
            os.link(path, udir / "audio" / name)
        except OSError:  # another file system: copy
            shutil.copyfile(path, udir / "audio" / name)
        files[f"audio/{name}"] = entry
    for which, table in (("kept", kept), ("rejected", rejected)):
        data = _parquet(table)
        (udir / f"{which}.parquet").write_bytes(data)
        files[f"{which}.parquet"] = _entry(data)
    marker = dict(src.marker)
    src_rows = src.kept.num_rows + src.rejected.num_rows
    if rows_per_unit is not None and src_rows and n_kept + n_rej != src_rows:
        f = (n_kept + n_rej) / src_rows
        for key in ("counts", "stage_s"):
            if key in marker:
                marker[key] = _scaled(marker[key], f)
    marker.update(_row_totals(kept, rejected), unit=unit)
    marker[rundir.FILES] = dict(sorted(files.items()))
    marker[digest.KEY] = digest.unit_digest(kept, rejected)
    (udir / rundir.MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True, default=str) + "\n")
    return marker


_STATE: dict[str, Any] = {}


def _init(source: str, units: list[str], variants: Variants | None) -> None:
    _STATE["units"] = [SourceUnit(Path(source), u, variants) for u in units]


def _build_range(out: str, start: int, stop: int, rows_per_unit: int | None) -> dict[str, Any]:
    """Units ``start``..``stop`` of the new run (in a pool worker); their summed figures."""
    srcs = _STATE["units"]
    part: dict[str, Any] = {"totals": dict.fromkeys(rundir.UNIT_TOTALS, 0), "stage_s": {}, "counts": {}}
    for k in range(start, stop):
        m = write_copy(Path(out), srcs[k % len(srcs)], rundir.unit_id(k), rows_per_unit, k // len(srcs))
        for key in rundir.UNIT_TOTALS:
            part["totals"][key] += m.get(key) or 0
        for stage, secs in (m.get("stage_s") or {}).items():
            part["stage_s"][stage] = part["stage_s"].get(stage, 0.0) + secs
        part["counts"] = counters.merge_stages(part["counts"], m.get("counts"))
    return part


def replicate(source: Path, out: Path, n_units: int, *, rows_per_unit: int | None = None,
              audio_s: float | None = None, variants: int = 1, audio_dir: Path | None = None,
              jobs: int = 2) -> dict[str, Any]:
    """Write a committed run of ``n_units`` units at ``out`` (replaced if it exists) from the
    committed units of ``source``; returns its run.json. See the module doc."""
    source, out = Path(source), Path(out)
    units = rundir.committed_units(source)
    if not units:
        raise SystemExit(f"{source}: no committed unit to replicate")
    if rows_per_unit is not None and rows_per_unit < 1:
        raise SystemExit(f"--rows-per-unit must be at least 1, got {rows_per_unit}")
    if variants < 1:
        raise SystemExit(f"variants must be at least 1, got {variants}")
    made = None
    if audio_s is not None or variants > 1:
        made = make_variants(source, units, audio_s, variants,
                             Path(audio_dir or out.parent / f"audio-{audio_s or 'all'}-{variants}"))
    if out.exists():
        shutil.rmtree(out)
    (out / "units").mkdir(parents=True)
    t0 = time.perf_counter()
    jobs = max(1, min(jobs, n_units))
    bounds = [(n_units * j // jobs, n_units * (j + 1) // jobs) for j in range(jobs)]
    if jobs == 1:
        _init(str(source), units, made)
        parts = [_build_range(str(out), a, b, rows_per_unit) for a, b in bounds]
    else:
        with concurrent.futures.ProcessPoolExecutor(jobs, initializer=_init,
                                                    initargs=(str(source), units, made)) as pool:
            parts = list(pool.map(_build_range, [str(out)] * jobs, *zip(*bounds), [rows_per_unit] * jobs))
    info = rundir.read_run_json(source)
    info.pop("units", None)  # an older run.json's per-unit entries
    totals = dict.fromkeys(rundir.UNIT_TOTALS, 0)
    stage_s: dict[str, float] = {}
    counts: dict[str, Any] = {}
    for p in parts:
        for k in totals:
            totals[k] += p["totals"][k]
        for stage, secs in p["stage_s"].items():
            stage_s[stage] = stage_s.get(stage, 0.0) + secs
        counts = counters.merge_stages(counts, p["counts"])
    scale = n_units / len(units)
    info.update(units_total=n_units, units_committed=n_units, unit_errors={}, failed_units=[], status="complete",
                totals=totals, stage_s=stage_s, counts=counts, audio_hours_in=totals["audio_s_in"] / 3600,
                replicated={"from": str(source), "source_units": len(units), "rows_per_unit": rows_per_unit,
                            "audio_s": audio_s, "variants": variants, "build_s": round(time.perf_counter() - t0, 2)})
    for key in ("wall_s", "wall_s_total"):
        if isinstance(info.get(key), (int, float)):
            info[key] = info[key] * scale
    rundir.write_json_atomic(out / rundir.RUN_JSON, info)
    return info
