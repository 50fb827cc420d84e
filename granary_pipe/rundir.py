"""The run directory: the one module that knows its layout (``run.json``, ``units/UNIT/`` with its
Parquet files, FLACs and ``_COMMITTED`` marker), its files and how they are written durably.
Design: docs/architecture.md, "The run directory"."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from granary_pipe.schema import SCHEMA, conform

RUN_JSON = "run.json"
MARKER = "_COMMITTED"
"""A unit's commit marker (its figures as JSON); a unit directory without it is not committed."""
TMP = ".tmp-"
"""What marks a temporary name: ``units/.UNIT.tmp-*``, ``.run.json.tmp-*``, ..."""
FILES = "files"
"""The marker's key listing the unit's files: relative path -> ``{"bytes", "sha256"}``."""
UNIT_TOTALS = ("rows_in", "rows_kept", "rows_rejected", "recordings", "audio_s_in", "speech_s_kept")
"""The per-unit figures of a marker that ``run.json`` sums into its totals."""


def unit_id(k: int) -> str:
    """Name of the ``k``-th unit of a run: ``u000000``, ``u000001``, ..."""
    return f"u{k:06d}"


def unit_dir(run_dir: Path, unit: str) -> Path:
    """The directory of unit ``unit`` in ``run_dir``: ``units/UNIT``."""
    return Path(run_dir) / "units" / unit


def read_marker(run_dir: Path, unit: str) -> dict[str, Any]:
    """The figures a committed unit recorded (raises if the marker is missing or not JSON)."""
    return json.loads((unit_dir(run_dir, unit) / MARKER).read_text())


def read_marker_or_empty(run_dir: Path, unit: str) -> dict[str, Any]:
    """The marker's figures, or ``{}`` when it is empty, unreadable or not a JSON object."""
    try:
        data = read_marker(run_dir, unit)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def iter_committed_units(run_dir: Path) -> Iterator[str]:
    """Names of the committed units of ``run_dir``, in directory order, one at a time (nothing held per unit)."""
    units = Path(run_dir) / "units"
    if not units.is_dir():
        return
    with os.scandir(units) as entries:
        for entry in entries:
            if not entry.name.startswith(".") and os.path.isfile(os.path.join(entry.path, MARKER)):
                yield entry.name


def committed_units(run_dir: Path) -> list[str]:
    """Names of the committed units of ``run_dir``, sorted."""
    return sorted(iter_committed_units(run_dir))


def open_units(run_dir: Path, units_total: int | None) -> list[str]:
    """The units of ``run_dir`` without a commit marker, sorted: planned ones and any other unit directory."""
    units = Path(run_dir) / "units"
    out = {unit_id(k) for k in range(units_total or 0) if not (units / unit_id(k) / MARKER).is_file()}
    if units.is_dir():
        with os.scandir(units) as entries:
            out.update(e.name for e in entries if not e.name.startswith(".") and e.is_dir()
                       and not os.path.isfile(os.path.join(e.path, MARKER)))
    return sorted(out)


def read_run_json(run_dir: Path) -> dict[str, Any]:
    """Load ``run_dir/run.json``; ``FileNotFoundError`` naming the path when it is missing."""
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        raise FileNotFoundError(f"not a run directory: {path} does not exist")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` (Python's ``write`` and ``fsync`` errors carry no file name)."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return OSError(exc.errno, os.strerror(exc.errno), str(path))


def write_file(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` and (``sync``) fsync it before closing; an error names the file."""
    try:
        with open(path, "wb") as fh:
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
    except OSError as exc:
        raise _naming(exc, path) from None


_NO_DIR_FSYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})
"""A filesystem that cannot fsync a directory says so with one of these; there is nothing to do."""


def fsync_path(path: Path) -> None:
    """fsync a file already written or a directory (names created, renamed or removed in it)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise _naming(exc, path) from None
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path, *, durable: bool = True) -> Iterator[Path]:
    """A temporary name beside ``path`` for the caller to write, renamed onto ``path`` when the block
    ends without error, removed on an error; ``durable``: fsynced before the rename, the directory after."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP}{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(path.parent)


def write_bytes_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path, durable=durable) as tmp:
        write_file(tmp, data, sync=False)


def write_json_atomic(path: Path, data: dict, *, durable: bool = True, sort_keys: bool = True) -> None:
    """Write JSON (indented, ``default=str``) through :func:`write_bytes_atomic` (the one JSON writer)."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), durable=durable)


def file_record(data: bytes) -> dict[str, Any]:
    """What the marker's ``files`` records of one file: ``{"bytes": size, "sha256": hex digest}``."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def marker_problem(unit_path: Path, marker: dict[str, Any]) -> str | None:
    """Why a committed unit's files do not match its marker's ``files`` by size (a stat per file); None when they do."""
    files = marker.get(FILES)
    if not isinstance(files, dict):
        return f"{MARKER} lists no files"
    for rel, rec in files.items():
        want = rec.get("bytes") if isinstance(rec, dict) else None
        if not isinstance(want, int):
            return f"{MARKER} has no size for {rel}"
        try:
            size = (Path(unit_path) / rel).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return f"{rel} is missing, marker says {want} bytes"
        if size != want:
            return f"{rel} is {size} bytes, marker says {want}"
    return None


def check_unit(run_dir: Path, unit: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(marker, None)`` for a committed, whole unit; ``(None, None)`` without a marker; ``(None, why)``
    when the marker is unreadable or a file does not match it (the unit must be redone)."""
    path = unit_dir(run_dir, unit) / MARKER
    if not path.is_file():
        return None, None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"{MARKER} is not readable JSON ({type(exc).__name__})"
    if not isinstance(marker, dict):
        return None, f"{MARKER} is not a JSON object"
    why = marker_problem(path.parent, marker)
    return (None, why) if why else (marker, None)


def read_unit_table(run_dir: Path, unit: str, which: str, columns: list[str] | None = None) -> pa.Table:
    """``units/UNIT/{which}.parquet`` (``kept``/``rejected``) in the row schema; a missing file reads as empty."""
    path = unit_dir(run_dir, unit) / f"{which}.parquet"
    table = conform(pq.read_table(path), with_samples=False) if path.is_file() else SCHEMA.empty_table()
    return table.select(columns) if columns else table


def clean_debris(run_dir: Path) -> int:
    """Remove temporary and uncommitted unit directories; returns how many were removed."""
    units = Path(run_dir) / "units"
    if not units.is_dir():
        return 0
    debris = [d for d in units.iterdir() if d.is_dir() and (d.name.startswith(".") or not (d / MARKER).is_file())]
    for d in debris:
        shutil.rmtree(d)
    return len(debris)


def remove_temporaries(run_dir: Path) -> int:
    """Remove the run's temporary files and directories (never a committed unit); returns how many."""
    run_dir, removed = Path(run_dir), 0
    places = [run_dir, run_dir / "units"]
    places += [p for p in (run_dir / "units").glob("*") if p.is_dir() and not p.name.startswith(".")]
    for place in places:
        try:
            entries = list(place.iterdir())
        except OSError:
            continue
        for p in entries:
            if p.name.startswith(".") and TMP in p.name:
                with suppress(OSError):
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                    removed += 1
    return removed


def run_sources(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The source dicts of a run.json: its ``source``, or none."""
    return [run["source"]] if isinstance(run.get("source"), dict) else []


def unit_errors(run: dict[str, Any]) -> dict[str, str | None]:
    """Failed units and their errors (run.json's ``unit_errors``)."""
    return dict(run["unit_errors"]) if isinstance(run.get("unit_errors"), dict) else {}
