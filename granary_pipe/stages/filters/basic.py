"""Basic filters: empty or wordless text, duration bounds, Whisper's own silence rule.

Each rule has a name; the first that fires becomes ``drop_reason`` (``filter:<rule>``) and
every rule that fired is appended to ``flags``.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from granary_pipe import schema
from granary_pipe.registry import register
from granary_pipe.stage import Stage


@register("filter.basic")
class BasicFilter(Stage):
    """Rejects rows that cannot be labels whatever the language."""

    min_duration_s: float = Field(0.3, ge=0, description="shorter segments are rejected (rule too_short)")
    max_duration_s: float = Field(30.0, gt=0, description="longer segments are rejected (rule too_long)")
    no_speech_prob_max: float = Field(0.6, ge=0, le=1, description="with avg_logprob below the next")
    no_speech_logprob_max: float = Field(-1.0, description="Whisper's silence rule: both must hold")
    batch_size: int = 1024

    def rules(self, row: dict) -> list[str]:
        """Names of the rules a row breaks, in order."""
        fired = []
        text = (row.get("text") or "").strip()
        if not text:
            fired.append("empty_text")
        elif not any(ch.isalnum() for ch in text):
            fired.append("no_words")
        duration = row.get("duration_s") or 0.0
        if duration < self.min_duration_s:
            fired.append("too_short")
        if duration > self.max_duration_s:
            fired.append("too_long")
        nsp, lp = row.get("no_speech_prob"), row.get("avg_logprob")
        if nsp is not None and lp is not None and nsp > self.no_speech_prob_max and lp < self.no_speech_logprob_max:
            fired.append("no_speech")
        return fired

    def process(self, active: pa.Table) -> pa.Table:
        fired = [self.rules(r) for r in active.select(["text", "duration_s", "no_speech_prob", "avg_logprob"]).to_pylist()]
        table = schema.add_flags(active, [[f"filter:{f}" for f in fs] for fs in fired])
        return schema.reject(table, [f"filter:{fs[0]}" if fs else None for fs in fired])
