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
* **Resumable**: an interrupted transfer keeps its ``.part``; the next attempt (a retry, or
  the next run of the command) asks for the rest with an HTTP ``Range`` request (or a
  seek, for fsspec sources). A server that ignores Range is read from the start.
* **Retries**: connection errors, timeouts, truncated bodies, HTTP 429 and 5xx are retried
  with exponential backoff (``backoff_s * 2**k``, at most 30 s); other 4xx (404: missing
  shard) fail that file at once. Other files go on; the report lists what failed.
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
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import quote, urlsplit

import requests
import urllib3

from granary_pipe.io.parallel import Stopped, is_local_disk_error, run_parallel
from granary_pipe.progress import Progress
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

CHUNK_BYTES = 1 << 16
MAX_BACKOFF_S = 30.0


class DownloadError(RuntimeError):
    """A file could not be fetched (after retries)."""


class _Permanent(DownloadError):
    """Not worth retrying (HTTP 4xx, file not found)."""


class _Short(_Permanent):
    """The source holds fewer bytes than release.json lists (truncated file)."""


class _Transient(DownloadError):
    """Worth retrying (connection dropped, timeout, 5xx, short body)."""


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


def describe_connection_error(exc: Exception, url: str | None = None) -> str:
    """One line for a ``requests`` connection error or timeout: the URL and the socket's reason
    (``cannot connect to http://host:8000/release.json: connection refused``)."""
    url = url or getattr(getattr(exc, "request", None), "url", None) or "the server"
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    reason = m[1].strip() if m else ("timed out" if isinstance(exc, requests.Timeout) else type(exc).__name__)
    return f"cannot connect to {url}: {reason.lower()}"


