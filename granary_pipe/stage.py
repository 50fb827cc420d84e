"""The Stage base: a validated pydantic model that maps a table to a table; ``apply`` passes rejected rows
through and counts what the call did, so no stage counts by hand. Stages import no engine.
Design: docs/architecture.md, "Contracts"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from granary_pipe import counters, schema


class Resources(BaseModel):
    """What one worker of a stage reserves on the engine (Ray logical resources)."""

    model_config = ConfigDict(extra="forbid")

    cpus: float = Field(default=1.0, ge=0)  # default= (not positional): type checkers see a default
    gpus: float = Field(default=0.0, ge=0)
    custom: dict[str, float] = Field(default_factory=dict)


@dataclass(frozen=True)
class GpuUse:
    """How a stage's parameters put one worker on GPUs, whatever ``resources.gpus`` reserves."""

    why: str  # the parameter that says so (``device=cuda``, ``backend vllm``), for error messages
    devices: int = 1  # GPUs one worker drives (vLLM's ``tensor_parallel_size``)
    memory_fraction: float | None = None  # of each GPU, claimed at start (vLLM); None: as it goes


class Stage(BaseModel):
    """Base class of every stage."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: ClassVar[str] = "stage"  # registry name (``asr.whisper``), set by ``@register``
    actor: ClassVar[bool] = False  # holds a model: lives in long-lived workers (actors)
    RULES: ClassVar[tuple[str, ...]] = ()
    """Every rule (a reason, or its prefix before ``:<detail>``) the stage may reject or flag a row
    with; empty: its reasons are counted as they come."""

    resources: Resources = Field(default_factory=Resources)  # per worker
    batch_size: int = Field(256, ge=1)  # rows per call; a recording is never split across batches
    workers: int = Field(1, ge=1)  # long-lived workers (model stages)

    def setup(self) -> None:
        """Load models or other per-worker state. Called once per worker before any batch."""

    def process(self, active: pa.Table) -> pa.Table:
        """Transform the rows still in play (no ``drop_reason``). Subclasses implement this."""
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Run ``process`` on the active rows; rejected rows pass through untouched."""
        return self.apply(batch)[0]

    def apply(self, batch: pa.Table) -> tuple[pa.Table, counters.StageCounts]:
        """``__call__``, and the call's counts (:func:`granary_pipe.counters.of_batch`)."""
        batch = schema.conform(batch)
        active, rejected = schema.split_active(batch)
        if active.num_rows == 0:
            return batch, counters.empty(self.RULES)
        out = schema.conform(self.process(active))
        counts = counters.of_batch(active, out, self.RULES)
        return (pa.concat_tables([out, rejected]) if rejected.num_rows else out), counts

    def run_info(self) -> dict:
        """What ``run.json`` says of this stage beyond its parameters (the backend that ran, a skipped step)."""
        return {}

    def models(self) -> list[str]:
        """Registry names (or paths) of the models this stage uses, for ``run.json``."""
        return []

    def gpu_use(self) -> GpuUse | None:
        """The GPUs this stage's parameters put a worker on (None: none): a ``device`` naming ``cuda``;
        other engines override this. The executor checks it against ``resources.gpus``."""
        device = getattr(self, "device", None)
        if isinstance(device, str) and device.startswith("cuda"):
            return GpuUse(why=f"device={device}")
        return None
