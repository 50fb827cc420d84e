"""The run directory: the one module that knows its layout, its files and how they are written.

Layout::

    run.json                     what the run is (fingerprint, resolved pipeline, source, models,
                                 versions) and where it stands: status, unit counts, totals summed
                                 over committed units (rows, seconds, ``stage_s``, ``counts``) and
                                 the error of each failed unit; constant in size however many
                                 units there are
    units/UNIT/kept.parquet      rows with no drop_reason (sorted by id)
    units/UNIT/rejected.parquet  rows with a drop_reason
    units/UNIT/audio/ID.flac     16 kHz mono FLAC of each kept segment
    units/UNIT/_COMMITTED        the unit's own figures (JSON), written last: its commit marker
    units/.UNIT.tmp-*            a commit in progress (debris if the run died)

A unit's figures live only in its marker (``rows_in``, ``rows_kept``, ``rows_rejected``,
``recordings``, ``audio_s_in``, ``speech_s_kept``, ``stage_s``, ``counts``).

The marker also lists every file of the unit under ``files``: ``{"kept.parquet": {"bytes": N,
"sha256": HEX}, "rejected.parquet": {...}, "audio/ID.flac": {...}}`` (paths relative to the unit
directory; :func:`file_record`, :func:`file_records`). A resumed run checks the sizes
(:func:`check_unit`, a stat per file) and redoes a unit that does not match; ``granary verify
RUN`` checks the checksums (:mod:`granary_pipe.io.verify_run`).

Under ``digest`` the marker holds the figures the report and the license audit need of the unit's
rows (groups, examples, distinct ids and recordings, scoring against references;
:mod:`granary_pipe.digest`), so they merge markers instead of reading rows; a marker without one
(or with one of another digest version) is digested from the unit's files when read.

Writes are durable: :func:`write_file` fsyncs what it writes, :func:`fsync_path` makes names
created or renamed in a directory survive a power loss, and :func:`write_json_atomic` (the one
JSON writer: a temporary name, fsync, rename, fsync of the directory) never leaves a reader half
a file, before or after a crash.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from granary_pipe.schema import SCHEMA, conform

RUN_JSON = "run.json"
MARKER = "_COMMITTED"
"""A unit's commit marker (its figures as JSON); a unit directory without it is not committed."""
TMP = ".tmp-"
"""What marks a temporary name: ``units/.UNIT.tmp-*``, ``.run.json.tmp-*``, markers' temporaries."""
FILES = "files"
"""The marker's key listing the unit's files: relative path -> ``{"bytes", "sha256"}``."""
UNIT_TOTALS = ("rows_in", "rows_kept", "rows_rejected", "recordings", "audio_s_in", "speech_s_kept")
"""The per-unit figures of a marker that ``run.json`` sums into its totals."""


def unit_id(k: int) -> str:
    """Name of the ``k``-th unit of a run: ``u000000``, ``u000001``, ..."""
    return f"u{k:06d}"


def unit_dir(run_dir: Path, unit: str) -> Path:
    """Directory of a unit inside a run."""
    return Path(run_dir) / "units" / unit


def is_committed(run_dir: Path, unit: str) -> bool:
    """True when the unit's commit marker exists."""
    return (unit_dir(run_dir, unit) / MARKER).is_file()


def read_marker(run_dir: Path, unit: str) -> dict[str, Any]:
    """The figures a committed unit recorded (raises if the marker is missing or not JSON)."""
    return json.loads((unit_dir(run_dir, unit) / MARKER).read_text())


