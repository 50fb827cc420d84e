"""What every translation stage shares: the filter parameters and the gate (a failed translation flags, never rejects).

Design: docs/architecture.md, "translate.llm / translate.whisper".
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field, PrivateAttr

from granary_pipe import models, schema, text_lid
from granary_pipe.stage import Stage
from granary_pipe.stages.translate import filters

Result = tuple[str, str, str | None]
"""(source language, target language, translation or None when the call failed)."""


class TranslationStage(Stage):
    """Base of the translation stages (not registered itself)."""

    min_words: int = Field(2, ge=1, description="both sides need at least this many words")
    max_length_ratio: float = Field(4.0, gt=1, description="reject when one side has this many times the words")
    min_script_fraction: float = Field(0.9, ge=0, le=1, description="letters of the translation in its script")
    max_compression_ratio: float | None = Field(2.4, gt=0, description="repetition check; None = off")
    max_ngram_repeats: int | None = Field(2, ge=1, description="a word 4-gram seen more often is a loop; None = off")
    lid_model: str | None = Field("fasttext-lid176", description="fastText LID model; None = no LID check")
    min_lid_prob: float = Field(0.3, ge=0, le=1, description="each side's expected language needs more than this")
    min_lid_letters: int = Field(20, ge=0, description="language ID judges only a side with this many letters "
                                                       "(not digits or symbols), as filter.text_lang does")
    model_licenses: models.ModelLicenses = Field(
        default_factory=dict, description="{model path: SPDX id} for models given by path (the Whisper model, "
                                          "lid_model); needed for a release; registry models carry their own")

    _lid: Any = PrivateAttr(None)

    def __getstate__(self) -> dict[Any, Any]:  # ship the config to workers, never loaded models
        state = super().__getstate__()
        state["__pydantic_private__"] = {k: None for k in (state.get("__pydantic_private__") or {})}
        return state

    def declared_models(self, names: list[str]) -> list[str]:
        """``names`` and the filters' model, with the licenses ``model_licenses`` declares (``run.json``)."""
        return models.refs(self.name, names + ([self.lid_model] if self.lid_model else []), self.model_licenses)

    def setup_filters(self) -> None:
        if self.lid_model and self._lid is None:
            self._lid = text_lid.load(self.lid_model)

    def rules(self, src: str, tgt: str, src_lang: str, tgt_lang: str) -> list[str]:
        """Rules the pair breaks (``filters.check_pair`` with this stage's thresholds)."""
        return filters.check_pair(
            src, tgt, src_lang, tgt_lang, min_words=self.min_words, max_length_ratio=self.max_length_ratio,
            min_script_fraction=self.min_script_fraction, max_compression_ratio=self.max_compression_ratio,
            max_ngram_repeats=self.max_ngram_repeats, lid=self._lid, min_lid_prob=self.min_lid_prob,
            min_lid_letters=self.min_lid_letters,
        )

    def gate(self, active: pa.Table, results: dict[int, Result], skipped: dict[int, str] | None = None,
             fired_before: dict[int, list[str]] | None = None) -> pa.Table:
        """Write translations that pass the filters; flag the others and the ``skipped`` rows
        (``fired_before``: rules a stage checked itself, such as decoder scores, listed first)."""
        texts = active.column("text").to_pylist()
        translation = active.column("translation").to_pylist()
        translation_lang = active.column("translation_lang").to_pylist()
        flags: list[list[str]] = [[] for _ in texts]
        for i, reason in (skipped or {}).items():
            flags[i].append(f"translate:{reason}")
        for i, (src_lang, tgt_lang, out) in results.items():
            fired = ["call_failed"] if out is None else self.rules(texts[i], out, src_lang, tgt_lang)
            fired = (fired_before or {}).get(i, []) + fired
            if fired:
                flags[i].extend(f"translate:{r}" for r in fired)
                translation[i], translation_lang[i] = None, None
            else:
                translation[i], translation_lang[i] = out, tgt_lang
        table = schema.set_column(active, "translation", translation)
        table = schema.set_column(table, "translation_lang", translation_lang)
        return schema.add_flags(table, flags)

    def filter_info(self) -> dict[str, Any]:
        """The filters' settings for ``run.json``."""
        return {
            "min_words": self.min_words, "max_length_ratio": self.max_length_ratio,
            "min_script_fraction": self.min_script_fraction, "max_compression_ratio": self.max_compression_ratio,
            "max_ngram_repeats": self.max_ngram_repeats,
            "language_id": f"{self.lid_model}, expected language prob > {self.min_lid_prob} on sides with "
                           f"≥ {self.min_lid_letters} letters" if self.lid_model else "off",
        }
