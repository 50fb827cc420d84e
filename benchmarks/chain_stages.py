"""A benchmark-only stage, registered at run time (``chain_scale.py`` imports this module in the
``granary run`` process; Ray's workers import it by name from PYTHONPATH).

``bench.reference_text`` stands in for ASR in a cheap pipeline: each row's ``text`` becomes the
listing's reference text (``ref_text``) and its ``lang`` the listing's language hint, so the
kept rows of a run without Whisper are trainable (``granary train`` needs text). Segments of a
recording all get the recording's whole reference text: right for the one-sentence clips
``chain_scale.py`` makes, not a labelling method.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from granary_pipe import schema
from granary_pipe.registry import register
from granary_pipe.stage import Stage

NAME = "bench.reference_text"


@register(NAME)
class ReferenceText(Stage):
    """``text`` := ``ref_text``, ``lang`` := ``lang`` or ``lang_hint`` (benchmark stand-in for ASR)."""

    batch_size: int = 4096

    def process(self, active: pa.Table) -> pa.Table:
        out = schema.set_column(active, "text", active.column("ref_text"))
        return schema.set_column(out, "lang", pc.coalesce(active.column("lang"), active.column("lang_hint")))
