"""The training loop, checkpoints, evaluation and transcription.

``train(data, out, cfg)`` writes under ``out``::

    checkpoints/ckpt-00001000.pt   model, optimizer, scheduler, GradScaler, step, config,
                                   tokenizer, held-out split, release fingerprint, and per rank:
                                   data position (epoch, next batch) + RNG states
                                   (python, numpy, torch, cuda)
    checkpoints/latest             name of the newest checkpoint (written last)
    tokenizer/*.model              the SentencePiece model(s), for inspection
    metrics.jsonl                  {"kind": "train", step, loss, lr, grad_norm, step_time_s,
                                   data_wait_s, samples, samples_per_s, audio_s_per_s, ...}
                                   every ``log_every`` steps; {"kind": "eval", step, wer, cer}
    tb/                            the same scalars as TensorBoard events
    summary.json                   last step, loss, eval, throughput

**Resume.** Rerunning with the same ``out`` continues from ``checkpoints/latest``: states
restored, the data stream rebuilt and advanced to the saved position, ``metrics.jsonl`` and
the TensorBoard log cut back to the checkpoint's step. On CPU with ``deterministic: true`` and
the same thread count the resumed losses equal an uninterrupted run's (tested to 1e-6). The
model/data/tokenizer/optim/schedule/seed sections must equal the checkpoint's; ``train``
(``max_steps``, intervals) may change.

**Loss.** CTC summed over the batch divided by target tokens; with ``grad_accum`` micro-batches
the step's loss is their mean. ``lr`` in a record is the rate the update ran at.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from granary_pipe.train.config import TrainConfig, load_train_config
from granary_pipe.train.data import (
    Featurizer,
    Release,
    ReleaseBatches,
    batch_seed,
    fetch_release,
    is_url,
    iterate_epochs,
    load_audio,
    make_loader,
    open_release,
    spec_augment,
    split_info,
    training_texts,
)
from granary_pipe.train.distributed import DistContext, single_process, unwrap
from granary_pipe.train.model import MIN_FRAMES, ConformerCTC, count_parameters, ctc_loss, greedy_decode
from granary_pipe.train.schedules import make_scheduler
from granary_pipe.train.tokenizer import Tokenizer, build_tokenizer, normalize_text

log = logging.getLogger(__name__)

CKPT_FORMAT = "granary_pipe.train/1"
_MUST_MATCH = ("seed", "model", "data", "tokenizer", "optim", "schedule")


# ----------------------------------------------------------------------------- setup

def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _configure_torch(cfg: TrainConfig, device) -> None:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if getattr(device, "type", str(device)) == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False


def _amp(cfg: TrainConfig, device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, GradScaler enabled): mixed precision on CUDA only."""
    if getattr(device, "type", str(device)) != "cuda" or cfg.train.amp == "off":
        return None, False
    if cfg.train.amp == "bf16" or (cfg.train.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, True


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-d parameters)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.schedule.peak_lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
    )


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"]),
                  "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_plain(obj):
    return [_to_plain(x) for x in obj] if isinstance(obj, (list, tuple)) else obj


def _to_tuple(obj):
    return tuple(_to_tuple(x) for x in obj) if isinstance(obj, list) else obj


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": np.array(n["key"], dtype=np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- checkpoints

def checkpoint_dir(out: Path) -> Path:
    return Path(out) / "checkpoints"


def latest_checkpoint(path: str | Path) -> Path | None:
    """A checkpoint file, or the newest one of a training directory (``checkpoints/latest``)."""
    path = Path(path)
    if path.is_file():
        return path
    for d in (checkpoint_dir(path), path):
        pointer = d / "latest"
        if pointer.is_file():
            ckpt = d / pointer.read_text(encoding="utf-8").strip()
            if ckpt.is_file():
                return ckpt
    return None


