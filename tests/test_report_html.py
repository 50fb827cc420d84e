"""The HTML report: one self-contained file, every section, escaped data, rendered in real Chromium.

The browser is Debian's ``chromium`` (``make setup`` installs it), driven over the Chrome
DevTools Protocol with ``websocket-client``: console errors, uncaught exceptions, failed or
external requests and JavaScript dialogs are collected while the page loads, then a
full-page screenshot is taken. No Chromium means a failure, not a skip.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from granary_pipe.io.release import build_release
from granary_pipe.report.html import retention, write_html
from granary_pipe.report.summary import summarize

try:
    from tests.helpers_rundir import DEFAULT_UNITS, PIPELINE, Row, make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import DEFAULT_UNITS, PIPELINE, Row, make_run

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
HOSTILE = {
    **DEFAULT_UNITS,
    "u000009": [
        Row("evil-s000", "evil", "en", 1.2, drop_reason="hallucination:phrase", text=SCRIPT, license=IMG,
            ref_text=f"They typed {SCRIPT} into the form."),
        Row("evil-s001", "evil", "en", 0.9, drop_reason="filter:$\\alpha$<b>x</b>", text=IMG + " $x$"),
        Row("evil-s002", "evil", "en", 1.1, drop_reason="mystery:rule", text="unknown prefix"),
    ],
}
SECTIONS = ["summary", "languages", "retention", "rejections", "rules", "distributions", "licenses", "examples"]
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-port=0"]


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.style += data


# ---------------------------------------------------------------- a tiny CDP client


def chromium_path() -> str:
    exe = os.environ.get("GRANARY_CHROMIUM") or next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None)
    if not exe:
        pytest.fail("Chromium is not installed: run the test set-up (`make setup`, i.e. "
                    "`apt-get install -y chromium`) or set GRANARY_CHROMIUM to a Chromium binary", pytrace=False)
    return exe


class Browser:
    """Headless Chromium over the DevTools Protocol: load a page, collect its errors, screenshot it."""

    def __init__(self, workdir: Path, width: int = 1200) -> None:
        import websocket  # websocket-client

        self.width = width
        profile = workdir / "chromium-profile"
        self._log = open(workdir / "chromium.log", "wb")
        self.proc = subprocess.Popen([chromium_path(), *BROWSER_FLAGS, f"--user-data-dir={profile}",
                                      f"--window-size={width},900", "about:blank"],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"Chromium did not start; its log: {(workdir / 'chromium.log').read_text()[-2000:]}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            page = next(t for t in json.load(resp) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self._id, self.events = 0, []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)
            if msg.get("method") == "Page.javascriptDialogOpening":  # never leave a page blocked
                self.ws.send(json.dumps({"id": 0, "method": "Page.handleJavaScriptDialog",
                                         "params": {"accept": True}}))

    def load(self, path: Path) -> list[str]:
        """Open ``path``; return the problems seen while it loaded (empty: a clean page)."""
        self.events = []
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=900, deviceScaleFactor=1,
                  mobile=False)
        self.send("Page.navigate", url=path.resolve().as_uri())
        deadline = time.monotonic() + 20
        while not any(ev.get("method") == "Page.loadEventFired" for ev in self.events):
            assert time.monotonic() < deadline, "page did not load in 20 s"
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
        self.send("Runtime.evaluate", expression="1")  # let pending console events arrive
        return self.problems()

    def problems(self) -> list[str]:
        out = []
        for ev in self.events:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
                out.append(f"console.{p['type']}: {[a.get('value') for a in p.get('args', [])]}")
            elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                out.append(f"log {p['entry']['level']}: {p['entry']['text']} {p['entry'].get('url', '')}")
            elif m == "Network.loadingFailed":
                out.append(f"load failed: {p.get('errorText')}")
            elif m == "Network.requestWillBeSent" and not p["request"]["url"].startswith(("file:", "data:")):
                out.append(f"request: {p['request']['url']}")
            elif m == "Page.javascriptDialogOpening":
                out.append(f"dialog: {p.get('message')}")
        return out

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self, out: Path) -> Path:
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1})
        out.write_bytes(base64.b64decode(shot["data"]))
        return out

    def close(self) -> None:
        try:
            if getattr(self, "ws", None):
                self.ws.send(json.dumps({"id": -1, "method": "Browser.close"}))  # lets Chromium end its helpers
                self.ws.close()
        except Exception:  # noqa: BLE001 - the browser may be gone already
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("html-run"), HOSTILE, counts=True)


@pytest.fixture(scope="module")
def page_path(run_dir, tmp_path_factory) -> Path:
    return write_html(run_dir, tmp_path_factory.mktemp("html-out") / "report.html")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("browser"))
    yield b
    b.close()


# ---------------------------------------------------------------- static checks


def test_one_self_contained_file(page_path):
    assert [p.name for p in page_path.parent.iterdir()] == ["report.html"]
    page = page_path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "@import" not in page
    assert not re.search(r"url\(\s*['\"]?(?!#)", page), "url() to something other than an in-page id"
    parsed = _Tags()
    parsed.feed(page)
    names = {t for t, _ in parsed.tags}
    assert not names & {"script", "img", "link", "iframe", "object", "embed", "audio", "video", "source", "base"}
    for tag, attrs in parsed.tags:
        assert not set(attrs) & {"src", "srcset", "action", "poster", "data"}, (tag, attrs)
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
        for key in ("href", "xlink:href"):
            assert attrs.get(key) is None or attrs[key].startswith("#"), (tag, attrs)


def test_all_sections_and_plots(page_path):
    page = page_path.read_text(encoding="utf-8")
    for sid in SECTIONS:
        assert f'<section id="{sid}"' in page, sid
    assert page.count("<svg") == 7  # languages, retention, reasons, 3 histograms, licenses
    assert "rows in = kept + rejected: 25 = 14 + 11" in page and "✓" in page
    for needle in ("Retention per stage", "Audio per language", "License mix", "lang_prob", "CC-BY-NC-4.0",
                   "u000003: RuntimeError: worker died", "segment.silero", "audio.decode", "(not counted)"):
        assert needle in page, needle


def test_every_rule_measured_table(page_path):
    """The per-rule table: every counted rule (declared ones at 0 too), rows rejected, flagged, and against
    the reference, good rows among the rejected ones (the false-reject rate)."""
    page = page_path.read_text(encoding="utf-8")
    section = page.split('<section id="rules">', 1)[1].split("</section>", 1)[0]
    assert "<h2>Every rule measured</h2>" in section and "false-reject rate" in section
    rows = {m.group(1): m.group(0) for m in re.finditer(r"<tr><td>([^<]+)</td>.*?</tr>", section)}
    assert {"license", "segment:no_speech", "decode_error", "filter:empty_text", "hallucination:phrase",
            "mystery:rule"} <= set(rows)
    assert "<td>(not counted)</td>" in rows["mystery:rule"]
    phrase = re.findall(r"<td[^>]*>([^<]*)</td>", rows["hallucination:phrase"])
    # rule, stage, stage rows in, rejected, audio, flagged, scored, good, false-reject rate, good audio
    assert phrase[1:4] == ["filter.hallucination", "17", "1"] and phrase[6:9] == ["1", "1", "100.0%"]
    assert "Kept rows scored against reference transcripts: 0 of 14" in section


def test_hostile_strings_are_escaped(page_path):
    page = page_path.read_text(encoding="utf-8")
    assert SCRIPT not in page and "<img" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # license table, example's license, example's text
    assert page.count("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;") == 3


def test_retention_follows_the_pipeline_order(run_dir, tmp_path):
    summary = summarize(run_dir)
    ret = retention(summary)
    # every stage of the pipeline from its counters, in run.json's order, the sink last; the rejected row
    # whose reason no counter holds is charged to "(not counted)"
    assert [x["stage"] for x in ret] == ["input", *PIPELINE, "sink.write", "(not counted)"]
    assert [x["rows_dropped"] for x in ret] == [0, 1, 2, 1, 1, 0, 3, 2, 0, 0, 0, 1]
    assert [x["rows"] for x in ret] == [25, 24, 22, 21, 20, 20, 17, 15, 15, 15, 15, 14]
    assert ret[-1]["rows"] == summary["rows"]["kept"]
    assert ret[-1]["hours"] == pytest.approx(summary["hours"]["kept"])
    # a run made before counters existed: all its rejections in one line
    old = summarize(make_run(tmp_path, HOSTILE))
    assert old["counts"] is None
    assert [(x["stage"], x["rows"]) for x in retention(old)] == [("input", 25), ("(not counted)", 14)]
    assert retention(old)[-1]["hours"] == pytest.approx(old["hours"]["kept"])


def test_release_page(run_dir, tmp_path, browser):
    build_release(run_dir, tmp_path / "rel", shard_rows=3, progress=False)
    out = write_html(tmp_path / "rel", tmp_path / "rel.html")
    page = out.read_text(encoding="utf-8")
    for sid in ("summary", "languages", "licenses", "shards"):
        assert f'<section id="{sid}"' in page, sid
    assert "parquet/en/en-000000.parquet" in page and "wds/de/de-000001.tar" in page
    assert "http://" not in page and "https://" not in page
    assert browser.load(out) == []


# ---------------------------------------------------------------- in the browser


def test_renders_in_chromium_without_errors(page_path, browser, tmp_path):
    assert browser.load(page_path) == []
    dom = browser.evaluate("""JSON.stringify({
        scripts: document.scripts.length, images: document.images.length,
        sections: [...document.querySelectorAll('section')].map(s => s.id),
        svgs: [...document.querySelectorAll('svg')].map(s => Math.round(s.getBoundingClientRect().width)),
        text: document.body.innerText})""")
    dom = json.loads(dom)
    assert dom["scripts"] == 0 and dom["images"] == 0
    assert dom["sections"][:len(SECTIONS)] == SECTIONS
    assert len(dom["svgs"]) == 7 and min(dom["svgs"]) > 300  # plots laid out at a readable width
    assert SCRIPT in dom["text"] and IMG in dom["text"]  # shown as text

    png = browser.screenshot(tmp_path / "report.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    img = Image.open(io.BytesIO(data))
    assert img.width == 1200 and img.height > 2000
    pixels = np.asarray(img.convert("L"), dtype=np.float32)
    assert pixels.std() > 10 and len(np.unique(pixels)) > 50  # not blank


def test_the_harness_sees_errors(browser, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="http://127.0.0.1:9/x.png"><script>undefinedFn()</script></body></html>')
    problems = browser.load(bad)
    assert any("undefinedFn" in p for p in problems), problems
    assert any(p.startswith(("request:", "load failed:")) for p in problems), problems


def test_cli_report_html(run_dir, tmp_path, capsys):
    from granary_pipe.cli import main

    out = tmp_path / "sub" / "page.html"
    assert main(["report", str(run_dir), "--html", str(out)]) == 0
    assert '<section id="retention"' in out.read_text(encoding="utf-8")
    captured = capsys.readouterr()
    assert "rows in = kept + rejected: 25 = 14 + 11" in captured.out and str(out) in captured.err
