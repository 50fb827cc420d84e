"""Per-file work on a few daemon threads that stops within about a second on Ctrl-C or a fatal error
(downloads, verification), where ``concurrent.futures`` would finish every queued item first.
"""

from __future__ import annotations

import errno
import queue
import threading
from typing import Callable, Iterable, TypeGuard, TypeVar

T = TypeVar("T")

LOCAL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
"""Errors writing local files that no retry and no other file will get past."""
JOIN_S = 1.0  # how long an interrupted run waits for running items to notice stop


class Stopped(Exception):
    """Raised inside an item's work when ``stop`` is set (Ctrl-C or another item's fatal error)."""


def is_local_disk_error(exc: BaseException) -> TypeGuard[OSError]:
    """True for an ``OSError`` that means the local disk cannot take the files (no space, read-only, ...)."""
    return isinstance(exc, OSError) and exc.errno in LOCAL_DISK_ERRNOS


def run_parallel(items: Iterable[T], fn: Callable[[T], None], jobs: int, stop: threading.Event) -> None:
    """Call ``fn(item)`` for every item on ``jobs`` daemon threads. An exception stops everything and is
    re-raised here (a local disk error first); ``KeyboardInterrupt`` sets ``stop`` and is re-raised."""
    todo: queue.Queue = queue.Queue()
    for item in items:
        todo.put(item)
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_work, args=(todo, fn, stop, errors), daemon=True, name=f"granary-io-{k}")
               for k in range(max(1, jobs))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.1)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join(JOIN_S / len(threads))
        raise
    if errors:
        raise next((e for e in errors if is_local_disk_error(e)), errors[0])


def _work(todo: queue.Queue, fn: Callable[[T], None], stop: threading.Event, errors: list[BaseException]) -> None:
    while not stop.is_set():
        try:
            item = todo.get_nowait()
        except queue.Empty:
            return
        try:
            fn(item)
        except Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            errors.append(exc)
            stop.set()
            return
