"""Fetch one file of a release into its ``.part`` file: HTTP(S) with ``Range`` resume, anything else through
fsspec with a seek; never more bytes than release.json lists. Errors are transient (retried) or permanent.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import quote

import requests
import urllib3

from granary_pipe.io.parallel import Stopped, is_local_disk_error
from granary_pipe.retry import RETRY_STATUS, backoff_delay

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16
MAX_BACKOFF_S = 30.0


class DownloadError(RuntimeError):
    """A file could not be fetched (after retries)."""


class Permanent(DownloadError):
    """Not worth retrying (HTTP 4xx, file not found)."""


class Short(Permanent):
    """The source holds fewer bytes than release.json lists (truncated file)."""


class TooLong(Permanent):
    """The source holds more bytes than release.json lists: not the file it lists."""


class Transient(DownloadError):
    """Worth retrying (connection dropped, timeout, 5xx, short body)."""


def describe_connection_error(exc: Exception, url: str | None = None) -> str:
    """``cannot connect to URL: REASON`` (the socket's reason) for a ``requests`` connection error or timeout."""
    url = url or getattr(getattr(exc, "request", None), "url", None) or "the server"
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    reason = m[1].strip() if m else ("timed out" if isinstance(exc, requests.Timeout) else type(exc).__name__)
    return f"cannot connect to {url}: {reason.lower()}"


def is_http(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


def child_url(base: str, rel: str) -> str:
    return base + "/" + (quote(rel, safe="/") if is_http(base) else rel)


class Fetcher:
    """Fetches one URL into a ``.part`` file, resuming from its current size."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.stop = threading.Event()  # set: every fetch in progress raises Stopped
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def read_bytes(self, url: str) -> bytes:
        """The whole of ``url`` (a small file: release.json); :class:`Transient` or :class:`Permanent` on failure."""
        if is_http(url):
            try:
                r = self._session().get(url, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise Transient(describe_connection_error(exc, url)) from exc
            _raise_for_status(r)
            return r.content
        import fsspec

        try:
            with fsspec.open(url, "rb") as fh:
                return fh.read()
        except FileNotFoundError as exc:
            raise Permanent(f"not found: {url}") from exc
        except OSError as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from exc

    def fetch(self, url: str, part: Path, size: int, progress: Callable[[int], None]) -> int:
        """Append the rest of ``url`` to ``part``, never past ``size`` bytes in all; return the bytes written.
        Raises :class:`TooLong` (more than ``size`` bytes), :class:`Short` (fewer, or HTTP 416),
        :class:`Transient` (worth a retry), :class:`Permanent` (HTTP 4xx, not found), ``Stopped`` (``stop`` set),
        or the ``OSError`` of a local disk error."""
        offset = _size(part)
        if offset > size:  # cannot be a prefix of the right file
            part.unlink()
            progress(-offset)
            offset = 0
        if offset == size and size > 0:
            return 0
        try:
            if is_http(url):
                offset, written = self._fetch_http(url, part, offset, size, progress)
            else:
                written = self._fetch_fsspec(url, part, offset, size, progress)
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # requests' errors are OSErrors too
            if is_local_disk_error(exc):
                raise
            raise Transient(f"{type(exc).__name__} after {_size(part)} bytes: {exc}") from exc
        if offset + written >= size:
            return written
        if is_http(url):
            raise Transient(f"connection ended after {offset + written} of {size} bytes")
        raise Short(f"source has {offset + written} bytes, release.json lists {size}")

    def _fetch_http(self, url: str, part: Path, offset: int, size: int,
                    progress: Callable[[int], None]) -> tuple[int, int]:
        """Where the body started in the file (``offset``, 0 when Range was ignored) and the bytes written."""
        headers = {"Accept-Encoding": "identity"}  # the file's bytes, so Range offsets and sha256 hold
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with self._session().get(url, headers=headers, stream=True, timeout=self.timeout_s) as r:
            offset = _body_offset(r, url, offset, size, progress)
            return offset, self._write(part, offset, size, _iter_body(r), progress,
                                       f"{url}: the server sends more than the {size} bytes release.json lists; "
                                       "stopped there")

    def _fetch_fsspec(self, url: str, part: Path, offset: int, size: int,
                      progress: Callable[[int], None]) -> int:
        import fsspec

        try:
            with fsspec.open(url, "rb") as src:
                if offset:
                    src.seek(offset)
                return self._write(part, offset, size, _reads(src, size + 1 - offset), progress,
                                   f"{url}: the source holds more than the {size} bytes release.json lists; "
                                   "stopped there")
        except FileNotFoundError as exc:
            raise Permanent(f"not found: {url}") from exc

    def _write(self, part: Path, offset: int, size: int, chunks: Iterable[bytes], progress: Callable[[int], None],
               too_long: str) -> int:
        """Write ``chunks`` into ``part`` from byte ``offset`` (0: rewritten), never past ``size`` bytes in all
        (else :class:`TooLong` saying ``too_long``); return the bytes written."""
        written = 0
        with open(part, "ab" if offset else "wb") as fh:
            for chunk in chunks:
                if self.stop.is_set():
                    raise Stopped
                if offset + written + len(chunk) > size:
                    raise TooLong(too_long)
                fh.write(chunk)
                written += len(chunk)
                progress(len(chunk))
        return written


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _body_offset(r: requests.Response, url: str, offset: int, size: int, progress: Callable[[int], None]) -> int:
    """Where in the file the body of ``r`` (asked from byte ``offset``) starts: ``offset``, or 0 when the
    server ignored Range. Raises when the answer cannot continue the file."""
    if r.status_code == 416:
        raise Short(f"server has no bytes past {offset} (HTTP 416): the file there is "
                    f"shorter than the {size} bytes release.json lists")
    _raise_for_status(r)
    if offset and r.status_code != 206:  # Range ignored: whole file again
        progress(-offset)
        offset = 0
    elif offset and not r.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
        raise Transient(f"unexpected Content-Range {r.headers.get('Content-Range')!r} "
                        f"for a request from byte {offset}")
    promised = _promised_total(r, offset)
    if promised is not None and promised > size:
        raise TooLong(f"{url}: the server offers {promised} bytes, release.json lists {size} bytes; not fetched")
    return offset


def _reads(src: Any, room: int) -> Iterator[bytes]:
    while room > 0 and (chunk := src.read(min(CHUNK_BYTES, room))):
        room -= len(chunk)
        yield chunk


def _promised_total(r: requests.Response, offset: int) -> int | None:
    """The file size a response announces (Content-Range's total, else from Content-Length), or None."""
    if m := re.fullmatch(r"bytes \d+-\d+/(\d+)", r.headers.get("Content-Range", "").strip()):
        return int(m[1])
    length = r.headers.get("Content-Length", "").strip()
    if not length.isdigit():
        return None
    return (offset if r.status_code == 206 else 0) + int(length)


def _iter_body(r: requests.Response) -> Iterator[bytes]:
    """The response body as it arrives: ``read1`` hands over every byte received before a dropped
    connection (``iter_content`` loses the last partial chunk), so a resume starts where the bytes end."""
    read1 = getattr(r.raw, "read1", None)
    if read1 is None:  # urllib3 < 2.3
        yield from r.iter_content(CHUNK_BYTES)
        return
    while chunk := read1(CHUNK_BYTES, decode_content=False):
        yield chunk


def _raise_for_status(r: requests.Response) -> None:
    code = r.status_code
    if code in RETRY_STATUS:
        raise Transient(f"HTTP {code} from {r.url}")
    if code == 404:
        raise Permanent(f"not found (HTTP 404): {r.url}")
    if code >= 400:
        raise Permanent(f"HTTP {code} from {r.url}")


def with_retries(fn: Callable[[], Any], what: str, retries: int, backoff_s: float,
                 attempts: list[int], stop: threading.Event | None = None) -> Any:
    """``fn()``, called again after a :class:`Transient` error up to ``retries`` times with backoff;
    ``attempts[0]`` counts the calls, ``stop`` ends it."""
    stop = stop or threading.Event()
    k = 0
    while True:
        if stop.is_set():
            raise Stopped
        attempts[0] += 1
        try:
            return fn()
        except Transient as exc:
            if k >= retries:
                raise DownloadError(f"{exc} (gave up after {retries} retries)") from exc
            delay = backoff_delay(k, backoff_s, MAX_BACKOFF_S)
            log.info("%s: %s; retrying in %.1f s", what, exc, delay)
            if stop.wait(delay):
                raise Stopped from None
            k += 1
