"""Distributed-training primitives: :class:`DistContext` (rank, world size, device, how to wrap
the model) for one process (:func:`single_process`) or ``torchrun`` DDP (:func:`from_env`), and
the replica check. Where the loop runs (one process, torchrun, Ray Train) is
:mod:`granary_pipe.train.launch`.

**Replicas.** Every rank builds the model from the same seed and DDP broadcasts rank 0's
parameters and buffers when it wraps the model (torchrun and Ray's ``prepare_model`` alike);
each backward all-reduces (averages) the gradients, so clipping and the optimizer step see the
same gradients on every rank and the replicas stay bitwise identical. The step is therefore the
single-process step on the *mean of the per-rank losses* (not one loss over the union of the
batches: the CTC loss is normalised by each rank's own target tokens). Tested for both launchers
(``tests/test_train_ddp.py``: ranks identical, and equal to a one-process run on the same
per-rank batches to 2e-5 after 3 steps). ``train.check_replicas_every: N`` checks it on a real
run: every N steps (and at the last) :func:`check_replicas` records the largest parameter
difference between ranks as ``{"kind": "replicas", "step", "max_abs_diff"}`` in
``metrics.jsonl`` and warns when it is not 0.

Ranks read disjoint data within an epoch (:mod:`~granary_pipe.train.data`), but each rank runs
through its own share at its own pace and every step weighs the ranks equally: with few, unequal
shards a rank with fewer rows starts its next epoch (new shard assignment) sooner, so the same
utterance can appear on two ranks in one step and a small share is seen more often.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)


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


def replica_divergence(model, dist: DistContext) -> float:
    """Largest absolute difference of any parameter or floating-point buffer between any two
    ranks (0.0: identical replicas, or one process); every rank gets the value.

    Two all-reduces (MAX and MIN) of the flattened state, so it costs about two gradient
    all-reduces: meant for every few hundred steps, not every step. NaN on any rank gives NaN.
    """
    if not dist.distributed:
        return 0.0
    import torch
    import torch.distributed as td

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