def read_marker_or_empty(run_dir: Path, unit: str) -> dict[str, Any]:
    """The marker's figures, or ``{}`` when it is empty, unreadable or not a JSON object."""
    try:
        data = json.loads((unit_dir(run_dir, unit) / MARKER).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def committed_units(run_dir: Path) -> list[str]:
    """Names of units under ``run_dir/units`` that carry the commit marker, sorted."""
    units = Path(run_dir) / "units"
    if not units.is_dir():
        return []
    return sorted(p.name for p in units.iterdir() if (p / MARKER).is_file())


def iter_committed_units(run_dir: Path) -> Iterator[str]:
    """Names of the committed units of ``run_dir``, in directory order, one at a time (nothing held
    per unit: a report of a million units)."""
    units = Path(run_dir) / "units"
    if not units.is_dir():
        return
    with os.scandir(units) as entries:
        for entry in entries:
            if not entry.name.startswith(".") and os.path.isfile(os.path.join(entry.path, MARKER)):
                yield entry.name


def open_units(run_dir: Path, units_total: int | None) -> list[str]:
    """The units of ``run_dir`` without a commit marker, sorted: those of the ``units_total`` planned
    and any other unit directory; only these are held (a large run holds few of them)."""
    units = Path(run_dir) / "units"
    out = [unit_id(k) for k in range(units_total or 0) if not (units / unit_id(k) / MARKER).is_file()]
    if units.is_dir():
        with os.scandir(units) as entries:
            for entry in entries:
                name = entry.name
                planned = name[1:].isdigit() and unit_id(int(name[1:])) == name and int(name[1:]) < (units_total or 0)
                if not planned and not name.startswith(".") and entry.is_dir() \
                        and not os.path.isfile(os.path.join(entry.path, MARKER)):
                    out.append(name)
    return sorted(out)


def units_on_disk(run_dir: Path) -> set[str]:
    """Unit directories present (committed or not), temporary dot-directories left out."""
    units = Path(run_dir) / "units"
    return {p.name for p in units.iterdir() if p.is_dir() and not p.name.startswith(".")} if units.is_dir() else set()


def read_run_json(run_dir: Path) -> dict[str, Any]:
    """Load ``run_dir/run.json``; ``FileNotFoundError`` naming the path when it is missing."""
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        raise FileNotFoundError(f"not a run directory: {path} does not exist")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_file(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` and (``sync``) fsync it before closing; an error names the file
    (Python's ``write`` and ``fsync`` errors carry no file name)."""
    try:
        with open(path, "wb") as fh:
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from None


_NO_DIR_FSYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})
"""A filesystem that cannot fsync a directory says so with one of these; there is nothing to do."""


def fsync_path(path: Path) -> None:
    """fsync a file already written (its bytes reach the disk) or a directory (names created, renamed
    or removed in it survive a power loss)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from None
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path, *, durable: bool = True) -> Iterator[Path]:
    """A temporary name beside ``path`` (``.NAME.tmp-*``) for the caller to write; when the block
    ends without error it is renamed onto ``path``, so readers never see half a file, and on an
    error it is removed (a full disk keeps no debris).

    ``durable`` (the default): the temporary is fsynced before the rename and the directory after
    it, so after a power loss the file is the old one or the new one, whole (a scratch file that
    no crash needs may pass False)."""
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
    """Write ``data`` to ``path`` through :func:`atomic_path` (whole or not at all; ``durable``: fsynced)."""
    with atomic_path(path, durable=durable) as tmp:
        write_file(tmp, data, sync=False)


def write_json_atomic(path: Path, data: dict, *, durable: bool = True, sort_keys: bool = True) -> None:
    """Write JSON (indented, ``default=str``) through :func:`write_bytes_atomic`. ``sort_keys=False``
    keeps the dicts' own key order (a record whose dicts are copied into another file as they are)."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), durable=durable)


# ----------------------------------------------------------------------------- the marker's file list

def file_record(data: bytes) -> dict[str, Any]:
    """What the marker records of one file: ``{"bytes": size, "sha256": hex digest}``."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def file_records(unit_path: Path) -> dict[str, dict[str, Any]]:
    """The marker's ``files`` for a unit directory as it is on disk: every file under it (the marker
    and temporaries left out), by path relative to it, read and hashed (the sink hashes the bytes it
    writes instead: :func:`file_record`)."""
    unit_path = Path(unit_path)
    out = {}
    for p in sorted(unit_path.rglob("*")):
        rel = p.relative_to(unit_path).as_posix()
        if p.is_file() and rel != MARKER and not p.name.startswith("."):
            out[rel] = file_record(p.read_bytes())
    return out


def marker_problem(unit_path: Path, marker: dict[str, Any]) -> str | None:
    """Why a committed unit's files do not match its marker, by size (a stat per file); None when they do.

    A marker without a ``files`` list is a problem: nothing says its files are whole."""
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
    """Is ``unit`` committed and whole? ``(marker, None)`` when its marker is there and its files have
    the sizes it lists; ``(None, None)`` when it has no marker; ``(None, why)`` when it has one but
    it cannot be read or a file does not match (the unit must be redone)."""
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
    """Read ``units/UNIT/{which}.parquet`` (``kept``/``rejected``) in the row schema.

    A missing file reads as an empty table. ``columns`` restricts the columns returned.
    """
    path = unit_dir(run_dir, unit) / f"{which}.parquet"
    table = conform(pq.read_table(path), with_samples=False) if path.is_file() else SCHEMA.empty_table()
    return table.select(columns) if columns else table


def clean_debris(run_dir: Path) -> int:
    """Remove temporary and uncommitted unit directories; returns how many were removed."""
    units = Path(run_dir) / "units"
    removed = 0
    if not units.is_dir():
        return 0
    for d in units.iterdir():
        if d.is_dir() and (d.name.startswith(".") or not (d / MARKER).is_file()):
            shutil.rmtree(d)
            removed += 1
    return removed


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
            if not (p.name.startswith(".") and TMP in p.name):
                continue
            try:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed += 1
            except OSError:
                pass
    return removed



# ----------------------------------------------------------------------------- what run.json says

def run_sources(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The source dicts of a run.json: its ``source``, or none."""
    return [run["source"]] if isinstance(run.get("source"), dict) else []


def unit_errors(run: dict[str, Any]) -> dict[str, str | None]:
    """Failed units and their errors (run.json's ``unit_errors``)."""
    return dict(run["unit_errors"]) if isinstance(run.get("unit_errors"), dict) else {}


def planned_units(run: dict[str, Any]) -> list[str]:
    """Every unit the run planned: ``units_total`` of them."""
    total = run.get("units_total")
    return [unit_id(k) for k in range(total)] if isinstance(total, int) else []
