"""Download a release: ``granary download SOURCE --out DIR``.

``SOURCE`` is the URL or path of a ``release.json`` (or of the directory holding it):
``http(s)://`` goes through ``requests``; anything else (a local path, ``file://``,
``s3://``, ``gs://``, ``memory://``, ...) through ``fsspec.open`` (remote schemes need their
fsspec backend installed, e.g. ``s3fs``). Every file listed in release.json (shards, then
``ATTRIBUTION.md``/``README.md``) is fetched relative to release.json's location.

* **Safe**: release.json is refused as a whole, before anything is written, if any listed
  path could land outside ``DIR`` (absolute, ``..``, ...); a downloaded tar whose members
  are not plain relative files (absolute names, ``..``, links, devices) is refused and not
  kept. Nothing is ever extracted.
* **Verified**: each file is written to ``PATH.part`` and only renamed into place once its
  size and sha256 match release.json. A file that does not match is fetched once more from
  scratch, then reported. Files already present and matching are skipped.
* **Bounded**: no file takes more bytes on disk than release.json lists for it: a server that
  offers or sends more is cut off there, the file fails at once (naming the URL) and its
  ``.part`` is removed; progress never passes 100 %.
* **Resumable**: an interrupted transfer keeps its ``.part``; the next attempt (a retry, or
  the next run of the command) asks for the rest with an HTTP ``Range`` request (or a
  seek, for fsspec sources). A server that ignores Range is read from the start.
* **Retries**: connection errors, timeouts, truncated bodies, HTTP 429 and 5xx are retried
  with exponential backoff (``backoff_s * 2**k`` jittered, at most 30 s: :mod:`granary_pipe.retry`);
  other 4xx (404: missing shard) fail that file at once. Other files go on; the report lists what failed.
* **Parallel**: ``jobs`` threads; progress over bytes (a bar on a terminal, a line every few
  seconds elsewhere: :mod:`granary_pipe.progress`).
* **Stops at once**: Ctrl-C stops the transfers in flight within about a second (their ``.part``
  files stay, to resume) and starts none of the queued ones; a local disk that cannot take the
  files (no space, read-only, no permission) stops the whole download with that error.

release.json is written into ``DIR`` last (byte-identical to the source), with
``download.json`` recording the ``langs``/``formats`` selection, so ``granary verify DIR``
checks what was asked for.
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

from granary_pipe.io.formats import format_names
from granary_pipe.io.fetch import (  # noqa: F401  (describe_connection_error, DownloadError: public here)
    DownloadError,
    Fetcher,
    Permanent,
    Short,
    TooLong,
    child_url,
    describe_connection_error,
    with_retries,
)
from granary_pipe.io.parallel import is_local_disk_error, run_parallel
from granary_pipe.progress import Progress
from granary_pipe.rundir import write_bytes_atomic
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
        """The report as plain data (``granary download --json``)."""
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


def read_release(source: str | os.PathLike, *, retries: int = 5, backoff_s: float = 0.5,
                 timeout_s: float = 60.0) -> dict[str, Any]:
    """The checked ``release.json`` at ``source`` (URL or path), with the retries of
    :func:`download_release`; nothing is written. Raises :class:`DownloadError` when it cannot be read."""
    url = release_url(source)
    fetcher = Fetcher(timeout_s, threading.Event())
    return _parse_release(with_retries(lambda: fetcher.read_bytes(url), url, retries, backoff_s, [0]), url)


class NotARelease(DownloadError, ValueError):
    """What a release.json URL answered is not a release.json (not JSON, or not a release's)."""


def _parse_release(raw: bytes, url: str) -> dict[str, Any]:
    """The checked release.json ``raw`` read from ``url``; :class:`NotARelease` naming ``url`` when it
    is not JSON or not a release's (an unsafe path stays an :class:`UnsafePathError`)."""
    try:
        return load_release_json(raw)
    except UnsafePathError:
        raise
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, "no 'shards' list", ...
        kind = "not JSON" if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)) else "not a release's"
        raise NotARelease(f"{url}: not a release.json ({kind}: {exc})") from None


