"""``filter.text_lang``: the transcript's language (fastText LID-176) must agree with ``lang``.
Design: docs/architecture.md, "Data flow" (filter.text_lang)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from granary_pipe import text_lid
from granary_pipe.registry import register
from granary_pipe.stages.filters import rules
from granary_pipe.stages.filters.base import FilterStage


@register("filter.text_lang")
class TextLanguageFilter(FilterStage):
    """Rejects rows whose text is confidently in another language than ``lang``."""

    actor = True
    RULES: ClassVar[tuple[str, ...]] = ("text_lang:mismatch", "text_lang:low_confidence",
                                        "text_lang:skipped_no_letters", "text_lang:skipped_short")
    FLAG_ONLY: ClassVar[tuple[str, ...]] = ("text_lang:skipped_no_letters", "text_lang:skipped_short")
    COLUMNS: ClassVar[tuple[str, ...]] = ("text", "lang")

    lid_model: str = Field("fasttext-lid176", description="registry name or path of a fastText LID model")
    min_mismatch_prob: float = Field(0.8, ge=0, le=1, description="reject a disagreement this sure")
    min_prob: float = Field(0.3, ge=0, le=1, description="reject when the top language is less sure")
    min_letters: int = Field(20, ge=0, description="texts with fewer letters are only flagged "
                                                   "(text_lang:skipped_short, or skipped_no_letters without any)")
    same_language: list[list[str]] = Field(
        default_factory=lambda: [list(group) for group in text_lid.SAME_LANGUAGE],
        description="codes treated as one language")
    batch_size: int = 1024

    _model: text_lid.FastTextLID | None = None

    def models(self) -> list[str]:
        return [self.lid_model]

    def setup(self) -> None:
        self._lid()

    def _lid(self) -> text_lid.FastTextLID:
        if self._model is None:
            self._model = text_lid.load(self.lid_model, k=1)
        return self._model

    def rules(self, row: dict[str, Any]) -> list[str]:
        text, lang = row.get("text") or "", row.get("lang")
        if not lang or not rules.char_count(text):
            return []
        letters = rules.letter_count(text)
        if letters == 0:
            return ["text_lang:skipped_no_letters"]
        if letters < self.min_letters:
            return ["text_lang:skipped_short"]
        detected, prob = text_lid.top_language(self._lid(), text)
        prob = min(prob, 1.0)  # fastText may give a hair above 1
        same = text_lid.canonical(detected, self.same_language) == text_lid.canonical(lang, self.same_language)
        if not same and prob >= self.min_mismatch_prob:
            return [f"text_lang:mismatch:{detected}"]
        return ["text_lang:low_confidence"] if prob < self.min_prob else []
