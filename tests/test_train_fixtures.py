"""Tiny releases for the training tests, written by the real code.

``make_tiny_release(tmp, utterances)`` speaks each text with espeak-ng, commits the rows and their
audio as one unit with the pipeline's sink (:func:`granary_pipe.io.sink.commit_unit`), records the
run in ``run.json`` with the pipeline's own bookkeeping (``pipeline._Record``, as ``granary run``
writes it) and cuts a release with :func:`granary_pipe.io.release.build_release`, so the tests read
exactly what users get. The tests in this file check that such a release is what the training data
layer expects.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from granary_pipe import __version__, pipeline, rundir
from granary_pipe.io.release import build_release
from granary_pipe.io.sink import commit_unit
from granary_pipe.schema import SAMPLE_RATE_HZ, make_table

try:
    from tests.audio_fixtures import espeak
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from audio_fixtures import espeak

VOICES = {"en": "en-us", "de": "de", "es": "es", "it": "it"}

TINY_UTTERANCES = [
    ("en", "hello world"), ("en", "good morning"), ("en", "thank you very much"), ("en", "see you soon"),
    ("en", "the cat is black"), ("de", "guten tag"), ("de", "danke schön"), ("de", "auf wiedersehen"),
]
"""Eight short utterances in two languages (about 1 s each)."""

OVERFIT_UTTERANCES = [("en", "hello world"), ("en", "good morning"), ("en", "thank you"), ("en", "see you soon")]


def _speech(text: str, lang: str, tmp: Path, k: int) -> np.ndarray:
    from faster_whisper.audio import decode_audio

    wav = espeak(text, tmp / f"tts-{k}.wav", voice=VOICES[lang], words_per_min=170)
    wave = decode_audio(str(wav), sampling_rate=SAMPLE_RATE_HZ)
    idx = np.flatnonzero(np.abs(wave) > 0.01)  # trim espeak's leading/trailing silence
    return wave[max(0, idx[0] - 800): idx[-1] + 800] if idx.size else wave


def make_tiny_release(tmp: Path, utterances=TINY_UTTERANCES, *, shard_rows: int = 3) -> Path:
    """A release of ``utterances`` (``(lang, text)``) under ``tmp/release``; returns its directory."""
    tmp = Path(tmp)
    run, unit, rows = tmp / "run", rundir.unit_id(0), []
    for k, (lang, text) in enumerate(utterances):
        wave = _speech(text, lang, tmp, k).astype(np.float32)
        rid = f"tiny-{lang}-{k:03d}"
        seconds = round(len(wave) / SAMPLE_RATE_HZ, 4)
        rows.append({
            "id": rid, "recording_id": rid, "source": "tiny", "audio_path": f"audio/{rid}.wav", "offset_s": 0.0,
            "duration_s": seconds, "recording_duration_s": seconds, "lang": lang, "lang_prob": 1.0,
            "text": text.capitalize() + ".", "license": "CC0-1.0", "license_raw": "CC0-1.0",
            "samples": wave.tobytes(),
        })
    run.mkdir(parents=True)
    record = pipeline._Record(run / rundir.RUN_JSON, {
        "granary_pipe": __version__, "fingerprint": "tiny", "pipeline": {"name": "tiny", "stages": []},
        "source": {"name": "tiny", "license": "CC0-1.0", "homepage": None, "citation": None},
        "versions": {}, "git_revision": None, "models": {}, "stage_info": {}, "executor": "ray",
        "executor_options": [], "units_total": 1, "status": "running", "started_at": "2026-01-01T00:00:00Z",
        "wall_s_previous": 0.0,
    })
    record.committed(unit, commit_unit(run, unit, make_table(rows, with_samples=True), {}))
    pipeline._finish(record, time.time())
    out = tmp / "release"
    build_release(run, out, shard_rows=shard_rows, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory) -> Path:
    """:data:`TINY_UTTERANCES` as a release, built once per test session (read-only for tests)."""
    root = tmp_path_factory.getbasetemp() / "train-tiny-release"
    if not (root / "release" / "release.json").is_file():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        make_tiny_release(root)
    return root / "release"


def test_tiny_release_is_read_by_the_training_data_layer(tiny_release):
    from granary_pipe.train.config import DataConfig
    from granary_pipe.train.data import open_release, sample_stream

    rel = open_release(tiny_release)
    assert sorted(rel.info["totals"]["per_lang"]) == ["de", "en"]
    assert len(rel.shards("wds")) == 3  # en: 5 rows in 2 shards, de: 3 rows in 1
    cfg = DataConfig(held_out_pct=0)
    samples = list(sample_stream(rel, cfg, split="all", shuffle=False))
    assert sorted(s["meta"]["id"] for s in samples) == sorted(f"tiny-{lang}-{k:03d}" for k, (lang, _)
                                                             in enumerate(TINY_UTTERANCES))
    for s in samples:
        wave, rate = sf.read(__import__("io").BytesIO(s["flac"]))
        assert rate == SAMPLE_RATE_HZ and 0.4 < len(wave) / rate < 3.0
        assert abs(s["meta"]["duration_s"] - len(wave) / rate) < 1e-3
