"""ASR pass 2: batched transcription with the language from pass 1 forced.

Segments are grouped by language, each language goes to its model from ``models``
(``default`` for the rest; an English-only model such as ``whisper-tiny.en`` only for ``en``),
and are decoded in batches of ``model_batch``, longest first so padding is wasted least.
Decoder scores (average log-probability, compression ratio, no-speech probability) go into the
row for the filters.

``pass1: greedy`` also decodes every segment greedily from the same encoder output and keeps
that text as ``pass1_text``: a second hypothesis for ``filter.pass_agreement`` (beam search and
greedy decoding rarely hallucinate the same words). Segments whose text is far too short for
their speech are decoded again in pieces cut at their pauses (``redecode``, see
:mod:`granary_pipe.stages.asr.redecode`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from granary_pipe import models, schema
from granary_pipe.models import ModelLicenses
from granary_pipe.models import refs as model_refs
from granary_pipe.registry import register
from granary_pipe.stage import Stage
from granary_pipe.stages.asr import redecode, whisper_runtime


MAX_WINDOW_S = whisper_runtime.N_FRAMES / 100
"""Longest segment Whisper decodes whole (30 s); segment stages must cut below it."""


class Redecode(BaseModel):
    """When a decode that dropped content is decoded again in pieces (:mod:`redecode`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="false: keep every first decode")
    min_chars_per_s: float = Field(redecode.DEFAULT_FLOOR, gt=0, description="non-space characters per second of "
                                                                             "speech below which content was dropped")
    min_chars_per_s_by_lang: dict[str, float] = Field(default_factory=dict, description="per-language floors "
                                                      f"(built in: {redecode.FLOORS_BY_LANG})")
    min_segment_s: float = Field(8.0, gt=0, description="only segments at least this long are cut")
    max_piece_s: float = Field(12.0, gt=1, le=30, description="longest piece decoded on its own")

    def options(self) -> redecode.RedecodeOptions:
        """The options as the redecode module takes them."""
        return redecode.RedecodeOptions(self.min_chars_per_s, self.min_chars_per_s_by_lang, self.min_segment_s,
                                        self.max_piece_s)


@register("asr.whisper")
class WhisperTranscribe(Stage):
    """Fills ``text``, ``asr_model`` and the decoder scores of each segment."""

    actor = True
    RULES: ClassVar[tuple[str, ...]] = ("asr:no_language", "asr:too_long", "asr:redecoded", "asr:low_char_rate")

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
    timestamps: bool = Field(False, description="decode in Whisper's timestamp mode (WhisperModel.transcribe's and the "
                                                "published way's) instead of <|notimestamps|>; see benchmarks/README.md")
    pass1: Literal["none", "greedy"] = Field("none", description="greedy: also decode greedily into pass1_text "
                                                                  "(for filter.pass_agreement)")
    redecode: Redecode = Field(default_factory=lambda: Redecode(), description="decode again in pieces when the "
                                                                            "text is far too short for the speech")
    model_licenses: ModelLicenses = Field(default_factory=dict, description="{model path: SPDX id} for "
                                                 "models given by path; needed for a release")
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
        return model_refs(self.name, sorted(set(self.models_by_lang.values())), self.model_licenses)

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
            if self.redecode.enabled:
                self._redecode(rows, idx, model, lang)

    def _decode(self, rows: list[dict], chunk: list[int], model, name: str, lang: str,
                encoded: np.ndarray | None) -> None:
        if encoded is None:
            encoded = whisper_runtime.encode(model, [np.frombuffer(rows[i]["samples"], dtype=np.float32) for i in chunk])
        hyps = whisper_runtime.transcribe(model, None, lang, self.beam_size, max_new_tokens=self.max_new_tokens,
                                          encoded=encoded, timestamps=self.timestamps)
        for i, h in zip(chunk, hyps):
            rows[i].update(text=h.text, asr_model=name, avg_logprob=h.avg_logprob,
                           compression_ratio=h.compression_ratio, no_speech_prob=h.no_speech_prob)
        if self.pass1 == "greedy":
            greedy = whisper_runtime.transcribe(model, None, lang, 1, max_new_tokens=self.max_new_tokens,
                                                encoded=encoded, timestamps=self.timestamps)
            for i, h in zip(chunk, greedy):
                rows[i]["pass1_text"] = h.text

    def _redecode(self, rows: list[dict], idx: list[int], model, lang: str) -> None:
        """Decode again, in pieces cut at their pauses, the rows whose text is far too short."""
        opts = self.redecode.options()
        for i in redecode.suspects(rows, idx, lang, opts):
            parts = redecode.plan(rows[i], lang, opts)
            if parts is None:
                continue
            hyps = []
            for k in range(0, len(parts), self.model_batch):
                hyps += whisper_runtime.transcribe(model, parts[k : k + self.model_batch], lang, self.beam_size,
                                                   max_new_tokens=self.max_new_tokens, timestamps=self.timestamps)
            new = redecode.joined(hyps)
            flags = list(rows[i].get("flags") or [])
            if redecode.better(rows[i]["text"], new.text):
                rows[i].update(text=new.text, avg_logprob=new.avg_logprob, compression_ratio=new.compression_ratio,
                               no_speech_prob=new.no_speech_prob, flags=flags + [f"asr:redecoded:{len(parts)}_pieces"])
                if self.pass1 == "greedy":
                    greedy = [whisper_runtime.transcribe(model, [p], lang, 1, max_new_tokens=self.max_new_tokens,
                                                         timestamps=self.timestamps)[0] for p in parts]
                    rows[i]["pass1_text"] = redecode.joined(greedy).text
            else:
                rows[i]["flags"] = flags + ["asr:low_char_rate"]
