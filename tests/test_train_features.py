"""Features on the device: the torch log-mel equals faster-whisper's numpy one, a padded batch
equals its utterances one by one, SpecAugment, audio decoding without PyAV, and a trainer that
runs with faster-whisper, CTranslate2 and PyAV unimportable.

This test module may import faster_whisper (as the reference); the training package must not.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from granary_pipe.train.audio import decode_flac, load_audio, resample
from granary_pipe.train.config import SpecAugmentConfig
from granary_pipe.train.features import HOP, LogMel, mel_filterbank, spec_augment

try:
    from tests.audio_fixtures import demo_clip
    from tests.test_train_fixtures import tiny_release  # noqa: F401 (fixture)
except ImportError:
    from audio_fixtures import demo_clip
    from test_train_fixtures import tiny_release  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4
"""Largest allowed |torch - numpy| per feature value (features span about -1..1.5; float32 FFTs
of different libraries differ by a few 1e-5 at most on speech)."""

SPEECH = ["en_01.flac", "de_02.mp3", "de_04.wav", "en_02.opus"]


def _reference(wave: np.ndarray, n_mels: int = 80) -> np.ndarray:
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=n_mels)(wave, padding=0).T  # (frames, n_mels)


def _speech(name: str) -> np.ndarray:
    from faster_whisper.audio import decode_audio

    return decode_audio(str(demo_clip(name)))[: 16000 * 20]


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filterbank_equals_faster_whispers(n_mels):
    from faster_whisper.feature_extractor import FeatureExtractor

    ref = FeatureExtractor.get_mel_filters(16000, 400, n_mels=n_mels)
    ours = mel_filterbank(n_mels)
    assert ours.shape == ref.shape == (n_mels, 201)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", SPEECH)
def test_log_mel_equals_faster_whispers_on_speech(name):
    wave = _speech(name)
    feats, frames = LogMel(80)(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    ref = _reference(wave)
    assert feats.shape == (1, len(wave) // HOP, 80) == (1, *ref.shape) and frames.tolist() == [len(wave) // HOP]
    assert np.abs(feats[0].numpy() - ref).max() < TOLERANCE


def test_padded_batch_equals_utterances_one_by_one():
    """Lengths with ``len % 160`` under 40 put the last frame's window past the end: each utterance
    must be reflect-padded at its own end, and its max taken over its own frames only."""
    base = _speech("en_01.flac")
    lens = [len(base), 48_000 + 13, 32_000 + 170, 20_000 + 39, 4_800]
    waves = [np.roll(base, 997 * k)[:n] * (0.2 + 0.3 * k) for k, n in enumerate(lens)]
    batch = torch.zeros(len(waves), max(lens))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(w)
    logmel = LogMel(80)
    feats, frames = logmel(batch, torch.tensor(lens))
    assert frames.tolist() == [n // HOP for n in lens] and feats.shape == (5, max(lens) // HOP, 80)
    for i, w in enumerate(waves):
        n = len(w) // HOP
        alone, _ = logmel(torch.from_numpy(w)[None], torch.tensor([len(w)]))
        assert torch.allclose(feats[i, :n], alone[0], atol=1e-5, rtol=0), i
        assert np.abs(feats[i, :n].numpy() - _reference(w)).max() < TOLERANCE
        assert not feats[i, n:].any()


def test_spec_augment_masks_stay_inside_utterances_and_are_seeded():
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width_frac=0.2, max_time_width=30)
    feats = torch.ones(3, 200, 80)
    lens = torch.tensor([200, 120, 50])
    out = spec_augment(feats, lens, cfg, torch.Generator().manual_seed(7))
    again = spec_augment(feats, lens, cfg, torch.Generator().manual_seed(7))
    assert torch.equal(out, again)
    masked = out == 0
    for b, n in enumerate(lens.tolist()):
        time_cols = masked[b].all(dim=1)  # frames masked in every bin: time masks
        assert time_cols.sum() <= 2 * min(30, int(0.2 * n))
        assert not time_cols[n:].any()
        freq_rows = masked[b, :n].all(dim=0)  # bins masked in every valid frame: frequency masks
        assert freq_rows.sum() <= 20
    assert masked.any()
    off = SpecAugmentConfig(freq_masks=0, time_masks=0)
    assert spec_augment(feats, lens, off, torch.Generator()) is feats


def test_flac_at_another_rate_and_stereo_is_decoded_to_16k_mono():
    rate = 22050
    t = np.arange(rate) / rate
    left, right = np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)
    buf = io.BytesIO()
    sf.write(buf, np.stack([left, right], axis=1), rate, format="FLAC", subtype="PCM_16")
    wave = decode_flac(buf.getvalue())
    assert wave.dtype == np.float32 and len(wave) == 16000
    expect = 0.75 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(wave - expect)[100:-100].max() < 2e-3  # band-limited resampling, 16-bit input
    mono16 = io.BytesIO()
    sf.write(mono16, expect, 16000, format="FLAC", subtype="PCM_16")
    assert np.array_equal(decode_flac(mono16.getvalue()), sf.read(io.BytesIO(mono16.getvalue()), dtype="float32")[0])


@pytest.mark.parametrize("name", SPEECH)
def test_load_audio_matches_pyav_decoding(name):
    """libsndfile + our resampler vs PyAV/FFmpeg (faster-whisper's decode): same signal."""
    from faster_whisper.audio import decode_audio

    ours, ref = load_audio(demo_clip(name)), decode_audio(str(demo_clip(name)))
    assert ours.dtype == np.float32 and abs(len(ours) - len(ref)) <= HOP
    n = min(len(ours), len(ref))
    err = np.sqrt(np.mean((ours[:n] - ref[:n]) ** 2)) / np.sqrt(np.mean(ref[:n] ** 2))
    assert err < 0.1, err


def test_resample_keeps_a_tone():
    for rate in (8000, 44100, 48000):
        x = np.sin(2 * np.pi * 300 * np.arange(rate) / rate).astype(np.float32)
        y = resample(x, rate)
        assert len(y) == 16000
        assert np.abs(y - np.sin(2 * np.pi * 300 * np.arange(16000) / 16000))[200:-200].max() < 1e-3


_NO_ASR_STACK = r"""
import importlib.abc, json, sys
BLOCKED = {"faster_whisper", "ctranslate2", "av"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
from granary_pipe.train.config import load_train_config
from granary_pipe.train.infer import iter_transcripts
from granary_pipe.train.loop import train
rel, out, yaml, wav = sys.argv[1:5]
cfg = load_train_config(yaml, {"data.held_out_pct": 30, "data.loader_workers": 1, "train.log_every": 1,
                               "train.eval_every": 3, "train.ckpt_every": 3, "tokenizer.model_type": "char"})
summary = train(rel, out, cfg, max_steps=3, progress=False)
[result] = iter_transcripts(out, [wav])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"step": summary["step"], "eval": summary["eval"]["utterances"], "text": result["text"],
                  "loaded": loaded}))
assert not loaded, loaded
"""


def test_trainer_runs_without_faster_whisper_ctranslate2_or_pyav(tiny_release, tmp_path):
    """A few training steps, a held-out evaluation and a transcription in a process where
    faster_whisper, ctranslate2 and av cannot be imported; none of them ends up in sys.modules."""
    wav = tmp_path / "clip.wav"
    sf.write(wav, load_audio(demo_clip("en_01.flac"))[:32000], 16000)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", _NO_ASR_STACK, str(tiny_release), str(tmp_path / "out"),
                           str(REPO / "pipelines" / "train-tiny.yaml"), str(wav)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["step"] == 3 and result["eval"] >= 1 and result["loaded"] == []
