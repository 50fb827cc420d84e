"""Ray Train workers running the training loop (``granary train --workers N [--ray-address ADDRESS]``);
``--out`` and the release must be paths every worker sees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from granary_pipe.train.config import TrainConfig
from granary_pipe.train.distributed import DistContext
from granary_pipe.train.loop import train


def _ray_worker(config: dict) -> None:
    """Ray Train's ``train_loop_per_worker``: the loop in Ray's process group, DDP by ``prepare_model``."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    dist = DistContext(
        rank=ctx.get_world_rank(), world=ctx.get_world_size(), device=ray.train.torch.get_device(),
        wrap=ray.train.torch.prepare_model, report=ray.train.report,
    )
    train(config["data"], config["out"], TrainConfig.model_validate(config["cfg"]),
          max_steps=config["max_steps"], dist=dist, progress=False)


def train_with_ray(data: str | Path, out: str | Path, cfg: TrainConfig, *, num_workers: int = 1,
                   address: str | None = None, max_steps: int | None = None, use_gpu: bool | None = None,
                   resources_per_worker: dict[str, float] | None = None) -> dict[str, Any]:
    """The summary of the loop on ``num_workers`` Ray Train workers (one GPU each where CUDA is available), on
    the running Ray, else ``address``, else an embedded local Ray."""
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
