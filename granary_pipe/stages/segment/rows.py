"""Segment rows from a recording row: what ``segment.silero`` and ``segment.pyannote`` emit."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from granary_pipe import schema


def segment_rows(row: dict[str, Any], spans: Sequence[tuple[int, int]], audio: np.ndarray,
                 speakers: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per ``(start, end)`` sample span of ``audio`` (16 kHz float32), ids
    ``{recording_id}_{i:04d}``, each with its offset, duration, samples and, when ``speakers``
    is given, ``speakers[i]``. No spans: the recording row itself, rejected as
    ``segment:no_speech`` (``row`` is changed in place)."""
    if not spans:
        row["drop_reason"] = "segment:no_speech"
        row["samples"] = None
        return [row]
    sr = schema.SAMPLE_RATE_HZ
    out = []
    for i, (start, end) in enumerate(spans):
        seg = dict(row)
        seg["id"] = f"{row['recording_id']}_{i:04d}"
        seg["offset_s"] = start / sr
        seg["duration_s"] = (end - start) / sr
        if speakers is not None:
            seg["speaker"] = speakers[i]
        seg["samples"] = audio[start:end].tobytes()
        out.append(seg)
    return out
