"""Segment recordings into speech segments with the Silero VAD bundled in faster-whisper.

Speech regions found by the VAD are merged left to right while the merged span stays within
``max_segment_s`` and the silence between them is at most ``max_merge_gap_s``. A recording
with no speech stays one row, rejected as ``segment:no_speech``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from faster_whisper.vad import VadOptions, get_speech_timestamps
from pydantic import Field

from granary_pipe import schema
from granary_pipe.registry import register
from granary_pipe.stage import Stage


def merge_regions(regions: list[tuple[int, int]], max_len: int, max_gap: int) -> list[tuple[int, int]]:
    """Merge sorted ``(start, end)`` sample spans while the span ≤ max_len and gap ≤ max_gap."""
    merged: list[tuple[int, int]] = []
    for start, end in regions:
        if merged and end - merged[-1][0] <= max_len and start - merged[-1][1] <= max_gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


@register("segment.silero")
class SileroSegment(Stage):
    """Recording rows → speech segment rows (≤ ``max_segment_s`` each)."""

    threshold: float = Field(0.5, gt=0, lt=1)
    min_speech_duration_ms: int = Field(250, ge=0)
    min_silence_duration_ms: int = Field(500, ge=0)
    speech_pad_ms: int = Field(200, ge=0)
    max_segment_s: float = Field(30.0, gt=1, le=30, description="Whisper sees 30 s at most")
    max_merge_gap_s: float = Field(2.0, ge=0)
    batch_size: int = 8

    def models(self) -> list[str]:
        return ["silero-vad"]

    def segments(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """Speech spans of one 16 kHz recording, in samples."""
        opts = VadOptions(
            threshold=self.threshold,
            min_speech_duration_ms=self.min_speech_duration_ms,
            max_speech_duration_s=self.max_segment_s - 2 * self.speech_pad_ms / 1000,
            min_silence_duration_ms=self.min_silence_duration_ms,
            speech_pad_ms=self.speech_pad_ms,
        )
        regions = [(t["start"], t["end"]) for t in get_speech_timestamps(audio, opts)]
        sr = schema.SAMPLE_RATE_HZ
        return merge_regions(regions, int(self.max_segment_s * sr), int(self.max_merge_gap_s * sr))

    def process(self, active: pa.Table) -> pa.Table:
        out = []
        sr = schema.SAMPLE_RATE_HZ
        for row in active.to_pylist():
            audio = np.frombuffer(row["samples"], dtype=np.float32)
            spans = self.segments(audio)
            if not spans:
                row["drop_reason"] = "segment:no_speech"
                row["samples"] = None
                out.append(row)
                continue
            for i, (start, end) in enumerate(spans):
                seg = dict(row)
                seg["id"] = f"{row['recording_id']}_{i:04d}"
                seg["offset_s"] = start / sr
                seg["duration_s"] = (end - start) / sr
                seg["samples"] = audio[start:end].tobytes()
                out.append(seg)
        return schema.make_table(out, with_samples=True)