def download_release(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    jobs: int = 4,
    langs: Iterable[str] | None = None,
    formats: Iterable[str] | None = None,
    retries: int = 5,
    backoff_s: float = 0.5,
    timeout_s: float = 60.0,
    progress: bool = True,
) -> DownloadReport:
    """Fetch the release at ``source`` into ``out_dir``; see the module docstring.

    Args:
        source: release.json (or its directory) as an http(s) URL, an fsspec URL or a path.
        out_dir: local directory (created); files land at ``out_dir/<path in release.json>``.
        jobs: parallel downloads (threads).
        langs: only these languages' shards (None: all).
        formats: only these formats (``parquet``, ``wds``, ``nemo``, ``lhotse_shar``; None: all
            the release has). ATTRIBUTION.md and README.md are always fetched.
        retries: retries per file on transient errors (connection, timeout, 429, 5xx).
        backoff_s: first retry delay; doubles each retry, capped at 30 s, jittered to 50-100 %.
        timeout_s: connect/read timeout of each HTTP request.
        progress: show progress over bytes (:class:`granary_pipe.progress.Progress`).

    Returns a :class:`DownloadReport`; ``report.failed`` names files that could not be
    fetched and verified. Raises :class:`UnsafePathError` (nothing written) when
    release.json lists a path escaping ``out_dir``, ``ValueError`` for a ``langs``/``formats``
    the release does not have, :class:`DownloadError` when release.json itself cannot be read,
    ``OSError`` when the local disk cannot take the files (no space, read-only, no permission),
    ``KeyboardInterrupt`` (Ctrl-C) after stopping the transfers within about a second.
    """
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    url = release_url(source)
    base = url.rsplit("/", 1)[0] if "/" in url else "."
    stop = threading.Event()
    fetcher = Fetcher(timeout_s, stop)
    raw = with_retries(lambda: fetcher.read_bytes(url), url, retries, backoff_s, [0])
    rel = _parse_release(raw, url)  # UnsafePathError before anything is written
    langs = sorted(set(langs)) if langs is not None else None
    formats = format_names(formats)
    have_langs = sorted({s.get("lang") for s in rel["shards"]})
    have_formats = format_names({s.get("format") for s in rel["shards"]})
    if langs is not None and set(langs) - set(have_langs):
        raise ValueError(f"release has no language(s) {sorted(set(langs) - set(have_langs))}; "
                         f"it has {have_langs}")
    if formats is not None and set(formats) - set(have_formats):
        raise ValueError(f"release has no format(s) {sorted(set(formats) - set(have_formats))}; "
                         f"it has {have_formats}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = select(rel, langs, formats)
    for e in entries:  # also resolves through symlinks already in out_dir
        safe_join(out, e["path"])

    report = DownloadReport(out_dir=out)
    lock = threading.Lock()
    bar = Progress(sum(e["bytes"] for e in entries), desc="download", unit="B", enabled=progress, every_s=5.0)

    def one(entry: dict[str, Any]) -> None:
        rel_path = entry["path"]
        target = safe_join(out, rel_path)
        if target.is_file() and check_file(out, entry) is None:
            bar.update(entry["bytes"])
            with lock:
                report.skipped.append(rel_path)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        if part.exists() and part.stat().st_size > entry["bytes"]:  # cannot be a prefix of the file
            part.unlink()
        if part.exists():
            bar.update(part.stat().st_size)
        src = child_url(base, rel_path)
        attempts = [0]
        why = ""

        def discard() -> None:
            if part.exists():
                bar.update(-part.stat().st_size)
                part.unlink()

        for round_ in (1, 2):  # round 2: once more from scratch after a bad file
            try:
                n = with_retries(lambda: fetcher.fetch(src, part, entry["bytes"], bar.update),
                                  rel_path, retries, backoff_s, attempts, stop)
                with lock:
                    report.bytes_fetched += n
            except Short as exc:
                why = str(exc)
                discard()
                continue
            except TooLong as exc:  # not the file release.json lists: keep none of it, fetch it no more
                why = str(exc)
                discard()
                break
            except Permanent as exc:  # missing (404), forbidden: another round will not help
                why = str(exc)
                break
            except DownloadError as exc:  # retries used up: keep the .part to resume next time
                why = str(exc)
                break
            size = part.stat().st_size
            if size != entry["bytes"]:
                why = f"size {size} != {entry['bytes']} bytes"
            elif sha256_file(part) != entry["sha256"]:
                why = "sha256 mismatch"
            else:
                problems = tar_problems(part) if target.name.endswith(".tar") else []
                if problems:
                    discard()
                    why = "refused: unsafe tar: " + "; ".join(problems[:3])
                    break
                os.replace(part, target)
                with lock:
                    report.fetched.append(rel_path)
                    report.attempts[rel_path] = attempts[0]
                    if round_ == 2:
                        report.refetched.append(rel_path)
                return
            discard()
            log.warning("%s: %s%s", rel_path, why, "; fetching again from scratch" if round_ == 1 else "")
        with lock:
            report.failed[rel_path] = why
            report.attempts[rel_path] = attempts[0]

    def guarded(entry: dict[str, Any]) -> None:
        try:
            one(entry)
        except OSError as exc:  # a disk that takes no file stops everything; other trouble fails this file
            if is_local_disk_error(exc):
                raise
            with lock:
                report.failed[entry["path"]] = f"{type(exc).__name__}: {exc}"

    try:
        run_parallel(entries, guarded, jobs, stop)
    finally:
        bar.close()
    write_bytes_atomic(out / RELEASE_JSON, raw if isinstance(raw, bytes) else raw.encode())

    selection = {"source": url, "langs": langs, "formats": formats}
    write_bytes_atomic(out / SELECTION_JSON, (json.dumps(selection, indent=2) + "\n").encode())
    for lst in (report.fetched, report.skipped, report.refetched):
        lst.sort()
    return report


__all__ = ["DownloadError", "DownloadReport", "NotARelease", "UnsafePathError", "describe_connection_error",
           "download_release", "release_url"]
