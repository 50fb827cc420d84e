"""``filter.basic``: empty or wordless text, duration bounds (inclusive; a missing duration is too short),
Whisper's silence rule. Design: docs/architecture.md, "Data flow" (filter.basic)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from granary_pipe.registry import register
from granary_pipe.stages.filters import rules
from granary_pipe.stages.filters.base import FilterStage


@register("filter.basic")
class BasicFilter(FilterStage):
    """Rejects rows that cannot be labels whatever the language."""

    RULES: ClassVar[tuple[str, ...]] = ("filter:empty_text", "filter:no_words", "filter:too_short",
                                        "filter:too_long", "filter:no_speech")
    COLUMNS: ClassVar[tuple[str, ...]] = ("text", "duration_s", "no_speech_prob", "avg_logprob")

    min_duration_s: float = Field(0.3, ge=0, description="shorter segments are rejected (rule too_short)")
    max_duration_s: float = Field(30.0, gt=0, description="longer segments are rejected (rule too_long)")
    max_no_speech_prob: float | None = Field(
        0.6, ge=0, le=1, description="Whisper no-speech probability above which the segment is silence (None: off)")
    no_speech_mode: Literal["with_logprob", "alone"] = Field(
        "with_logprob", description="with_logprob: avg_logprob must also be below the next (Whisper's rule); "
                                    "alone: the probability decides")
    max_no_speech_avg_logprob: float = Field(-1.0, description="with_logprob: avg_logprob below this as well")
    batch_size: int = 1024

    def rules(self, row: dict[str, Any]) -> list[str]:
        fired = []
        text = (row.get("text") or "").strip()
        if not text:
            fired.append("filter:empty_text")
        elif not any(ch.isalnum() for ch in text):
            fired.append("filter:no_words")
        duration = row.get("duration_s") or 0.0
        if duration < self.min_duration_s:
            fired.append("filter:too_short")
        if duration > self.max_duration_s:
            fired.append("filter:too_long")
        if rules.whisper_silence(row.get("no_speech_prob"), row.get("avg_logprob"), self.max_no_speech_prob,
                                 self.max_no_speech_avg_logprob, alone=self.no_speech_mode == "alone"):
            fired.append("filter:no_speech")
        return fired
