"""Whisper on CTranslate2, batched across recordings (faster-whisper's ``transcribe`` takes one at a time);
models load once per process. Design: docs/architecture.md, "Data flow" (asr.whisper)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeAlias

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, pad_or_trim

from granary_pipe import models
from granary_pipe.stages.asr import cuda_libs

N_FRAMES = 3000  # 30 s of 10 ms frames: Whisper's fixed input
MAX_WINDOW_S = N_FRAMES / 100
"""Longest segment Whisper decodes whole (30 s); segment stages must cut below it."""


@dataclass
class Hypothesis:
    """One decoded segment with the decoder's scores."""

    text: str
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


def mean_logprob(hyps: list[Hypothesis]) -> float:
    """Mean token log-probability of several hypotheses, weighted by how much each said."""
    return float(np.average([h.avg_logprob for h in hyps], weights=[max(len(h.text), 1) for h in hyps]))


def default_threads() -> int:
    """CPU threads for a model when a stage leaves ``cpu_threads`` at 0: in an engine worker its CPU
    reservation (Ray exports it as ``OMP_NUM_THREADS``), else every core up to 8."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return min(os.cpu_count() or 1, 8)


@lru_cache(maxsize=8)
def load(name_or_path: str, device: str = "auto", compute_type: str = "default", cpu_threads: int = 0) -> WhisperModel:
    """A Whisper model by registry name or path, loaded once per process; on a GPU the CUDA 12
    libraries CTranslate2 needs are loaded first (:mod:`cuda_libs`)."""
    if cuda_libs.wants_cuda(device):
        cuda_libs.preload()
    threads = cpu_threads or default_threads()
    return WhisperModel(str(models.resolve(name_or_path)), device=device, compute_type=compute_type,
                        cpu_threads=threads, local_files_only=True)


def features(model: WhisperModel, chunks: list[np.ndarray]) -> np.ndarray:
    """Stacked log-mel features, each chunk padded or trimmed to 30 s."""
    feats = [pad_or_trim(model.feature_extractor(c)[..., :-1], N_FRAMES) for c in chunks]
    return np.stack(feats).astype(np.float32)


Encoded: TypeAlias = "ctranslate2.StorageView | np.ndarray"
"""Encoder outputs: on the model's device (``encode``) or copied to the host (``encode_to_host``)."""


def encode(model: WhisperModel, chunks: list[np.ndarray]) -> ctranslate2.StorageView:
    """Encoder outputs of a batch of ≤ 30 s chunks, left on the model's device."""
    return model.encode(features(model, chunks))


def encode_to_host(model: WhisperModel, chunks: list[np.ndarray]) -> np.ndarray:
    """Encoder outputs copied to host memory, so single rows can be regrouped into other batches
    (pass 1 → pass 2); costs a device→host copy."""
    feats = ctranslate2.StorageView.from_array(features(model, chunks))
    return np.asarray(model.model.encode(feats, to_cpu=True))


def _storage(model: WhisperModel, chunks: list[np.ndarray] | None, encoded: Encoded | None) -> ctranslate2.StorageView:
    """Encoder outputs on the model's device: ``encoded`` (copied there if on the host), else ``chunks`` encoded."""
    if encoded is None:
        if chunks is None:
            raise ValueError("give audio chunks or their encoder outputs")
        return encode(model, chunks)
    if isinstance(encoded, np.ndarray):
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded))
    return encoded


def language_probs(model: WhisperModel, chunks: list[np.ndarray] | None = None,
                   encoded: Encoded | None = None) -> list[dict[str, float]]:
    """Per chunk (or its encoder output), the probability of each language code (``{"en": 0.93, ...}``)."""
    if not model.model.is_multilingual:
        raise ValueError("language ID needs a multilingual Whisper model")
    return [{tok[2:-2]: float(p) for tok, p in result}
            for result in model.model.detect_language(_storage(model, chunks, encoded))]


def transcribe(model: WhisperModel, chunks: list[np.ndarray] | None, language: str, beam_size: int = 5,
               task: str = "transcribe", max_new_tokens: int | None = None,
               encoded: Encoded | None = None, timestamps: bool = False) -> list[Hypothesis]:
    """Decode a batch of ≤ 30 s chunks (or their encoder outputs) with the language forced; ``timestamps``:
    Whisper's timestamp mode instead of ``<|notimestamps|>`` (timestamp tokens counted in ``avg_logprob`` only)."""
    multilingual = model.model.is_multilingual
    tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task=task if multilingual else None,
                          language=language if multilingual else None)
    prompt = model.get_prompt(tokenizer, [], without_timestamps=not timestamps)
    max_length = model.max_length if max_new_tokens is None else min(model.max_length, len(prompt) + max_new_tokens)
    storage = _storage(model, chunks, encoded)
    results = model.model.generate(storage, [list(prompt) for _ in range(storage.shape[0])], beam_size=beam_size,
                                   max_length=max_length, return_scores=True, return_no_speech_prob=True,
                                   suppress_blank=True, suppress_tokens=[-1])
    hyps = []
    for r in results:
        tokens = r.sequences_ids[0]
        text = tokenizer.decode([t for t in tokens if t < tokenizer.timestamp_begin]).strip()
        avg_logprob = r.scores[0] * len(tokens) / (len(tokens) + 1)
        hyps.append(Hypothesis(text, float(avg_logprob), float(get_compression_ratio(text)) if text else 0.0,
                               float(r.no_speech_prob)))
    return hyps
