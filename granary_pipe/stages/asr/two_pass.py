"""``asr.two_pass``: ``asr.language_id`` then ``asr.whisper`` in one actor (same rows), pass 2 reusing
pass 1's encoder outputs where it decodes with the language-ID model."""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from granary_pipe import schema
from granary_pipe.models import refs as model_refs
from granary_pipe.registry import register
from granary_pipe.stages.asr import whisper_runtime
from granary_pipe.stages.asr.language_id import LID_RULES, LanguageIDOptions, decide, identify
from granary_pipe.stages.asr.transcribe import WhisperTranscribe


@register("asr.two_pass")
class WhisperTwoPass(LanguageIDOptions, WhisperTranscribe):
    """Sets ``lang``/``lang_prob`` per recording, then ``text`` and decoder scores per segment."""

    RULES: ClassVar[tuple[str, ...]] = LID_RULES + WhisperTranscribe.RULES

    lid_model: str = Field("whisper-base", description="multilingual Whisper model of pass 1; pass 2 reuses its "
                                                       "encoder output for languages mapped to the same model")
    windows: int = Field(3, ge=1, le=16, description="speech windows per recording for language ID")

    def models(self) -> list[str]:
        return model_refs(self.name, sorted({self.lid_model, *self.models_by_lang.values()}), self.model_licenses)

    def process(self, active: pa.Table) -> pa.Table:
        lid = whisper_runtime.load(self.lid_model, self.device, self.compute_type, self.cpu_threads)
        rows = active.to_pylist()
        found = identify(rows, lid, self.windows, self.model_batch, keep_encoded=True)
        decide(rows, found, lid, self.min_prob, self.allowed_langs, self.resolve)
        self.transcribe_rows(rows, found.encoded, encoded_by=self.lid_model)
        return schema.make_table(rows, with_samples=True)
