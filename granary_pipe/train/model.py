"""Conformer-CTC in plain torch (Gulati et al., 2020, with RoPE): log-mel → conv2d subsampling ×4 → Conformer
blocks → CTC head (blank = 0). Padded frames never reach valid ones, so an utterance's output (LayerNorm
variant, eval mode) does not depend on what it is batched with. Design: docs/architecture.md (Train)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from granary_pipe.train.config import ModelConfig

BLANK_ID = 0


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames after two 3×3 stride-2 convs without padding."""
    return torch.div(torch.div(lengths - 1, 2, rounding_mode="floor") - 1, 2, rounding_mode="floor")


MIN_FRAMES = 7
"""Fewest input frames (10 ms each) giving one output frame."""


class Conv2dSubsampling(nn.Module):
    """Two 3×3 stride-2 convs (ReLU) over (time, mel), then a linear projection to ``d_model``."""

    def __init__(self, n_mels: int, channels: int, d_model: int, dropout: float):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, 2), nn.ReLU(), nn.Conv2d(channels, channels, 3, 2), nn.ReLU()
        )
        freq = ((n_mels - 1) // 2 - 1) // 2
        self.proj = nn.Linear(channels * freq, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.shape
        x = self.proj(x.transpose(1, 2).reshape(b, t, c * f))
        return self.dropout(x), subsampled_lengths(lengths).clamp(min=0)


class FeedForward(nn.Module):
    """LayerNorm → Linear(d, m·d) → Swish → Dropout → Linear(m·d, d) → Dropout."""

    def __init__(self, d_model: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, mult * d_model), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(mult * d_model, d_model), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def rotary_tables(length: int, dim: int, base: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``(length, dim)`` for RoPE (half-split layout)."""
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    ang = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (``..., T, D``) by position: ``x·cos + rotate_half(x)·sin``."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class RotarySelfAttention(nn.Module):
    """LayerNorm → multi-head self-attention with RoPE on q/k (padded keys masked) → Dropout."""

    def __init__(self, d_model: int, heads: int, dropout: float, rope_base: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.heads, self.rope_base, self.p = heads, rope_base, dropout
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        cos, sin = rotary_tables(t, d // self.heads, self.rope_base, x.device, q.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=self.p if self.training else 0.0
        )
        return self.dropout(self.out(y.transpose(1, 2).reshape(b, t, d)))


class ConvModule(nn.Module):
    """LayerNorm → pointwise (2d) → GLU → depthwise conv → norm → Swish → pointwise → Dropout."""

    def __init__(self, d_model: int, kernel: int, norm: str, dropout: float):
        super().__init__()
        self.norm_in = nn.LayerNorm(d_model)
        self.pw1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.dw = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.batchnorm = norm == "batchnorm"
        self.norm_mid = nn.BatchNorm1d(d_model) if self.batchnorm else nn.LayerNorm(d_model)
        self.pw2 = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.norm_in(x).transpose(1, 2)  # (B, d, T)
        y = F.glu(self.pw1(y), dim=1)
        y = self.dw(y.masked_fill(~mask[:, None, :], 0.0))
        y = self.norm_mid(y) if self.batchnorm else self.norm_mid(y.transpose(1, 2)).transpose(1, 2)
        y = self.pw2(F.silu(y))
        return self.dropout(y.transpose(1, 2))


class ConformerBlock(nn.Module):
    """Macaron Conformer block: ½FFN, MHSA, Conv, ½FFN, LayerNorm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ff1 = FeedForward(cfg.d_model, cfg.ff_mult, cfg.dropout)
        self.attn = RotarySelfAttention(cfg.d_model, cfg.heads, cfg.dropout, cfg.rope_base)
        self.conv = ConvModule(cfg.d_model, cfg.conv_kernel, cfg.conv_norm, cfg.dropout)
        self.ff2 = FeedForward(cfg.d_model, cfg.ff_mult, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, mask)
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


class ConformerCTC(nn.Module):
    """Conformer encoder + CTC head. ``vocab_size`` includes the blank (id 0)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.subsample = Conv2dSubsampling(cfg.n_mels, cfg.subsampling_channels, cfg.d_model, cfg.dropout)
        self.blocks = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.layers))
        self.head = nn.Linear(cfg.d_model, vocab_size)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``feats (B, T, n_mels)``, ``feat_lens (B,)`` → log-probs ``(B, T', V)`` (float32), lengths ``(B,)``."""
        x, lens = self.subsample(feats, feat_lens)
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lens[:, None]
        for block in self.blocks:
            x = block(x, mask)
        return F.log_softmax(self.head(x).float(), dim=-1), lens


def ctc_loss(log_probs: torch.Tensor, out_lens: torch.Tensor, targets: torch.Tensor,
             target_lens: torch.Tensor) -> torch.Tensor:
    """CTC loss summed over the batch per target token; an utterance with more labels than frames
    gives 0, not ``inf``."""
    loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lens, target_lens,
                      blank=BLANK_ID, reduction="sum", zero_infinity=True)
    return loss / target_lens.sum().clamp(min=1)


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks (ids still include the blank offset)."""
    best = log_probs.argmax(dim=-1).cpu()
    out = []
    for row, n in zip(best, lengths.cpu().tolist(), strict=True):
        seq = torch.unique_consecutive(row[:n]).tolist()
        out.append([t for t in seq if t != BLANK_ID])
    return out


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
