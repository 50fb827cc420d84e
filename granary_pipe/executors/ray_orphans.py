"""Processes of an embedded Ray whose driver was killed: recorded before the start, stopped at the next start.

Design: docs/architecture.md, "One writer, disk errors, leftovers".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import psutil

from granary_pipe import rundir

log = logging.getLogger(__name__)

RECORD = ".ray-embedded.json"
MARK_ENV = "GRANARY_RAY_MARK"
"""The environment variable that marks every process of one embedded Ray."""


def ray_temp_dir() -> str:
    """Where a local Ray started by this process puts its session directory (``/tmp/ray`` by default)."""
    try:
        from ray._common.utils import get_default_ray_temp_dir
    except ImportError:  # an older or newer Ray: its rule, as of Ray 2.5x
        tmp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
        return os.path.join(tmp, "ray")
    return get_default_ray_temp_dir()


def record(run_dir: Path, session_dir: str | None, mark: str | None = None, started_at: float | None = None) -> None:
    """Note in ``run_dir`` that this process starts (``session_dir`` None) or started an embedded Ray whose
    processes carry ``mark``, since ``started_at`` (epoch s). Best effort: a failed write is logged."""
    info = {"session_dir": str(session_dir) if session_dir else None, "mark": mark, "host": socket.gethostname(),
            "driver_pid": os.getpid(), "ray_temp_dir": ray_temp_dir(), "started_at": started_at}
    path = Path(run_dir) / RECORD
    try:
        rundir.write_json_atomic(path, info)
    except OSError as exc:
        log.warning("could not record the embedded Ray session in %s: %s", path, exc)


@contextlib.contextmanager
def starting(run_dir: Path) -> Iterator[tuple[str, float]]:
    """Around ``ray.init`` of an embedded Ray: mark the processes it starts and record the mark in
    ``run_dir`` first. Yields ``(mark, started_at)`` for :func:`record` once Ray is up."""
    mark = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    started_at = time.time()
    previous = os.environ.get(MARK_ENV)
    os.environ[MARK_ENV] = mark  # before the record: a record always names a mark its processes carry
    try:
        record(run_dir, None, mark, started_at)
        yield mark, started_at
    finally:
        if previous is None:  # Ray's processes have it; this driver's next Ray gets a mark of its own
            os.environ.pop(MARK_ENV, None)
        else:
            os.environ[MARK_ENV] = previous


def forget(run_dir: Path) -> None:
    """The embedded Ray was stopped cleanly: drop the record."""
    with contextlib.suppress(OSError):
        (Path(run_dir) / RECORD).unlink(missing_ok=True)


def _matching(test: Callable[[psutil.Process], bool]) -> list[int]:
    """PIDs of this user's other processes that pass ``test`` (one that ends or hides meanwhile does not)."""
    me, uid = os.getpid(), os.getuid()
    out = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if proc.pid == me or uids is None or uids.effective != uid:
            continue
        with contextlib.suppress(psutil.Error):
            if test(proc):
                out.append(proc.pid)
    return sorted(out)


def marked_processes(mark: str) -> list[int]:
    """PIDs of this user's processes (other than this one) whose environment carries ``mark``."""
    return _matching(lambda proc: proc.environ().get(MARK_ENV) == mark)


def session_processes(session_dir: str) -> list[int]:
    """PIDs of this user's processes (other than this one) with a file open under ``session_dir``."""
    prefix = str(session_dir).rstrip("/") + "/"
    return _matching(lambda proc: any(f.path.startswith(prefix) for f in proc.open_files()))


def session_dirs(info: dict) -> list[str]:
    """The session directory of a recorded Ray; for a driver killed before ``ray.init`` returned,
    the ones Ray named after that driver (``session_DATE_PID``) since its start began."""
    if info.get("session_dir"):
        return [info["session_dir"]]
    temp, pid, since = info.get("ray_temp_dir"), info.get("driver_pid"), info.get("started_at")
    if not (temp and pid and since):
        return []
    out = []
    for path in Path(temp).glob(f"session_*_{int(pid)}"):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink() and path.stat().st_mtime >= since - 1:
                out.append(str(path))
    return out


def _left(info: dict, sessions: list[str]) -> list[int]:
    """Live processes of a recorded Ray: they carry its mark or have a file open in its session directory
    (a process that sets its title, as Ray's agents do, loses its environment)."""
    found = set(marked_processes(info["mark"])) if info.get("mark") else set()
    for session in sessions:
        found |= set(session_processes(session))
    return sorted(found)


def clean(run_dir: Path, grace_s: float = 3.0) -> list[int]:
    """Stop what a killed driver's embedded Ray left (only while holding the run lock; a record from another
    host is left alone); returns the PIDs stopped."""
    path = Path(run_dir) / RECORD
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(info, dict) or info.get("host") != socket.gethostname() or not (
            info.get("session_dir") or info.get("mark")):
        return []
    sessions = session_dirs(info)
    pids = _left(info, sessions)
    for sig in (signal.SIGTERM, signal.SIGKILL):  # agents stop on SIGTERM; a worker stuck in C may need KILL
        live = _left(info, sessions)
        if not live:
            break
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _left(info, sessions):
            time.sleep(0.1)
    if pids:
        log.warning("stopped %d process(es) left by the embedded Ray of a killed run (%s): %s", len(pids),
                    ", ".join(sessions) or f"Ray still starting, {MARK_ENV}={info.get('mark')}",
                    ", ".join(map(str, pids)))
    forget(run_dir)
    return pids
