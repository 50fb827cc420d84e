"""Conformer-CTC: shapes, subsampling lengths, padding independence, RoPE, CTC loss and greedy decoding."""

from __future__ import annotations

import pytest
import torch

from granary_pipe.train.config import ModelConfig
from granary_pipe.train.model import (
    MIN_FRAMES,
    ConformerCTC,
    apply_rotary,
    count_parameters,
    ctc_loss,
    greedy_decode,
    rotary_tables,
    subsampled_lengths,
)

TINY = ModelConfig(d_model=64, layers=2, heads=2, conv_kernel=15, subsampling_channels=32, dropout=0.1)


def test_tiny_model_shapes_and_lengths():
    torch.manual_seed(0)
    model = ConformerCTC(TINY, vocab_size=30)
    feats = torch.randn(3, 101, 80)
    lens = torch.tensor([101, 60, 7])
    lp, out_lens = model(feats, lens)
    assert lp.shape == (3, 24, 30) and lp.dtype == torch.float32
    assert out_lens.tolist() == [24, 14, 1]
    assert torch.allclose(lp.exp().sum(-1), torch.ones(3, 24), atol=1e-5)
    assert 100_000 < count_parameters(model) < 400_000


def test_subsampled_lengths_match_the_convs():
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, 2), torch.nn.Conv2d(1, 1, 3, 2))
    for n in [MIN_FRAMES, 8, 9, 10, 11, 50, 333]:
        assert conv(torch.zeros(1, 1, n, 80)).shape[2] == subsampled_lengths(torch.tensor([n])).item()
    assert subsampled_lengths(torch.tensor([MIN_FRAMES - 1])).item() == 0


@pytest.mark.parametrize("norm", ["layernorm", "batchnorm"])
def test_an_utterance_does_not_see_its_padding(norm):
    torch.manual_seed(0)
    model = ConformerCTC(TINY.model_copy(update={"conv_norm": norm}), vocab_size=17).eval()
    short = torch.randn(1, 57, 80)
    alone, n = model(short, torch.tensor([57]))
    padded = torch.cat([short, torch.randn(1, 40, 80) * 5], dim=1)  # garbage after the end
    other = torch.randn(1, 97, 80)
    batched, lens = model(torch.cat([padded, other]), torch.tensor([57, 97]))
    assert lens[0] == n[0]
    assert torch.allclose(alone[0, : n[0]], batched[0, : n[0]], atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(8), torch.randn(8)
    cos, sin = rotary_tables(40, 8, 10000.0, "cpu", torch.float32)

    def score(i, j):
        qi = apply_rotary(q[None], cos[i: i + 1], sin[i: i + 1])
        kj = apply_rotary(k[None], cos[j: j + 1], sin[j: j + 1])
        return (qi * kj).sum().item()

    assert score(3, 7) == pytest.approx(score(20, 24), rel=1e-5)
    assert score(0, 5) == pytest.approx(score(30, 35), rel=1e-5)
    assert score(3, 7) != pytest.approx(score(3, 9), rel=1e-3)


def test_ctc_loss_is_per_token_and_backpropagates():
    torch.manual_seed(0)
    model = ConformerCTC(TINY, vocab_size=12)
    lp, lens = model(torch.randn(2, 80, 80), torch.tensor([80, 64]))
    targets = torch.tensor([1, 2, 3, 4, 5, 6, 7])
    loss = ctc_loss(lp, lens, targets, torch.tensor([4, 3]))
    assert torch.isfinite(loss) and 0 < loss.item() < 20
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # more labels than frames: zero_infinity keeps it finite
    assert torch.isfinite(ctc_loss(lp[:, :2], torch.tensor([2, 2]), targets, torch.tensor([4, 3])))


def test_greedy_decode_merges_repeats_drops_blanks_and_respects_lengths():
    path = [[0, 3, 3, 0, 3, 5, 5, 0, 7], [2, 2, 0, 0, 4, 9, 9, 9, 9]]
    lp = torch.full((2, 9, 10), -10.0)
    for b, row in enumerate(path):
        for t, tok in enumerate(row):
            lp[b, t, tok] = 0.0
    assert greedy_decode(lp, torch.tensor([9, 5])) == [[3, 3, 5, 7], [2, 4]]


def test_model_config_checks():
    with pytest.raises(ValueError, match="even integer"):
        ModelConfig(d_model=64, heads=3)
    with pytest.raises(ValueError, match="odd"):
        ModelConfig(conv_kernel=16)
