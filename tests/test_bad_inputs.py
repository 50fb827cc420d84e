"""Bad inputs: a corpus of broken, odd and good files made at test time goes through the CLI
(decode → license gate → Silero VAD, no ASR: the point is I/O and robustness). Every listed file
must be accounted for — kept (decoded fine) or rejected with a reason naming it — with no crash
and rows in = kept + rejected. Manifest and pipeline errors stop the CLI before any work (exit 2,
no run directory).

Unreadable file: the tests run as root, for whom ``chmod 000`` does not stop reads, so the
unreadable input is a *directory* named ``folder.wav`` (decode rejects it from ``stat`` alone). A
dangling symlink stands in for a file that vanished after listing. FIFOs, sockets, devices and
symlink loops: ``test_listing_hostile.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from fault_helpers import (
    ASR_FREE_STAGES,
    DEMO_AUDIO,
    ROOT,
    RssSampler,
    finish,
    rows,
    run_json,
    start_cli,
    write_pipeline,
)
from granary_pipe.report.summary import summarize
from granary_pipe.stages.audio.decode import decode_file
from granary_pipe.ingest.manifest import recording_id

pytestmark = pytest.mark.e2e

SR = 16000
HOUR_S = 3600


def _speech(name: str = "en_01.flac") -> np.ndarray:
    audio, rate = sf.read(DEMO_AUDIO / name, dtype="float32")
    assert rate == SR
    return audio


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    n = int(round(audio.size * rate / SR))
    return np.interp(np.arange(n) / rate, np.arange(audio.size) / SR, audio).astype(np.float32)


def _write_hour(path: Path, speech: np.ndarray) -> None:
    """One hour of very low noise with a speech clip at 30 min, written minute by minute."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", SR, 1, format="FLAC", subtype="PCM_16") as fh:
        for minute in range(HOUR_S // 60):
            block = (0.0005 * rng.standard_normal(60 * SR)).astype(np.float32)
            if minute == 30:
                block[: speech.size] += speech
            fh.write(block)


# file → (listing extras, expected outcome); outcome "kept" or ("rejected", substring of drop_reason)
CASES: dict[str, tuple[dict, object]] = {
    "good_en.flac": ({"lang": "en"}, "kept"),
    "good_es.opus": ({"lang": "es"}, "kept"),
    "ça va 日本 clip.flac": ({"lang": "en"}, "kept"),
    "eight_channels.wav": ({"lang": "en"}, "kept"),
    "rate_8k.wav": ({"lang": "en"}, "kept"),
    "rate_48k.wav": ({"lang": "en"}, "kept"),
    "one_hour.flac": ({"lang": "en"}, "kept"),
    "bob.opus": ({"license": "Kinda free, ask Bob"}, ("rejected", "license:unknown")),
    "corrupt.flac": ({}, ("rejected", "decode_error: ")),
    "truncated.flac": ({}, ("rejected", "decode_error: InvalidDataError")),
    "empty.wav": ({}, ("rejected", "decode_error: empty file")),
    "zero_frames.wav": ({}, ("rejected", "decode_error: no audio samples")),
    "notes.wav": ({}, ("rejected", "decode_error: InvalidDataError")),
    "folder.wav": ({}, ("rejected", "decode_error: not a regular file (directory)")),
    "gone.flac": ({}, ("rejected", "decode_error: no such file")),
    "dangling.flac": ({}, ("rejected", "decode_error: no such file")),
}


def make_bad_corpus(d: Path) -> Path:
    audio = d / "audio"
    audio.mkdir(parents=True)
    speech = _speech()
    (audio / "good_en.flac").write_bytes((DEMO_AUDIO / "en_01.flac").read_bytes())
    (audio / "good_es.opus").write_bytes((DEMO_AUDIO / "es_02.opus").read_bytes())
    (audio / "ça va 日本 clip.flac").write_bytes((DEMO_AUDIO / "en_03.flac").read_bytes())
    (audio / "bob.opus").write_bytes((DEMO_AUDIO / "en_02.opus").read_bytes())
    quiet = speech * (0.2 / np.abs(speech).max())  # FFmpeg's 8→1 downmix adds ~4.4×; stay below full scale
    sf.write(audio / "eight_channels.wav", np.tile(quiet[:, None], (1, 8)), SR, subtype="PCM_16")
    sf.write(audio / "rate_8k.wav", _resample(speech, 8000), 8000, subtype="PCM_16")
    sf.write(audio / "rate_48k.wav", _resample(speech, 48000), 48000, subtype="PCM_16")
    _write_hour(audio / "one_hour.flac", speech)
    (audio / "corrupt.flac").write_bytes(np.random.default_rng(1).bytes(20000))
    good = (DEMO_AUDIO / "en_05.flac").read_bytes()
    (audio / "truncated.flac").write_bytes(good[: len(good) // 2])
    (audio / "empty.wav").write_bytes(b"")
    sf.write(audio / "zero_frames.wav", np.zeros((0, 1), np.float32), SR, subtype="PCM_16")
    (audio / "notes.wav").write_text("These are my notes, not audio.\n" * 40)
    (audio / "folder.wav").mkdir()
    os.symlink(audio / "was_here.flac", audio / "dangling.flac")
    lines = [{"path": f"audio/{name}", **extra} for name, (extra, _) in CASES.items()]
    (d / "listing.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines),
                                     encoding="utf-8")
    manifest = d / "bad.yaml"
    manifest.write_text("name: bad\nlicense: CC-BY-4.0\nlisting: listing.jsonl\n")
    return manifest


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory) -> tuple[Path, Path, RssSampler]:
    d = tmp_path_factory.mktemp("bad")
    source = make_bad_corpus(d / "src")
    pipeline = write_pipeline(d / "p.yaml", ASR_FREE_STAGES, per_unit=4, in_flight=2, name="bad-inputs")
    out = d / "run"
    proc = start_cli("run", str(pipeline), "--source", str(source), "--out", str(out), log=d / "run.log")
    with RssSampler(proc.pid) as mem:
        rc = finish(proc, timeout=400)
    text = (d / "run.log").read_text()
    assert rc == 0, text[-3000:]
    print(f"\nbad corpus: {len(CASES)} files, peak RSS of the run's processes "
          f"{mem.peak('tree_rss'):.0f} MiB (PSS {mem.peak('tree_pss'):.0f} MiB), "
          f"driver {mem.peak('driver'):.0f} MiB, largest worker {mem.peak('worker_max'):.0f} MiB "
          f"({mem.peak('worker_anon'):.0f} MiB private)")
    return out, d / "src", mem


def _by_file(run: Path) -> dict[str, dict[str, list[dict]]]:
    """Rows per listed file name, matched by recording id (``audio_path`` is the resolved path:
    for the dangling symlink it names the missing target)."""
    name_of = {recording_id("bad", f"audio/{name}"): name for name in CASES}
    out: dict[str, dict[str, list[dict]]] = {}
    for which in ("kept", "rejected"):
        for r in rows(run, which):
            out.setdefault(name_of.get(r["recording_id"], r["recording_id"]), {"kept": [], "rejected": []})[which].append(r)
    return out


def test_every_file_accounted_for_no_crash(bad_run):
    run, src, _ = bad_run
    info = run_json(run)
    assert info["status"] == "complete" and info["failed_units"] == [], info["unit_errors"]
    assert info["source"]["recordings"] == len(CASES)
    kept, rejected = rows(run, "kept"), rows(run, "rejected")
    markers = [json.loads(p.read_text()) for p in run.glob("units/*/_COMMITTED")]
    assert sum(m["rows_in"] for m in markers) == len(kept) + len(rejected)
    ids = [r["id"] for r in kept + rejected]
    assert len(ids) == len(set(ids))
    summary = summarize(run)
    assert summary["rows"]["balanced"] and summary["recordings"]["balanced"]
    assert set(_by_file(run)) == set(CASES), "a listed file has no row"


@pytest.mark.parametrize("name", sorted(CASES))
def test_outcome_per_file(bad_run, name):
    run, src, _ = bad_run
    got = _by_file(run)[name]
    expected = CASES[name][1]
    if expected == "kept":
        assert got["kept"], f"{name}: nothing kept; rejected as {[r['drop_reason'] for r in got['rejected']]}"
        assert not [r for r in got["rejected"] if r["drop_reason"].startswith("decode_error")]
    else:
        _, reason = expected
        assert not got["kept"] and len(got["rejected"]) == 1, got
        row = got["rejected"][0]
        assert reason in row["drop_reason"], row["drop_reason"]
        if row["drop_reason"].startswith("decode_error"):
            target = "was_here.flac" if name == "dangling.flac" else name  # ingest resolves symlinks
            assert str(src / "audio" / target) in row["drop_reason"], "the reason must name the file"


def test_odd_formats_decoded_with_their_probe(bad_run):
    run, _, _ = bad_run
    by = _by_file(run)
    speech_s = _speech().size / SR
    for name, rate, channels in (("rate_8k.wav", 8000, 1), ("rate_48k.wav", 48000, 1),
                                 ("eight_channels.wav", SR, 8), ("one_hour.flac", SR, 1)):
        r = by[name]["kept"][0]
        assert (r["source_sample_rate_hz"], r["source_channels"]) == (rate, channels), (name, r)
        expected_s = HOUR_S if name == "one_hour.flac" else speech_s
        assert abs(r["recording_duration_s"] - expected_s) < 0.05, (name, r["recording_duration_s"])
    hour = by["one_hour.flac"]["kept"]
    assert all(1795 < r["offset_s"] < 1800 + speech_s for r in hour), [(r["offset_s"], r["duration_s"]) for r in hour]
    assert sum(r["duration_s"] for r in hour) < 3 * speech_s, "VAD took the noise floor for speech"
    bob = by["bob.opus"]["rejected"][0]
    assert bob["license_raw"] == "Kinda free, ask Bob" and bob["license"] == "unknown"


def test_one_hour_file_stays_in_bounded_memory(bad_run):
    """The hour decodes to 220 MiB of float32; the run (driver, Ray, workers) must not blow up.
    Measured: a worker peaks near 2.1-2.4 GiB (≈10× the audio; ≈1.6-1.9 GiB with the copy-avoiding
    changes proposed alongside ``test_decode_holds_the_audio_about_once``)."""
    _, _, mem = bad_run
    assert mem.peak("worker_max") < 3072, f"a worker peaked at {mem.peak('worker_max'):.0f} MiB"
    assert mem.peak("tree_pss") < 5120, f"the run's processes peaked at {mem.peak('tree_pss'):.0f} MiB PSS"


# ----------------------------------------------------------------------------- decoder, no Ray

@pytest.mark.parametrize("channels", [2, 8, 9, 16])
def test_multichannel_downmix_keeps_level(tmp_path, channels):
    """Every channel carries the same 0.3-peak tone: the mono mix must too (the mean of the
    channels), not FFmpeg's sum-like downmix (8 channels → 1.32 peak, clipped when written;
    9 channels → "Invalid argument")."""
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)
    path = tmp_path / f"c{channels}.wav"
    sf.write(path, np.tile(tone[:, None], (1, channels)), SR, subtype="PCM_16")
    audio, info = decode_file(str(path), 60)
    assert info["source_channels"] == channels and audio.size == SR
    assert abs(float(np.abs(audio).max()) - 0.3) < 0.01, f"peak {np.abs(audio).max():.3f} for {channels} channels"


# ----------------------------------------------------------------------------- manifest / config errors

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "granary_pipe.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def _good_pipeline(tmp_path: Path) -> Path:
    return write_pipeline(tmp_path / "good.yaml", ASR_FREE_STAGES, per_unit=4)


def _source_with_listing(tmp_path: Path, listing_text: str) -> tuple[Path, Path]:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "listing.jsonl").write_text(listing_text, encoding="utf-8")
    (tmp_path / "src" / "m.yaml").write_text("name: m\nlicense: CC-BY-4.0\nlisting: listing.jsonl\n")
    return tmp_path / "src" / "m.yaml", tmp_path / "src" / "listing.jsonl"


