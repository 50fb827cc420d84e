"""Per-file work on a few daemon threads that stops at once (downloads, verification).

``concurrent.futures`` would finish every queued item after Ctrl-C and join its threads at exit. Here,
on Ctrl-C or an error that stops every other item too (:func:`is_local_disk_error`), the queue is
dropped, running items see ``stop`` set, and the caller gets the exception within about a second.
"""

from __future__ import annotations

import errno
import queue
import threading
from typing import Callable, Iterable, TypeGuard, TypeVar

T = TypeVar("T")

LOCAL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
"""Errors writing local files that no retry and no other file will get past."""
JOIN_S = 1.0
"""How long an interrupted run waits for running items to notice ``stop``."""


class Stopped(Exception):
    """Raised inside an item's work when ``stop`` is set (Ctrl-C or another item's fatal error)."""


def is_local_disk_error(exc: BaseException) -> TypeGuard[OSError]:
    """True for an ``OSError`` that means the local disk cannot take the files (no space, read-only, ...)."""
    return isinstance(exc, OSError) and exc.errno in LOCAL_DISK_ERRNOS


def run_parallel(items: Iterable[T], fn: Callable[[T], None], jobs: int, stop: threading.Event,
                 fatal: Callable[[BaseException], bool] = is_local_disk_error) -> None:
    """Call ``fn(item)`` for every item on ``jobs`` daemon threads.

    An exception for which ``fatal`` is true stops everything and is re-raised here; other
    exceptions are the caller's to catch inside ``fn`` (they are re-raised too, as bugs).
    ``KeyboardInterrupt`` in the calling thread sets ``stop``, drops the queue and is re-raised.
    """
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
        raise next((e for e in errors if fatal(e)), errors[0])


def _work(todo: queue.Queue, fn: Callable[[T], None], stop: threading.Event, errors: list[BaseException]) -> None:
    """One thread: items off ``todo`` until it is empty or ``stop`` is set; an error goes into ``errors``
    and sets ``stop``."""
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
