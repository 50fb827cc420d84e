"""ASR pass 1: spoken-language ID per recording over several speech windows.

Whisper's language ID sees 30 s at a time; deciding from the first 30 s alone misjudges
recordings that open with music, a jingle or a foreign-language quote. This stage picks up to
``windows`` speech segments spread over the recording, runs language ID on each, and averages
the probabilities weighted by each window's speech duration. Below ``min_prob`` the
recording's segments are rejected as ``lang:low_confidence``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
from pydantic import Field

from granary_pipe import schema
from granary_pipe.registry import register
from granary_pipe.stage import Stage
from granary_pipe.stages.asr import whisper_runtime


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when n ≤ k)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [n // 2]


def combine(probs: list[dict[str, float]], weights: list[float]) -> tuple[str, float]:
    """Weighted mean of per-window language distributions → (language, probability)."""
    total: dict[str, float] = defaultdict(float)
    for p, w in zip(probs, weights):
        for lang, value in p.items():
            total[lang] += w * value
    norm = sum(weights) or 1.0
    lang = max(total, key=total.get)
    return lang, total[lang] / norm


@register("asr.language_id")
class WhisperLanguageID(Stage):
    """Sets ``lang`` and ``lang_prob`` on every segment of a recording."""

    actor = True

    model: str = Field("whisper-base", description="multilingual Whisper model (registry name or path)")
    windows: int = Field(3, ge=1, le=16, description="speech windows per recording")
    min_prob: float = Field(0.5, ge=0, le=1, description="reject as lang:low_confidence below this averaged probability")
    allowed_langs: list[str] | None = Field(None, description="reject other languages as lang:unsupported")
    device: str = Field("auto", description="CTranslate2 device: auto, cpu or cuda")
    compute_type: str = Field("int8", description="CTranslate2 compute type: int8, int8_float16, float16, float32, ...")
    cpu_threads: int = Field(0, ge=0, description="CPU threads per worker; 0: the worker's CPU reservation (at least 1)")
    model_batch: int = Field(8, ge=1, description="speech windows per CTranslate2 call")

    def models(self) -> list[str]:
        return [self.model]

    def setup(self) -> None:
        whisper_runtime.load(self.model, self.device, self.compute_type, self.cpu_threads)

    def process(self, active: pa.Table) -> pa.Table:
        model = whisper_runtime.load(self.model, self.device, self.compute_type, self.cpu_threads)
        rows = active.to_pylist()
        decisions, _ = identify(rows, model, self.windows, self.model_batch)
        decide(rows, decisions, self.min_prob, self.allowed_langs)
        return schema.make_table(rows, with_samples=True)


def identify(rows: list[dict], model, windows: int, model_batch: int,
             keep_encoded: bool = False) -> tuple[dict[str, tuple[str, float]], dict[int, np.ndarray]]:
    """Language of each recording in ``rows`` from up to ``windows`` speech windows.

    Returns ``{recording_id: (lang, prob)}`` and, with ``keep_encoded``, the encoder output of each
    window keyed by row index (windows are whole segments ≤ 30 s, so pass 2 can reuse them).
    """
    by_rec: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_rec[row["recording_id"]].append(i)
    jobs: list[tuple[str, int, np.ndarray]] = []
    for rec, idx in by_rec.items():
        idx.sort(key=lambda i: rows[i]["offset_s"])
        for j in spread(len(idx), windows):
            audio = np.frombuffer(rows[idx[j]]["samples"], dtype=np.float32)
            jobs.append((rec, idx[j], audio[: 30 * schema.SAMPLE_RATE_HZ]))
    results: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    encoded_by_row: dict[int, np.ndarray] = {}
    for k in range(0, len(jobs), model_batch):
        batch = jobs[k : k + model_batch]
        chunks = [a for _, _, a in batch]
        encoded = whisper_runtime.encode_to_host(model, chunks) if keep_encoded else whisper_runtime.encode(model, chunks)
        for n, ((rec, i, audio), p) in enumerate(zip(batch, whisper_runtime.language_probs(model, encoded=encoded))):
            results[rec][0].append(p)
            results[rec][1].append(audio.size / schema.SAMPLE_RATE_HZ)
            if keep_encoded:
                encoded_by_row[i] = encoded[n]
    return {rec: combine(*results[rec]) for rec in by_rec}, encoded_by_row


def decide(rows: list[dict], decisions: dict[str, tuple[str, float]], min_prob: float,
           allowed_langs: list[str] | None) -> None:
    """Set ``lang``/``lang_prob`` on every row and reject low-confidence or unsupported languages."""
    for row in rows:
        lang, prob = decisions[row["recording_id"]]
        reason = None
        if prob < min_prob:
            reason = "lang:low_confidence"
        elif allowed_langs is not None and lang not in allowed_langs:
            reason = f"lang:unsupported:{lang}"
        row.update(lang=lang, lang_prob=prob, drop_reason=reason)
