"""Why a listed audio path cannot be opened, told from ``os.stat`` alone (a FIFO never blocks): the
decoder's ``decode_error`` reasons, listed in docs/sources.md ("Paths that cannot be opened")."""

from __future__ import annotations

import errno
import os
import stat

_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
          (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))
_ERRNO_REASONS = {errno.ENOENT: "no such file", errno.ELOOP: "symlink loop", errno.EACCES: "permission denied",
                  errno.EPERM: "permission denied"}


def stat_problem(st: os.stat_result) -> str | None:
    """Why a file of status ``st`` cannot be read as audio (``not a regular file (FIFO)``, ``empty
    file``), or None for a non-empty regular file; for an ``os.fstat`` of an open file too."""
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "unknown kind")
        return f"not a regular file ({kind})"
    return "empty file" if st.st_size == 0 else None


def os_problem(exc: OSError) -> str:
    """Why ``os.stat`` or ``os.open`` of a path failed, in the module's words."""
    return _ERRNO_REASONS.get(exc.errno or 0, f"cannot open ({exc.strerror or exc})")


def problem(path: str) -> str | None:
    """Why ``path`` cannot be read as an audio file, without the path (the reasons of docs/sources.md,
    "Paths that cannot be opened"), or None when it is a non-empty regular file this process may read.
    Never opens ``path``."""
    try:
        st = os.stat(path)  # follows symlinks: a loop is ELOOP, a dangling link ENOENT
    except OSError as exc:
        return os_problem(exc)
    if stat.S_ISREG(st.st_mode) and not os.access(path, os.R_OK):
        return "permission denied"
    return stat_problem(st)


def unopenable(path: str) -> str | None:
    """:func:`problem` followed by the path (``symlink loop: PATH``), as the decoder's reasons read."""
    reason = problem(path)
    return None if reason is None else f"{reason}: {path}"
