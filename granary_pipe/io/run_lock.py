"""One writer per run directory: ``granary run`` holds an exclusive ``flock`` on ``OUT/.granary-run.lock``,
which holds the holder's pid, host, start time and command line. Design: docs/architecture.md, "Contracts".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from granary_pipe.config import ConfigError

LOCK_NAME = ".granary-run.lock"

_HOLDER_WAIT_S = 2.0  # a run that has just locked writes its details right after; wait that long for them


class RunLocked(ConfigError):
    """Another process holds the run directory's lock."""


@dataclass
class RunLock:
    """A held lock on a run directory; :meth:`release` (or the process ending) lets it go."""

    path: Path
    fd: int | None

    def release(self, *, unlink: bool = False) -> None:
        """Unlock and close (idempotent); ``unlink``: remove the lock file first, while still holding it."""
        if self.fd is not None:
            if unlink:
                self.path.unlink(missing_ok=True)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(run_dir: Path, *, name: str = LOCK_NAME, what: str = "granary run") -> RunLock:
    """Lock ``run_dir`` (which must exist) for this process, or raise :class:`RunLocked` naming the holder.
    ``name``: the lock file in ``run_dir``; ``what``: who takes it, for the messages."""
    path = Path(run_dir) / name
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLocked(f"{run_dir}: another {what} is writing it ({holder}); wait for it to end or "
                            "choose another --out") from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise ConfigError(f"{run_dir}: the file system refuses locks ({os.strerror(exc.errno)}), so two "
                                  f"{what.split()[-1]}s could write it at once; use a local disk or a file system "
                                  "with flock") from None
            raise
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        os.close(fd)  # its holder removed the file as it let go: lock the one at ``path`` now
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    return RunLock(path, fd)


def _holder(fd: int) -> str:
    """``pid N on HOST, since T``, from the lock file's JSON."""
    deadline = time.monotonic() + _HOLDER_WAIT_S
    while True:
        raw = os.pread(fd, 65536, 0)
        try:
            info = json.loads(raw)
            text = f"pid {info['pid']} on {info['host']}, since {info['since']}"
            if info["host"] != socket.gethostname() or pid_alive(int(info["pid"])):
                return text  # else the previous holder's details, not yet overwritten by the new one
        except (ValueError, KeyError, TypeError):
            text = "a process that has not said who it is yet"
        if time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's too)."""
    return psutil.pid_exists(pid)
