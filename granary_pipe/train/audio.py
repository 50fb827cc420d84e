"""Audio for training and inference as 16 kHz mono float32, by ``soundfile``, other containers by PyAV; an input
file is checked with ``os.stat`` before it is opened (a FIFO never blocks), a refusal is an :class:`AudioInputError`."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from granary_pipe.ingest import inputs
from granary_pipe.schema import SAMPLE_RATE_HZ


def resample(wave: np.ndarray, rate: int, target: int = SAMPLE_RATE_HZ, *, zeros: int = 6,
             rolloff: float = 0.99) -> np.ndarray:
    """Band-limited resampling of a mono float32 ``wave``: windowed sinc (Hann, ``zeros`` zero crossings per side,
    cutoff ``rolloff`` × the lower Nyquist), one polyphase filter per output phase."""
    import torch

    if rate == target:
        return wave.astype(np.float32, copy=False)
    g = math.gcd(int(rate), int(target))
    up, down = target // g, rate // g  # output phase k of block n sits at input sample n * down + k * down / up
    cutoff = min(up, down) * rolloff  # in units where the input rate is `down`
    width = math.ceil(zeros * down / cutoff)
    idx = torch.arange(-width, width + down, dtype=torch.float64)[None, :] / down
    t = (idx + torch.arange(0, -up, -1, dtype=torch.float64)[:, None] / up) * cutoff
    t = t.clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    kernels = torch.where(t == 0, 1.0, torch.sin(math.pi * t) / (math.pi * t).where(t != 0, 1.0))
    kernels = (kernels * window * cutoff / down).to(torch.float32)[:, None, :]  # (up, 1, K)
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None, None, :]
    x = torch.nn.functional.pad(x, (width, width + down))
    y = torch.nn.functional.conv1d(x, kernels, stride=down)  # (1, up, frames)
    n_out = math.ceil(len(wave) * up / down)
    return y[0].t().reshape(-1)[:n_out].numpy().copy()


def _to_mono_16k(wave: np.ndarray, rate: int) -> np.ndarray:
    mono = wave[:, 0] if wave.shape[1] == 1 else wave.mean(axis=1)
    return resample(np.ascontiguousarray(mono, dtype=np.float32), rate)


def decode_flac(data: bytes) -> np.ndarray:
    """16 kHz mono float32 from a release's FLAC bytes."""
    import soundfile as sf

    wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return _to_mono_16k(wave, rate)


class AudioInputError(ValueError):
    """An input of ``granary transcribe`` that is not audio it can read; ``str()`` is ``"PATH: cause"``."""

    def __init__(self, path: str | Path, cause: str):
        super().__init__(f"{path}: {cause}")
        self.path, self.cause = str(path), cause


def open_regular(path: str | Path) -> BinaryIO:
    """Open ``path`` if it is a non-empty regular file, else raise :class:`AudioInputError`; checked with
    ``os.stat``, then opened non-blocking and checked again with ``fstat`` (a FIFO swapped in cannot block)."""
    problem = inputs.problem(str(path))
    if problem is not None:
        raise AudioInputError(path, problem)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise AudioInputError(path, inputs.os_problem(exc)) from None
    try:
        problem = inputs.stat_problem(os.fstat(fd))
        if problem is not None:
            raise AudioInputError(path, problem)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _load_with_pyav(fh: BinaryIO, path: str, sndfile_error: str) -> np.ndarray:
    try:
        import av
    except ImportError:
        raise AudioInputError(path, f"not a format libsndfile reads (WAV, FLAC, OGG, MP3): {sndfile_error}; "
                              "install PyAV (`pip install av`) for other containers") from None
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)
    chunks = []
    try:
        with av.open(fh, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioInputError(path, "no audio stream")
            for frame in container.decode(audio=0):
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except av.error.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise AudioInputError(path, f"not decodable audio (libsndfile: {sndfile_error}; FFmpeg: {reason})") from None
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def load_audio(path: str | Path) -> np.ndarray:
    """An audio file → 16 kHz mono float32; :class:`AudioInputError` when it is not a non-empty regular
    file, does not decode, or holds no samples."""
    import soundfile as sf

    with open_regular(path) as fh:
        try:
            wave, rate = sf.read(fh, dtype="float32", always_2d=True)
        except sf.LibsndfileError as exc:
            fh.seek(0)
            wave = _load_with_pyav(fh, str(path), (getattr(exc, "error_string", None) or str(exc)).rstrip("."))
        else:
            wave = _to_mono_16k(wave, rate)
    if not len(wave):
        raise AudioInputError(path, "no audio samples (decoded length 0)")
    return wave
