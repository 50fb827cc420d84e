"""Download a release (``granary download SOURCE --out DIR``): every file its release.json lists, fetched
into ``PATH.part``, checked by size and sha256 and renamed into place; release.json and ``download.json``
last. Design: docs/architecture.md, "After the run" (Download / verify).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

from granary_pipe.io.fetch import (
    DownloadError,
    Fetcher,
    Short,
    TooLong,
    child_url,
    describe_connection_error,
    with_retries,
)
from granary_pipe.io.formats import format_names
from granary_pipe.io.parallel import is_local_disk_error, run_parallel
from granary_pipe.io.verify import (
    RELEASE_JSON,
    SELECTION_JSON,
    UnsafePathError,
    check_file,
    load_release_json,
    safe_join,
    select,
    sha256_file,
    tar_problems,
)
from granary_pipe.progress import Progress
from granary_pipe.rundir import write_bytes_atomic

log = logging.getLogger(__name__)


@dataclass
class DownloadReport:
    """What :func:`download_release` did. ``failed``: path -> reason."""

    out_dir: Path
    fetched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refetched: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes_fetched: int = 0
    attempts: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (``--json``)."""
        return {"out_dir": str(self.out_dir), "passed": self.passed, "fetched": self.fetched, "skipped": self.skipped,
                "refetched": self.refetched, "failed": self.failed, "bytes_fetched": self.bytes_fetched}

    def summary(self) -> str:
        text = (f"{self.out_dir}: {len(self.fetched)} fetched ({self.bytes_fetched / 1e6:.1f} MB), "
                f"{len(self.skipped)} already present, {len(self.refetched)} re-fetched after a bad "
                f"checksum, {len(self.failed)} failed")
        return "\n".join([text] + [f"failed: {p}: {why}" for p, why in sorted(self.failed.items())])


def release_url(source: str | os.PathLike) -> str:
    """URL/path of release.json for ``source`` (release.json itself, or its directory)."""
    source = os.fspath(source)
    if "://" not in source:
        p = Path(source).expanduser()
        return str((p / RELEASE_JSON) if p.is_dir() else p.resolve())
    path = urlsplit(source).path
    return source if path.endswith(".json") else source.rstrip("/") + "/" + RELEASE_JSON


class NotARelease(DownloadError, ValueError):
    """What a release.json URL answered is not JSON, or not a release's."""


def _fetch_release(fetcher: Fetcher, url: str, retries: int, backoff_s: float) -> tuple[bytes, dict[str, Any]]:
    raw = with_retries(lambda: fetcher.read_bytes(url), url, retries, backoff_s, [0])
    try:
        return raw, load_release_json(raw)
    except UnsafePathError:
        raise
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, "no 'shards' list", ...
        kind = "not JSON" if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)) else "not a release's"
        raise NotARelease(f"{url}: not a release.json ({kind}: {exc})") from None


def read_release(source: str | os.PathLike, *, retries: int = 5, backoff_s: float = 0.5,
                 timeout_s: float = 60.0) -> dict[str, Any]:
    """The checked ``release.json`` at ``source`` (URL or path); :class:`DownloadError` when it cannot be read."""
    return _fetch_release(Fetcher(timeout_s), release_url(source), retries, backoff_s)[1]


def download_release(source: str | os.PathLike, out_dir: str | os.PathLike, *, jobs: int = 4,
                     langs: Iterable[str] | None = None, formats: Iterable[str] | None = None, retries: int = 5,
                     backoff_s: float = 0.5, timeout_s: float = 60.0, progress: bool = True) -> DownloadReport:
    """Fetch the release at ``source`` (release.json or its directory: URL or path) into ``out_dir``: only the
    shards of ``langs``/``formats`` (None: all; the top files always); ``retries`` per file on transient errors,
    the first after ``backoff_s``, doubling, capped at 30 s; ``timeout_s`` per HTTP request. Raises
    :class:`UnsafePathError` (nothing written) for a listed path escaping ``out_dir``, ``ValueError`` for
    ``langs``/``formats`` the release has not, :class:`DownloadError` when release.json cannot be read,
    ``OSError`` when the local disk takes no file, ``KeyboardInterrupt`` within about a second of Ctrl-C.
    """
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    url = release_url(source)
    fetcher = Fetcher(timeout_s)
    raw, rel = _fetch_release(fetcher, url, retries, backoff_s)  # UnsafePathError before anything is written
    langs = sorted(set(langs)) if langs is not None else None
    formats = format_names(formats)
    out = Path(out_dir)
    entries = _plan(rel, out, langs, formats)
    with Progress(sum(e["bytes"] for e in entries), desc="download", unit="B", enabled=progress, every_s=5.0) as bar:
        transfer = _Transfer(out, url.rsplit("/", 1)[0] if "/" in url else ".", fetcher, retries, backoff_s, bar,
                             DownloadReport(out_dir=out))
        run_parallel(entries, transfer.file, jobs, fetcher.stop)
    write_bytes_atomic(out / RELEASE_JSON, raw)  # as fetched, then the selection for verify
    selection = {"source": url, "langs": langs, "formats": formats}
    write_bytes_atomic(out / SELECTION_JSON, (json.dumps(selection, indent=2) + "\n").encode())
    report = transfer.report
    for paths in (report.fetched, report.skipped, report.refetched):
        paths.sort()
    return report


