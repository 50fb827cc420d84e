"""Where the training loop runs: one process, ``torchrun`` DDP, or Ray Train workers.

The loop (:func:`granary_pipe.train.loop.train`) is the same function in all three; it gets a
:class:`~granary_pipe.train.distributed.DistContext` that says its rank, world size, device and
how to wrap the model.

- **one process**: ``granary train --data REL --out DIR`` (CUDA if available, else CPU).
- **torchrun** (one node, N GPUs)::

      torchrun --standalone --nproc-per-node N -m granary_pipe.cli train --data REL --out DIR

  ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` from torchrun select DDP (NCCL on GPU, gloo on CPU).
- **Ray Train**: ``granary train ... --workers N [--ray-address ray://HEAD:10001 | auto]``:
  ``ray.train.torch.TorchTrainer`` with ``ScalingConfig(num_workers=N,
  use_gpu=torch.cuda.is_available())``; each worker calls the loop with Ray's process group,
  ``ray.train.torch.get_device()`` and ``prepare_model`` (DDP). Without ``--ray-address`` an
  embedded local Ray is started. ``--out`` and the release must be paths every worker sees
  (shared storage on a multi-node cluster); rank 0 writes checkpoints and metrics there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from granary_pipe.train.config import TrainConfig
from granary_pipe.train.distributed import DistContext
from granary_pipe.train.loop import train


def _ray_worker(config: dict) -> None:
    """``train_loop_per_worker``: the same loop, in Ray Train's process group."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    dist = DistContext(
        rank=ctx.get_world_rank(), world=ctx.get_world_size(), device=ray.train.torch.get_device(),
        wrap=ray.train.torch.prepare_model, report=ray.train.report, kind="ray",
    )
    train(config["data"], config["out"], TrainConfig.model_validate(config["cfg"]),
          max_steps=config["max_steps"], dist=dist, progress=False)


def train_with_ray(data: str | Path, out: str | Path, cfg: TrainConfig, *, num_workers: int = 1,
                   address: str | None = None, max_steps: int | None = None, use_gpu: bool | None = None,
                   resources_per_worker: dict[str, float] | None = None) -> dict[str, Any]:
    """Run the loop on ``num_workers`` Ray Train workers; return the loop's summary.

    Uses the running Ray (``ray.init`` already called), else connects to ``address``
    (``auto``, ``ray://…``), else starts an embedded local Ray (shut down afterwards).
    """
    import ray
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out = Path(out).resolve()
    started = False
    if not ray.is_initialized():
        if address:
            from granary_pipe.executors.ray_address import check_reachable

            check_reachable(address)  # Ray itself retries an unreachable address for minutes
        ray.init(address=address, log_to_driver=True) if address else ray.init()
        started = True
    out.mkdir(parents=True, exist_ok=True)
    try:
        gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
        trainer = TorchTrainer(
            _ray_worker,
            train_loop_config={"data": str(Path(data).resolve()) if "://" not in str(data) else str(data),
                               "out": str(out), "cfg": cfg.model_dump(mode="json"), "max_steps": max_steps},
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=gpu,
                                         resources_per_worker=resources_per_worker),
            run_config=RunConfig(name="granary-train", storage_path=str(out / "ray")),
        )
        trainer.fit()
    finally:
        if started:
            ray.shutdown()
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))
