"""Learning-rate warmup schedules, each followed by inverse-square-root decay.

With peak rate ``η``, warmup length ``w`` and update number ``i`` (``i = 1`` is the first
optimizer update, as in ESPnet's ``WarmupLR``/``PiecewiseLinearWarmupLR``):

=============  ==================================================  =====================
schedule       warmup, ``0 <= i < w``                              ``i >= w``
=============  ==================================================  =====================
linear         ``η · i / w``                                       ``η · sqrt(w / i)``
piecewise      linear through ``(0, 0), (w', η'), …, (w, η)``      ``η · sqrt(w / i)``
exponential    ``η · (exp(α·i/w) − 1) / (exp(α) − 1)``, α = 1.5    ``η · sqrt(w / i)``
polynomial     ``η · (i / w) ** p``, p = 1.5                       ``η · sqrt(w / i)``
=============  ==================================================  =====================

``piecewise`` is OWSM's form (ESPnet ``warmup_steps_list`` / ``warmup_lr_list``), by default
``[0, w/2, w]`` / ``[0, η/4, η]``. :func:`make_scheduler` runs update ``k`` at ``lr_at(k)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

from granary_pipe.train.config import ScheduleConfig

SCHEDULE_NAMES = ("linear", "piecewise", "exponential", "polynomial")


def _decay(peak_lr: float, warmup_steps: float, i: float) -> float:
    return peak_lr * math.sqrt(warmup_steps / i)


def linear(i: float, peak_lr: float, warmup_steps: int) -> float:
    """``η·i/w`` below ``w``, then ``η·sqrt(w/i)``."""
    if i < warmup_steps:
        return peak_lr * i / warmup_steps
    return _decay(peak_lr, warmup_steps, i)


def piecewise(i: float, steps: list[float], lrs: list[float]) -> float:
    """Linear interpolation through ``(steps[k], lrs[k])``, then ``lrs[-1]·sqrt(steps[-1]/i)``."""
    w = steps[-1]
    if i >= w:
        return _decay(lrs[-1], w, i)
    for (s0, l0), (s1, l1) in pairwise(zip(steps, lrs, strict=True)):
        if i <= s1:
            return l0 + (l1 - l0) * (i - s0) / (s1 - s0)
    raise AssertionError("unreachable: i < steps[-1]")


def exponential(i: float, peak_lr: float, warmup_steps: int, alpha: float = 1.5) -> float:
    """``η·(exp(α·i/w) − 1)/(exp(α) − 1)`` below ``w``, then ``η·sqrt(w/i)``."""
    if i < warmup_steps:
        return peak_lr * math.expm1(alpha * i / warmup_steps) / math.expm1(alpha)
    return _decay(peak_lr, warmup_steps, i)


def polynomial(i: float, peak_lr: float, warmup_steps: int, power: float = 1.5) -> float:
    """``η·(i/w)**p`` below ``w``, then ``η·sqrt(w/i)``."""
    if i < warmup_steps:
        return peak_lr * (i / warmup_steps) ** power
    return _decay(peak_lr, warmup_steps, i)


def piecewise_lists(cfg: ScheduleConfig) -> tuple[list[float], list[float]]:
    """The (steps, lrs) knots of the piecewise schedule: the config's, else OWSM's shape."""
    if cfg.warmup_steps_list is not None and cfg.warmup_lr_list is not None:
        return list(cfg.warmup_steps_list), list(cfg.warmup_lr_list)
    w, peak = cfg.warmup_steps, cfg.peak_lr
    return [0.0, w / 2, float(w)], [0.0, peak / 4, peak]


def lr_function(cfg: ScheduleConfig) -> Callable[[float], float]:
    """``lr(i)`` for the configured schedule (``i`` = 1-based update number)."""
    w, peak = cfg.warmup_steps, cfg.peak_lr
    if cfg.name == "linear":
        return lambda i: linear(i, peak, w)
    if cfg.name == "piecewise":
        steps, lrs = piecewise_lists(cfg)
        return lambda i: piecewise(i, steps, lrs)
    if cfg.name == "exponential":
        return lambda i: exponential(i, peak, w, cfg.alpha)
    if cfg.name == "polynomial":
        return lambda i: polynomial(i, peak, w, cfg.power)
    raise ValueError(f"unknown schedule {cfg.name!r}; known: {', '.join(SCHEDULE_NAMES)}")


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
