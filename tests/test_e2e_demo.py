"""End to end: the demo pipeline through an embedded local Ray, run as a user runs it (the CLI).

One uninterrupted run of the whole demo corpus is shared by the tests of this module. Killing a
run of the full demo pipeline and resuming it (release byte-identical to an uninterrupted run's)
is tested in ``test_faults.py`` on a subset of the corpus.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from granary_pipe.io.release import build_release
from granary_pipe.report.summary import summarize
from granary_pipe.report.text import format_summary

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
DEMO_SOURCE = ROOT / "manifests" / "demo" / "demo.yaml"


def granary(*args: str, **kwargs) -> subprocess.Popen:
    """Start the ``granary`` CLI in its own process group, output to files next to --out."""
    log = kwargs.pop("log")
    return subprocess.Popen([sys.executable, "-m", "granary_pipe.cli", *args], cwd=ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True, **kwargs)


def finish(proc: subprocess.Popen, timeout: float = 400) -> int:
    """Wait for a CLI process; then clean up anything it left in its process group."""
    try:
        return proc.wait(timeout=timeout)
    finally:
        _kill_group(proc.pid)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory) -> Path:
    """The demo pipeline with smaller units, so a run has several units to kill between."""
    cfg = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    cfg["units"]["recordings_per_unit"] = 4
    path = tmp_path_factory.mktemp("cfg") / "demo-small-units.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, pipeline_file) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    proc = granary("run", str(pipeline_file), "--source", str(DEMO_SOURCE), "--out", str(out),
                   log=out.parent / "run.log")
    rc = finish(proc)
    assert rc == 0, (out.parent / "run.log").read_text()[-3000:]
    return out


def rows(run: Path, which: str) -> list[dict]:
    return [r for f in sorted(run.glob(f"units/*/{which}.parquet")) for r in pq.read_table(f).to_pylist()]


def listing() -> list[dict]:
    lines = (DEMO_SOURCE.parent / "listing.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_rows_in_equal_kept_plus_rejected(demo_run: Path):
    info = json.loads((demo_run / "run.json").read_text())
    assert info["status"] == "complete" and info["failed_units"] == []
    kept, rejected = rows(demo_run, "kept"), rows(demo_run, "rejected")
    markers = [json.loads(p.read_text()) for p in demo_run.glob("units/*/_COMMITTED")]
    assert sum(m["rows_in"] for m in markers) == len(kept) + len(rejected)
    ids = [r["id"] for r in kept + rejected]
    assert len(ids) == len(set(ids)), "a row appears twice"
    assert all(r["drop_reason"] is None for r in kept) and all(r["drop_reason"] for r in rejected)
    # every recording of the source is accounted for
    recordings = {r["recording_id"] for r in kept + rejected}
    assert len(recordings) == len(listing()) == info["source"]["recordings"]
    summary = summarize(demo_run)
    assert summary["rows"]["balanced"] and summary["recordings"]["balanced"]
    assert "rows in = kept + rejected" in format_summary(summary, color=False)


def test_progress_in_a_log_is_one_line_per_committed_unit(demo_run: Path):
    """stdout/stderr go to a file (as in CI or a Ray job): no bar, one line per unit with
    done/total, hours, speed and ETA."""
    text = (demo_run.parent / "run.log").read_text()
    units = json.loads((demo_run / "run.json").read_text())["units_total"]
    lines = [ln for ln in text.splitlines() if re.match(r"^demo: \d+/\d+ units", ln)]
    assert [int(re.match(r"^demo: (\d+)/", ln)[1]) for ln in lines] == list(range(1, units + 1)), text[-2000:]
    assert "\r" not in text
    assert re.search(r"^demo: \d+/\d+ units \(100%\), [\d.]+ h audio, [\d.]+x real time, [\d.]+ units/min, "
                     r"\d:\d\d:\d\d elapsed, ETA 0:00:00$", lines[-1]), lines[-1]


def test_non_speech_clip_releases_no_text(demo_run: Path):
    music = [r for r in rows(demo_run, "kept") + rows(demo_run, "rejected") if "noise_music" in r["audio_path"]]
    assert music, "the music clip is missing from the run"
    assert all(r["drop_reason"] for r in music), music
    assert not [r for r in rows(demo_run, "kept") if "noise_music" in r["audio_path"]]


def test_non_commercial_file_rejected_with_its_license(demo_run: Path):
    nc = [r for r in rows(demo_run, "rejected") if r["license"] == "CC-BY-NC-4.0"]
    assert len(nc) == 1 and nc[0]["drop_reason"] == "license:CC-BY-NC-4.0"
    assert nc[0]["duration_s"] > 1.0, "the gate runs after decode, so the row keeps its duration"
    assert not [r for r in rows(demo_run, "kept") if r["license"] == "CC-BY-NC-4.0"]


def test_english_wer_below_ten_percent(demo_run: Path):
    wer = summarize(demo_run)["reference_wer"]
    assert wer["en"]["recordings"] >= 5
    assert wer["en"]["wer"] < 0.10, wer
    kept_langs = {r["lang"] for r in rows(demo_run, "kept")}
    assert {"en", "de", "it", "es"} <= kept_langs


def test_run_json_records_config_versions_models(demo_run: Path):
    info = json.loads((demo_run / "run.json").read_text())
    assert [s["use"] for s in info["pipeline"]["stages"]][:2] == ["audio.decode", "license.gate"]
    assert info["versions"]["faster-whisper"] and info["versions"]["ray"]
    for name in ("whisper-base", "silero-vad", "fasttext-lid176"):
        assert len(info["models"][name]["sha256"]) == 64, info["models"][name]
    assert set(info["stage_s"]) >= {"asr.two_pass", "segment.silero"}


def test_release_from_demo_run(demo_run: Path, tmp_path: Path):
    rel = build_release(demo_run, tmp_path / "rel", shard_rows=8, progress=False)
    kept = rows(demo_run, "kept")
    assert rel["totals"]["rows"] == len(kept)
    parquet_rows = sum(pq.read_metadata(tmp_path / "rel" / s["path"]).num_rows
                       for s in rel["shards"] if s["format"] == "parquet")
    assert parquet_rows == len(kept)
    assert "CC-BY-NC-4.0" not in rel["licenses"]


def test_missing_audio_file_is_a_rejected_row_naming_it(tmp_path: Path, pipeline_file: Path):
    src = tmp_path / "src"
    (src / "audio").mkdir(parents=True)
    demo_clip = DEMO_SOURCE.parent / "audio" / "en_01.flac"
    (src / "audio" / "real.flac").write_bytes(demo_clip.read_bytes())
    (src / "listing.jsonl").write_text(
        json.dumps({"path": "audio/real.flac", "lang": "en"}) + "\n"
        + json.dumps({"path": "audio/not there.flac"}) + "\n")
    (src / "m.yaml").write_text("name: tiny\nlicense: CC0-1.0\nlisting: listing.jsonl\n")
    out = tmp_path / "run"
    rc = finish(granary("run", str(pipeline_file), "--source", str(src / "m.yaml"), "--out", str(out), "-q",
                        log=tmp_path / "log"))
    assert rc == 0, (tmp_path / "log").read_text()[-3000:]
    rejected = rows(out, "rejected")
    assert len(rejected) == 1
    assert rejected[0]["drop_reason"].startswith("decode_error: no such file")
    assert str(src / "audio" / "not there.flac") in rejected[0]["drop_reason"]
    assert len(rows(out, "kept")) >= 1


def test_bad_config_names_file_and_key(tmp_path: Path):
    cfg = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    cfg["stages"][4]["params"]["beam_sise"] = 5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = subprocess.run([sys.executable, "-m", "granary_pipe.cli", "run", str(bad), "--source", str(DEMO_SOURCE),
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert str(bad) in out.stderr and "stages.4.params.beam_sise" in out.stderr and "unknown key" in out.stderr
    assert not (tmp_path / "run").exists(), "no work may start on a bad config"
