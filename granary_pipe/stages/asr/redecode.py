"""Decodes that dropped content: found by their character rate, decoded again in pieces.

On long segments (15–30 s, several sentences) Whisper's decoder sometimes stops early or skips:
a 20 s segment comes back as two words, and half a recording would be released as if it were
the whole. The tell is the rate: non-space characters per second of *speech* (VAD speech inside
the segment, pauses excluded) far under what any speaker of the language produces. Such a
segment is cut at its pauses (Silero, with a shorter minimum silence than segmentation uses)
into pieces of at most ``max_piece_s`` seconds, the pieces are decoded on their own, and their texts
joined in order replace the short one when they say clearly more. Otherwise the row keeps its
text and the flag ``asr:low_char_rate`` (filters and the report can see it).

Floors are per language (characters per second of speech). Natural speech in languages written
with spaces runs at about 10–20 non-space characters per second; languages written with
logographs or syllabaries at 3–8; see ``benchmarks/README.md`` for the dev-set figures the
defaults come from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

from granary_pipe import schema
from granary_pipe.stages.asr import whisper_runtime

DEFAULT_FLOOR = 5.0
FLOORS_BY_LANG = {"zh": 1.5, "yue": 1.5, "ja": 2.0, "ko": 2.0}
"""Characters per second of speech below which a decode is taken to have dropped content."""


@dataclass(frozen=True)
class RedecodeOptions:
    """When and how a segment is decoded again in pieces."""

    floor: float = DEFAULT_FLOOR
    floors_by_lang: dict | None = None
    min_segment_s: float = 8.0
    max_piece_s: float = 12.0
    min_silence_ms: int = 150


def char_rate(text: str | None, seconds: float) -> float:
    """Non-space characters per second (0 for no time)."""
    return sum(1 for ch in (text or "") if not ch.isspace()) / seconds if seconds > 0 else 0.0


def floor_for(lang: str, opts: RedecodeOptions) -> float:
    """The character-rate floor of a language."""
    return {**FLOORS_BY_LANG, **(opts.floors_by_lang or {})}.get(lang, opts.floor)


def speech_regions(audio: np.ndarray, min_silence_ms: int) -> list[tuple[int, int]]:
    """Speech spans (samples) of a segment, split at pauses of at least ``min_silence_ms``."""
    opts = VadOptions(min_silence_duration_ms=min_silence_ms, speech_pad_ms=100)
    return [(t["start"], t["end"]) for t in get_speech_timestamps(audio, opts)]


def pieces(regions: list[tuple[int, int]], max_samples: int) -> list[tuple[int, int]]:
    """Consecutive regions grouped into pieces of at most ``max_samples`` (a longer region alone)."""
    out: list[tuple[int, int]] = []
    for start, end in regions:
        if out and end - out[-1][0] <= max_samples:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def suspects(rows: list[dict], idx: list[int], lang: str, opts: RedecodeOptions) -> list[int]:
    """Rows (of ``idx``) long enough to cut whose text is too short for their whole duration: the
    cheap screen; :func:`plan` then measures against the speech inside them."""
    floor = floor_for(lang, opts)
    return [i for i in idx if (rows[i]["duration_s"] or 0.0) >= opts.min_segment_s
            and char_rate(rows[i]["text"], rows[i]["duration_s"]) < floor]


def plan(row: dict, lang: str, opts: RedecodeOptions) -> list[np.ndarray] | None:
    """The pieces to decode for a suspect row, or None when its text fits its speech or it has
    no pause to cut at."""
    audio = np.frombuffer(row["samples"], dtype=np.float32)
    regions = speech_regions(audio, opts.min_silence_ms)
    speech_s = sum(e - s for s, e in regions) / schema.SAMPLE_RATE_HZ
    if not regions or char_rate(row["text"], speech_s) >= floor_for(lang, opts):
        return None
    parts = pieces(regions, int(opts.max_piece_s * schema.SAMPLE_RATE_HZ))
    return [audio[s:e] for s, e in parts] if len(parts) > 1 else None


def joined(hyps: list[whisper_runtime.Hypothesis]) -> whisper_runtime.Hypothesis:
    """The pieces' hypotheses as one: texts in order; scores weighted by how much each said."""
    from faster_whisper.transcribe import get_compression_ratio

    text = " ".join(h.text.strip() for h in hyps if h.text.strip())
    weights = [max(len(h.text), 1) for h in hyps]
    return whisper_runtime.Hypothesis(
        text, float(np.average([h.avg_logprob for h in hyps], weights=weights)),
        float(get_compression_ratio(text)) if text else 0.0, float(min(h.no_speech_prob for h in hyps)))


def better(old: str | None, new: str, gain: float = 1.3) -> bool:
    """True when the pieces say clearly more than the one decode did."""
    return char_rate(new, 1.0) > gain * char_rate(old, 1.0)
