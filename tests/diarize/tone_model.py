"""A test double for a pyannote segmentation model whose "speakers" are tones.

``ToneSegmentation`` is a ``PyanNet`` (same frame geometry, same checkpoint format, loadable by
``pyannote.audio.Model.from_pretrained``) whose forward pass ignores its weights: in each output
frame, local speaker 0 is active where a low tone plays, local speaker 1 where a high tone plays
(zero-crossing rate over the frame's receptive field), local speaker 2 never. To act like a real
permutation-invariant model, it swaps local speakers 0 and 1 in chunks chosen by the chunk's own
content, so speaker labels only stay consistent across chunks if the stage stitches them.

Checkpoints name this class by module (``tone_model``), so tests/diarize must be on ``sys.path``
when they are loaded (pytest puts it there).
"""

from __future__ import annotations

import torch

from pyannote.audio.models.segmentation import PyanNet

LOW_HZ = 300.0
HIGH_HZ = 1500.0
ACTIVE_RMS = 0.01


class ToneSegmentation(PyanNet):
    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        size = self.receptive_field_size(num_frames=1)
        step = self.receptive_field_size(num_frames=2) - size
        frames = waveforms[:, 0].unfold(-1, size, step)  # (batch, frame, size)
        frames = frames[:, : self.num_frames(waveforms.shape[-1])]
        active = frames.pow(2).mean(-1).sqrt() > ACTIVE_RMS
        crossings = (torch.sign(frames[..., 1:]) != torch.sign(frames[..., :-1])).sum(-1).float()
        rate_hz = crossings / 2 / (size / self.hparams.sample_rate)
        high = rate_hz > (LOW_HZ + HIGH_HZ) / 2
        out = torch.stack([active & ~high, active & high, torch.zeros_like(active)], dim=-1).float()
        swap = (waveforms.abs().sum(dim=(1, 2)) * 100).long() % 2 == 1  # content-dependent, per chunk
        out[swap] = out[swap][..., [1, 0, 2]]
        return out
