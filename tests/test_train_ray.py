"""Ray Train path: two CPU workers (DDP over gloo) on a local Ray run the same loop to the end."""

from __future__ import annotations

import math

import pytest

from granary_pipe.train.config import load_train_config
from granary_pipe.train.loop import load_checkpoint, read_metrics

try:
    from tests.test_train_fixtures import tiny_release  # noqa: F401 (fixture)
    from tests.test_train_loop import TINY_YAML
except ImportError:
    from test_train_fixtures import tiny_release  # noqa: F401
    from test_train_loop import TINY_YAML


@pytest.fixture
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_train_two_cpu_workers(local_ray, tiny_release, tmp_path):
    from granary_pipe.train.distributed import train_with_ray

    cfg = load_train_config(TINY_YAML, {
        "train.log_every": 1, "train.eval_every": 4, "train.ckpt_every": 2, "train.threads": 1,
        "data.held_out_pct": 25, "data.loader_workers": 0, "data.max_batch_s": 4.0,
        "data.bucket_boundaries_s": [1.0, 2.0, 4.0], "tokenizer.model_type": "char",
    })
    summary = train_with_ray(tiny_release, tmp_path / "out", cfg, num_workers=2, max_steps=4, use_gpu=False)
    assert summary["world_size"] == 2 and summary["step"] == 4
    rows = read_metrics(tmp_path / "out")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in rows)
    ckpt = load_checkpoint(tmp_path / "out")
    assert ckpt["step"] == 4 and ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 2
    assert not any(k.startswith("module.") for k in ckpt["model"])  # saved unwrapped from DDP
    evals = read_metrics(tmp_path / "out", "eval")
    assert [e["step"] for e in evals] == [4] and evals[0]["utterances"] >= 1
