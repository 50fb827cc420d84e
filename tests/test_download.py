"""``granary download`` / ``granary verify`` against a real HTTP server on loopback.

The server (a threaded ``http.server`` subclass started here) serves a release directory,
supports ``Range: bytes=N-`` and injects faults per path: drop the connection after N bytes,
corrupt the body, answer 500 or 404, ignore ``Range`` (200 and the whole file), or serve a
truncated file.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import socket
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from granary_pipe.io.download import DownloadError, download_release
from granary_pipe.io.release import build_release
from granary_pipe.io.verify import UnsafePathError, tar_problems, verify_release

try:
    from tests.helpers_http import serving
    from tests.helpers_rundir import make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_http import serving
    from helpers_rundir import make_run

FAST = {"backoff_s": 0.01, "progress": False, "timeout_s": 10}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        srv: FaultyServer = self.server  # type: ignore[assignment]
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((rel, rng))
            queue = srv.faults.get(rel) or []
            fault = queue.pop(0) if queue else None
        path = srv.root / rel
        if fault == "404" or not path.is_file():
            return self._plain(404, b"not found")
        if fault == "500":
            return self._plain(500, b"boom")
        data = path.read_bytes()
        if rel in srv.truncated:
            data = data[: srv.truncated[rel]]
        if fault == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        if fault == "ignore_range":  # as a server without Range support: 200 and the whole file
            rng = None
        if rng:
            assert rng.startswith("bytes=") and rng.endswith("-"), rng
            start = int(rng[len("bytes="):-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if isinstance(fault, tuple) and fault[0] == "slow":  # 1 KiB every fault[1] seconds
            for k in range(0, len(body), 1024):
                self.wfile.write(body[k:k + 1024])
                self.wfile.flush()
                time.sleep(fault[1])
            return
        if isinstance(fault, tuple) and fault[0] == "drop":  # promise everything, send fault[1] bytes
            self.wfile.write(body[: fault[1]])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def _plain(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FaultyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str | None]] = []
        self.faults: dict[str, list] = {}
        self.truncated: dict[str, int] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:  # dropped connections are on purpose
        pass

    def ranges(self, rel: str) -> list[str | None]:
        return [r for p, r in self.requests if p == rel]


def serve(root: Path):
    return serving(FaultyServer(root))


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rel") / "release"
    build_release(make_run(tmp_path_factory.mktemp("runs")), out, shard_rows=3, progress=False, formats="all")
    return out


@pytest.fixture
def server(release_dir: Path):
    with serve(release_dir) as srv:
        yield srv


def _meta(release_dir: Path) -> dict:
    return json.loads((release_dir / "release.json").read_text())


def _biggest(release_dir: Path, fmt: str = "parquet") -> dict:
    return max((s for s in _meta(release_dir)["shards"] if s["format"] == fmt), key=lambda s: s["bytes"])


def _same_files(a: Path, b: Path, paths) -> bool:
    return all((a / p).read_bytes() == (b / p).read_bytes() for p in paths)


# ------------------------------------------------------------------ happy path


def test_http_download_verifies_and_second_run_skips(release_dir, server, tmp_path):
    out = tmp_path / "dl"
    report = download_release(server.url + "/release.json", out, jobs=4, **FAST)
    meta = _meta(release_dir)
    listed = [s["path"] for s in meta["shards"] + meta["files"]]
    assert report.passed and sorted(report.fetched) == sorted(listed) and not report.skipped
    assert _same_files(release_dir, out, listed + ["release.json"])
    assert not list(out.rglob("*.part"))
    assert verify_release(out).passed
    server.requests.clear()
    again = download_release(server.url + "/", out, jobs=2, **FAST)  # directory URL works too
    assert again.passed and sorted(again.skipped) == sorted(listed) and not again.fetched
    assert [p for p, _ in server.requests] == ["release.json"]  # nothing re-downloaded


def test_progress_bar_counts_bytes(release_dir, server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GRANARY_PROGRESS", "bar")
    download_release(server.url + "/release.json", tmp_path / "dl", jobs=2,
                     **{**FAST, "progress": True}, langs=["de"], formats=["wds"])
    err = capsys.readouterr().err
    assert "download: 100%" in err and "B/s" in err  # bytes, rate and ETA


def test_progress_is_lines_when_stderr_is_not_a_terminal(release_dir, server, tmp_path, capsys):
    """Under pytest stderr is a pipe, as in CI or a Ray job: plain lines, no carriage returns."""
    download_release(server.url + "/release.json", tmp_path / "dl", jobs=2,
                     **{**FAST, "progress": True}, langs=["de"], formats=["wds"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("download: ")]
    assert lines and "\r" not in err, err
    assert re.search(r"^download: ([\d.]+) MB/\1 MB \(100%\), [\d.]+ MB/s, 0:00:\d\d elapsed, ETA 0:00:00$",
                     lines[-1]), lines


# ------------------------------------------------------------------ resume


def test_dropped_connection_resumes_with_range(release_dir, server, tmp_path):
    shard = _biggest(release_dir)
    assert shard["bytes"] > 6000
    server.faults[shard["path"]] = [("drop", 5000)]
    report = download_release(server.url + "/release.json", tmp_path / "dl", jobs=2, retries=3, **FAST)
    assert report.passed and shard["path"] in report.fetched and report.attempts[shard["path"]] == 2
    assert server.ranges(shard["path"]) == [None, "bytes=5000-"]
    assert (tmp_path / "dl" / shard["path"]).read_bytes() == (release_dir / shard["path"]).read_bytes()


def test_killed_download_resumes_from_part_file_on_next_run(release_dir, server, tmp_path):
    shard = _biggest(release_dir)
    out = tmp_path / "dl"
    server.faults[shard["path"]] = [("drop", 4096)]
    first = download_release(server.url + "/release.json", out, retries=0, **FAST)
    assert list(first.failed) == [shard["path"]] and "after 4096 bytes" in first.failed[shard["path"]]
    part = out / (shard["path"] + ".part")
    assert part.stat().st_size == 4096  # kept for the next run
    assert verify_release(out).missing == [shard["path"]]
    second = download_release(server.url + "/release.json", out, **FAST)
    assert second.passed and second.fetched == [shard["path"]]
    assert second.bytes_fetched == shard["bytes"] - 4096  # only the rest came over the wire
    assert server.ranges(shard["path"])[-1] == "bytes=4096-"
    assert not part.exists() and verify_release(out).passed


def test_server_ignoring_range_restarts_the_file_cleanly(release_dir, server, tmp_path):
    """A partial ``.part`` on disk, a server that answers the ranged request with 200 and the whole
    file: the file is written again from byte 0 (not appended to the partial one), verified at
    once, no second round. The partial bytes here are not the file's, so appending would fail the
    checksum."""
    shard = _biggest(release_dir)
    out = tmp_path / "dl"
    part = out / (shard["path"] + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\xff" * 3000)
    server.faults[shard["path"]] = ["ignore_range"]
    report = download_release(server.url + "/release.json", out, **FAST)
    assert report.passed and shard["path"] in report.fetched and not report.refetched, report.summary()
    assert server.ranges(shard["path"]) == ["bytes=3000-"]  # asked for the rest, got the whole file once
    assert report.attempts[shard["path"]] == 1
    assert (out / shard["path"]).read_bytes() == (release_dir / shard["path"]).read_bytes()
    assert not part.exists() and verify_release(out).passed


# ------------------------------------------------------------------ bad bytes


def test_corrupted_shard_is_refetched_from_scratch(release_dir, server, tmp_path):
    shard = _biggest(release_dir, "wds")
    server.faults[shard["path"]] = ["corrupt"]
    report = download_release(server.url + "/release.json", tmp_path / "dl", **FAST)
    assert report.passed and report.refetched == [shard["path"]]
    assert server.ranges(shard["path"]) == [None, None]  # second fetch from byte 0
    assert verify_release(tmp_path / "dl").passed


def test_corrupted_twice_is_reported(release_dir, server, tmp_path):
    shard = _biggest(release_dir, "nemo")
    server.faults[shard["path"]] = ["corrupt", "corrupt"]
    report = download_release(server.url + "/release.json", tmp_path / "dl", **FAST)
    assert report.failed == {shard["path"]: "sha256 mismatch"}
    assert not (tmp_path / "dl" / shard["path"]).exists()
    assert not list((tmp_path / "dl").rglob("*.part"))
    assert len(report.fetched) == len(_meta(release_dir)["shards"]) + 2 - 1  # the others are there


def test_truncated_shard_on_server_is_reported(release_dir, server, tmp_path):
    shard = _biggest(release_dir, "lhotse_shar")
    server.truncated[shard["path"]] = shard["bytes"] // 2
    report = download_release(server.url + "/release.json", tmp_path / "dl", retries=2, **FAST)
    assert list(report.failed) == [shard["path"]]
    assert "shorter than the" in report.failed[shard["path"]]
    assert len(server.ranges(shard["path"])) >= 4  # two rounds, each resumed once, then refused
    assert not (tmp_path / "dl" / shard["path"]).exists()


def test_server_error_is_retried_with_backoff(release_dir, server, tmp_path):
    shard = _biggest(release_dir)
    server.faults[shard["path"]] = ["500", "500"]
    server.faults["release.json"] = ["500"]
    report = download_release(server.url + "/release.json", tmp_path / "dl", retries=3, **FAST)
    assert report.passed and report.attempts[shard["path"]] == 3


def test_missing_shard_names_it_and_others_still_download(release_dir, server, tmp_path):
    shard = _biggest(release_dir, "parquet")
    server.faults[shard["path"]] = ["404"] * 5
    out = tmp_path / "dl"
    report = download_release(server.url + "/release.json", out, jobs=3, **FAST)
    assert list(report.failed) == [shard["path"]] and "404" in report.failed[shard["path"]]
    assert server.ranges(shard["path"]) == [None]  # a 404 is not retried
    assert len(report.fetched) == len(_meta(release_dir)["shards"]) + 2 - 1
    assert shard["path"] in report.summary()
    v = verify_release(out)
    assert v.missing == [shard["path"]] and not v.bad


def test_unreachable_source_is_an_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="gave up after 1 retries"):
        download_release(f"http://127.0.0.1:{port}/release.json", tmp_path / "dl", retries=1, **FAST)


# ------------------------------------------------------------------ safety


def _tampered_copy(release_dir: Path, dst: Path) -> tuple[Path, dict]:
    shutil.copytree(release_dir, dst)
    return dst, _meta(dst)


def _write_meta(rel: Path, meta: dict) -> None:
    (rel / "release.json").write_text(json.dumps(meta, indent=2))


def _evil_tar(member_name: str, kind: str = "file") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ok = tarfile.TarInfo("good.flac")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"abc"))
        info = tarfile.TarInfo(member_name)
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return buf.getvalue()


@pytest.mark.parametrize("name, kind", [("../evil", "file"), ("/abs/evil", "file"), ("link.flac", "symlink")])
def test_tar_with_unsafe_member_is_refused(release_dir, tmp_path, name, kind):
    rel, meta = _tampered_copy(release_dir, tmp_path / "evil-release")
    shard = next(s for s in meta["shards"] if s["format"] == "wds")
    data = _evil_tar(name, kind)
    (rel / shard["path"]).write_bytes(data)
    shard.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))  # the publisher signed it
    _write_meta(rel, meta)
    out = tmp_path / "area" / "dl"
    with serve(rel) as srv:
        report = download_release(srv.url + "/release.json", out, **FAST)
    why = report.failed[shard["path"]]
    assert list(report.failed) == [shard["path"]] and why.startswith("refused: unsafe tar")
    assert repr(name) in why
    assert not (out / shard["path"]).exists() and not list(out.rglob("*.part"))
    assert sorted(p.name for p in (tmp_path / "area").iterdir()) == ["dl"]  # nothing beside DIR
    assert not (tmp_path / "evil").exists()
    (out / shard["path"]).write_bytes(data)  # and verify flags such a tar if one is put there
    assert "unsafe tar" in verify_release(out).bad[shard["path"]]


@pytest.mark.parametrize("bad_path", ["../x", "/tmp/x", "wds/../../x", "a//b", "C:/x", "wds\\..\\x"])
def test_release_json_path_escaping_dir_is_refused(release_dir, tmp_path, bad_path):
    rel, meta = _tampered_copy(release_dir, tmp_path / "evil-release")
    meta["shards"][0]["path"] = bad_path
    _write_meta(rel, meta)
    out = tmp_path / "area" / "dl"
    with serve(rel) as srv, pytest.raises(UnsafePathError, match="unsafe path"):
        download_release(srv.url + "/release.json", out, **FAST)
    assert not (tmp_path / "area").exists()  # refused before anything was written
    assert not (tmp_path / "x").exists()


def test_release_json_listing_a_path_twice_is_refused(release_dir, tmp_path):
    rel, meta = _tampered_copy(release_dir, tmp_path / "evil-release")
    meta["shards"][1]["path"] = meta["shards"][0]["path"].upper()
    _write_meta(rel, meta)
    with pytest.raises(ValueError, match="twice"):
        download_release(str(rel), tmp_path / "dl", **FAST)
    assert not (tmp_path / "dl").exists()


def test_symlinked_subdir_leading_outside_is_refused(release_dir, server, tmp_path):
    out = tmp_path / "dl"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / "wds").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match="resolves outside"):
        download_release(server.url + "/release.json", out, **FAST)
    assert not any((tmp_path / "elsewhere").iterdir())


def test_tar_problems_on_release_tars_is_empty(release_dir):
    for tar in release_dir.rglob("*.tar"):
        assert tar_problems(tar) == [], tar


# ------------------------------------------------------------------ filters, verify, fsspec


def test_lang_and_format_filters(release_dir, server, tmp_path):
    out = tmp_path / "dl"
    report = download_release(server.url + "/release.json", out, langs=["de"], formats=["parquet", "nemo"], **FAST)
    meta = _meta(release_dir)
    want = [s["path"] for s in meta["shards"] if s["lang"] == "de" and s["format"] in ("parquet", "nemo")]
    assert report.passed and sorted(report.fetched) == sorted(want + ["ATTRIBUTION.md", "README.md"])
    assert not (out / "parquet" / "en").exists() and not (out / "wds").exists()
    assert json.loads((out / "download.json").read_text())["langs"] == ["de"]
    assert verify_release(out).passed  # checks what was downloaded
    full = verify_release(out, langs=["de", "en"], formats=["parquet"])
    assert not full.passed and all(p.startswith("parquet/en/") for p in full.missing)
    with pytest.raises(ValueError, match="no language"):
        download_release(server.url + "/release.json", out, langs=["fr"], **FAST)
    with pytest.raises(ValueError, match="no format"):
        download_release(server.url + "/release.json", out, formats=["tfrecord"], **FAST)


def test_verify_detects_flipped_byte_and_download_repairs_it(release_dir, server, tmp_path):
    out = tmp_path / "dl"
    assert download_release(server.url + "/release.json", out, **FAST).passed
    shard = _biggest(release_dir, "parquet")
    target = out / shard["path"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    report = verify_release(out)
    assert report.bad == {shard["path"]: "sha256 mismatch"} and not report.missing
    (out / "README.md").unlink()
    assert verify_release(out).missing == ["README.md"]
    repair = download_release(server.url + "/release.json", out, **FAST)
    assert sorted(repair.fetched) == sorted([shard["path"], "README.md"])
    assert verify_release(out).passed


def test_verify_without_release_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="release.json"):
        verify_release(tmp_path)


@pytest.mark.parametrize("form", ["dir", "path", "file_url", "memory"])
def test_fsspec_and_local_sources(release_dir, tmp_path, form):
    if form == "dir":
        source = str(release_dir)
    elif form == "path":
        source = str(release_dir / "release.json")
    elif form == "file_url":
        source = (release_dir / "release.json").as_uri()
    else:
        import fsspec  # a dependency of the package (remote sources and releases)

        mem = fsspec.filesystem("memory")
        for p in release_dir.rglob("*"):
            if p.is_file():
                mem.pipe(f"/granary-test/{p.relative_to(release_dir).as_posix()}", p.read_bytes())
        source = "memory://granary-test/release.json"
    out = tmp_path / "dl"
    report = download_release(source, out, jobs=2, **FAST)
    assert report.passed and verify_release(out).passed
    meta = _meta(release_dir)
    assert _same_files(release_dir, out, [s["path"] for s in meta["shards"]])
    if form == "path":  # resume through a seek: a partial .part continues
        shard = _biggest(release_dir)
        (out / shard["path"]).unlink()
        (out / (shard["path"] + ".part")).write_bytes((release_dir / shard["path"]).read_bytes()[:1000])
        again = download_release(source, out, **FAST)
        assert again.fetched == [shard["path"]] and again.bytes_fetched == shard["bytes"] - 1000


# ------------------------------------------------------------------ CLI


def test_cli_download_and_verify_exit_codes(release_dir, server, tmp_path, capsys):
    from granary_pipe.cli import main

    shard = _biggest(release_dir, "wds")
    server.faults[shard["path"]] = ["404"]
    out = tmp_path / "dl"
    assert main(["download", server.url + "/release.json", "--out", str(out), "--jobs", "2", "-q"]) == 1
    assert shard["path"] in capsys.readouterr().err
    assert main(["verify", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"missing: {shard['path']}" in err
    assert main(["download", server.url + "/release.json", "--out", str(out), "-q"]) == 0
    assert main(["verify", str(out)]) == 0
    assert main(["download", server.url + "/release.json", "--out", str(tmp_path / "de"), "-q",
                 "--lang", "de", "--formats", "parquet"]) == 0
    assert sorted(p.name for p in (tmp_path / "de").glob("*/*")) == ["de"]


def test_cli_refuses_escaping_release_json(release_dir, tmp_path, capsys):
    from granary_pipe.cli import main

    rel, meta = _tampered_copy(release_dir, tmp_path / "evil-release")
    meta["shards"][0]["path"] = "../x"
    _write_meta(rel, meta)
    assert main(["download", str(rel), "--out", str(tmp_path / "dl"), "-q"]) == 2
    assert "unsafe path '../x'" in capsys.readouterr().err


def test_ctrl_c_stops_transfers_at_once_and_starts_no_queued_file(release_dir, server, tmp_path):
    """Every shard is served slowly; Ctrl-C during the first transfers: exit 130 within 2 s with one
    line, no queued file requested, the partial file kept for the next run to resume."""
    import signal
    import subprocess
    import sys

    meta = _meta(release_dir)
    for entry in meta["shards"] + meta["files"]:
        server.faults[entry["path"]] = [("slow", 0.2)]
    out = tmp_path / "dl"
    proc = subprocess.Popen([sys.executable, "-m", "granary_pipe.cli", "download", server.url + "/release.json",
                             "--out", str(out), "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(out.rglob("*.part")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if not list(out.rglob("*.part")):  # say why: the download ended (its stderr) or never started one
            ended = proc.poll() is not None
            why = f"the download exited {proc.returncode}: {proc.communicate()[1][-2000:]}" if ended else "60 s passed"
            raise AssertionError(f"no transfer started ({why})")
        t0 = time.monotonic()
        asked_before = len(server.requests)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        stop_s = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert stop_s < 2.5, f"took {stop_s:.1f} s to stop"
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "granary download: interrupted", err
    time.sleep(0.5)  # a request sent just before exit would show up by now
    late = server.requests[asked_before:]
    assert len(late) <= 2, f"files started after Ctrl-C (2 jobs may have been picking one up): {late}"
    assert len(server.requests) < len(meta["shards"]), "the download ran to the end"
    assert list(out.rglob("*.part")), "the partial transfer should stay to be resumed"
