"""Fixtures for the ``segment.pyannote`` tests, which run in the ``[diarize]`` environment.

Run them with ``make test-diarize`` (``.venv-diarize``: torch 2.9 + pyannote.audio 4). The main
test run ignores this directory (``--ignore=tests/diarize`` in pytest's addopts); where
pyannote.audio is not installed at all, this conftest also keeps the directory out of collection,
so a plain ``pytest`` in the main environment never trips over a missing torch.

Models are tiny, randomly initialised and written at test time (``scripts/build_tiny_pyannote.py``):
nothing is downloaded. Speech comes from two espeak-ng voices (``tests/audio_fixtures.py``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # pyannote.audio 4 telemetry: off in tests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

try:
    _HAVE_PYANNOTE = importlib.util.find_spec("pyannote.audio") is not None
except (ImportError, ValueError):
    _HAVE_PYANNOTE = False
if not _HAVE_PYANNOTE:
    collect_ignore_glob = ["*"]
else:
    with warnings.catch_warnings():  # audio reaches pyannote as waveforms: torchcodec is not needed
        warnings.filterwarnings("ignore", message=r"\s*torchcodec is not installed", category=UserWarning)
        import pyannote.audio  # noqa: F401

sys.path.insert(0, str(HERE.parent))  # tests/ → audio_fixtures
import audio_fixtures as af  # noqa: E402

SR = 16_000

VOICE_A = "en-us+m3"
VOICE_B = "en-us+f2"
TEXT_A = "The quick brown fox jumps over the lazy dog near the river bank."
TEXT_B = "She sells sea shells by the sea shore on a bright summer morning."


def _load_builder():
    """``scripts/build_tiny_pyannote.py`` as a module (scripts/ is not a package)."""
    path = REPO / "scripts" / "build_tiny_pyannote.py"
    spec = importlib.util.spec_from_file_location("build_tiny_pyannote", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def builder():
    return _load_builder()


@pytest.fixture(scope="session")
def tiny_pipeline_dir(builder, tmp_path_factory) -> Path:
    """A tiny random SpeakerDiarization pipeline (config.yaml + segmentation/embedding/plda)."""
    return builder.build(tmp_path_factory.mktemp("tiny-pyannote"), powerset=True, seed=0)


@pytest.fixture(scope="session")
def tiny_powerset_ckpt(tiny_pipeline_dir) -> Path:
    """Its powerset segmentation model (like pyannote/segmentation-3.0), a ``pytorch_model.bin``."""
    return tiny_pipeline_dir / "segmentation" / "pytorch_model.bin"


@pytest.fixture(scope="session")
def tiny_multilabel_ckpt(builder, tmp_path_factory) -> Path:
    """A multi-label (sigmoid per local speaker) segmentation checkpoint."""
    path = tmp_path_factory.mktemp("tiny-multilabel") / "pytorch_model.bin"
    return builder.save_checkpoint(builder.tiny_segmentation(powerset=False, seed=2), path)


@pytest.fixture(scope="session")
def tone_model_ckpt(builder, tmp_path_factory) -> Path:
    """A ``tone_model.ToneSegmentation`` checkpoint: low tone = one local speaker, high tone = another."""
    from tone_model import ToneSegmentation

    model = builder.tiny_segmentation(powerset=False, model_class=ToneSegmentation)
    return builder.save_checkpoint(model, tmp_path_factory.mktemp("tone-model") / "pytorch_model.bin")


@pytest.fixture(scope="session")
def two_voices(tmp_path_factory) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """(audio, [(start_s, end_s, voice)]): two espeak-ng voices taking turns, with short pauses."""
    d = tmp_path_factory.mktemp("voices")
    a = af.espeak_16k(TEXT_A, d, voice=VOICE_A)
    b = af.espeak_16k(TEXT_B, d, voice=VOICE_B)
    parts, spans, t = [af.silence(1.0)], [], 1.0
    for clip, voice in ((a, VOICE_A), (b, VOICE_B), (a, VOICE_A), (b, VOICE_B)):
        parts += [clip, af.silence(0.6)]
        spans.append((t, t + clip.size / SR, voice))
        t += clip.size / SR + 0.6
    audio = np.concatenate(parts)
    assert 12 < audio.size / SR < 40
    return audio, spans
