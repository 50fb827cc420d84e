"""LR warmup schedules: each shape against its formula, the decay, LambdaLR wiring, config checks."""

from __future__ import annotations

import math

import pytest

from granary_pipe.config import ConfigError
from granary_pipe.train.config import ScheduleConfig, load_train_config
from granary_pipe.train.schedules import SCHEDULE_NAMES, lr_at, make_scheduler, plot_schedules

ETA, W = 2e-3, 100
STEPS = [0, 1, 10, 25, 50, 73, 99, 100, 101, 150, 400, 10_000]


def cfg(name: str, **kw) -> ScheduleConfig:
    return ScheduleConfig(name=name, peak_lr=ETA, warmup_steps=W, **kw)


def decay(i: float, eta: float = ETA, w: float = W) -> float:
    return eta * math.sqrt(w / i)


@pytest.mark.parametrize("i", STEPS)
def test_linear(i):
    want = ETA * i / W if i < W else decay(i)
    assert lr_at(cfg("linear"), i) == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.parametrize("i", STEPS)
@pytest.mark.parametrize("alpha", [1.5, 0.5, 4.0])
def test_exponential(i, alpha):
    want = ETA * (math.exp(alpha * i / W) - 1) / (math.exp(alpha) - 1) if i < W else decay(i)
    assert lr_at(cfg("exponential", alpha=alpha), i) == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.parametrize("i", STEPS)
@pytest.mark.parametrize("power", [1.5, 1.0, 3.0])
def test_polynomial(i, power):
    want = ETA * (i / W) ** power if i < W else decay(i)
    assert lr_at(cfg("polynomial", power=power), i) == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.parametrize("i", STEPS)
def test_piecewise_default_is_owsm_shape(i):
    # OWSM: linear to η' = η/4 at w' = w/2, then linear to η at w, then η·sqrt(w/i)
    if i <= W / 2:
        want = (ETA / 4) * i / (W / 2)
    elif i < W:
        want = ETA / 4 + (ETA - ETA / 4) * (i - W / 2) / (W / 2)
    else:
        want = decay(i)
    assert lr_at(cfg("piecewise"), i) == pytest.approx(want, rel=1e-12, abs=0)


def test_piecewise_espnet_lists():
    c = ScheduleConfig(name="piecewise", peak_lr=2e-4, warmup_steps=60000,
                       warmup_steps_list=[0, 30000, 60000], warmup_lr_list=[0.0, 5e-5, 2e-4])  # OWSM v3.1
    assert lr_at(c, 0) == 0.0
    assert lr_at(c, 15000) == pytest.approx(2.5e-5)
    assert lr_at(c, 30000) == pytest.approx(5e-5)
    assert lr_at(c, 45000) == pytest.approx(1.25e-4)
    assert lr_at(c, 60000) == pytest.approx(2e-4)
    assert lr_at(c, 240000) == pytest.approx(1e-4)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_every_shape_starts_at_zero_peaks_at_w_and_is_continuous_and_monotone(name):
    c = cfg(name)
    assert lr_at(c, 0) == 0.0
    assert lr_at(c, W) == pytest.approx(ETA, rel=1e-12)
    assert lr_at(c, W - 1e-9) == pytest.approx(ETA, rel=1e-6)  # continuous at w
    warm = [lr_at(c, i) for i in range(W + 1)]
    assert all(a < b for a, b in zip(warm, warm[1:]))
    tail = [lr_at(c, i) for i in range(W, 5 * W)]
    assert all(a > b for a, b in zip(tail, tail[1:]))


def test_shapes_differ_early_as_designed():
    at = {n: lr_at(cfg(n), W // 4) for n in SCHEDULE_NAMES}
    # at i = w/4: linear η/4 > piecewise η/8 > polynomial η/8 (0.25^1.5) ≈ exp < linear
    assert at["linear"] == pytest.approx(ETA / 4)
    assert at["piecewise"] == pytest.approx(ETA / 8)
    assert at["polynomial"] == pytest.approx(ETA * 0.125)
    assert at["exponential"] < at["linear"]


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_lambdalr_runs_update_k_at_lr_of_k(name):
    import torch

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=123.0)  # overwritten by the schedule's peak
    sched = make_scheduler(opt, cfg(name))
    seen = []
    for _ in range(3 * W):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for k in (1, 2, W // 2, W, W + 1, 3 * W):
        assert seen[k - 1] == pytest.approx(lr_at(cfg(name), k), rel=1e-12)
    # resume: a new scheduler loaded from the state dict continues where it was
    opt2 = torch.optim.AdamW([p], lr=1.0)
    sched2 = make_scheduler(opt2, cfg(name))
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(lr_at(cfg(name), 3 * W + 1), rel=1e-12)


@pytest.mark.parametrize("bad, key", [
    ({"name": "cosine"}, "schedule.name"),
    ({"warmup_steps": 0}, "schedule.warmup_steps"),
    ({"name": "linear", "warmup_steps_list": [0, 10], "warmup_lr_list": [0, 1e-3]}, "piecewise only"),
    ({"name": "piecewise", "warmup_steps": 10, "warmup_steps_list": [0, 5, 10], "warmup_lr_list": [0, 1e-3]},
     "same length"),
    ({"name": "piecewise", "warmup_steps": 20, "peak_lr": 1e-3, "warmup_steps_list": [0, 10],
      "warmup_lr_list": [0, 1e-3]}, "warmup_steps is 20"),
    ({"name": "piecewise", "warmup_steps": 10, "peak_lr": 2e-3, "warmup_steps_list": [0, 10],
      "warmup_lr_list": [0, 1e-3]}, "peak_lr is 0.002"),
    ({"bogus": 1}, "schedule.bogus: unknown key"),
])
def test_bad_schedule_config_names_the_key(tmp_path, bad, key):
    path = tmp_path / "t.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"name": "t", "schedule": bad}))
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    assert key in str(err.value) and str(path) in str(err.value)


def test_plot_schedules_writes_a_png(tmp_path):
    out = plot_schedules(tmp_path / "s.png", warmup_steps=50)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
