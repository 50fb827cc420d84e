"""``segment.silero``: speech segments from the Silero VAD bundled in faster-whisper.
Design: docs/architecture.md, "Data flow" (segment.silero)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
from faster_whisper.vad import VadOptions, get_speech_timestamps
from pydantic import Field

from granary_pipe import schema
from granary_pipe.registry import register
from granary_pipe.stage import Stage
from granary_pipe.stages.segment.rows import merge_regions, segment_rows

VAD_CHUNK = 600 * schema.SAMPLE_RATE_HZ
"""Silero runs over at most 10 min of audio at a time (faster-whisper's VAD copies its whole input); a
region cut at a chunk boundary is joined again by ``merge_regions``."""


@register("segment.silero")
class SileroSegment(Stage):
    """Recording rows → speech segment rows (≤ ``max_segment_s`` each)."""

    RULES: ClassVar[tuple[str, ...]] = ("segment:no_speech",)

    threshold: float = Field(0.5, gt=0, lt=1, description="Silero speech probability above which a frame is speech")
    min_speech_duration_ms: int = Field(250, ge=0, description="shorter speech regions are dropped")
    min_silence_duration_ms: int = Field(500, ge=0, description="a pause must last this long to end a region")
    speech_pad_ms: int = Field(200, ge=0, description="padding added on each side of a region")
    max_segment_s: float = Field(30.0, gt=1, le=30, description="Whisper sees 30 s at most")
    max_merge_gap_s: float = Field(2.0, ge=0, description="regions closer than this merge (up to max_segment_s)")
    batch_size: int = 8

    def models(self) -> list[str]:
        return ["silero-vad"]

    def segments(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """Speech spans of one 16 kHz recording, in samples."""
        opts = VadOptions(threshold=self.threshold, min_speech_duration_ms=self.min_speech_duration_ms,
                          max_speech_duration_s=self.max_segment_s - 2 * self.speech_pad_ms / 1000,
                          min_silence_duration_ms=self.min_silence_duration_ms, speech_pad_ms=self.speech_pad_ms)
        regions = []
        for start in range(0, audio.size, VAD_CHUNK):  # bounded memory on hour-long recordings
            regions += [(start + t["start"], start + t["end"])
                        for t in get_speech_timestamps(audio[start : start + VAD_CHUNK], opts)]
        sr = schema.SAMPLE_RATE_HZ
        return merge_regions(regions, int(self.max_segment_s * sr), int(self.max_merge_gap_s * sr))

    def process(self, active: pa.Table) -> pa.Table:
        out = []
        samples = active.column(schema.TRANSIENT.name)
        for k, row in enumerate(active.drop_columns([schema.TRANSIENT.name]).to_pylist()):
            audio = np.frombuffer(samples[k].as_buffer(), dtype=np.float32)  # no copy of the recording
            out += segment_rows(row, self.segments(audio), audio)
        return schema.make_table(out, with_samples=True)
