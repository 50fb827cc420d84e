"""``filter.pass_agreement``: two independent decodes of a segment should say the same thing; rows without
``pass1_text`` pass untouched. Design: docs/architecture.md, "Data flow" (filter.pass_agreement)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from granary_pipe import text
from granary_pipe.registry import register
from granary_pipe.stages.filters.base import FilterStage


@register("filter.pass_agreement")
class PassAgreementFilter(FilterStage):
    """Rejects rows whose text disagrees with the independent first-pass transcript."""

    RULES: ClassVar[tuple[str, ...]] = ("pass_agreement:wer",)
    COLUMNS: ClassVar[tuple[str, ...]] = ("text", "pass1_text", "lang")

    max_wer: float = Field(0.5, ge=0, description="reject above this WER of text vs pass1_text")
    unspaced_langs: list[str] = Field(default_factory=lambda: list(text.UNSPACED_LANGS),
                                      description="compare by character (CER) in these languages")
    cer_below_words: int = Field(3, ge=0, description="compare by character (CER) when both texts have fewer "
                                 "words than this (0: never)")
    batch_size: int = 1024

    def rules(self, row: dict[str, Any]) -> list[str]:
        if row["pass1_text"] is None:
            return []
        lang = row["lang"]
        rate = text.error_rate(row["pass1_text"], row["text"], lang, by_char=lang in self.unspaced_langs,
                               cer_below_words=self.cer_below_words)
        return ["pass_agreement:wer"] if rate > self.max_wer else []
