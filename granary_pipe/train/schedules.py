"""Learning-rate warmup schedules (linear, piecewise as OWSM's, exponential, polynomial), each followed by
inverse-square-root decay ``peak_lr * sqrt(w / i)``, ``i`` the 1-based optimizer update as in ESPnet.
Design: docs/architecture.md (Train)."""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

from granary_pipe.train.config import ScheduleConfig

SCHEDULE_NAMES = ("linear", "piecewise", "exponential", "polynomial")


def _piecewise(i: float, steps: list[float], lrs: list[float]) -> float:
    """Linear interpolation through ``(steps[k], lrs[k])``, for ``i <= steps[-1]`` (the last knot)."""
    for (s0, l0), (s1, l1) in pairwise(zip(steps, lrs, strict=True)):
        if i <= s1:
            return l0 + (l1 - l0) * (i - s0) / (s1 - s0)
    raise AssertionError("unreachable: i <= steps[-1]")


def piecewise_lists(cfg: ScheduleConfig) -> tuple[list[float], list[float]]:
    """The (steps, lrs) knots of the piecewise schedule: the config's, else OWSM's shape."""
    if cfg.warmup_steps_list is not None and cfg.warmup_lr_list is not None:
        return list(cfg.warmup_steps_list), list(cfg.warmup_lr_list)
    w, peak = cfg.warmup_steps, cfg.peak_lr
    return [0.0, w / 2, float(w)], [0.0, peak / 4, peak]


def lr_function(cfg: ScheduleConfig) -> Callable[[float], float]:
    """``lr(i)`` for the configured schedule (``i`` = 1-based update number)."""
    w, peak = cfg.warmup_steps, cfg.peak_lr
    steps, lrs = piecewise_lists(cfg)
    warmups: dict[str, Callable[[float], float]] = {
        "linear": lambda i: peak * i / w,
        "piecewise": lambda i: _piecewise(i, steps, lrs),
        "exponential": lambda i: peak * math.expm1(cfg.alpha * i / w) / math.expm1(cfg.alpha),
        "polynomial": lambda i: peak * (i / w) ** cfg.power,
    }
    if cfg.name not in warmups:
        raise ValueError(f"unknown schedule {cfg.name!r}; known: {', '.join(SCHEDULE_NAMES)}")
    warmup = warmups[cfg.name]
    # the decay starts where the warmup ends: the last knot, (w, peak) for every schedule (custom knots validated so)
    end_w, end_lr = steps[-1], lrs[-1]

    def lr(i: float) -> float:
        return warmup(i) if i < end_w else end_lr * math.sqrt(end_w / i)

    return lr


def lr_at(cfg: ScheduleConfig, i: float) -> float:
    """Learning rate of update ``i`` (1-based; ``i = 0`` gives the warmup's start, 0)."""
    if i < 0:
        raise ValueError(f"step must be >= 0, got {i}")
    return lr_function(cfg)(i)


def make_scheduler(optimizer, cfg: ScheduleConfig):
    """A ``LambdaLR`` over ``optimizer`` whose param groups are set to ``cfg.peak_lr`` first."""
    import torch

    for group in optimizer.param_groups:
        group["lr"] = cfg.peak_lr
        group["initial_lr"] = cfg.peak_lr
    fn, peak = lr_function(cfg), cfg.peak_lr
    # a plain function, not a callable object: LambdaLR's state_dict then holds only
    # counters (last_epoch, base_lrs), and a resume rebuilds the function from the config
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: fn(step + 1) / peak)


def plot_schedules(out: Path, *, peak_lr: float = 1e-3, warmup_steps: int = 1000,
                   total_steps: int | None = None, alpha: float = 1.5, power: float = 1.5) -> Path:
    """Plot the four schedules (default peak 1e-3, w 1000, 5·w updates) into a PNG/PDF/SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = total_steps or 5 * warmup_steps
    xs = list(range(0, total + 1, max(1, total // 1000)))
    fig, (full, warm) = plt.subplots(1, 2, figsize=(11, 4))
    for name in SCHEDULE_NAMES:
        cfg = ScheduleConfig(name=name, peak_lr=peak_lr, warmup_steps=warmup_steps, alpha=alpha, power=power)
        fn = lr_function(cfg)
        label = {"linear": "linear", "piecewise": "piecewise (OWSM)",
                 "exponential": f"exponential (α={alpha:g})", "polynomial": f"polynomial (p={power:g})"}[name]
        full.plot(xs, [fn(x) for x in xs], label=label)
        wx = [x for x in xs if x <= 1.2 * warmup_steps]
        warm.plot(wx, [fn(x) for x in wx], label=label)
    for ax, title in ((full, f"warmup {warmup_steps} + inverse-sqrt decay"), (warm, "warmup (zoom)")):
        ax.axvline(warmup_steps, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("update")
        ax.set_ylabel("learning rate")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    warm.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
