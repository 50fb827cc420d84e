"""Distributed-training primitives: :class:`DistContext` for one process or ``torchrun`` DDP (:func:`from_env`),
and the replica check (DDP keeps the replicas bitwise identical). Launchers: :mod:`granary_pipe.train.launch`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as td
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Rank, world size, device and collectives of one training process."""

    rank: int = 0
    world: int = 1
    device: Any = "cpu"
    wrap: Callable | None = None
    report: Callable[[dict], None] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1 and td.is_available() and td.is_initialized()

    def barrier(self) -> None:
        if self.distributed:
            td.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64); a copy of ``values`` in one process."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        td.all_reduce(t)
        return t.cpu().tolist()

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        td.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def _comm_device(self):
        return self.device if td.get_backend() == "nccl" else "cpu"


def default_device() -> str:
    """``"cuda"`` when CUDA is available, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def single_process() -> DistContext:
    """One process, on :func:`default_device`."""
    return DistContext(device=torch.device(default_device()))


def from_env() -> DistContext:
    """``torchrun``'s environment → DDP context; a plain process → :func:`single_process`."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return single_process()
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
        return DistributedDataParallel(model, device_ids=[local] if device.type == "cuda" else None)

    return DistContext(rank=td.get_rank(), world=td.get_world_size(), device=device, wrap=wrap)


def unwrap(model):
    """The model inside a DDP wrapper (its ``.module``), else ``model`` itself."""
    return getattr(model, "module", model)


def replica_divergence(model, dist: DistContext) -> float:
    """Largest absolute difference of any parameter or floating-point buffer between two ranks (NaN when any
    rank has one), on every rank; costs about two gradient all-reduces."""
    if not dist.distributed:
        return 0.0
    state = [t.detach().reshape(-1).float() for t in unwrap(model).state_dict().values() if t.is_floating_point()]
    if not state:
        return 0.0
    hi = torch.cat(state).to(dist._comm_device())
    lo = hi.clone()
    nan = torch.isnan(hi).any().to(torch.int32).reshape(1)
    td.all_reduce(hi, op=td.ReduceOp.MAX)
    td.all_reduce(lo, op=td.ReduceOp.MIN)
    td.all_reduce(nan, op=td.ReduceOp.MAX)
    return float("nan") if nan.item() else float((hi - lo).max())


def check_replicas(model, dist: DistContext, step: int) -> dict[str, Any]:
    """:func:`replica_divergence` as a metrics record; rank 0 warns when the replicas differ."""
    diff = replica_divergence(model, dist)
    if dist.is_main and not diff == 0.0:
        log.warning("step %d: model replicas differ across %d ranks (largest parameter difference %.3g); "
                    "DDP keeps them identical, so something updates one rank only", step, dist.world, diff)
    return {"kind": "replicas", "step": step, "max_abs_diff": diff}