def _is_http(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


def _child_url(base: str, rel: str) -> str:
    return base + "/" + (quote(rel, safe="/") if _is_http(base) else rel)


class _Fetcher:
    """Fetches one URL into a ``.part`` file, resuming from its current size."""

    def __init__(self, timeout_s: float, stop: threading.Event | None = None) -> None:
        self.timeout_s = timeout_s
        self.stop = stop or threading.Event()
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def read_bytes(self, url: str) -> bytes:
        """The whole resource (release.json)."""
        if _is_http(url):
            try:
                r = self._session().get(url, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise _Transient(describe_connection_error(exc, url)) from exc
            _raise_for_status(r)
            return r.content
        import fsspec

        try:
            with fsspec.open(url, "rb") as fh:
                return fh.read()
        except FileNotFoundError as exc:
            raise _Permanent(f"not found: {url}") from exc
        except OSError as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc

    def fetch(self, url: str, part: Path, size: int, progress: Callable[[int], None]) -> int:
        """Append the rest of ``url`` to ``part``; return how many bytes were written."""
        offset = part.stat().st_size if part.exists() else 0
        if offset > size:  # cannot be a prefix of the right file
            part.unlink()
            progress(-offset)
            offset = 0
        if offset == size and size > 0:
            return 0
        if _is_http(url):
            return self._fetch_http(url, part, offset, size, progress)
        return self._fetch_fsspec(url, part, offset, size, progress)

    def _fetch_http(self, url: str, part: Path, offset: int, size: int,
                    progress: Callable[[int], None]) -> int:
        headers = {"Accept-Encoding": "identity"}  # the file's bytes, so Range offsets and sha256 hold
        if offset:
            headers["Range"] = f"bytes={offset}-"
        written = 0
        try:
            with self._session().get(url, headers=headers, stream=True, timeout=self.timeout_s) as r:
                if r.status_code == 416:
                    raise _Short(f"server has no bytes past {offset} (HTTP 416): the file there is "
                                     f"shorter than the {size} bytes release.json lists")
                _raise_for_status(r)
                mode = "ab"
                if offset and r.status_code != 206:  # Range ignored: whole file again
                    progress(-offset)
                    mode, offset = "wb", 0
                elif offset and not r.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                    raise _Transient(f"unexpected Content-Range {r.headers.get('Content-Range')!r} "
                                     f"for a request from byte {offset}")
                with open(part, mode) as fh:
                    for chunk in _iter_body(r):
                        if self.stop.is_set():
                            raise Stopped
                        fh.write(chunk)
                        written += len(chunk)
                        progress(len(chunk))
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError, OSError) as exc:
            if is_local_disk_error(exc):
                raise
            raise _Transient(f"{type(exc).__name__} after {offset + written} bytes: {exc}") from exc
        got = offset + written
        if got < size:
            raise _Transient(f"connection ended after {got} of {size} bytes")
        return written

    def _fetch_fsspec(self, url: str, part: Path, offset: int, size: int,
                      progress: Callable[[int], None]) -> int:
        import fsspec

        written = 0
        try:
            with fsspec.open(url, "rb") as src, open(part, "ab") as fh:
                if offset:
                    src.seek(offset)
                for chunk in iter(lambda: src.read(CHUNK_BYTES), b""):
                    if self.stop.is_set():
                        raise Stopped
                    fh.write(chunk)
                    written += len(chunk)
                    progress(len(chunk))
        except FileNotFoundError as exc:
            raise _Permanent(f"not found: {url}") from exc
        except OSError as exc:
            if is_local_disk_error(exc):
                raise
            raise _Transient(f"{type(exc).__name__} after {offset + written} bytes: {exc}") from exc
        if offset + written < size:
            raise _Short(f"source has {offset + written} bytes, release.json lists {size}")
        return written


def _iter_body(r: requests.Response) -> Iterator[bytes]:
    """The response body as it arrives. ``read1`` hands over every byte received before a
    dropped connection (``iter_content`` loses the last partial chunk), so a resumed
    transfer continues exactly where the bytes on disk end."""
    read1 = getattr(r.raw, "read1", None)
    if read1 is None:  # urllib3 < 2.3
        yield from r.iter_content(CHUNK_BYTES)
        return
    while True:
        chunk = read1(CHUNK_BYTES, decode_content=False)
        if not chunk:
            return
        yield chunk


def _raise_for_status(r: requests.Response) -> None:
    code = r.status_code
    if code == 429 or code >= 500:
        raise _Transient(f"HTTP {code} from {r.url}")
    if code == 404:
        raise _Permanent(f"not found (HTTP 404): {r.url}")
    if code >= 400:
        raise _Permanent(f"HTTP {code} from {r.url}")


def _with_retries(fn: Callable[[], Any], what: str, retries: int, backoff_s: float,
                  attempts: list[int], stop: threading.Event | None = None) -> Any:
    k = 0
    while True:
        if stop is not None and stop.is_set():
            raise Stopped
        attempts[0] += 1
        try:
            return fn()
        except _Transient as exc:
            if k >= retries:
                raise DownloadError(f"{exc} (gave up after {retries} retries)") from exc
            delay = min(MAX_BACKOFF_S, backoff_s * 2 ** k)
            log.info("%s: %s; retrying in %.1f s", what, exc, delay)
            if stop is not None:
                if stop.wait(delay):
                    raise Stopped from None
            else:
                time.sleep(delay)
            k += 1


def read_release(source: str | os.PathLike, *, retries: int = 5, backoff_s: float = 0.5,
                 timeout_s: float = 60.0) -> dict[str, Any]:
    """The checked ``release.json`` at ``source`` (URL or path), with the retries of
    :func:`download_release`; nothing is written. Raises :class:`DownloadError` when it cannot be read."""
    url = release_url(source)
    fetcher = _Fetcher(timeout_s, threading.Event())
    return load_release_json(_with_retries(lambda: fetcher.read_bytes(url), url, retries, backoff_s, [0]))


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
        formats: only these formats (``parquet``, ``wds``, ``nemo``, ``lhotse``; None: all
            the release has). ATTRIBUTION.md and README.md are always fetched.
        retries: retries per file on transient errors (connection, timeout, 429, 5xx).
        backoff_s: first retry delay; doubles each retry, capped at 30 s.
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
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    url = release_url(source)
    base = url.rsplit("/", 1)[0] if "/" in url else "."
    stop = threading.Event()
    fetcher = _Fetcher(timeout_s, stop)
    raw = _with_retries(lambda: fetcher.read_bytes(url), url, retries, backoff_s, [0])
    rel = load_release_json(raw)  # UnsafePathError before anything is written
    langs = sorted(set(langs)) if langs is not None else None
    formats = sorted(set(formats)) if formats is not None else None
    have_langs = sorted({s.get("lang") for s in rel["shards"]})
    have_formats = sorted({s.get("format") for s in rel["shards"]})
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
        if part.exists():
            bar.update(part.stat().st_size)
        src = _child_url(base, rel_path)
        attempts = [0]
        why = ""

        def discard() -> None:
            if part.exists():
                bar.update(-part.stat().st_size)
                part.unlink()

        for round_ in (1, 2):  # round 2: once more from scratch after a bad file
            try:
                n = _with_retries(lambda: fetcher.fetch(src, part, entry["bytes"], bar.update),
                                  rel_path, retries, backoff_s, attempts, stop)
                with lock:
                    report.bytes_fetched += n
            except _Short as exc:
                why = str(exc)
                discard()
                continue
            except _Permanent as exc:  # missing (404), forbidden: another round will not help
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
    _write_atomic(out / RELEASE_JSON, raw if isinstance(raw, bytes) else raw.encode())

    selection = {"source": url, "langs": langs, "formats": formats}
    _write_atomic(out / SELECTION_JSON, (json.dumps(selection, indent=2) + "\n").encode())
    for lst in (report.fetched, report.skipped, report.refetched):
        lst.sort()
    return report


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


__all__ = ["DownloadError", "DownloadReport", "UnsafePathError", "download_release", "release_url"]
