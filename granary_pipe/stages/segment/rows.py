"""What the segment stages share: merging speech spans, and segment rows from a recording row."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from granary_pipe import schema


def merge_regions(regions: list[tuple[int, int]], max_len: int, max_gap: int) -> list[tuple[int, int]]:
    """Merge sorted ``(start, end)`` sample spans while the span ≤ max_len and gap ≤ max_gap."""
    merged: list[tuple[int, int]] = []
    for start, end in regions:
        if merged and end - merged[-1][0] <= max_len and start - merged[-1][1] <= max_gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def segment_rows(row: dict[str, Any], spans: Sequence[tuple[int, int]], audio: np.ndarray,
                 speakers: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per ``(start, end)`` sample span of ``audio``, id ``{recording_id}_{i:04d}``, with its
    offset, duration, samples and ``speakers[i]``; no spans: ``row`` itself, rejected ``segment:no_speech``."""
    if not spans:
        row["drop_reason"] = "segment:no_speech"
        row["samples"] = None
        return [row]
    sr = schema.SAMPLE_RATE_HZ
    out = []
    for i, (start, end) in enumerate(spans):
        seg = {**row, "id": f"{row['recording_id']}_{i:04d}", "offset_s": start / sr, "duration_s": (end - start) / sr}
        if speakers is not None:
            seg["speaker"] = speakers[i]
        seg["samples"] = audio[start:end].tobytes()
        out.append(seg)
    return out
