"""Where the training loop runs: one process, ``torchrun`` DDP, or Ray Train workers.

The loop (:func:`granary_pipe.train.loop.train`) is the same function in all three; it gets a
:class:`DistContext` that says its rank, world size, device and how to wrap the model.

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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class DistContext:
    """Rank, world size, device and collectives of one training process."""

    rank: int = 0
    world: int = 1
    device: Any = "cpu"
    wrap: Callable | None = None
    report: Callable[[dict], None] | None = None
    kind: str = "single"
    extra: dict = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        import torch.distributed as td

        return self.world > 1 and td.is_available() and td.is_initialized()

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as td

            td.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over ranks."""
        if not self.distributed:
            return list(values)
        import torch
        import torch.distributed as td

        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        td.all_reduce(t)
        return t.cpu().tolist()

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (every rank gets the list)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as td

        out: list[Any] = [None] * self.world
        td.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as td

        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def _comm_device(self):
        import torch.distributed as td

        return self.device if td.get_backend() == "nccl" else "cpu"


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def single_process(device: str | None = None) -> DistContext:
    """One process on ``device`` (default CUDA if available)."""
    import torch

    return DistContext(device=torch.device(device or default_device()))


def from_env() -> DistContext:
    """``torchrun``'s environment → DDP context; a plain process → :func:`single_process`."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return single_process()
    import torch.distributed as td
    from torch.nn.parallel import DistributedDataParallel as DDP

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not td.is_initialized():
        td.init_process_group(backend=backend)

    def wrap(model):
        return DDP(model, device_ids=[local] if device.type == "cuda" else None)

    return DistContext(rank=td.get_rank(), world=td.get_world_size(), device=device, wrap=wrap, kind="torchrun")


def unwrap(model):
    """The module inside a DDP wrapper (or the model itself)."""
    return getattr(model, "module", model)


# ----------------------------------------------------------------------------- Ray Train

def _ray_worker(config: dict) -> None:
    """``train_loop_per_worker``: the same loop, in Ray Train's process group."""
    import ray.train
    import ray.train.torch

    from granary_pipe.train.config import TrainConfig
    from granary_pipe.train.loop import train

    ctx = ray.train.get_context()
    dist = DistContext(
        rank=ctx.get_world_rank(), world=ctx.get_world_size(), device=ray.train.torch.get_device(),
        wrap=ray.train.torch.prepare_model, report=ray.train.report, kind="ray",
    )
    train(config["data"], config["out"], TrainConfig.model_validate(config["cfg"]),
          max_steps=config["max_steps"], dist=dist, progress=False)


def train_with_ray(data: str | Path, out: str | Path, cfg, *, num_workers: int = 1, address: str | None = None,
                   max_steps: int | None = None, use_gpu: bool | None = None,
                   resources_per_worker: dict[str, float] | None = None) -> dict[str, Any]:
    """Run the loop on ``num_workers`` Ray Train workers; return the loop's summary.

    Uses the running Ray (``ray.init`` already called), else connects to ``address``
    (``auto``, ``ray://…``), else starts an embedded local Ray (shut down afterwards).
    """
    import json

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
