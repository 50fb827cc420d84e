"""``filter.text_lang``: the transcript's language (fastText LID-176) must agree with ``lang``.

Whisper forced to a language sometimes writes another one (it translates, or falls back to
English credits). fastText reads one line of ``text`` (newlines become spaces) and gives its
top language and probability:

* top language ≠ ``lang`` with probability ≥ ``min_mismatch_prob`` →
  ``text_lang:mismatch:<detected>``;
* otherwise top probability < ``min_prob`` → ``text_lang:low_confidence``.

A disagreement below ``min_mismatch_prob`` passes (short or mixed text is where LID is weak).
Only text with at least ``min_letters`` letters (``rules.letter_count``: any script, not digits
or symbols) is judged: numbers and symbols say nothing about a language, so ``1, 2, 3, 4, 5`` or
``2024 – 19,99 €`` leave the audio language ID in charge. Such rows stay in play with a flag:
``text_lang:skipped_no_letters`` (text without a single letter) or ``text_lang:skipped_short``
(some letters, too few). Rows without ``lang`` are not judged. Languages in one ``same_language``
group count as equal (fastText tells hr/sr/bs apart from spelling alone, and Whisper's ``jw`` is
fastText's ``jv``). The stage sets only ``drop_reason`` and ``flags``.
"""

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
        description="codes treated as one language",
    )
    batch_size: int = 1024

    _model: object | None = None

    def models(self) -> list[str]:
        return [self.lid_model]

    def setup(self) -> None:
        if self._model is None:
            self._model = text_lid.load(self.lid_model, k=1)

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """Top (language, probability) of each text, probabilities clipped to [0, 1]."""
        self.setup()
        tops = [text_lid.top_language(self._model, t) for t in texts]  # type: ignore[arg-type]
        return [(lang, min(prob, 1.0)) for lang, prob in tops]

    def rules(self, row: dict[str, Any]) -> list[str]:
        """The row's verdict: a mismatch, low confidence, or why it was not judged."""
        text, lang = row.get("text"), row.get("lang")
        if not lang or not rules.char_count(text):
            return []
        letters = rules.letter_count(text)
        if letters == 0:
            return ["text_lang:skipped_no_letters"]
        if letters < self.min_letters:
            return ["text_lang:skipped_short"]
        detected, prob = self.predict([text])[0]
        same = text_lid.canonical(detected, self.same_language) == text_lid.canonical(lang, self.same_language)
        if not same and prob >= self.min_mismatch_prob:
            return [f"text_lang:mismatch:{detected}"]
        return ["text_lang:low_confidence"] if prob < self.min_prob else []
