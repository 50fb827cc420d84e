"""Decodes that dropped content (too few characters per second of speech), decoded again in pieces cut at
pauses. Design: docs/architecture.md, "Data flow" (asr.whisper); floors from benchmarks/README.md."""

from __future__ import annotations

import numpy as np
from faster_whisper.transcribe import get_compression_ratio
from faster_whisper.vad import VadOptions, get_speech_timestamps
from pydantic import BaseModel, ConfigDict, Field

from granary_pipe import schema
from granary_pipe.stages.asr import whisper_runtime
from granary_pipe.stages.filters.rules import char_count, char_rate
from granary_pipe.stages.segment.rows import merge_regions

FLOORS_BY_LANG = {"zh": 1.5, "yue": 1.5, "ja": 2.0, "ko": 2.0}
"""Characters per second of speech below which a decode is taken to have dropped content."""


class Redecode(BaseModel):
    """When a decode that dropped content is decoded again in pieces (:mod:`redecode`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="false: keep every first decode")
    min_chars_per_s: float = Field(default=5.0, gt=0, description="non-space characters per second of "
                                                                            "speech below which content was dropped")
    min_chars_per_s_by_lang: dict[str, float] = Field(default_factory=dict, description="per-language floors "
                                                      f"(built in: {FLOORS_BY_LANG})")
    min_segment_s: float = Field(default=8.0, gt=0, description="only segments at least this long are cut")
    max_piece_s: float = Field(default=12.0, gt=1, le=30, description="longest piece decoded on its own")


def floor_for(lang: str, opts: Redecode) -> float:
    """Characters per second of speech below which a decode in ``lang`` dropped content (the options'
    per-language floor, else the built-in one, else ``min_chars_per_s``)."""
    return {**FLOORS_BY_LANG, **opts.min_chars_per_s_by_lang}.get(lang, opts.min_chars_per_s)


def suspects(rows: list[dict], idx: list[int], lang: str, opts: Redecode) -> list[int]:
    """Rows of ``idx`` long enough to cut whose text is too short for their whole duration (the
    cheap screen; :func:`plan` then measures against the speech inside them)."""
    floor = floor_for(lang, opts)
    return [i for i in idx if (rows[i]["duration_s"] or 0.0) >= opts.min_segment_s
            and (char_rate(rows[i]["text"], rows[i]["duration_s"]) or 0.0) < floor]


def plan(row: dict, lang: str, opts: Redecode) -> list[np.ndarray] | None:
    """The pieces to decode for a suspect row, or None when its text fits its speech or it has
    no pause to cut at."""
    audio = np.frombuffer(row["samples"], dtype=np.float32)
    vad = VadOptions(min_silence_duration_ms=150, speech_pad_ms=100)  # a pause of 150 ms may cut
    regions = [(t["start"], t["end"]) for t in get_speech_timestamps(audio, vad)]
    speech_s = sum(e - s for s, e in regions) / schema.SAMPLE_RATE_HZ
    if not regions or (char_rate(row["text"], speech_s) or 0.0) >= floor_for(lang, opts):
        return None
    max_samples = int(opts.max_piece_s * schema.SAMPLE_RATE_HZ)
    parts = merge_regions(regions, max_samples, max_samples)  # consecutive regions, a longer one alone
    return [audio[s:e] for s, e in parts] if len(parts) > 1 else None


def joined(hyps: list[whisper_runtime.Hypothesis]) -> whisper_runtime.Hypothesis:
    """The pieces' hypotheses as one: texts in order; scores weighted by how much each said."""
    text = " ".join(h.text.strip() for h in hyps if h.text.strip())
    return whisper_runtime.Hypothesis(text, whisper_runtime.mean_logprob(hyps),
                                      float(get_compression_ratio(text)) if text else 0.0,
                                      float(min(h.no_speech_prob for h in hyps)))


def better(old: str | None, new: str, gain: float = 1.3) -> bool:
    """True when the pieces say clearly more than the one decode did."""
    return char_count(new) > gain * char_count(old)
