"""The Stage base: a small validated dataclass that maps a table to a table.

A stage declares its parameters as fields (validated by pydantic: an unknown key or a bad
value is an error naming the key), its ``resources`` and ``batch_size``; loads its model once
in ``setup()``; and implements ``process(active)`` on the rows still in play. ``__call__``
passes rows that an earlier stage rejected through untouched; ``apply`` does the same and also
returns what the call did (:mod:`granary_pipe.counters`: rows in, rows rejected and flagged per
rule), so every stage is counted without counting anything itself. A stage that rejects rows by
named rules derives from ``stages.filters.base.FilterStage``. Stages import no engine: executors
(``granary_pipe.executors``) decide where and how they run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from granary_pipe import counters, schema


class Resources(BaseModel):
    """What one worker of a stage reserves on the engine (Ray logical resources)."""

    model_config = ConfigDict(extra="forbid")

    cpus: float = Field(1.0, ge=0)
    gpus: float = Field(0.0, ge=0)
    custom: dict[str, float] = Field(default_factory=dict)


@dataclass(frozen=True)
class GpuUse:
    """How a stage's parameters put one worker on GPUs, whatever ``resources.gpus`` reserves.

    Attributes:
        why: the parameter that says so (``device=cuda``, ``backend vllm``), for error messages.
        devices: GPUs one worker drives (vLLM's ``tensor_parallel_size``).
        memory_fraction: share of each GPU's memory the worker claims at start (vLLM's
            ``gpu_memory_utilization``); None when it allocates as it goes.
    """

    why: str
    devices: int = 1
    memory_fraction: float | None = None


class Stage(BaseModel):
    """Base class of every stage.

    Attributes:
        name: short registry name (``asr.whisper``), set by ``@register``.
        actor: True when the stage holds a model and should live in a long-lived worker.
        resources: per-worker reservation.
        batch_size: rows per call; executors never split one recording across batches.
        workers: how many long-lived workers (actors) run this stage.
        RULES: every rule (reason, or reason prefix before ``:<detail>``) the stage may reject or
            flag a row with, for the counters, the report and ``granary stages``; empty when the
            stage does not declare them (its reasons are then counted as they come).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: ClassVar[str] = "stage"
    actor: ClassVar[bool] = False
    RULES: ClassVar[tuple[str, ...]] = ()

    resources: Resources = Field(default_factory=Resources)
    batch_size: int = Field(256, ge=1)
    workers: int = Field(1, ge=1)

    def setup(self) -> None:
        """Load models or other per-worker state. Called once per worker before any batch."""

    def process(self, active: pa.Table) -> pa.Table:
        """Transform the rows still in play (no ``drop_reason``). Subclasses implement this."""
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Run ``process`` on active rows; rejected rows pass through untouched."""
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
        """What ``run.json`` should say about this stage beyond its parameters (e.g. which
        backend really ran, or that a step was deliberately skipped)."""
        return {}

    def models(self) -> list[str]:
        """Registry names (or paths) of the models this stage uses, for ``run.json``."""
        return []

    def gpu_use(self) -> GpuUse | None:
        """The GPUs this stage's parameters put a worker on (None: none). A stage with a ``device``
        parameter (CTranslate2/torch device string) is on a GPU when it names ``cuda``; stages
        with other engines (an LLM backend) override this. The executor checks it against
        ``resources.gpus``: Ray hides no GPU from a worker that reserves none."""
        device = getattr(self, "device", None)
        if isinstance(device, str) and device.startswith("cuda"):
            return GpuUse(why=f"device={device}")
        return None
