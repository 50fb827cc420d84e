"""``pnc.none``: keep Whisper's own punctuation and say so in ``run.json``."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from granary_pipe.registry import register
from granary_pipe.stage import Stage


@register("pnc.none")
class NoPunctuation(Stage):
    """Leaves ``text`` as Whisper wrote it (CPU pipelines without an LLM)."""

    batch_size: int = 4096

    def process(self, active: pa.Table) -> pa.Table:
        return active

    def run_info(self) -> dict[str, Any]:
        return {"punctuation": "Whisper's own; no LLM restoration"}
