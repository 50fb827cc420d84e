"""Inference with a trained model: held-out WER/CER during training (:func:`evaluate_model`) and
of a checkpoint (:func:`evaluate`), and greedy CTC transcripts of audio files (:func:`transcribe`,
:func:`iter_transcripts`)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch

from granary_pipe.train.checkpoint import load_checkpoint
from granary_pipe.train.config import TrainConfig
from granary_pipe.train.audio import AudioInputError, input_problem, load_audio
from granary_pipe.train.data import Release, ReleaseBatches, make_loader, open_release
from granary_pipe.train.features import HOP, LogMel
from granary_pipe.train.model import MIN_FRAMES, ConformerCTC, greedy_decode
from granary_pipe.text import normalize
from granary_pipe.train.tokenizer import Tokenizer

@torch.no_grad()
def evaluate_model(model: torch.nn.Module, tokenizer: Tokenizer, release: Release, cfg: TrainConfig, *,
                   split: str = "heldout", device="cpu", max_utts: int | None = None,
                   amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Greedy CTC on ``split`` of ``release``; WER and CER (jiwer) after the project's one
    normalisation of reference and hypothesis in the row's language (:func:`granary_pipe.text.normalize`)."""
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
    """``utterances``, corpus ``wer`` and ``cer`` (jiwer) and three ``examples`` of hypotheses
    against references, both normalised in the row's language (:func:`granary_pipe.text.normalize`:
    ``21`` against ``twenty one`` is no error). A reference that normalises to nothing (fillers
    only: "Um.") is not scored; with none left the rates are None."""
    scored = [(i, r, h) for i, r, h in ((i, normalize(r, lang), normalize(h, lang))
                                        for i, r, h, lang in zip(ids, refs, hyps, langs)) if r]
    if not scored:
        return {"utterances": 0, "wer": None, "cer": None, "examples": []}
    import jiwer

    ids, refs, hyps = (list(col) for col in zip(*scored))
    return {
        "utterances": len(refs),
        "wer": float(jiwer.wer(refs, hyps)),
        "cer": float(jiwer.cer(refs, hyps)),
        "examples": [{"id": i, "ref": r, "hyp": h} for i, r, h in list(zip(ids, refs, hyps))[:3]],
    }


def autocast(device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def load_model(checkpoint: str | Path, device: str | None = None) -> tuple[ConformerCTC, Tokenizer, TrainConfig, dict]:
    """Model (eval mode), tokenizer and config of a checkpoint (file or training directory)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ckpt = load_checkpoint(checkpoint, map_location=device)
    cfg = TrainConfig.model_validate(ckpt["config"])
    tokenizer = Tokenizer.from_state(ckpt["tokenizer"])
    model = ConformerCTC(cfg.model, tokenizer.vocab_size)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, tokenizer, cfg, ckpt


def evaluate(checkpoint: str | Path, data: str | Path | None = None, *, split: str = "heldout",
             max_utts: int | None = None, device: str | None = None) -> dict[str, Any]:
    """WER/CER of a checkpoint on ``split`` of ``data`` (default: the release it was trained on).

    The held-out split is the checkpoint's own (its ``data`` config), so ``heldout`` means the
    rows that training never saw.
    """
    model, tokenizer, cfg, ckpt = load_model(checkpoint, device)
    release = open_release(data or ckpt["release"]["root"])
    result = evaluate_model(model, tokenizer, release, cfg, split=split, device=next(model.parameters()).device,
                            max_utts=max_utts)
    result.update(checkpoint=ckpt["path"], step=ckpt["step"], release=str(release.root))
    return result


def transcribe(checkpoint: str | Path, audio: list[str | Path], *, device: str | None = None,
               chunk_s: float = 30.0, errors: str = "raise") -> list[dict[str, Any]]:
    """Greedy CTC transcripts of audio files: the list of :func:`iter_transcripts` (which see).

    ``errors="raise"``: the first bad input raises :class:`~granary_pipe.train.audio.AudioInputError`;
    ``"report"``: it becomes an item ``{"audio", "error"}`` and the others are still transcribed."""
    return list(iter_transcripts(checkpoint, audio, device=device, chunk_s=chunk_s, errors=errors))


def iter_transcripts(checkpoint: str | Path, audio: list[str | Path], *, device: str | None = None,
                     chunk_s: float = 30.0, errors: str = "raise") -> Iterator[dict[str, Any]]:
    """Greedy CTC transcripts of audio files, one item per file in order, as each is done
    (what libsndfile reads, other containers with PyAV when installed; resampled to 16 kHz:
    :func:`granary_pipe.train.audio.load_audio`).

    Every input is checked with ``os.stat`` before the model loads: a missing path, a symlink
    loop, a directory, a FIFO, a device or a 0-byte file is refused without being opened (a FIFO
    cannot block). A file that does not decode, or decodes to nothing or to less than the model's
    shortest input, is refused too; ``errors`` says how (see :func:`transcribe`).

    Audio longer than ``chunk_s`` (the longest training segment) is cut into fixed chunks,
    decoded one by one and joined; a word across a cut may be split. For long recordings,
    segment with VAD first (``segment.silero``).
    """
    if errors not in ("raise", "report"):
        raise ValueError(f"errors must be 'raise' or 'report', got {errors!r}")
    problems = {str(p): input_problem(p) for p in audio}
    if errors == "raise":
        bad = next(((p, why) for p, why in problems.items() if why is not None), None)
        if bad is not None:
            raise AudioInputError(*bad)
    model = tokenizer = None
    if any(why is None for why in problems.values()):
        model, tokenizer, cfg, _ = load_model(checkpoint, device)
        dev = next(model.parameters()).device
        logmel = LogMel(cfg.model.n_mels, dev)
    chunk = int(chunk_s * 16000)
    shortest = MIN_FRAMES * HOP
    for path in audio:
        try:
            if problems[str(path)] is not None:
                raise AudioInputError(path, problems[str(path)])
            wave = load_audio(path)
            if len(wave) < shortest:
                raise AudioInputError(path, f"too short to transcribe ({len(wave) / 16000:.3f} s, "
                                            f"the model needs at least {shortest / 16000:.3f} s)")
        except AudioInputError as exc:
            if errors == "raise":
                raise
            yield {"audio": str(path), "error": exc.cause}
            continue
        ids: list[int] = []
        with torch.no_grad():
            for begin in range(0, len(wave), chunk):
                piece = wave[begin: begin + chunk]
                if len(piece) < shortest:
                    continue
                feats, frames = logmel(torch.from_numpy(piece)[None], torch.tensor([len(piece)]))
                lp, lens = model(feats, frames)
                ids += greedy_decode(lp, lens)[0]
        item = {"audio": str(path), "duration_s": round(len(wave) / 16000, 3), "text": tokenizer.decode(ids)}
        if tokenizer.lang_tags:
            item["lang"] = tokenizer.lang_of(ids)
        yield item
