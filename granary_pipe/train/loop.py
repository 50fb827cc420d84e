"""The training loop: :func:`train` writes checkpoints, the tokenizer, metrics and a summary under ``out`` and
resumes from its latest checkpoint, reproducing an uninterrupted run's losses. Design: docs/architecture.md (Train).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from granary_pipe.progress import LINES_EVERY_S, Progress
from granary_pipe.train.checkpoint import (
    CKPT_FORMAT,
    check_compatible,
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
from granary_pipe.train.infer import autocast, evaluate_model
from granary_pipe.train.metrics import MetricsLog
from granary_pipe.train.model import ConformerCTC, count_parameters, ctc_loss
from granary_pipe.train.schedules import make_scheduler
from granary_pipe.train.tokenizer import Tokenizer, build_tokenizer

__all__ = ["build_optimizer", "resolve_config", "train"]

log = logging.getLogger(__name__)


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
        lr=cfg.schedule.peak_lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
    )


def train(data: str | Path, out: str | Path, cfg: TrainConfig, *, max_steps: int | None = None,
          dist: DistContext | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a Conformer-CTC on ``data`` (a release directory or URL) into ``out``; its summary."""
    dist = dist or single_process()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if max_steps is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": max_steps})})
    _configure_torch(cfg, torch.device(dist.device))
    trainer = _Trainer(open_release(_local_release(data, out, cfg, dist, progress)), out, cfg, dist)
    trainer.run(progress)
    return trainer.finish()


def _local_release(data: str | Path, out: Path, cfg: TrainConfig, dist: DistContext, progress: bool) -> str | Path:
    """``data``, or for a URL ``OUT/data`` once rank 0 has downloaded it."""
    if not is_url(data):
        return data
    dest = out / "data"
    if dist.is_main:
        fetch_release(str(data), dest, langs=cfg.data.langs, progress=progress)
    dist.barrier()
    return dest