def load_checkpoint(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """Read a checkpoint (``weights_only``: plain data and tensors only)."""
    ckpt_path = latest_checkpoint(path)
    if ckpt_path is None:
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = torch.load(ckpt_path, map_location=map_location, weights_only=True)
    if ckpt.get("format") != CKPT_FORMAT:
        raise ValueError(f"{ckpt_path}: not a granary_pipe training checkpoint ({ckpt.get('format')!r})")
    ckpt["path"] = str(ckpt_path)
    return ckpt


def _save_checkpoint(out: Path, state: dict[str, Any], keep: int) -> Path:
    d = checkpoint_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{state['step']:08d}.pt"
    tmp = d / f".{name}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, d / name)
    ptmp = d / f".latest.tmp-{os.getpid()}"
    ptmp.write_text(name + "\n", encoding="utf-8")
    os.replace(ptmp, d / "latest")
    for old in sorted(d.glob("ckpt-*.pt"))[:-keep]:
        old.unlink()
    return d / name


def _check_compatible(cfg: TrainConfig, saved: dict, path: str) -> None:
    now = cfg.model_dump(mode="json")
    diff = [k for k in _MUST_MATCH if now[k] != saved[k]]
    if diff:
        raise ValueError(f"{path}: cannot resume with a different {', '.join(diff)} config than the checkpoint's "
                         "(use a new --out, or the checkpoint's config)")


# ----------------------------------------------------------------------------- metrics

class _Metrics:
    """metrics.jsonl + TensorBoard, rank 0 only; on resume both are cut back to ``step``."""

    def __init__(self, out: Path, enabled: bool, resume_step: int | None):
        self.enabled = enabled
        self.path = Path(out) / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            keep = [ln for ln in self.path.read_text(encoding="utf-8").splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
        elif resume_step is None:  # a fresh run: nothing from an earlier attempt survives
            self.path.unlink(missing_ok=True)
            shutil.rmtree(Path(out) / "tb", ignore_errors=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(out) / "tb"),
                                    purge_step=resume_step + 1 if resume_step is not None else None)
        except ImportError:  # tensorboard not installed: JSONL only
            log.warning("tensorboard is not installed: metrics go to metrics.jsonl only")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            prefix = record["kind"]
            for k, v in record.items():
                if k not in ("kind", "step", "epoch") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{prefix}/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(out: str | Path, kind: str | None = "train") -> list[dict[str, Any]]:
    """Records of ``out/metrics.jsonl`` (of one ``kind``, or all with ``None``)."""
    path = Path(out) / "metrics.jsonl"
    rows = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [r for r in rows if kind is None or r.get("kind") == kind]


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate_model(model: torch.nn.Module, tokenizer: Tokenizer, release: Release, cfg: TrainConfig, *,
                   split: str = "heldout", device="cpu", max_utts: int | None = None,
                   amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Greedy CTC on ``split`` of ``release``; WER and CER (jiwer) on normalised text."""
    import jiwer

    ds = ReleaseBatches(release, cfg.data, tokenizer, n_mels=cfg.model.n_mels, split=split, shuffle=False,
                        limit=max_utts, targets=False)
    was_training = model.training
    model.eval()
    refs, hyps, ids = [], [], []
    try:
        for batch in make_loader(ds, cfg.data.loader_workers, cfg.data.prefetch_batches):
            feats = batch["feats"].to(device)
            with _autocast(device, amp_dtype):
                lp, lens = model(feats, batch["feat_lens"].to(device))
            hyps += [tokenizer.decode(seq) for seq in greedy_decode(lp, lens)]
            refs += [normalize_text(t, cfg.data.text_norm) for t in batch["texts"]]
            ids += batch["ids"]
    finally:
        model.train(was_training)
    if not refs:
        return {"split": split, "utterances": 0, "wer": None, "cer": None, "examples": []}
    return {
        "split": split,
        "utterances": len(refs),
        "wer": float(jiwer.wer(refs, hyps)),
        "cer": float(jiwer.cer(refs, hyps)),
        "examples": [{"id": i, "ref": r, "hyp": h} for i, r, h in list(zip(ids, refs, hyps))[:3]],
    }


def _autocast(device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


# ----------------------------------------------------------------------------- training

def _make_tokenizer(release: Release, cfg: TrainConfig, out: Path, dist: DistContext) -> Tokenizer:
    state = None
    if dist.is_main:
        tok = build_tokenizer(training_texts(release, cfg.data), cfg.tokenizer, cfg.data.text_norm)
        state = tok.state()
        tdir = out / "tokenizer"
        tdir.mkdir(parents=True, exist_ok=True)
        for key, proto in state["models"].items():
            (tdir / f"{'shared' if key == '*' else key}.model").write_bytes(proto)
    return Tokenizer.from_state(dist.broadcast(state))


def train(data: str | Path, out: str | Path, cfg: TrainConfig, *, max_steps: int | None = None,
          dist: DistContext | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a Conformer-CTC on ``data`` (a release) into ``out``; see module doc.

    Returns the summary also written to ``out/summary.json``.
    """
    dist = dist or single_process()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if max_steps is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": max_steps})})
    device = torch.device(dist.device)
    _configure_torch(cfg, device)
    if is_url(data):  # rank 0 downloads into OUT/data (resumable, verified), the others wait
        dest = out / "data"
        if dist.is_main:
            fetch_release(str(data), dest, langs=cfg.data.langs, progress=progress)
        dist.barrier()
        data = dest
    release = open_release(data)

    resume = load_checkpoint(out) if latest_checkpoint(out) is not None else None
    if resume is not None:
        _check_compatible(cfg, resume["config"], resume["path"])
        if resume["world_size"] != dist.world:
            raise ValueError(f"{resume['path']}: saved by {resume['world_size']} worker(s), resuming with "
                             f"{dist.world}: exact resume needs the same number")
        tokenizer = Tokenizer.from_state(resume["tokenizer"])
    else:
        _seed_all(cfg.seed)
        tokenizer = _make_tokenizer(release, cfg, out, dist)

    _seed_all(cfg.seed)  # identical initial weights on every rank
    model = ConformerCTC(cfg.model, tokenizer.vocab_size).to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg.schedule)
    amp_dtype, scaler_on = _amp(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=scaler_on)
    step, epoch, start = 0, 0, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        step = resume["step"]
        me = resume["ranks"][dist.rank]
        epoch, start = me["data"]["epoch"], me["data"]["batch"]
        _set_rng_state(me["rng"])
        log.info("resumed from %s at step %d (epoch %d, batch %d)", resume["path"], step, epoch, start)
    else:
        _seed_all(cfg.seed * 1_000_003 + dist.rank + 1)  # per-rank dropout streams
    if dist.wrap is not None:
        model = dist.wrap(model)

    metrics = _Metrics(out, dist.is_main, step if resume is not None else None)
    meta = {"split": split_info(cfg.data), "release": release.fingerprint(),
            "parameters": count_parameters(unwrap(model)), "vocab_size": tokenizer.vocab_size}
    if dist.is_main:
        log.info("model: %d parameters, vocab %d, device %s, world %d",
                 meta["parameters"], tokenizer.vocab_size, device, dist.world)

    def save(step: int, last_eval: dict | None) -> Path | None:
        mine = {"data": {"epoch": position[0], "batch": position[1]}, "rng": _rng_state()}
        ranks = dist.gather(mine)
        path = None
        if dist.is_main:
            path = _save_checkpoint(out, {
                "format": CKPT_FORMAT, "step": step, "config": cfg.model_dump(mode="json"),
                "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler_on else None,
                "tokenizer": tokenizer.state(), "world_size": dist.world, "ranks": ranks,
                "eval": last_eval, **meta,
            }, cfg.train.keep_checkpoints)
        dist.barrier()
        return path

    def run_eval(step: int) -> dict | None:
        result = None
        if dist.is_main:
            result = evaluate_model(unwrap(model), tokenizer, release, cfg, split="heldout", device=device,
                                    max_utts=cfg.train.eval_max_utts, amp_dtype=amp_dtype)
            if result["utterances"]:
                metrics.write({"kind": "eval", "step": step, "wer": result["wer"], "cer": result["cer"],
                               "utterances": result["utterances"]})
        dist.barrier()
        return result

    position = [epoch, start]
    batches = iterate_epochs(release, cfg.data, tokenizer, n_mels=cfg.model.n_mels, seed=cfg.seed,
                             epoch=epoch, start=start, rank=dist.rank, world=dist.world,
                             pin_memory=device.type == "cuda")
    accum, sa = cfg.optim.grad_accum, cfg.data.spec_augment
    params = [p for p in model.parameters() if p.requires_grad]
    ddp = hasattr(model, "no_sync")
    totals = {"steps": 0, "step_time_s": 0.0, "data_wait_s": 0.0, "samples": 0, "audio_s": 0.0}
    loss_val, last_eval, ckpt_path = None, resume.get("eval") if resume else None, None
    bar = None
    if progress and dist.is_main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.train.max_steps, initial=step, desc="train", unit="step")
    model.train()
    try:
        while step < cfg.train.max_steps:
            step += 1
            t_step = time.perf_counter()
            wait = decode_s = audio_s = 0.0
            samples = 0
            losses = []
            for micro in range(accum):
                t0 = time.perf_counter()
                batch = next(batches)
                wait += time.perf_counter() - t0
                position[:] = [batch["epoch"], batch["index"] + 1]
                feats = batch["feats"]
                if sa.freq_masks or sa.time_masks:
                    gen = torch.Generator().manual_seed(batch_seed(cfg.seed, batch["epoch"], batch["index"], dist.rank))
                    feats = spec_augment(feats, batch["feat_lens"], sa, gen)
                sync = model.no_sync() if ddp and micro < accum - 1 else contextlib.nullcontext()
                with sync:
                    with _autocast(device, amp_dtype):
                        lp, lens = model(feats.to(device, non_blocking=True), batch["feat_lens"].to(device))
                        loss = ctc_loss(lp, lens, batch["targets"].to(device), batch["target_lens"].to(device))
                    scaler.scale(loss / accum).backward()
                losses.append(loss.detach())
                samples += len(batch["ids"])
                audio_s += batch["audio_s"]
                decode_s += batch["decode_s"]
            lr = optimizer.param_groups[0]["lr"]
            grad_norm = None
            if cfg.optim.grad_clip:
                scaler.unscale_(optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip))
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_val = float(torch.stack(losses).mean())
            step_time = time.perf_counter() - t_step
            totals["steps"] += 1
            totals["step_time_s"] += step_time
            totals["data_wait_s"] += wait
            totals["samples"] += samples
            totals["audio_s"] += audio_s
            if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
                loss_sum, all_samples, all_audio_s = dist.sum([loss_val, samples, audio_s])
                record = {  # loss: mean over ranks; samples, audio: all ranks; times: rank 0's
                    "kind": "train", "step": step, "epoch": position[0], "loss": loss_sum / dist.world, "lr": lr,
                    "grad_norm": grad_norm, "step_time_s": step_time, "data_wait_s": wait,
                    "samples": int(all_samples), "samples_per_s": all_samples / step_time,
                    "audio_s_per_s": all_audio_s / step_time, "decode_s": decode_s,
                }
                metrics.write(record)
                if dist.report is not None:
                    dist.report({k: v for k, v in record.items() if v is not None and k != "kind"})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_val:.3f}", lr=f"{lr:.2e}")
            if step % cfg.train.eval_every == 0 or step == cfg.train.max_steps:
                last_eval = run_eval(step) or last_eval
            if step % cfg.train.ckpt_every == 0 or step == cfg.train.max_steps:
                ckpt_path = save(step, last_eval)
    finally:
        if bar is not None:
            bar.close()
        metrics.close()
        batches.close()

    summary = {
        "out": str(out), "step": step, "loss": loss_val, "eval": last_eval,
        "checkpoint": str(ckpt_path or latest_checkpoint(out) or ""),
        "parameters": meta["parameters"], "vocab_size": tokenizer.vocab_size, "world_size": dist.world,
        "device": str(device), "steps_this_run": totals["steps"],
        "mean_step_time_s": totals["step_time_s"] / totals["steps"] if totals["steps"] else None,
        "samples_per_s": totals["samples"] * dist.world / totals["step_time_s"] if totals["step_time_s"] else None,
        "audio_s_per_s": totals["audio_s"] * dist.world / totals["step_time_s"] if totals["step_time_s"] else None,
        "data_wait_share": totals["data_wait_s"] / totals["step_time_s"] if totals["step_time_s"] else None,
    }
    if dist.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def train_from_args(data: str | Path, out: str | Path, config: str | Path | None = None, *,
                    max_steps: int | None = None, overrides: dict[str, Any] | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """``granary train`` without Ray: the config from ``config``, else the checkpoint's when
    ``out`` holds one, else ``pipelines/train-base.yaml``; DDP when launched by torchrun."""
    from granary_pipe.train.distributed import from_env

    cfg = resolve_config(out, config, overrides)
    return train(data, out, cfg, max_steps=max_steps, dist=from_env(), progress=progress)


def resolve_config(out: str | Path, config: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Config for ``granary train``: ``--config``, else a resumable ``out``'s, else train-base."""
    if config is None and latest_checkpoint(out) is not None:
        saved = load_checkpoint(out)["config"]
        if overrides:
            raise ValueError("--set needs --config (the checkpoint's config is used as saved)")
        return TrainConfig.model_validate(saved)
    return load_train_config(config, overrides)  # None: DEFAULT_CONFIG (pipelines/train-base.yaml)


# ----------------------------------------------------------------------------- inference

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


@torch.no_grad()
def transcribe(checkpoint: str | Path, audio: list[str | Path], *, device: str | None = None,
               chunk_s: float = 30.0) -> list[dict[str, Any]]:
    """Greedy CTC transcripts of audio files (any format FFmpeg decodes, resampled to 16 kHz).

    Audio longer than ``chunk_s`` (the longest training segment) is cut into fixed chunks,
    decoded one by one and joined; a word across a cut may be split. For long recordings,
    segment with VAD first (``segment.silero``).
    """
    model, tokenizer, cfg, _ = load_model(checkpoint, device)
    dev = next(model.parameters()).device
    featurize = Featurizer(cfg.model.n_mels)
    out = []
    chunk = int(chunk_s * 16000)
    for path in audio:
        wave = load_audio(path)
        ids: list[int] = []
        for begin in range(0, max(len(wave), 1), chunk):
            piece = wave[begin: begin + chunk]
            if len(piece) < MIN_FRAMES * 160:
                continue
            feats = torch.from_numpy(featurize(piece))[None]
            lp, lens = model(feats.to(dev), torch.tensor([feats.shape[1]], device=dev))
            ids += greedy_decode(lp, lens)[0]
        item = {"audio": str(path), "duration_s": round(len(wave) / 16000, 3), "text": tokenizer.decode(ids)}
        if tokenizer.lang_tags:
            item["lang"] = tokenizer.lang_of(ids)
        out.append(item)
    return out
