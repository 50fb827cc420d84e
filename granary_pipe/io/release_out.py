"""A release's ``--out`` directory: what in it belongs to a release, its lock, and publishing by renames
under a journal (release.json last: the commit). Design: docs/architecture.md, "After the run" (Release).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from granary_pipe.io.formats import FORMATS, RELEASE_FORMATS
from granary_pipe.io.verify import RELEASE_JSON, sha256_file
from granary_pipe.rundir import RUN_JSON, fsync_path, write_json_atomic

LOCK_NAME = ".granary-release.lock"
WORK_PREFIX = ".tmp-release-"  # work directories of releases in --out: .tmp-release-KEY
TOP_FILES = ("ATTRIBUTION.md", "README.md")
JOURNAL = "publish.json"
_ASIDE = "old"
_DONE = ".done"  # suffix of a published release's work directory while it is removed


def is_ours(name: str) -> bool:
    """A hidden entry of ``--out`` that a release keeps there while it works (its lock, work directories)."""
    return name == LOCK_NAME or name.startswith(WORK_PREFIX)


def refuse_run_dir(run_dir: Path, out_dir: Path) -> None:
    """``ValueError`` when ``out_dir`` is the run, inside it, or a run directory of its own."""
    run, out = Path(run_dir).resolve(), Path(out_dir).resolve()
    if out == run:
        raise ValueError(f"--out {out_dir} is the run directory itself: a release goes into a directory of its "
                         "own; choose another --out")
    if run in out.parents:
        raise ValueError(f"--out {out_dir} is inside the run directory {run_dir}; choose another --out")
    for marker in (RUN_JSON, "units"):
        if os.path.lexists(out / marker):
            raise ValueError(f"--out {out_dir} is a run directory (it holds {marker}): a release goes into a "
                             "directory of its own; choose another --out")


def _listed(out_dir: Path) -> dict[str, dict[str, Any]] | None:
    """Entries of ``out_dir/release.json`` by path; None when there is none or it is not a release's."""
    try:
        rel = json.loads((out_dir / RELEASE_JSON).read_bytes())
        entries = [*rel["shards"], *rel.get("files", [])]
        return {e["path"]: e for e in entries if isinstance(e, dict) and isinstance(e.get("path"), str)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _shard_name(fmt: str, lang: str) -> re.Pattern[str]:
    parts = [re.escape(f).replace(re.escape("{lang}"), re.escape(lang)).replace("%06d", r"\d{6,}")
             for f in RELEASE_FORMATS[fmt].files]
    return re.compile("|".join(f"(?:{p})" for p in parts))


def _is_file(path: Path) -> bool:  # not through a symlink
    return stat.S_ISREG(path.lstat().st_mode)


def _is_dir(path: Path) -> bool:
    return stat.S_ISDIR(path.lstat().st_mode)


def _foreign_in_format(out_dir: Path, name: str, listed: dict[str, dict[str, Any]]) -> str | None:
    """The first path under format directory ``name`` that a release did not write, else None."""
    for lang_dir in sorted((out_dir / name).iterdir()):
        rel = f"{name}/{lang_dir.name}"
        if not _is_dir(lang_dir):
            return rel
        shard = _shard_name(name, lang_dir.name)
        for path in sorted(lang_dir.iterdir()):
            if not (_is_file(path) and (f"{rel}/{path.name}" in listed or shard.fullmatch(path.name))):
                return f"{rel}/{path.name}"
    return None


def first_foreign(out_dir: Path) -> str | None:
    """The first path in ``out_dir`` (in name order) that a release did not write, with why when it is
    not plain (``README.md (changed since the release wrote it)``); None when all is a release's own."""
    out_dir = Path(out_dir)
    listed = _listed(out_dir)
    for entry in sorted(out_dir.iterdir()):
        name = entry.name
        if is_ours(name):
            continue
        if name == RELEASE_JSON:
            if listed is None or not _is_file(entry):
                return f"{name} (not a release's)"
        elif name in TOP_FILES:
            mine = (listed or {}).get(name)
            if mine is None or not _is_file(entry):
                return name
            if sha256_file(entry) != mine.get("sha256"):
                return f"{name} (changed since the release wrote it)"
        elif name in FORMATS and _is_dir(entry):
            if foreign := _foreign_in_format(out_dir, name, listed or {}):
                return foreign
        else:
            return name
    return None


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """``FileExistsError`` naming what is in the way: without ``overwrite`` anything but a release's
    own hidden entries; with it, the first path no release wrote."""
    if not overwrite:
        present = sorted(e.name for e in out_dir.iterdir() if not is_ours(e.name))
        if RELEASE_JSON in present:
            raise FileExistsError(f"release output {out_dir} already holds a release: pass --overwrite to replace "
                                  "it, or choose another --out")
        if present:
            raise FileExistsError(f"release output {out_dir} is not empty ({present[0]} is there): choose another "
                                  "--out (--overwrite replaces only an earlier release)")
        return
    if foreign := first_foreign(out_dir):
        raise FileExistsError(f"release output {out_dir} holds {foreign}, which no release wrote: --overwrite "
                              "replaces only a release's own files; move it away or choose another --out")


@contextmanager
def claimed(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir``'s lock (creating it) for the block; after it remove the lock file, and ``out_dir`` if
    this call created it and it is empty. :class:`~granary_pipe.io.run_lock.RunLocked` naming the holder."""
    from granary_pipe.io import run_lock

    created = not out_dir.exists()
    for attempt in range(5):
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            lock = run_lock.acquire(out_dir, name=LOCK_NAME, what="granary release")
            break
        except FileNotFoundError:  # a release that had created it removed it as it failed: once more
            if attempt == 4:
                raise
    try:
        yield
    finally:
        lock.release(unlink=True)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only when empty: a failed first release leaves no trace


def recover(out_dir: Path) -> list[str]:
    """Settle every publish in ``out_dir`` a killed release left (a work directory with a journal): undo
    it before the commit, finish it after. Returns the work directories whose release is now in place."""
    committed = []
    for work in sorted(out_dir.glob(WORK_PREFIX + "*")):
        if work.name.endswith(_DONE):  # published; its removal was cut short
            shutil.rmtree(work)
            committed.append(work.name[:-len(_DONE)])
            continue
        journal = work / JOURNAL
        if not journal.is_file():
            continue
        moves = json.loads(journal.read_text(encoding="utf-8"))
        if os.path.lexists(work / RELEASE_JSON):  # its release.json never went out: put everything back
            for name in reversed(moves["in"]):
                if os.path.lexists(out_dir / name) and not os.path.lexists(work / name):
                    os.replace(out_dir / name, work / name)
            for name in moves["aside"]:
                if os.path.lexists(work / _ASIDE / name) and not os.path.lexists(out_dir / name):
                    os.replace(work / _ASIDE / name, out_dir / name)
            fsync_path(out_dir)
            shutil.rmtree(work / _ASIDE, ignore_errors=True)
            journal.unlink()
            fsync_path(work)
        else:
            finish(work)
            committed.append(work.name)
    return committed


def finish(work: Path) -> None:
    """Remove a published release's work directory, renamed first so that :func:`recover` sees one cut short."""
    done = work.with_name(work.name + _DONE)
    os.replace(work, done)
    shutil.rmtree(done)


def publish(work: Path, out_dir: Path, names: list[str]) -> None:
    """Move ``names`` (in ``work``; ``release.json`` among them) into ``out_dir`` under a journal: the
    previous release's entries aside into ``work/old`` first, ``release.json`` last. ``FileExistsError``
    (the work stays) when something no release wrote appeared in ``out_dir`` meanwhile."""
    names = [n for n in names if n != RELEASE_JSON] + [RELEASE_JSON]
    for name in names:
        if (work / name).is_dir():
            for sub in (work / name).iterdir():
                fsync_path(sub)
        fsync_path(work / name)
    if foreign := first_foreign(out_dir):
        raise FileExistsError(f"release output {out_dir}: {foreign} appeared there while the release was written "
                              "and no release wrote it; move it away and run the same command again (it resumes)")
    old = sorted((e.name for e in out_dir.iterdir() if not is_ours(e.name)), key=lambda n: n != RELEASE_JSON)
    write_json_atomic(work / JOURNAL, {"aside": old, "in": names}, sort_keys=False)
    (work / _ASIDE).mkdir(exist_ok=True)
    for name in old:  # release.json first: no moment lists files that are not there
        os.replace(out_dir / name, work / _ASIDE / name)
    for name in names:
        if name == RELEASE_JSON:
            fsync_path(work / _ASIDE)
            fsync_path(out_dir)
        os.replace(work / name, out_dir / name)
    fsync_path(out_dir)
