"""Inference with a trained model: WER/CER of a model or a checkpoint, greedy CTC transcripts of audio files."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from granary_pipe.ingest import inputs
from granary_pipe.text import normalize
from granary_pipe.train.audio import AudioInputError, load_audio
from granary_pipe.train.checkpoint import load_checkpoint
from granary_pipe.train.config import TrainConfig
from granary_pipe.train.data import Release, ReleaseBatches, make_loader, open_release
from granary_pipe.train.distributed import default_device
from granary_pipe.train.features import HOP, LogMel
from granary_pipe.train.model import MIN_FRAMES, ConformerCTC, greedy_decode
from granary_pipe.train.tokenizer import Tokenizer


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, tokenizer: Tokenizer, release: Release, cfg: TrainConfig, *,
                   split: str = "heldout", device="cpu", max_utts: int | None = None,
                   amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Greedy CTC on ``split`` of ``release``, scored by :func:`score`."""
    ds = ReleaseBatches(release, cfg.data, tokenizer, split=split, shuffle=False, limit=max_utts, targets=False)
    logmel = LogMel(cfg.model.n_mels, device)
    was_training = model.training
    model.eval()
    refs, hyps, ids, langs = [], [], [], []
    try:
        pin = torch.device(device).type == "cuda"
        for batch in make_loader(ds, cfg.data.loader_workers, cfg.data.prefetch_batches, pin_memory=pin):
            feats, feat_lens = logmel(batch["waves"], batch["wave_lens"])
            with autocast(device, amp_dtype):
                lp, lens = model(feats, feat_lens)
            hyps += [tokenizer.decode(seq) for seq in greedy_decode(lp, lens)]
            refs += batch["texts"]
            ids += batch["ids"]
            langs += batch["langs"]
    finally:
        model.train(was_training)
    return {"split": split, **score(ids, refs, hyps, langs)}


def score(ids: list[str], refs: list[str], hyps: list[str], langs: list[str | None]) -> dict[str, Any]:
    """``utterances``, corpus ``wer`` and ``cer`` (jiwer) and three ``examples``, after
    :func:`granary_pipe.text.normalize` in the row's language; references that normalise to nothing
    ("Um.") are not scored, and with none left the rates are None."""
    scored = [(i, r, h) for i, r, h in ((i, normalize(r, lang), normalize(h, lang))
                                        for i, r, h, lang in zip(ids, refs, hyps, langs, strict=True)) if r]
    if not scored:
        return {"utterances": 0, "wer": None, "cer": None, "examples": []}
    import jiwer

    ids, refs, hyps = (list(col) for col in zip(*scored, strict=True))
    return {
        "utterances": len(refs),
        "wer": float(jiwer.wer(refs, hyps)),
        "cer": float(jiwer.cer(refs, hyps)),
        "examples": [{"id": i, "ref": r, "hyp": h} for i, r, h in list(zip(ids, refs, hyps, strict=True))[:3]],
    }


def autocast(device, dtype):
    """``torch.autocast`` on CUDA at ``dtype``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def load_model(checkpoint: str | Path, device: str | None = None) -> tuple[ConformerCTC, Tokenizer, TrainConfig, dict]:
    """Model (eval mode), tokenizer and config of a checkpoint (file or training directory)."""
    device = device or default_device()
    ckpt = load_checkpoint(checkpoint, map_location=device)
    cfg = TrainConfig.model_validate(ckpt["config"])
    tokenizer = Tokenizer.from_state(ckpt["tokenizer"])
    model = ConformerCTC(cfg.model, tokenizer.vocab_size)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, tokenizer, cfg, ckpt


def evaluate(checkpoint: str | Path, data: str | Path | None = None, *, split: str = "heldout",
             max_utts: int | None = None, device: str | None = None) -> dict[str, Any]:
    """WER/CER of a checkpoint on ``split`` of ``data`` (default: the release it was trained on);
    ``heldout`` is the checkpoint's own held-out split, the rows training never saw."""
    model, tokenizer, cfg, ckpt = load_model(checkpoint, device)
    release = open_release(data or ckpt["release"]["root"])
    result = evaluate_model(model, tokenizer, release, cfg, split=split, device=next(model.parameters()).device,
                            max_utts=max_utts)
    result.update(checkpoint=ckpt["path"], step=ckpt["step"], release=str(release.root))
    return result


def iter_transcripts(checkpoint: str | Path, audio: list[str | Path], *, device: str | None = None,
                     chunk_s: float = 30.0, errors: str = "raise") -> Iterator[dict[str, Any]]:
    """Greedy CTC transcripts of audio files, one item per file in order, as each is done; audio longer than
    ``chunk_s`` is decoded in fixed chunks, joined (a word across a cut may be split).

    Every input is checked with ``os.stat`` before the model loads; a file that is not a non-empty regular
    file, does not decode, or is too short is refused: ``errors="raise"`` raises
    :class:`~granary_pipe.train.audio.AudioInputError` at the first one, ``"report"`` yields
    ``{"audio", "error"}`` for it and goes on.
    """
    if errors not in ("raise", "report"):
        raise ValueError(f"errors must be 'raise' or 'report', got {errors!r}")
    problems = {str(p): inputs.problem(str(p)) for p in audio}
    bad = next(((p, why) for p, why in problems.items() if why is not None), None)
    if errors == "raise" and bad is not None:
        raise AudioInputError(*bad)
    greedy = _Greedy(checkpoint, device, chunk_s) if any(why is None for why in problems.values()) else None
    for path in audio:
        try:
            wave = _checked_wave(path, problems[str(path)])
        except AudioInputError as exc:
            if errors == "raise":
                raise
            yield {"audio": str(path), "error": exc.cause}
            continue
        assert greedy is not None  # an input that passed os.stat: the model was loaded
        yield greedy(path, wave)


SHORTEST = MIN_FRAMES * HOP
"""Fewest samples the model transcribes."""


def _checked_wave(path: str | Path, problem: str | None) -> np.ndarray:
    if problem is not None:
        raise AudioInputError(path, problem)
    wave = load_audio(path)
    if len(wave) < SHORTEST:
        raise AudioInputError(path, f"too short to transcribe ({len(wave) / 16000:.3f} s, "
                                    f"the model needs at least {SHORTEST / 16000:.3f} s)")
    return wave


class _Greedy:
    """A checkpoint's model, tokenizer and features, transcribing a wave in ``chunk_s`` pieces."""

    def __init__(self, checkpoint: str | Path, device: str | None, chunk_s: float) -> None:
        self.model, self.tokenizer, cfg, _ = load_model(checkpoint, device)
        self.logmel = LogMel(cfg.model.n_mels, next(self.model.parameters()).device)
        self.chunk = int(chunk_s * 16000)

    @torch.no_grad()
    def __call__(self, path: str | Path, wave: np.ndarray) -> dict[str, Any]:
        ids: list[int] = []
        for begin in range(0, len(wave), self.chunk):
            piece = wave[begin: begin + self.chunk]
            if len(piece) < SHORTEST:
                continue
            feats, frames = self.logmel(torch.from_numpy(piece)[None], torch.tensor([len(piece)]))
            lp, lens = self.model(feats, frames)
            ids += greedy_decode(lp, lens)[0]
        item = {"audio": str(path), "duration_s": round(len(wave) / 16000, 3), "text": self.tokenizer.decode(ids)}
        if self.tokenizer.lang_tags:
            item["lang"] = self.tokenizer.lang_of(ids)
        return item
