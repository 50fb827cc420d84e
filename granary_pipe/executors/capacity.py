"""Will a pipeline's stages fit a Ray cluster? The Ray executor's start check, engine-free (Ray would wait forever).

Design: docs/architecture.md, "Ray executor".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from granary_pipe.stage import Stage

EPS = 1e-6
"""Slack for float sums (Ray itself counts resources in steps of 1e-4)."""

ONE_GPU_PIPELINE = "granary-gpu-1"
"""The bundled pipeline sized for a single GPU, named in the advice of a GPU error."""


class CapacityError(RuntimeError):
    """The pipeline cannot run on this cluster as configured; the message says what to change."""


@dataclass
class _Node:
    """What is left on one node while the pipeline is placed."""

    label: str
    cpus: float
    gpus: list[float]  # free share of each GPU device
    custom: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Request:
    """What one worker of a stage reserves."""

    stage: str
    cpus: float
    gpus: float
    custom: Mapping[str, float]


def _request(stage: Stage) -> _Request:
    r = stage.resources
    return _Request(stage.name, r.cpus, r.gpus, dict(r.custom))


def _nodes(nodes: Sequence[Mapping[str, float]]) -> list[_Node]:
    out = []
    for k, res in enumerate(nodes):
        custom = {key: v for key, v in res.items()
                  if key not in ("CPU", "GPU", "memory", "object_store_memory") and not key.startswith("node:")}
        # Ray makes int(GPU) devices of one GPU each (a fractional remainder is no device)
        out.append(_Node(f"node {k}", float(res.get("CPU", 0)), [1.0] * int(res.get("GPU", 0) + EPS), custom))
    return out


def _gpu_slots(node: _Node, gpus: float) -> list[int] | None:
    """Devices of ``node`` that would serve a request of ``gpus`` (Ray's choice), or None."""
    if gpus <= 0:
        return []
    if gpus < 1:
        fitting = [i for i, free in enumerate(node.gpus) if free >= gpus - EPS]
        return [min(fitting, key=lambda i: node.gpus[i])] if fitting else None  # best fit, first on ties
    whole = [i for i, free in enumerate(node.gpus) if free >= 1 - EPS]
    return whole[: round(gpus)] if len(whole) >= round(gpus) else None


def _fits(node: _Node, req: _Request) -> list[int] | None:
    if node.cpus < req.cpus - EPS or any(node.custom.get(k, 0) < v - EPS for k, v in req.custom.items()):
        return None
    return _gpu_slots(node, req.gpus)


def _place(nodes: list[_Node], req: _Request) -> bool:
    """Reserve ``req`` on the node where it fits most tightly (GPU requests) or on the node with the
    most CPUs left, GPU-less nodes first (CPU-only requests); False when no node has room."""
    options = [(n, slots) for n in nodes if (slots := _fits(n, req)) is not None]
    if not options:
        return False
    if req.gpus > 0:
        node, slots = min(options, key=lambda o: (sum(o[0].gpus[i] for i in o[1]) - req.gpus, len(o[0].gpus)))
    else:
        node, slots = min(options, key=lambda o: (len(o[0].gpus) > 0, -o[0].cpus))
    node.cpus -= req.cpus
    for k, v in req.custom.items():
        node.custom[k] -= v
    for i in slots:
        node.gpus[i] -= req.gpus if req.gpus < 1 else 1.0
    return True


def actor_order(stages: Sequence[Stage]) -> list[int]:
    """Indices of the actor stages in the order to create them: largest GPU request first,
    then largest CPU request, then pipeline order (what :func:`check` assumes)."""
    idx = [i for i, s in enumerate(stages) if s.actor]
    return sorted(idx, key=lambda i: (-stages[i].resources.gpus, -stages[i].resources.cpus, i))


def _gpu_table(stages: Sequence[Stage], nodes: list[_Node]) -> str:
    lines, total, task = [], 0.0, 0.0
    for s in stages:
        g = s.resources.gpus
        if g <= 0:
            continue
        if s.actor:
            total += g * s.workers
            lines.append(f"  {s.name}: {g:g} GPU x {s.workers} worker(s) = {g * s.workers:g} (actor, held all run)")
        else:
            task = max(task, g)
            lines.append(f"  {s.name}: {g:g} GPU per call (task, runs beside the actors)")
    per_node = ", ".join(f"{n.label}: {len(n.gpus)}" for n in nodes)
    lines.append(f"  total at once: {total + task:g} GPUs ({total:g} held by actors + {task:g} for the largest "
                 f"GPU task); the cluster has {sum(len(n.gpus) for n in nodes)} ({per_node})")
    return "\n".join(lines)


def _gpu_advice(cluster_gpus: int) -> str:
    if cluster_gpus == 0:
        return ("the cluster has no GPU: add GPU nodes (ray start --num-gpus), or run a CPU pipeline (demo)")
    return (f"lower resources.gpus or workers of these stages until they fit, add GPUs, or on a single GPU "
            f"run the bundled pipeline by name: granary run {ONE_GPU_PIPELINE} --source ... --out ...")


def _check_stage_gpus(stages: Sequence[Stage]) -> None:
    """What a stage's own parameters (``Stage.gpu_use``) require of its GPU reservation."""
    for s in stages:
        g = s.resources.gpus
        where = f"stage {s.name}"
        if g > 1 and abs(g - round(g)) > EPS:
            raise CapacityError(f"{where}: resources.gpus {g:g}: Ray gives more than one GPU only in whole GPUs; "
                                f"set a share below 1 or a whole number")
        use = s.gpu_use()
        if use is None:
            continue
        if g <= 0:
            raise CapacityError(f"{where} runs on a GPU ({use.why}) but reserves none (resources.gpus: 0), so "
                                f"Ray would start it as a CPU worker that still sees every GPU, unaccounted: set "
                                f"resources.gpus (a share such as 0.5, or 1), or move it off the GPU (device: cpu; "
                                f"for an LLM stage, backend openai)")
        if use.devices > 1 and g < use.devices - EPS:
            raise CapacityError(f"{where}: {use.why} drives {use.devices} GPUs (tensor_parallel_size) but reserves "
                                f"{g:g}: set resources.gpus: {use.devices}")
        share = min(1.0, g / use.devices)
        if use.memory_fraction is not None and use.memory_fraction > share + EPS:
            raise CapacityError(
                f"{where}: {use.why} claims gpu_memory_utilization {use.memory_fraction:g} of its GPU's memory at "
                f"start but reserves a {share:g} share of that GPU; Ray puts other actors on the rest of it, whose "
                f"memory would then not be there (vLLM fails at start). Set gpu_memory_utilization <= {share:g}, "
                f"or resources.gpus: {use.devices} (whole GPUs)")


def check(stages: Sequence[Stage], nodes: Sequence[Mapping[str, float]], commit_cpus: float = 0.0) -> None:
    """Raise :class:`CapacityError` unless every actor of ``stages`` fits on ``nodes`` at once and every task
    (and a commit task reserving ``commit_cpus``) still finds room beside them; ``nodes``: each node's total
    resources as Ray reports them (``{"CPU": 16, "GPU": 1, ...}``); a single mapping of the cluster's totals
    stands for one node."""
    _check_stage_gpus(stages)
    cluster = _nodes(nodes)
    _check_custom(stages, cluster)
    _check_totals(stages, cluster, commit_cpus)
    _check_placement(stages, cluster, commit_cpus)


def _check_custom(stages: Sequence[Stage], cluster: list[_Node]) -> None:
    """A custom resource the cluster does not offer at all."""
    custom: dict[str, float] = {}
    for n in cluster:
        for k, v in n.custom.items():
            custom[k] = custom.get(k, 0) + v
    for s in stages:
        missing = [f"{k}={v:g}" for k, v in s.resources.custom.items() if v > 0 and custom.get(k, 0) < v - EPS]
        if missing:
            raise CapacityError(f"stage {s.name} needs {', '.join(missing)} but the Ray cluster's custom resources "
                                f"are {custom or 'none'}: start nodes with them (ray start --resources) or "
                                f"remove resources.custom from the stage")


def _check_totals(stages: Sequence[Stage], cluster: list[_Node], commit_cpus: float) -> None:
    """The cluster's GPUs and CPUs against what the actors hold plus the largest task."""
    gpus = sum(len(n.gpus) for n in cluster)
    held_gpus = sum(s.resources.gpus * s.workers for s in stages if s.actor)
    task_gpus = max([s.resources.gpus for s in stages if not s.actor] + [0.0])
    if held_gpus + task_gpus > gpus + EPS:
        raise CapacityError(f"the pipeline needs {held_gpus + task_gpus:g} GPUs at once but the Ray cluster has "
                            f"{gpus}:\n{_gpu_table(stages, cluster)}\n{_gpu_advice(gpus)}")
    held_cpus = sum(s.resources.cpus * s.workers for s in stages if s.actor)
    task_cpus = max([s.resources.cpus for s in stages if not s.actor] + [commit_cpus])
    cpus = sum(n.cpus for n in cluster)
    if held_cpus + task_cpus > cpus + EPS:
        raise CapacityError(f"actors reserve {held_cpus:g} CPUs and the largest task needs {task_cpus:g}, but the "
                            f"cluster has {cpus:g}: lower resources.cpus or workers in the pipeline config")


def _check_placement(stages: Sequence[Stage], cluster: list[_Node], commit_cpus: float) -> None:
    """Place every actor worker (in :func:`actor_order`), then look for room for each task."""
    for i in actor_order(stages):
        for w in range(stages[i].workers):
            if not _place(cluster, _request(stages[i])):
                raise CapacityError(_unplaced(stages, cluster, f"worker {w + 1} of {stages[i].name} (actor)"))
    for req in [_request(s) for s in stages if not s.actor] + [_Request("commit", commit_cpus, 0.0, {})]:
        if not any(_fits(n, req) is not None for n in cluster):
            raise CapacityError(_unplaced(stages, cluster, f"a {req.stage} task"))


def _unplaced(stages: Sequence[Stage], cluster: list[_Node], what: str) -> str:
    """Why a worker finds no node although the totals suffice: the room is split across nodes or GPUs."""
    left = "; ".join(f"{n.label}: {n.cpus:g} CPUs, GPUs free {[round(g, 4) for g in n.gpus]}" for n in cluster)
    msg = (f"{what} fits on no node beside the actors placed before it, although the cluster's totals suffice: "
           f"one worker's CPUs, GPUs and custom resources come from one node, and a GPU share below 1 from "
           f"one GPU. Left after the actors: {left}")
    if not any(s.resources.gpus > 0 for s in stages):
        return msg + "\nlower resources.cpus or workers so that each worker fits one node"
    return (f"{msg}\n{_gpu_table(stages, cluster)}\nchoose GPU shares that fill whole GPUs together "
            f"(0.25 + 0.75, 0.5 + 0.5) and CPUs per worker that one node has; "
            f"{_gpu_advice(sum(len(n.gpus) for n in cluster))}")
