"""The training loop (checkpoints: :mod:`~granary_pipe.train.checkpoint`; evaluation and
transcription: :mod:`~granary_pipe.train.infer`; all re-exported here).

``train(data, out, cfg)`` writes under ``out``::

    checkpoints/ckpt-00001000.pt   model, optimizer, scheduler, GradScaler, step, config,
                                   tokenizer, held-out split, release fingerprint, and per rank:
                                   data position (epoch, next batch) + RNG states
                                   (python, numpy, torch, cuda)
    checkpoints/latest             name of the newest checkpoint (written last)
    tokenizer/*.model              the SentencePiece model(s), for inspection
    metrics.jsonl                  {"kind": "train", step, loss, lr, grad_norm, step_time_s,
                                   data_wait_s, samples, samples_per_s, audio_s_per_s, ...,
                                   run_step_time_s, run_data_wait_s, run_audio_s (totals of
                                   this process, for rates over a window), wall_time}
                                   every ``log_every`` steps; {"kind": "eval", step, wer, cer}
    tb/                            the same scalars as TensorBoard events
    summary.json                   last step, loss, eval, throughput

**Resume.** Rerunning with the same ``out`` continues from ``checkpoints/latest``: states
restored, the data stream rebuilt and advanced to the saved position, ``metrics.jsonl`` and
the TensorBoard log cut back to the checkpoint's step. On CPU with ``deterministic: true`` and
the same thread count the resumed losses equal an uninterrupted run's (tested to 1e-6). The
model/data/tokenizer/optim/schedule/seed sections must equal the checkpoint's; ``train``
(``max_steps``, intervals) may change.

**Features** are computed here, on the device, from the padded waveforms the loader workers
send (:class:`~granary_pipe.train.features.LogMel`, then SpecAugment). Loss and gradient norm
are read back from the device only on logged steps, so the host does not wait for every step.

**Loss.** CTC summed over the batch divided by target tokens; with ``grad_accum`` micro-batches
the step's loss is their mean. ``lr`` in a record is the rate the update ran at.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from granary_pipe.progress import LINES_EVERY_S, Progress
from granary_pipe.train.checkpoint import (
    CKPT_FORMAT,
    check_compatible,
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from granary_pipe.train.config import TrainConfig, load_train_config
from granary_pipe.train.data import (
    Release,
    batch_seed,
    fetch_release,
    is_url,
    iterate_epochs,
    open_release,
    split_info,
    training_texts,
)
from granary_pipe.train.distributed import DistContext, check_replicas, single_process, unwrap
from granary_pipe.train.features import LogMel, spec_augment
from granary_pipe.train.infer import autocast, evaluate, evaluate_model, load_model, transcribe
from granary_pipe.train.metrics import MetricsLog, read_metrics
from granary_pipe.train.model import ConformerCTC, count_parameters, ctc_loss
from granary_pipe.train.schedules import make_scheduler
from granary_pipe.train.tokenizer import Tokenizer, build_tokenizer

__all__ = [  # checkpoint and inference helpers live in train.checkpoint / train.infer; re-exported here
    "CKPT_FORMAT", "build_optimizer", "checkpoint_dir", "evaluate", "evaluate_model", "latest_checkpoint",
    "load_checkpoint", "load_model", "read_metrics", "resolve_config", "train", "train_from_args", "transcribe",
]

log = logging.getLogger(__name__)


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
        check_compatible(cfg, resume["config"], resume["path"])
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
        set_rng_state(me["rng"])
        log.info("resumed from %s at step %d (epoch %d, batch %d)", resume["path"], step, epoch, start)
    else:
        _seed_all(cfg.seed * 1_000_003 + dist.rank + 1)  # per-rank dropout streams
    if dist.wrap is not None:
        model = dist.wrap(model)

    metrics = MetricsLog(out, dist.is_main, step if resume is not None else None)
    meta = {"split": split_info(cfg.data), "release": release.fingerprint(),
            "parameters": count_parameters(unwrap(model)), "vocab_size": tokenizer.vocab_size}
    if dist.is_main:
        log.info("model: %d parameters, vocab %d, device %s, world %d",
                 meta["parameters"], tokenizer.vocab_size, device, dist.world)

    def save(step: int, last_eval: dict | None) -> Path | None:
        mine = {"data": {"epoch": position[0], "batch": position[1]}, "rng": rng_state()}
        ranks = dist.gather(mine)
        path = None
        if dist.is_main:
            path = save_checkpoint(out, {
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
    batches = iterate_epochs(release, cfg.data, tokenizer, seed=cfg.seed,
                             epoch=epoch, start=start, rank=dist.rank, world=dist.world,
                             pin_memory=device.type == "cuda")
    accum, sa = cfg.optim.grad_accum, cfg.data.spec_augment
    logmel = LogMel(cfg.model.n_mels, device)
    params = [p for p in model.parameters() if p.requires_grad]
    ddp = hasattr(model, "no_sync")
    totals = {"steps": 0, "step_time_s": 0.0, "data_wait_s": 0.0, "samples": 0, "audio_s": 0.0}
    loss_val = loss_logged = ckpt_path = None
    last_eval = resume.get("eval") if resume else None
    shown: dict[str, str] = {}  # the progress line's last loss and learning rate
    bar = Progress(cfg.train.max_steps, initial=step, desc="train", unit="step", enabled=progress and dist.is_main,
                   every_s=LINES_EVERY_S, note=lambda: ", ".join(f"{k} {v}" for k, v in shown.items()))
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
                feats, feat_lens = logmel(batch["waves"], batch["wave_lens"])  # on the device, in batch
                if sa.freq_masks or sa.time_masks:
                    gen = torch.Generator().manual_seed(batch_seed(cfg.seed, batch["epoch"], batch["index"], dist.rank))
                    feats = spec_augment(feats, batch["feat_lens"], sa, gen)
                sync = model.no_sync() if ddp and micro < accum - 1 else contextlib.nullcontext()
                with sync:
                    with autocast(device, amp_dtype):
                        lp, lens = model(feats, feat_lens)
                        loss = ctc_loss(lp, lens, batch["targets"].to(device, non_blocking=True),
                                        batch["target_lens"].to(device, non_blocking=True))
                    scaler.scale(loss / accum).backward()
                losses.append(loss.detach())
                samples += len(batch["ids"])
                audio_s += batch["audio_s"]
                decode_s += batch["decode_s"]
            lr = optimizer.param_groups[0]["lr"]
            grad_norm = None
            if cfg.optim.grad_clip:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            logging_step = step % cfg.train.log_every == 0 or step == cfg.train.max_steps
            if logging_step:  # reading loss and grad norm waits for the device: only when logged
                loss_val = float(torch.stack(losses).mean())
            step_time = time.perf_counter() - t_step
            totals["steps"] += 1
            totals["step_time_s"] += step_time
            totals["data_wait_s"] += wait
            totals["samples"] += samples
            totals["audio_s"] += audio_s
            if logging_step:
                grad_norm = None if grad_norm is None else float(grad_norm)
                loss_sum, all_samples, all_audio_s, run_audio_s = dist.sum([loss_val, samples, audio_s,
                                                                             totals["audio_s"]])
                record = {  # loss: mean over ranks; samples, audio: all ranks; times: rank 0's
                    "kind": "train", "step": step, "epoch": position[0], "loss": loss_sum / dist.world, "lr": lr,
                    "grad_norm": grad_norm, "step_time_s": step_time, "data_wait_s": wait,
                    "samples": int(all_samples), "samples_per_s": all_samples / step_time,
                    "audio_s_per_s": all_audio_s / step_time, "decode_s": decode_s,
                    # since this process started the loop (windows between two records give rates):
                    "run_step_time_s": totals["step_time_s"], "run_data_wait_s": totals["data_wait_s"],
                    "run_audio_s": run_audio_s, "wall_time": time.time(),
                }
                metrics.write(record)
                loss_logged = record["loss"]
                if dist.report is not None:
                    dist.report({k: v for k, v in record.items() if v is not None and k != "kind"})
            if logging_step:
                shown.update(loss=f"{loss_val:.3f}", lr=f"{lr:.2e}")
            bar.update(1)
            every = cfg.train.check_replicas_every
            if every and dist.world > 1 and (step % every == 0 or step == cfg.train.max_steps):
                metrics.write(check_replicas(model, dist, step))
            if step % cfg.train.eval_every == 0 or step == cfg.train.max_steps:
                last_eval = run_eval(step) or last_eval
            if step % cfg.train.ckpt_every == 0 or step == cfg.train.max_steps:
                ckpt_path = save(step, last_eval)
    finally:
        bar.close()
        metrics.close()
        batches.close()

    summary = {
        "out": str(out), "step": step, "loss": loss_logged, "eval": last_eval, "rank": dist.rank,
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