class _Trainer:
    """The state one training process carries from step to step."""

    def __init__(self, release: Release, out: Path, cfg: TrainConfig, dist: DistContext) -> None:
        self.release, self.out, self.cfg, self.dist = release, out, cfg, dist
        self.device = torch.device(dist.device)
        resume = load_checkpoint(out) if latest_checkpoint(out) is not None else None
        if resume is not None:
            check_compatible(cfg, resume["config"], resume["path"])
            if resume["world_size"] != dist.world:
                raise ValueError(f"{resume['path']}: saved by {resume['world_size']} worker(s), resuming with "
                                 f"{dist.world}: exact resume needs the same number")
            self.tokenizer = Tokenizer.from_state(resume["tokenizer"])
        else:
            _seed_all(cfg.seed)
            self.tokenizer = self._train_tokenizer()
        _seed_all(cfg.seed)  # identical initial weights on every rank
        model = ConformerCTC(cfg.model, self.tokenizer.vocab_size).to(self.device)
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg.schedule)
        self.amp_dtype, self.scaler_on = _amp(cfg, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.scaler_on)
        self.step = 0
        self.position = [0, 0]  # (epoch, next batch) of this rank's data stream
        self.last_eval: dict | None = None
        if resume is not None:
            self._restore(model, resume)
        else:
            _seed_all(cfg.seed * 1_000_003 + dist.rank + 1)  # per-rank dropout streams
        self.model = dist.wrap(model) if dist.wrap is not None else model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.logmel = LogMel(cfg.model.n_mels, self.device)
        self.metrics = MetricsLog(out, dist.is_main, self.step if resume is not None else None)
        self.meta = {"split": split_info(cfg.data), "release": release.fingerprint(),
                     "parameters": count_parameters(model), "vocab_size": self.tokenizer.vocab_size}
        if dist.is_main:
            log.info("model: %d parameters, vocab %d, device %s, world %d",
                     self.meta["parameters"], self.tokenizer.vocab_size, self.device, dist.world)
        self.totals: Counter[str] = Counter()  # steps, step_time_s, data_wait_s, samples, audio_s of this process
        self.loss_logged: float | None = None
        self.ckpt_path: Path | None = None

    def _train_tokenizer(self) -> Tokenizer:
        """Rank 0 trains it (and writes ``OUT/tokenizer/``); every rank gets it."""
        state = None
        if self.dist.is_main:
            tok = build_tokenizer(training_texts(self.release, self.cfg.data), self.cfg.tokenizer,
                                  self.cfg.data.text_norm)
            state = tok.state()
            tdir = self.out / "tokenizer"
            tdir.mkdir(parents=True, exist_ok=True)
            for key, proto in state["models"].items():
                (tdir / f"{'shared' if key == '*' else key}.model").write_bytes(proto)
        return Tokenizer.from_state(self.dist.broadcast(state))

    def _restore(self, model: torch.nn.Module, resume: dict[str, Any]) -> None:
        model.load_state_dict(resume["model"])
        self.optimizer.load_state_dict(resume["optimizer"])
        self.scheduler.load_state_dict(resume["scheduler"])
        if resume.get("scaler"):
            self.scaler.load_state_dict(resume["scaler"])
        self.step = resume["step"]
        me = resume["ranks"][self.dist.rank]
        self.position = [me["data"]["epoch"], me["data"]["batch"]]
        set_rng_state(me["rng"])
        self.last_eval = resume.get("eval")
        log.info("resumed from %s at step %d (epoch %d, batch %d)", resume["path"], self.step, *self.position)

    def run(self, progress: bool) -> None:
        cfg, dist, device = self.cfg, self.dist, self.device
        batches = iterate_epochs(self.release, cfg.data, self.tokenizer, seed=cfg.seed, epoch=self.position[0],
                                 start=self.position[1], rank=dist.rank, world=dist.world,
                                 pin_memory=device.type == "cuda")
        shown: dict[str, str] = {}  # the progress line's last loss and learning rate
        bar = Progress(cfg.train.max_steps, initial=self.step, desc="train", unit="step",
                       enabled=progress and dist.is_main, every_s=LINES_EVERY_S,
                       note=lambda: ", ".join(f"{k} {v}" for k, v in shown.items()))
        self.model.train()
        try:
            while self.step < cfg.train.max_steps:
                self.step += 1
                logged = self._one_step(batches)
                if logged is not None:
                    shown.update(loss=f"{logged[0]:.3f}", lr=f"{logged[1]:.2e}")
                bar.update(1)
                self._on_intervals()
        finally:
            bar.close()
            self.metrics.close()
            batches.close()

    def _due(self, every: int) -> bool:
        return self.step % every == 0 or self.step == self.cfg.train.max_steps

    def _one_step(self, batches: Iterator[dict[str, Any]]) -> tuple[float, float] | None:
        """One optimizer update; on logged steps it writes the metrics record and returns (loss, lr)."""
        t_step = time.perf_counter()
        losses, took = self._micro_batches(batches)
        lr = self.optimizer.param_groups[0]["lr"]
        grad_norm = None
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        logged = self._due(self.cfg.train.log_every)
        loss = float(torch.stack(losses).mean()) if logged else None  # waits for the device: logged steps only
        step_time = time.perf_counter() - t_step
        self.totals.update({"steps": 1, "step_time_s": step_time, "data_wait_s": took["wait"],  # adds
                            "samples": took["samples"], "audio_s": took["audio_s"]})
        if loss is None:
            return None
        self._log(loss, lr, None if grad_norm is None else float(grad_norm), step_time, took)
        return loss, lr

    def _micro_batches(self, batches: Iterator[dict[str, Any]]) -> tuple[list[torch.Tensor], dict[str, float]]:
        """Forward and backward of ``grad_accum`` batches (DDP syncs gradients on the last one only)."""
        cfg, accum, sa = self.cfg, self.cfg.optim.grad_accum, self.cfg.data.spec_augment
        no_sync = getattr(self.model, "no_sync", None)
        losses = []
        took = {"wait": 0.0, "decode_s": 0.0, "audio_s": 0.0, "samples": 0}
        for micro in range(accum):
            t0 = time.perf_counter()
            batch = next(batches)
            took["wait"] += time.perf_counter() - t0
            self.position = [batch["epoch"], batch["index"] + 1]
            feats, feat_lens = self.logmel(batch["waves"], batch["wave_lens"])  # on the device, in batch
            if sa.freq_masks or sa.time_masks:
                seed = batch_seed(cfg.seed, batch["epoch"], batch["index"], self.dist.rank)
                feats = spec_augment(feats, batch["feat_lens"], sa, torch.Generator().manual_seed(seed))
            sync = no_sync() if no_sync is not None and micro < accum - 1 else contextlib.nullcontext()
            with sync:
                with autocast(self.device, self.amp_dtype):
                    lp, lens = self.model(feats, feat_lens)
                    loss = ctc_loss(lp, lens, batch["targets"].to(self.device, non_blocking=True),
                                    batch["target_lens"].to(self.device, non_blocking=True))
                self.scaler.scale(loss / accum).backward()
            losses.append(loss.detach())
            took["samples"] += len(batch["ids"])
            took["audio_s"] += batch["audio_s"]
            took["decode_s"] += batch["decode_s"]
        return losses, took

    def _log(self, loss: float, lr: float, grad_norm: float | None, step_time: float,
             took: dict[str, float]) -> None:
        """Loss the mean over ranks, samples and audio summed over ranks, times rank 0's (``run_*``: since start)."""
        dist = self.dist
        loss_sum, all_samples, all_audio_s, run_audio_s = dist.sum([loss, took["samples"], took["audio_s"],
                                                                     self.totals["audio_s"]])
        self.loss_logged = loss_sum / dist.world
        record = {
            "kind": "train", "step": self.step, "epoch": self.position[0], "loss": self.loss_logged, "lr": lr,
            "grad_norm": grad_norm, "step_time_s": step_time, "data_wait_s": took["wait"],
            "samples": int(all_samples), "samples_per_s": all_samples / step_time,
            "audio_s_per_s": all_audio_s / step_time, "decode_s": took["decode_s"],
            "run_step_time_s": self.totals["step_time_s"], "run_data_wait_s": self.totals["data_wait_s"],
            "run_audio_s": run_audio_s, "wall_time": time.time(),
        }
        self.metrics.write(record)
        if dist.report is not None:
            dist.report({k: v for k, v in record.items() if v is not None and k != "kind"})

    def _on_intervals(self) -> None:
        every, dist = self.cfg.train.check_replicas_every, self.dist
        if every and dist.world > 1 and self._due(every):
            self.metrics.write(check_replicas(self.model, dist, self.step))
        if self._due(self.cfg.train.eval_every):
            self.last_eval = self._evaluate() or self.last_eval
        if self._due(self.cfg.train.ckpt_every):
            self.ckpt_path = self._save()

    def _evaluate(self) -> dict | None:
        """Held-out WER/CER on rank 0."""
        result = None
        if self.dist.is_main:
            result = evaluate_model(unwrap(self.model), self.tokenizer, self.release, self.cfg, split="heldout",
                                    device=self.device, max_utts=self.cfg.train.eval_max_utts,
                                    amp_dtype=self.amp_dtype)
            if result["utterances"]:
                self.metrics.write({"kind": "eval", "step": self.step, "wer": result["wer"], "cer": result["cer"],
                                    "utterances": result["utterances"]})
        self.dist.barrier()
        return result

    def _save(self) -> Path | None:
        dist = self.dist
        ranks = dist.gather({"data": {"epoch": self.position[0], "batch": self.position[1]}, "rng": rng_state()})
        path = None
        if dist.is_main:
            path = save_checkpoint(self.out, {
                "format": CKPT_FORMAT, "step": self.step, "config": self.cfg.model_dump(mode="json"),
                "model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler_on else None,
                "tokenizer": self.tokenizer.state(), "world_size": dist.world, "ranks": ranks,
                "eval": self.last_eval, **self.meta,
            }, self.cfg.train.keep_checkpoints)
        dist.barrier()
        return path

    def finish(self) -> dict[str, Any]:
        t, dist = self.totals, self.dist
        busy = t["step_time_s"]
        summary = {
            "out": str(self.out), "step": self.step, "loss": self.loss_logged, "eval": self.last_eval,
            "rank": dist.rank, "checkpoint": str(self.ckpt_path or latest_checkpoint(self.out) or ""),
            "parameters": self.meta["parameters"], "vocab_size": self.tokenizer.vocab_size,
            "world_size": dist.world, "device": str(self.device), "steps_this_run": t["steps"],
            "mean_step_time_s": busy / t["steps"] if t["steps"] else None,
            "samples_per_s": t["samples"] * dist.world / busy if busy else None,
            "audio_s_per_s": t["audio_s"] * dist.world / busy if busy else None,
            "data_wait_share": t["data_wait_s"] / busy if busy else None,
        }
        if dist.is_main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return summary


def resolve_config(out: str | Path, config: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Config for ``granary train``: ``--config``, else a resumable ``out``'s, else train-base."""
    if config is None and latest_checkpoint(out) is not None:
        saved = load_checkpoint(out)["config"]
        if overrides:
            raise ValueError("--set needs --config (the checkpoint's config is used as saved)")
        return TrainConfig.model_validate(saved)
    return load_train_config(config, overrides)
