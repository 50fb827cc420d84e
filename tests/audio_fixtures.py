"""Audio made at test time: espeak-ng speech, tones, silence, broken files; the bundled demo corpus.

Nothing here downloads anything. Speech comes from Debian's ``espeak-ng`` (a test that needs it
fails loudly when it is missing, it is not skipped); known-good clips with reference texts come
from ``manifests/demo`` (see ``demo_clip``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from granary_pipe.schema import SAMPLE_RATE_HZ, make_table

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / "manifests" / "demo"
DEMO_AUDIO = DEMO_DIR / "audio"


# ----------------------------------------------------------------------------- demo corpus

def demo_listing() -> dict[str, dict]:
    """``file name → listing line`` of the bundled demo corpus (``lang``, ``text``, ``license``)."""
    out = {}
    for raw in (DEMO_DIR / "listing.jsonl").read_text(encoding="utf-8").splitlines():
        if raw.strip():
            line = json.loads(raw)
            out[Path(line["path"]).name] = line
    return out


def demo_clip(name: str) -> Path:
    """Path of a demo file (``en_01.flac``); fails clearly when the corpus is incomplete."""
    path = DEMO_AUDIO / name
    assert path.is_file(), f"bundled demo file missing: {path}"
    return path


def words(text: str) -> str:
    """Lower-cased text with punctuation stripped, for WER."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


# ----------------------------------------------------------------------------- synthesis

def espeak(text: str, path: Path, voice: str = "en-us", words_per_min: int = 150) -> Path:
    """Speak ``text`` with espeak-ng into a WAV file (22.05 kHz mono, 16-bit)."""
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is not installed (apt-get install espeak-ng)"
    subprocess.run([exe, "-v", voice, "-s", str(words_per_min), "-w", str(path), text],
                   check=True, capture_output=True, timeout=60)
    return path


def to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """Linear-interpolation resample to 16 kHz (good enough for VAD tests)."""
    if rate == SAMPLE_RATE_HZ:
        return audio.astype(np.float32)
    n_out = int(round(audio.size * SAMPLE_RATE_HZ / rate))
    t_out = np.arange(n_out) / SAMPLE_RATE_HZ
    t_in = np.arange(audio.size) / rate
    return np.interp(t_out, t_in, audio).astype(np.float32)


def espeak_16k(text: str, workdir: Path, voice: str = "en-us") -> np.ndarray:
    """espeak-ng speech as 16 kHz mono float32, with espeak's own leading/trailing silence trimmed."""
    path = espeak(text, Path(workdir) / f"es_{voice}_{zlib.crc32(text.encode()):08x}.wav", voice)
    audio, rate = sf.read(path, dtype="float32")
    audio = to_16k(audio, rate)
    loud = np.flatnonzero(np.abs(audio) > 1e-3)
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SAMPLE_RATE_HZ)), np.float32)


def tone(seconds: float, rate: int = SAMPLE_RATE_HZ, freq_hz: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def write_audio(path: Path, audio: np.ndarray, rate: int, fmt: str | None = None, subtype: str | None = None) -> Path:
    """Write samples (frames × channels or 1-D) with soundfile."""
    sf.write(path, audio, rate, format=fmt, subtype=subtype)
    return path


def truncated_flac(path: Path, seconds: float = 3.0) -> Path:
    """A FLAC file cut in the middle of its audio frames."""
    full = path.with_name("full_" + path.name)
    write_audio(full, tone(seconds) + 0.05 * np.random.default_rng(0).standard_normal(int(seconds * SAMPLE_RATE_HZ)).astype(np.float32),
                SAMPLE_RATE_HZ, "FLAC")
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    full.unlink()
    return path


# ----------------------------------------------------------------------------- rows

def recording_row(path: Path | str, rid: str = "rec", **extra: Any) -> dict:
    """A recording row as ingest makes it."""
    row = {"id": rid, "recording_id": rid, "source": "test", "audio_path": str(path), "offset_s": 0.0,
           "license": "CC-BY-4.0"}
    row.update(extra)
    return row


def audio_row(audio: np.ndarray, rid: str = "rec", seg: int | None = None, offset_s: float = 0.0,
              **extra: Any) -> dict:
    """A decoded row (recording or segment) carrying ``samples``."""
    duration = audio.size / SAMPLE_RATE_HZ
    row = {"id": rid if seg is None else f"{rid}_{seg:04d}", "recording_id": rid, "source": "test",
           "offset_s": offset_s, "duration_s": duration, "recording_duration_s": duration,
           "license": "CC-BY-4.0", "samples": np.asarray(audio, np.float32).tobytes()}
    row.update(extra)
    return row


def table(rows: list[dict]):
    return make_table(rows, with_samples=True)


def samples_of(row: dict) -> np.ndarray:
    return np.frombuffer(row["samples"], dtype=np.float32)


def assert_segments_tile(rows: list[dict], audio: np.ndarray, max_segment_s: float) -> None:
    """Assert that the kept segment rows of one recording cut ``audio`` in order: each
    ``0 < duration ≤ max_segment_s``, none overlapping, each row's samples exactly the audio at
    its offset, and the recording's duration carried on every row."""
    sr = SAMPLE_RATE_HZ
    prev_end = 0.0
    for r in rows:
        assert r["drop_reason"] is None
        assert 0 < r["duration_s"] <= max_segment_s + 1e-9
        assert r["offset_s"] >= prev_end - 1e-9  # ordered; no two segments overlap
        prev_end = r["offset_s"] + r["duration_s"]
        seg = samples_of(r)
        assert seg.size == round(r["duration_s"] * sr)
        start = round(r["offset_s"] * sr)
        np.testing.assert_array_equal(seg, audio[start : start + seg.size])
        assert r["recording_duration_s"] == pytest.approx(audio.size / sr)
    assert prev_end <= audio.size / sr + 1e-9
