"""``translate.whisper``: Whisper's own speech translation X→En of the ``samples``, filtered like LLM translations.

An average log-probability under ``min_avg_logprob`` also flags ``translate:low_logprob`` (Whisper base's fluent
hallucinations mostly score low).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from granary_pipe import llm
from granary_pipe.registry import register
from granary_pipe.stages.asr import whisper_runtime
from granary_pipe.stages.translate.base import Result, TranslationStage


@register("translate.whisper")
class WhisperTranslate(TranslationStage):
    """Fills ``translation`` (English) of non-English rows where it passes the filters."""

    actor = True

    model: str = Field("whisper-base", description="a multilingual Whisper model (name or path)")
    beam_size: int = Field(5, ge=1, description="beam search width (1: greedy)")
    max_new_tokens: int | None = Field(224, ge=1, description="cap per segment (stops decoder loops early)")
    min_avg_logprob: float | None = Field(-1.0, description="decoder confidence below this → low_logprob; None = off")
    device: str = Field("auto", description="CTranslate2 device: auto, cpu or cuda")
    compute_type: str = Field("int8", description="CTranslate2 compute type: int8, int8_float16, float16, float32, ...")
    cpu_threads: int = Field(
        0, ge=0, description="CPU threads per worker; 0: the worker's CPU reservation (at least 1)")
    model_batch: int = Field(8, ge=1, description="segments per CTranslate2 call (the model's batch)")
    batch_size: int = 64

    def models(self) -> list[str]:
        return self.declared_models([self.model])

    def setup(self) -> None:
        self.setup_filters()
        model = whisper_runtime.load(self.model, self.device, self.compute_type, self.cpu_threads)
        if not model.model.is_multilingual:
            raise ValueError(f"translate.whisper: model {self.model!r} is English-only; it cannot translate")

    def process(self, active: pa.Table) -> pa.Table:
        self.setup()
        model = whisper_runtime.load(self.model, self.device, self.compute_type, self.cpu_threads)
        texts = active.column("text").to_pylist()
        langs = active.column("lang").to_pylist()
        durations = active.column("duration_s").to_pylist()
        samples = active.column("samples") if "samples" in active.column_names else pa.nulls(active.num_rows)
        by_lang: dict[str, list[int]] = defaultdict(list)
        skipped: dict[int, str] = {}
        for i, (text, lang) in enumerate(zip(texts, langs, strict=True)):
            if not lang or lang == "en" or lang not in llm.LANGUAGE_NAMES or not (text and text.strip()):
                continue
            if not samples[i].is_valid:
                skipped[i] = "no_audio"
            elif (durations[i] or 0.0) > whisper_runtime.MAX_WINDOW_S:
                skipped[i] = "too_long"
            else:
                by_lang[lang].append(i)
        results: dict[int, Result] = {}
        low: dict[int, list[str]] = {}
        for lang, idx in sorted(by_lang.items()):
            idx.sort(key=lambda i: -(durations[i] or 0.0))
            for k in range(0, len(idx), self.model_batch):
                chunk = idx[k : k + self.model_batch]
                audio = [np.frombuffer(samples[i].as_py(), dtype=np.float32) for i in chunk]
                hyps = whisper_runtime.transcribe(model, audio, lang, self.beam_size, task="translate",
                                                  max_new_tokens=self.max_new_tokens)
                for i, h in zip(chunk, hyps, strict=True):
                    results[i] = (lang, "en", " ".join(h.text.split()))
                    if self.min_avg_logprob is not None and h.avg_logprob < self.min_avg_logprob:
                        low[i] = ["low_logprob"]
        return self.gate(active, results, skipped, low)

    def run_info(self) -> dict[str, Any]:
        return {
            "translation": f"Whisper speech translation X→en ({self.model}, beam {self.beam_size}); "
                           "English rows are not translated",
            "filters": {**self.filter_info(), "min_avg_logprob": self.min_avg_logprob},
        }
