"""``audio.decode``: anything PyAV (FFmpeg) reads → 16 kHz mono float32, with rate, channels, codec.
Design: docs/architecture.md, "Data flow" (audio.decode)."""

from __future__ import annotations

from typing import ClassVar

import av
import numpy as np
import pyarrow as pa
from pydantic import Field

from granary_pipe import schema
from granary_pipe.ingest.inputs import unopenable
from granary_pipe.registry import register
from granary_pipe.stage import Stage


class DecodeError(Exception):
    """A file that cannot be turned into audio samples."""


_SAMPLE_SCALE = {"u8": (128.0, 128.0), "s16": (0.0, 2.0**15), "s32": (0.0, 2.0**31), "s64": (0.0, 2.0**63),
                 "flt": (0.0, 1.0), "dbl": (0.0, 1.0)}
"""Sample format (packed name) → (offset, full scale) that maps its samples into [-1, 1]."""


def _mono_frame(frame: av.AudioFrame) -> av.AudioFrame:
    """A decoded frame as mono: the mean of its channels. FFmpeg's own mono downmix adds channels
    (stereo +3 dB, 8 channels +13 dB: samples past full scale) and fails on some channel counts."""
    channels = len(frame.layout.channels)
    if channels == 1:
        return frame
    arr = frame.to_ndarray()
    planes = arr if frame.format.is_planar else arr.reshape(-1, channels).T
    offset, scale = _SAMPLE_SCALE[frame.format.name.rstrip("p")]
    mono = ((planes.astype(np.float64) - offset).mean(axis=0) / scale).astype(np.float32)
    out = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
    out.sample_rate = frame.sample_rate
    return out


def decode_file(path: str, max_duration_s: float) -> tuple[np.ndarray, dict]:
    """Decode ``path`` to 16 kHz mono float32; returns samples and probe info."""
    problem = unopenable(path)  # stat only: a FIFO is never opened (it would block)
    if problem:
        raise DecodeError(problem)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=schema.SAMPLE_RATE_HZ)
    pcm = bytearray()  # one growing buffer: no per-frame arrays, no concatenate or astype copies
    limit = int(max_duration_s * schema.SAMPLE_RATE_HZ)
    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise DecodeError(f"no audio stream in {path}")
            stream = container.streams.audio[0]
            codec = stream.codec_context
            info = {"source_sample_rate_hz": codec.sample_rate or stream.rate, "source_channels": codec.channels,
                    "source_codec": codec.name}
            for frame in container.decode(stream):
                frame.pts = None
                for out in resampler.resample(_mono_frame(frame)):
                    pcm += out.to_ndarray().tobytes()
                if len(pcm) // 4 > limit:
                    raise DecodeError(f"longer than max_duration_s={max_duration_s:g}: {path}")
            for out in resampler.resample(None):
                pcm += out.to_ndarray().tobytes()
    except av.error.FFmpegError as exc:
        msg = f"{type(exc).__name__}: {exc}"
        raise DecodeError(msg if path in msg else f"{msg} ({path})") from None
    audio = np.frombuffer(pcm, dtype=np.float32)
    if audio.size == 0:
        raise DecodeError(f"no audio samples in {path}")
    if not np.isfinite(audio).all():
        raise DecodeError(f"non-finite samples in {path}")
    return audio, info


@register("audio.decode")
class Decode(Stage):
    """Recording rows → the same rows with 16 kHz mono ``samples`` and probe fields."""

    RULES: ClassVar[tuple[str, ...]] = ("decode_error",)  # decode_error: <the decoder's message>

    max_duration_s: float = Field(6 * 3600.0, gt=0, description="longer recordings are rejected")

    def process(self, active: pa.Table) -> pa.Table:
        rows = active.to_pylist()
        for row in rows:
            try:
                audio, info = decode_file(row["audio_path"], self.max_duration_s)
            except DecodeError as exc:
                row["drop_reason"] = f"decode_error: {exc}"
                continue
            except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's, not the run's
                row["drop_reason"] = f"decode_error: {type(exc).__name__}: {exc}"
                continue
            row.update(info)
            row["samples"] = audio.data.cast("B")  # copied once, into the Arrow column
            row["duration_s"] = row["recording_duration_s"] = audio.size / schema.SAMPLE_RATE_HZ
        return schema.make_table(rows, with_samples=True)
