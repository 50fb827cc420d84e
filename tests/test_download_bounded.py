"""``granary download`` against a server that lies (a mirror must not fill the disk; release.json
and ``report``): a real ``http.server`` on loopback, the real CLI
(``granary_pipe.cli.main``), the files read back from disk.

The lying server serves a one-file release whose release.json lists ``big.bin`` at 1,000 bytes, then
sends 64 MiB for it (with a ``Content-Length`` of 64 MiB, or none at all); ``good.bin`` is honest.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from granary_pipe.cli import main

try:
    from tests.helpers_http import serving
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_http import serving

LISTED = 1000
SENT = 64 << 20
BLOCK = 1 << 16
GOOD = b"g" * 3000


class _Liar(BaseHTTPRequestHandler):
    """``/release.json`` from ``server.release``; ``/big.bin``: ``SENT`` bytes, announced per
    ``server.mode`` (``length``: ``Content-Length: SENT``; ``close``: none, the end of the body is the
    connection's); ``/good.bin``: ``GOOD``. Counts the requests for ``big.bin`` and the body bytes it
    managed to send."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        srv: _Server = self.server  # type: ignore[assignment]
        path = urlsplit(self.path).path.lstrip("/")
        if path in ("release.json", "good.bin"):
            body = srv.release if path == "release.json" else GOOD
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if path != "big.bin":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with srv.lock:
            srv.asked += 1
        self.send_response(200)
        if srv.mode == "length":
            self.send_header("Content-Length", str(SENT))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        block = b"x" * BLOCK
        try:
            for _ in range(SENT // BLOCK):
                self.wfile.write(block)
                with srv.lock:
                    srv.sent += BLOCK
        except OSError:  # the client hung up: what it wanted
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, release: bytes, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _Liar)
        self.release, self.mode, self.sent, self.asked, self.lock = release, mode, 0, 0, threading.Lock()

    def handle_error(self, request, client_address) -> None:
        pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _serve(release: bytes, mode: str = "length"):
    return serving(_Server(release, mode))


def _entry(path: str, data: bytes) -> dict:
    return {"path": path, "format": "parquet", "lang": "en", "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data), "rows": 1, "hours": 0.0}


RELEASE = json.dumps({"shards": [_entry("big.bin", b"x" * LISTED), _entry("good.bin", GOOD)], "files": []}).encode()


def _download(capsys, monkeypatch, url: str, out: Path) -> tuple[int, str, str]:
    monkeypatch.setenv("GRANARY_PROGRESS", "lines")  # as in a log: a line per progress report
    capsys.readouterr()
    code = main(["download", url, "--out", str(out), "--retries", "1"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("mode", ["length", "close"])
def test_a_server_sending_more_than_listed_is_cut_off_and_nothing_is_kept(tmp_path, capsys, monkeypatch, mode):
    out = tmp_path / "dl"
    with _serve(RELEASE, mode) as srv:
        code, _, err = _download(capsys, monkeypatch, srv.url + "/release.json", out)
        sent, asked = srv.sent, srv.asked
    assert code == 1, err
    assert asked == 1, asked  # not fetched again from scratch
    failed = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and failed[0].startswith("failed: big.bin: ") and f"{srv.url}/big.bin" in failed[0], err
    assert f"{LISTED} bytes" in failed[0], err
    assert not list(out.rglob("big.bin*")), sorted(out.rglob("*"))  # no .part, no file
    assert (out / "good.bin").read_bytes() == GOOD  # the honest file is there
    assert sent < 16 << 20, sent  # cut off: the 64 MiB were never taken (socket buffers hold a few MB)
    progress = [line for line in err.splitlines() if line.startswith("download: ")]
    assert len(progress) <= 5, progress[:10]  # a handful of lines, not one per chunk
    assert all(int(p) <= 100 for line in progress for p in re.findall(r"\((\d+)%\)", line)), progress


@pytest.mark.parametrize("body, kind", [(b"<html>mirror down</html>", "not JSON"), (b"\xff\xfe[]", "not JSON"),
                                        (b'["shards"]', "not a release's")])
def test_a_release_json_that_is_not_one_names_the_url(tmp_path, capsys, monkeypatch, body, kind):
    with _serve(body) as srv:
        code, _, err = _download(capsys, monkeypatch, srv.url + "/release.json", tmp_path / "dl")
    assert code == 2, err
    assert f"{srv.url}/release.json: not a release.json ({kind}" in err, err
    assert not (tmp_path / "dl").exists() or not any((tmp_path / "dl").iterdir())


def test_report_of_a_partial_download_says_what_is_absent(tmp_path, capsys, monkeypatch):
    out = tmp_path / "dl"
    with _serve(RELEASE) as srv:
        assert _download(capsys, monkeypatch, srv.url + "/release.json", out)[0] == 1  # big.bin failed
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "INCOMPLETE: 1 of 2 files are not here (big.bin)" in text, text
    assert main(["report", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["files_absent"], summary["files_listed"], summary["absent"]) == (1, 2, ["big.bin"])


def test_a_local_source_longer_than_listed_is_cut_off_too(tmp_path, capsys, monkeypatch):
    src = tmp_path / "mirror"
    src.mkdir()
    (src / "release.json").write_bytes(RELEASE)
    (src / "big.bin").write_bytes(b"x" * (4 << 20))  # 4 MiB where 1,000 bytes are listed
    (src / "good.bin").write_bytes(GOOD)
    code, _, err = _download(capsys, monkeypatch, str(src), tmp_path / "dl")
    assert code == 1, err
    failed = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and str(src / "big.bin") in failed[0] and f"{LISTED} bytes" in failed[0], err
    assert not list((tmp_path / "dl").rglob("big.bin*"))
    assert (tmp_path / "dl" / "good.bin").read_bytes() == GOOD
