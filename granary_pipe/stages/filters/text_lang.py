"""``filter.text_lang``: the transcript's language (fastText LID-176) must agree with ``lang``.

Whisper forced to a language sometimes writes another one (it translates, or falls back to
English credits). fastText reads one line of ``text`` (newlines become spaces) and gives its
top language and probability:

* top language ≠ ``lang`` with probability ≥ ``disagree_min_prob`` →
  ``text_lang:mismatch:<detected>``;
* otherwise top probability < ``min_prob`` → ``text_lang:low_confidence``.

A disagreement below ``disagree_min_prob`` passes (short or mixed text is where LID is weak).
Texts shorter than ``min_chars`` non-space characters are not judged; they get the flag
``text_lang:skipped_short`` and stay in play. Rows without ``lang`` are not judged.
Languages in one ``same_language`` group count as equal (fastText tells hr/sr/bs apart from
spelling alone, and Whisper's ``jw`` is fastText's ``jv``). The stage sets only
``drop_reason`` and ``flags``.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from granary_pipe import models, schema
from granary_pipe.registry import register
from granary_pipe.stage import Stage
from granary_pipe.stages.filters import rules

@register("filter.text_lang")
class TextLanguageFilter(Stage):
    """Rejects rows whose text is confidently in another language than ``lang``."""

    actor = True

    model: str = Field("fasttext-lid176", description="registry name or path of a fastText LID model")
    disagree_min_prob: float = Field(0.8, ge=0, le=1, description="reject a disagreement this sure")
    min_prob: float = Field(0.3, ge=0, le=1, description="reject when the top language is less sure")
    min_chars: int = Field(20, ge=0, description="shorter texts are only flagged text_lang:skipped_short")
    same_language: list[list[str]] = Field(
        default_factory=lambda: [["hr", "sr", "bs", "sh"], ["no", "nb", "nn"], ["jw", "jv"]],
        description="codes treated as one language",
    )
    batch_size: int = 1024

    _model: object | None = None

    def models(self) -> list[str]:
        return [self.model]

    def setup(self) -> None:
        if self._model is None:
            from granary_pipe.stages.translate.filters import FastTextLID

            self._model = FastTextLID(models.resolve(self.model), k=1)

    def _canon(self, code: str) -> str:
        for group in self.same_language:
            if code in group:
                return group[0]
        return code

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """Top (language, probability) of each text, probabilities clipped to [0, 1]."""
        self.setup()
        tops = [next(iter(self._model(t).items()), ("und", 0.0)) for t in texts]  # type: ignore[operator]
        return [(lang, min(prob, 1.0)) for lang, prob in tops]

    def process(self, active: pa.Table) -> pa.Table:
        rows = active.select(["text", "lang"]).to_pylist()
        judged = [i for i, r in enumerate(rows) if r["lang"] and rules.char_count(r["text"]) >= self.min_chars]
        preds = dict(zip(judged, self.predict([rows[i]["text"] for i in judged]))) if judged else {}
        flags: list[list[str]] = []
        for i, r in enumerate(rows):
            fired = []
            if i in preds:
                detected, prob = preds[i]
                if self._canon(detected) != self._canon(r["lang"]) and prob >= self.disagree_min_prob:
                    fired.append(f"text_lang:mismatch:{detected}")
                elif prob < self.min_prob:
                    fired.append("text_lang:low_confidence")
            elif r["lang"] and rules.char_count(r["text"]):
                fired.append("text_lang:skipped_short")
            flags.append(fired)
        table = schema.add_flags(active, flags)
        return schema.reject(table, [fs[0] if fs and fs[0] != "text_lang:skipped_short" else None for fs in flags])