@pytest.mark.parametrize("line3, says", [
    ('{"path": "audio/b.flac",', "not valid JSON"),
    ('{"path": "audio/b.flac", "licence": "CC0-1.0"}', "licence: unknown key"),
    ('["audio/b.flac"]', "expected a JSON object"),
    ('{"path": ""}', "path:"),
    ('{"path": "audio/a.flac"}', "already listed on line 1"),
])
def test_malformed_listing_line_stops_before_work(tmp_path, line3, says):
    manifest, listing = _source_with_listing(
        tmp_path, '{"path": "audio/a.flac"}\n\n' + line3 + "\n" + '{"path": "audio/c.flac"}\n')
    out = tmp_path / "run"
    res = cli("run", str(_good_pipeline(tmp_path)), "--source", str(manifest), "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert f"{listing}:3" in res.stderr and says in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists(), "no work may start on a bad listing"


@pytest.mark.parametrize("edit, says", [
    (lambda c: c["stages"][2].update(use="segment.sileroo"), ["stages.2.use", "unknown stage 'segment.sileroo'"]),
    (lambda c: c["units"].update(max_in_flight=0), ["units.max_in_flight", "greater than or equal to 1"]),
    (lambda c: c["stages"][0]["params"].update(max_duration_s="long"), ["stages.0.params.max_duration_s"]),
    (lambda c: c["stages"][1]["resources"].update(cpus=-1), ["stages.1.resources.cpus"]),
    (lambda c: c.pop("stages"), ["stages", "Field required"]),
])
def test_bad_pipeline_config_stops_before_work(tmp_path, edit, says):
    cfg = yaml.safe_load(_good_pipeline(tmp_path).read_text())
    edit(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg, sort_keys=False))
    manifest, _ = _source_with_listing(tmp_path, '{"path": "audio/a.flac"}\n')
    out = tmp_path / "run"
    res = cli("run", str(bad), "--source", str(manifest), "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert str(bad) in res.stderr and all(s in res.stderr for s in says), res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists(), "no work may start on a bad config"


def test_yaml_syntax_error_names_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages:\n  - use: audio.decode\n    params: {max_duration_s: 10\n")
    manifest, _ = _source_with_listing(tmp_path, '{"path": "audio/a.flac"}\n')
    res = cli("run", str(bad), "--source", str(manifest), "--out", str(tmp_path / "run"))
    assert res.returncode == 2 and f"{bad}:" in res.stderr and "not valid YAML" in res.stderr, res.stderr
    assert not (tmp_path / "run").exists()
