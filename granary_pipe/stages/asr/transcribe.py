"""ASR pass 2: batched transcription with the language from pass 1 forced.

Segments are grouped by language, each language goes to its model from ``models``
(``default`` for the rest; an English-only model such as ``whisper-tiny.en`` only for ``en``),
and are decoded in batches of ``model_batch``, longest first so padding is wasted least.
Decoder scores (average log-probability, compression ratio, no-speech probability) go into the
row for the filters.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from granary_pipe import models, schema
from granary_pipe.registry import register
from granary_pipe.stage import Stage
from granary_pipe.stages.asr import whisper_runtime


MAX_WINDOW_S = whisper_runtime.N_FRAMES / 100
"""Longest segment Whisper decodes whole (30 s); segment stages must cut below it."""


@register("asr.whisper")
class WhisperTranscribe(Stage):
    """Fills ``text``, ``asr_model`` and the decoder scores of each segment."""

    actor = True

    models_by_lang: dict[str, str] = Field(
        default_factory=lambda: {"default": "whisper-base"},
        description="language code → model name or path; 'default' for every other language",
    )
    beam_size: int = Field(5, ge=1, description="beam search width (1: greedy)")
    max_new_tokens: int | None = Field(None, ge=1, description="cap on decoded tokens per segment (None: the model's limit)")
    device: str = Field("auto", description="CTranslate2 device: auto, cpu or cuda")
    compute_type: str = Field("int8", description="CTranslate2 compute type: int8, int8_float16, float16, float32, ...")
    cpu_threads: int = Field(0, ge=0, description="CPU threads per worker; 0: the worker's CPU reservation (at least 1)")
    model_batch: int = Field(8, ge=1, description="segments per CTranslate2 call (the model's batch)")
    batch_size: int = 64

    @field_validator("models_by_lang")
    @classmethod
    def _has_default(cls, value: dict[str, str]) -> dict[str, str]:
        if "default" not in value:
            raise ValueError("needs a 'default' entry for languages not named")
        for lang, name in value.items():
            info = models.MODELS.get(name)
            if info is not None and not info.multilingual and lang != "en":
                raise ValueError(f"{name!r} is English-only; it cannot serve {lang!r}")
        return value

    def models(self) -> list[str]:
        return sorted(set(self.models_by_lang.values()))

    def model_for(self, lang: str) -> str:
        """Model name used for a language."""
        return self.models_by_lang.get(lang, self.models_by_lang["default"])

    def setup(self) -> None:
        for name in self.models():
            whisper_runtime.load(name, self.device, self.compute_type, self.cpu_threads)

    def process(self, active: pa.Table) -> pa.Table:
        rows = active.to_pylist()
        self.transcribe_rows(rows)
        return schema.make_table(rows, with_samples=True)

    def transcribe_rows(self, rows: list[dict], encoded: dict[int, np.ndarray] | None = None,
                        encoded_by: str | None = None) -> None:
        """Transcribe rows in place. ``encoded`` holds encoder outputs already computed by model
        ``encoded_by`` (keyed by row index); rows whose model is that one reuse them."""
        by_lang: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            lang = row["lang"] or row["lang_hint"]
            if row["drop_reason"] is not None:
                continue
            if not lang:
                row["drop_reason"] = "asr:no_language"  # neither language ID nor a hint
            elif (row["duration_s"] or 0.0) > MAX_WINDOW_S:
                row["drop_reason"] = "asr:too_long"  # Whisper would see only the first 30 s
            else:
                row["lang"] = lang
                by_lang[lang].append(i)
        reuse = encoded or {}
        for lang, idx in sorted(by_lang.items()):
            name = self.model_for(lang)
            model = whisper_runtime.load(name, self.device, self.compute_type, self.cpu_threads)
            if not model.model.is_multilingual and lang != "en":
                raise ValueError(f"model {name!r} is English-only but is configured for language {lang!r}")
            cached = [i for i in idx if name == encoded_by and i in reuse]
            fresh = sorted(set(idx) - set(cached), key=lambda i: -rows[i]["duration_s"])
            for k in range(0, len(cached), self.model_batch):
                chunk = cached[k : k + self.model_batch]
                self._decode(rows, chunk, model, name, lang, np.stack([reuse[i] for i in chunk]))
            for k in range(0, len(fresh), self.model_batch):
                self._decode(rows, fresh[k : k + self.model_batch], model, name, lang, None)

    def _decode(self, rows: list[dict], chunk: list[int], model, name: str, lang: str,
                encoded: np.ndarray | None) -> None:
        audio = None if encoded is not None else [np.frombuffer(rows[i]["samples"], dtype=np.float32) for i in chunk]
        hyps = whisper_runtime.transcribe(model, audio, lang, self.beam_size, max_new_tokens=self.max_new_tokens,
                                          encoded=encoded)
        for i, h in zip(chunk, hyps):
            rows[i].update(text=h.text, asr_model=name, avg_logprob=h.avg_logprob,
                           compression_ratio=h.compression_ratio, no_speech_prob=h.no_speech_prob)
