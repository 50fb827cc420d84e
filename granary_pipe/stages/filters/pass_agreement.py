"""``filter.pass_agreement``: two independent decodes of a segment should say the same thing.

Where a row carries ``pass1_text`` (a first, independent transcription of the same audio), the
word error rate of ``text`` against it, both normalised (NFKC, casefold, punctuation removed,
see ``rules.normalize``), must not exceed ``max_wer``; otherwise → ``pass_agreement:wer``.
Hallucinations rarely repeat across decodes, so disagreement marks them. For languages
written without spaces (``unspaced_langs``) the rate is per character (CER). An empty
``pass1_text`` against a non-empty ``text`` counts as 1.0. Rows whose ``pass1_text`` is null
pass untouched. It costs a second decode, so no pipeline runs it by default.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from granary_pipe import schema
from granary_pipe.registry import register
from granary_pipe.stage import Stage
from granary_pipe.stages.filters import rules


@register("filter.pass_agreement")
class PassAgreementFilter(Stage):
    """Rejects rows whose text disagrees with the independent first-pass transcript."""

    max_wer: float = Field(0.5, ge=0, description="reject above this WER of text vs pass1_text")
    unspaced_langs: list[str] = Field(default_factory=lambda: list(rules.UNSPACED_LANGS),
                                      description="compare by character (CER) in these languages")
    batch_size: int = 1024

    def process(self, active: pa.Table) -> pa.Table:
        reasons: list[str | None] = []
        for r in active.select(["text", "pass1_text", "lang"]).to_pylist():
            fired = r["pass1_text"] is not None and rules.error_rate(
                r["pass1_text"], r["text"], by_char=r["lang"] in self.unspaced_langs
            ) > self.max_wer
            reasons.append("pass_agreement:wer" if fired else None)
        table = schema.add_flags(active, [[x] if x else [] for x in reasons])
        return schema.reject(table, reasons)
