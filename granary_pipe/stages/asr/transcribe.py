"""``asr.whisper`` (pass 2): batched transcription with the language from pass 1 forced.
Design: docs/architecture.md, "Data flow" (asr.whisper)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from granary_pipe import models, schema
from granary_pipe.models import ModelLicenses
from granary_pipe.models import refs as model_refs
from granary_pipe.registry import register
from granary_pipe.stage import Stage
from granary_pipe.stages.asr import redecode, whisper_runtime
from granary_pipe.stages.asr.redecode import Redecode


@register("asr.whisper")
class WhisperTranscribe(Stage):
    """Fills ``text``, ``asr_model`` and the decoder scores of each segment."""

    actor = True
    RULES: ClassVar[tuple[str, ...]] = ("asr:no_language", "asr:too_long", "asr:redecoded", "asr:low_char_rate")

    models_by_lang: dict[str, str] = Field(
        default_factory=lambda: {"default": "whisper-base"},
        description="language code → model name or path; 'default' for every other language")
    beam_size: int = Field(5, ge=1, description="beam search width (1: greedy)")
    max_new_tokens: int | None = Field(
        None, ge=1, description="cap on decoded tokens per segment (None: the model's limit)")
    device: str = Field("auto", description="CTranslate2 device: auto, cpu or cuda")
    compute_type: str = Field("int8", description="CTranslate2 compute type: int8, int8_float16, float16, float32, ...")
    cpu_threads: int = Field(
        0, ge=0, description="CPU threads per worker; 0: the worker's CPU reservation (at least 1)")
    model_batch: int = Field(8, ge=1, description="segments per CTranslate2 call (the model's batch)")
    timestamps: bool = Field(False, description="decode in Whisper's timestamp mode (WhisperModel.transcribe's and the "
                             "published way's) instead of <|notimestamps|>; see benchmarks/README.md")
    pass1: Literal["none", "greedy"] = Field("none", description="greedy: also decode greedily into pass1_text "
                                                                  "(for filter.pass_agreement)")
    redecode: Redecode = Field(default_factory=Redecode, description="decode again in pieces when the "
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
        """The Whisper model (registry name or path) for rows in ``lang``: its own, else ``default``'s."""
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
        reuse = encoded or {}
        for lang, idx in sorted(self._by_language(rows).items()):
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

    @staticmethod
    def _by_language(rows: list[dict]) -> dict[str, list[int]]:
        """Indices of the rows to transcribe per language; rows without one or over 30 s are rejected."""
        by_lang: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            lang = row["lang"] or row["lang_hint"]
            if row["drop_reason"] is not None:
                continue
            if not lang:
                row["drop_reason"] = "asr:no_language"  # neither language ID nor a hint
            elif (row["duration_s"] or 0.0) > whisper_runtime.MAX_WINDOW_S:
                row["drop_reason"] = "asr:too_long"  # Whisper would see only the first 30 s
            else:
                row["lang"] = lang
                by_lang[lang].append(i)
        return by_lang

    def _transcribe(self, model, chunks: list[np.ndarray] | None, lang: str, beam_size: int,
                    encoded: whisper_runtime.Encoded | None = None) -> list[whisper_runtime.Hypothesis]:
        return whisper_runtime.transcribe(model, chunks, lang, beam_size, max_new_tokens=self.max_new_tokens,
                                          encoded=encoded, timestamps=self.timestamps)

    def _decode(self, rows: list[dict], chunk: list[int], model, name: str, lang: str,
                encoded: whisper_runtime.Encoded | None) -> None:
        if encoded is None:
            audio = [np.frombuffer(rows[i]["samples"], dtype=np.float32) for i in chunk]
            encoded = whisper_runtime.encode(model, audio)
        for i, h in zip(chunk, self._transcribe(model, None, lang, self.beam_size, encoded), strict=True):
            rows[i].update(asdict(h), asr_model=name)  # text and the decoder's scores
        if self.pass1 == "greedy":
            for i, h in zip(chunk, self._transcribe(model, None, lang, 1, encoded), strict=True):
                rows[i]["pass1_text"] = h.text

    def _redecode(self, rows: list[dict], idx: list[int], model, lang: str) -> None:
        """Decode again, in pieces cut at their pauses, the rows whose text is far too short."""
        for i in redecode.suspects(rows, idx, lang, self.redecode):
            parts = redecode.plan(rows[i], lang, self.redecode)
            if parts is None:
                continue
            hyps = []
            for k in range(0, len(parts), self.model_batch):
                hyps += self._transcribe(model, parts[k : k + self.model_batch], lang, self.beam_size)
            new = redecode.joined(hyps)
            flags = list(rows[i].get("flags") or [])
            if redecode.better(rows[i]["text"], new.text):
                rows[i].update(asdict(new), flags=flags + [f"asr:redecoded:{len(parts)}_pieces"])
                if self.pass1 == "greedy":
                    greedy = [self._transcribe(model, [p], lang, 1)[0] for p in parts]
                    rows[i]["pass1_text"] = redecode.joined(greedy).text
            else:
                rows[i]["flags"] = flags + ["asr:low_char_rate"]
