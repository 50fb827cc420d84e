"""What surrounds a run's work on its directory: one writer, leftovers of a killed run, disk errors.
Design: docs/architecture.md, "Contracts" (One writer, disk errors, leftovers).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

from granary_pipe import rundir
from granary_pipe.config import ConfigError
from granary_pipe.io import run_lock
from granary_pipe.io.parallel import is_local_disk_error
from granary_pipe.rundir import RUN_JSON, remove_temporaries
from granary_pipe.rundir import TMP as _TMP


def disk_error(exc: BaseException | None) -> OSError | None:
    """The local disk error behind ``exc`` (through a Ray task error's ``cause``, ``__cause__``, ``__context__``),
    or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if is_local_disk_error(exc) and exc.errno is not None:
            return OSError(exc.errno, os.strerror(exc.errno), exc.filename)
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


def refuse_foreign(run_dir: Path) -> None:
    """Refuse a directory that exists, is not empty and holds no run (nothing is written)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or (run_dir / RUN_JSON).is_file():
        return
    if any(p.name != run_lock.LOCK_NAME and not p.name.startswith(f".{RUN_JSON}{_TMP}") for p in run_dir.iterdir()):
        raise ConfigError(f"{run_dir}: exists, is not empty and has no run.json; choose a new --out")


def mark_failed(run_dir: Path, error: str) -> bool:
    """``run.json``'s status → ``failed`` with ``error``, after freeing the run's temporaries (room on a full
    disk); False when it could not be written."""
    remove_temporaries(run_dir)
    try:
        info = rundir.read_run_json(run_dir)
        info.update(status="failed", error=error, finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        rundir.write_json_atomic(Path(run_dir) / RUN_JSON, info)
    except (OSError, ValueError):
        return False
    return True


def describe(exc: OSError) -> str:
    """``No space left on device: PATH`` (the errno's own text, and the file when known)."""
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"{text}: {exc.filename}" if exc.filename else text


@contextlib.contextmanager
def guarded(run_dir: Path) -> Iterator[run_lock.RunLock]:
    """Around a run on ``run_dir``: refuse a non-empty directory without run.json, create and lock it, stop
    what a killed driver's Ray left, and end the run on a disk error (run.json failed; one ``OSError``)."""
    from granary_pipe.executors import ray_orphans

    run_dir = Path(run_dir)
    refuse_foreign(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_lock.acquire(run_dir)
    try:
        ray_orphans.clean(run_dir)
        try:
            yield lock
        except Exception as exc:  # noqa: BLE001 - only a disk error is handled; the rest re-raised
            cause = disk_error(exc)
            if cause is None:
                raise
            if cause.filename is None:  # a write() error names no file: name the run directory
                cause = OSError(cause.errno, cause.strerror, str(run_dir))
            mark_failed(run_dir, describe(cause))
            raise cause from None
    finally:
        lock.release()
