"""Processes of an embedded Ray whose driver was killed: recorded at start, stopped at the next start.

A driver killed with SIGKILL cannot stop the local Ray it started; its GCS and raylet go, but the
raylet's agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``, about 210 MB together) and
any worker still busy stay behind. So when :class:`~granary_pipe.executors.ray.RayExecutor`
starts an embedded Ray it writes ``OUT/.ray-embedded.json`` (the Ray session directory, the host,
the driver's pid) and removes it when it stops Ray. The next ``granary run`` on that directory
(holding the run lock, so no driver of it is alive) finds the record, and on the same host stops
the processes that have a file open under that session directory (every Ray process logs there:
``session_DATE_PID/logs/...``). A session directory belongs to one Ray instance, so no other run's
or user's Ray is touched; processes of other users are never signalled.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from pathlib import Path

from granary_pipe import rundir

log = logging.getLogger(__name__)

RECORD = ".ray-embedded.json"
"""The record's name inside a run directory."""


def record(run_dir: Path, session_dir: str) -> None:
    """Note that this process started an embedded Ray whose session directory is ``session_dir``.
    Best effort: a run directory that takes no file fails the run elsewhere."""
    info = {"session_dir": str(session_dir), "host": socket.gethostname(), "driver_pid": os.getpid()}
    path = Path(run_dir) / RECORD
    try:
        rundir.write_json_atomic(path, info)
    except OSError as exc:
        log.warning("could not record the embedded Ray session in %s: %s", path, exc)


def forget(run_dir: Path) -> None:
    """The embedded Ray was stopped cleanly: drop the record."""
    try:
        (Path(run_dir) / RECORD).unlink(missing_ok=True)
    except OSError:
        pass


def session_processes(session_dir: str) -> list[int]:
    """PIDs of this user's processes (other than this one) with a file open under ``session_dir``."""
    prefix = str(session_dir).rstrip("/") + "/"
    me, uid, out = os.getpid(), os.getuid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(prefix):
                out.append(int(entry))
                break
    return sorted(out)


def clean(run_dir: Path, grace_s: float = 3.0) -> list[int]:
    """Stop what a killed driver's embedded Ray left (see the module doc); returns the PIDs stopped.

    Call it only while holding the run directory's lock (then the recorded driver is not running).
    A record from another host is left alone (its processes are not ours to see)."""
    path = Path(run_dir) / RECORD
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if info.get("host") != socket.gethostname() or not info.get("session_dir"):
        return []
    session = info["session_dir"]
    pids = session_processes(session)
    for sig in (signal.SIGTERM, signal.SIGKILL):  # agents stop on SIGTERM; a worker stuck in C may need KILL
        live = session_processes(session)
        if not live:
            break
        for pid in live:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and session_processes(session):
            time.sleep(0.1)
    if pids:
        log.warning("stopped %d process(es) left by the embedded Ray of a killed run (%s): %s", len(pids),
                    session, ", ".join(map(str, pids)))
    forget(run_dir)
    return pids