def _plan(rel: dict[str, Any], out: Path, langs: list[str] | None, formats: list[str] | None) -> list[dict[str, Any]]:
    """The entries to fetch into ``out`` (created), each checked to resolve inside it."""
    have_langs = sorted({s.get("lang") for s in rel["shards"]})
    have_formats = format_names({s.get("format") for s in rel["shards"]}) or []
    for what, asked, have in (("language(s)", langs, have_langs), ("format(s)", formats, have_formats)):
        if asked is not None and set(asked) - set(have):
            raise ValueError(f"release has no {what} {sorted(set(asked) - set(have))}; it has {have}")
    out.mkdir(parents=True, exist_ok=True)
    entries = select(rel, langs, formats)
    for e in entries:
        safe_join(out, e["path"])
    return entries


@dataclass
class _Transfer:
    """Fetches the files of one download, one :meth:`file` call per entry, on several threads."""

    out: Path
    base: str  # release.json's location: listed paths are relative to it
    fetcher: Fetcher
    retries: int
    backoff_s: float
    bar: Progress
    report: DownloadReport
    lock: threading.Lock = field(default_factory=threading.Lock)

    def file(self, entry: dict[str, Any]) -> None:
        """Fetch and verify ``entry``, into the report; a local disk error stops everything, another
        ``OSError`` fails this file."""
        try:
            self._file(entry)
        except OSError as exc:
            if is_local_disk_error(exc):
                raise
            with self.lock:
                self.report.failed[entry["path"]] = f"{type(exc).__name__}: {exc}"

    def _file(self, entry: dict[str, Any]) -> None:
        rel_path = entry["path"]
        target = safe_join(self.out, rel_path)
        if target.is_file() and check_file(self.out, entry) is None:
            self.bar.update(entry["bytes"])
            with self.lock:
                self.report.skipped.append(rel_path)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        if part.exists() and part.stat().st_size > entry["bytes"]:  # cannot be a prefix of the file
            part.unlink()
        if part.exists():
            self.bar.update(part.stat().st_size)
        attempts = [0]
        for round_ in (1, 2):  # round 2: once more from scratch after a bad file
            why, again = self._round(entry, part, target, attempts, last=round_ == 2)
            if why is None:
                os.replace(part, target)
                break
            if not again:
                break
        with self.lock:
            self.report.attempts[rel_path] = attempts[0]
            if why is not None:
                self.report.failed[rel_path] = why
                return
            self.report.fetched.append(rel_path)
            if round_ == 2:
                self.report.refetched.append(rel_path)

    def _round(self, entry: dict[str, Any], part: Path, target: Path, attempts: list[int],
               last: bool) -> tuple[str | None, bool]:
        """Fetch ``entry`` into ``part`` (with retries) and check it: ``(None, False)`` when it may go to
        ``target``, else why not and whether a round from scratch may help."""
        rel_path = entry["path"]
        src = child_url(self.base, rel_path)
        try:
            n = with_retries(lambda: self.fetcher.fetch(src, part, entry["bytes"], self.bar.update),
                             rel_path, self.retries, self.backoff_s, attempts, self.fetcher.stop)
        except Short as exc:
            self._discard(part)
            return str(exc), True
        except TooLong as exc:  # not the file release.json lists: keep none of it, fetch it no more
            self._discard(part)
            return str(exc), False
        except DownloadError as exc:  # missing, forbidden, or retries used up: keep the .part to resume
            return str(exc), False
        with self.lock:
            self.report.bytes_fetched += n
        size = part.stat().st_size
        if size != entry["bytes"] or sha256_file(part) != entry["sha256"]:
            why = f"size {size} != {entry['bytes']} bytes" if size != entry["bytes"] else "sha256 mismatch"
            self._discard(part)
            log.warning("%s: %s%s", rel_path, why, "" if last else "; fetching again from scratch")
            return why, True
        problems = tar_problems(part) if target.name.endswith(".tar") else []
        if problems:
            self._discard(part)
            return "refused: unsafe tar: " + "; ".join(problems[:3]), False
        return None, False

    def _discard(self, part: Path) -> None:
        if part.exists():
            self.bar.update(-part.stat().st_size)
            part.unlink()


__all__ = ["DownloadError", "DownloadReport", "NotARelease", "UnsafePathError", "describe_connection_error",
           "download_release", "release_url"]
