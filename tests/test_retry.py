"""The one retry policy (``granary_pipe.retry``): exponential backoff with jitter, capped, and
urllib3's Retry under it (a real HTTP server that fails, then answers)."""

from __future__ import annotations

import http.server
import threading

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPResponse

from granary_pipe.retry import backoff_delay, http_retry


def test_backoff_doubles_is_capped_and_jittered():
    for retry, base in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 5.0)]:
        delays = [backoff_delay(retry, 1.0, 5.0) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays)
        assert len(set(delays)) > 1


def test_http_retry_waits_the_policy_and_caps_retry_after():
    policy = http_retry(3, 1.0, 5.0)
    assert policy.get_backoff_time() == 0.0  # nothing failed yet
    once = policy.increment("POST", "/x", response=HTTPResponse(status=503))
    assert 0.5 <= once.get_backoff_time() <= 1.0  # the first retry waits too
    twice = once.increment("POST", "/x", response=HTTPResponse(status=503))
    assert 1.0 <= twice.get_backoff_time() <= 2.0
    assert policy.get_retry_after(HTTPResponse(headers={"Retry-After": "3"})) == 3.0
    assert policy.get_retry_after(HTTPResponse(headers={"Retry-After": "600"})) == 5.0
    assert policy.get_retry_after(HTTPResponse(headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0


def test_a_post_is_retried_after_5xx_and_the_last_answer_returned_when_retries_are_spent():
    hits: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            hits.append(1)
            status = 200 if len(hits) == 3 else 502
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        for retries, want in ((2, 200), (0, 502)):
            hits.clear()
            with requests.Session() as session:
                session.mount("http://", HTTPAdapter(max_retries=http_retry(retries, 0.01, 0.05)))
                assert session.post(url, json={}, timeout=5).status_code == want
            assert len(hits) == retries + 1
    finally:
        server.shutdown()
        server.server_close()
