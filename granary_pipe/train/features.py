"""Whisper's log-mel and SpecAugment, in batch on the training device, from padded 16 kHz waveforms: each
utterance gets the features faster-whisper's ``FeatureExtractor(...)(wave, padding=0)`` gives it alone.
Design: docs/architecture.md (Train)."""

from __future__ import annotations

import math

import numpy as np
import torch

from granary_pipe.train.config import SpecAugmentConfig

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
"""25 ms window, 10 ms hop at 16 kHz."""
# Slaney's mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above
_F_SP, _MIN_LOG_HZ, _LOGSTEP = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Hz to mel on Slaney's scale (linear below 1 kHz, logarithmic above), float64."""
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-12) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Mel to Hz on Slaney's scale, the inverse of :func:`hz_to_mel`, float64."""
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), _F_SP * mel)


def mel_filterbank(n_mels: int = 80, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` float32 triangular filters from 0 Hz to Nyquist, Slaney-normalised."""
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(0.0, float(hz_to_mel(sample_rate / 2)), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz[None, :] - lo) / (mid - lo)
    falling = (hi - fft_hz[None, :]) / (hi - mid)
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (hi - lo))
    return weights.astype(np.float32)


def frame_counts(wave_lens: torch.Tensor) -> torch.Tensor:
    """Feature frames per utterance: ``wave_lens // 160`` (one per 10 ms hop at 16 kHz)."""
    return torch.div(wave_lens, HOP, rounding_mode="floor")


class LogMel:
    """Batched log-mel on one device (filterbank and window built once)."""

    def __init__(self, n_mels: int = 80, device: torch.device | str = "cpu"):
        self.n_mels = n_mels
        self.device = torch.device(device)
        self.filters = torch.from_numpy(mel_filterbank(n_mels)).to(self.device)
        self.window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float32, device=self.device)
        self._tail = torch.arange(N_FFT // 2, device=self.device)

    def _reflect_pad(self, waves: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """``(B, N + n_fft)``: each utterance reflect-padded at its own start and end."""
        half = N_FFT // 2
        b, n = waves.shape
        out = torch.zeros(b, n + 2 * half, dtype=waves.dtype, device=waves.device)
        out[:, half: half + n] = waves
        out[:, :half] = waves[:, 1: half + 1].flip(-1)
        src = (lens[:, None] - 2 - self._tail[None, :]).clamp(min=0, max=max(n - 1, 0))
        dst = half + lens[:, None] + self._tail[None, :]
        return out.scatter_(1, dst, waves.gather(1, src))

    @torch.no_grad()
    def __call__(self, waves: torch.Tensor, wave_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-padded ``waves (B, N)`` → ``feats (B, N // 160, n_mels)`` (zeros past each utterance's end), frames."""
        waves = waves.to(self.device, torch.float32, non_blocking=True)
        lens = wave_lens.to(self.device, non_blocking=True)
        frames = frame_counts(lens)
        t = waves.shape[1] // HOP
        spec = torch.stft(self._reflect_pad(waves, lens), N_FFT, HOP, window=self.window, center=False,
                          return_complex=True)[..., :t]
        power = spec.real.square() + spec.imag.square()
        logmel = torch.matmul(self.filters, power).clamp_(min=1e-10).log10_()  # (B, n_mels, T)
        valid = (torch.arange(t, device=self.device)[None, :] < frames[:, None])[:, None, :]
        top = logmel.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
        logmel = torch.maximum(logmel, top - 8.0).add_(4.0).div_(4.0).masked_fill_(~valid, 0.0)
        return logmel.transpose(1, 2).contiguous(), frames


def spec_augment(feats: torch.Tensor, lens: torch.Tensor, cfg: SpecAugmentConfig,
                 generator: torch.Generator) -> torch.Tensor:
    """Frequency and time masks (set to 0) on ``feats (B, T, F)`` within each utterance's ``lens`` frames,
    drawn on the CPU from ``generator`` (the same on every device)."""
    b, t, f = feats.shape
    lens_f = lens.detach().cpu().float()

    def rand() -> torch.Tensor:
        return torch.rand(b, generator=generator)

    spans = []  # (start, width) per mask, frequency masks first
    for _ in range(cfg.freq_masks):
        width = (rand() * (min(cfg.freq_width, f) + 1)).floor()
        spans.append(((rand() * (f - width + 1)).floor(), width))
    max_w = torch.minimum((lens_f * cfg.time_width_frac).floor(), torch.tensor(float(cfg.max_time_width)))
    for _ in range(cfg.time_masks):
        width = (rand() * (max_w + 1)).floor()
        spans.append(((rand() * (lens_f - width + 1).clamp(min=1)).floor(), width))
    if not spans:
        return feats
    dev = feats.device
    se = torch.stack([torch.stack([s, s + w]) for s, w in spans])  # (M, 2, B)
    if dev.type == "cuda":  # a copy from pageable memory would wait for the queued steps
        se = se.pin_memory()
    se = se.to(dev, non_blocking=True)
    nf = cfg.freq_masks
    bins = torch.arange(f, device=dev)[None, None, :]
    fmask = ((bins >= se[:nf, 0, :, None]) & (bins < se[:nf, 1, :, None])).any(0)[:, None, :]  # (B, 1, F)
    steps = torch.arange(t, device=dev)[None, None, :]
    tmask = ((steps >= se[nf:, 0, :, None]) & (steps < se[nf:, 1, :, None])).any(0)[:, :, None]  # (B, T, 1)
    return feats.masked_fill(fmask | tmask, 0.0)
