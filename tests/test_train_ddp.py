"""Data-parallel training is correct, for both launchers: 2 CPU processes over gloo, started by
``torchrun`` (``granary train`` under ``torch.distributed.run``) and by Ray Train (2 workers on a
local Ray), train 3 steps; then

- the ranks' parameters are identical (the loop's own replica check, ``train.check_replicas_every``:
  largest difference between ranks == 0 at every step);
- rank 0's parameters equal a one-process run on the same global batch (:func:`reference_params`)
  to :data:`ATOL`;
- they do not equal a one-process run in which both "ranks" read rank 0's batches: a loop that fed
  every rank the same data would fail here, not only a loop whose replicas drift apart.

What "the same global batch" is: each step every rank runs ``grad_accum`` micro-batches of its own
shard and backpropagates ``loss / grad_accum``; DDP averages the gradients over ranks. The loss of a
micro-batch is CTC summed over its utterances / its target tokens, so the DDP step is the step on
the *mean of the world × grad_accum micro-batch losses*, which is what the reference takes (one loss
over the concatenated batches would weight tokens differently whenever the ranks' token counts
differ, as they do here).

Randomness: SpecAugment stays on; its masks are a pure function of (seed, epoch, batch, rank)
(:func:`~granary_pipe.train.data.batch_seed`), so the reference replays them. Dropout is off
(``model.dropout: 0``): its masks come from each rank's own torch RNG stream, which one process
cannot replay without emulating both generators, and they have nothing to do with how gradients are
combined. Gradient clipping is set low (0.5) so that it clips at every step: clipping per rank
before the all-reduce would not match the reference. Three steps with ``grad_accum: 2`` cross
epoch boundaries on both ranks.

Tolerance, measured on CPU (torch 2.13, gloo, 1 thread per process), the same for both launchers:
after 3 steps (updates of about 4.6e-3 per parameter) the largest difference to the reference is
3.0e-6, in the attention's key biases, whose gradient is zero in exact arithmetic (softmax ignores
a constant added to every key) so Adam normalises float32 rounding noise (DDP sums the ranks'
gradients then halves them, the reference backpropagates the mean); every other parameter is
within 3.3e-7. The same-batch control differs by 9.1e-3. :data:`ATOL` = 2e-5 and
:data:`CONTROL_MIN` = 1e-3 sit between them. :func:`test_replica_check_sees_a_diverged_rank`
shows the replica check is not vacuous.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from granary_pipe.train.checkpoint import load_checkpoint
from granary_pipe.train.config import TrainConfig, load_train_config
from granary_pipe.train.metrics import read_metrics

try:
    from tests.test_train_fixtures import tiny_release  # noqa: F401 (fixture)
    from tests.test_train_loop import REPO, TINY_YAML
except ImportError:
    from test_train_fixtures import tiny_release  # noqa: F401
    from test_train_loop import REPO, TINY_YAML

STEPS = 3
ATOL = 2e-5
"""Largest |DDP - reference| allowed for any parameter after :data:`STEPS` steps (measured 3.0e-6)."""
CONTROL_MIN = 1e-3
"""Smallest |DDP - same-batch reference| accepted as "the ranks read different data" (measured 9.1e-3)."""

OVERRIDES = {
    "train.log_every": 1, "train.eval_every": STEPS, "train.ckpt_every": 1000, "train.threads": 1,
    "train.deterministic": True, "train.check_replicas_every": 1,
    "data.held_out_pct": 25, "data.loader_workers": 0, "data.max_batch_s": 4.0,
    "data.bucket_boundaries_s": [1.0, 2.0, 4.0], "model.dropout": 0.0, "tokenizer.model_type": "char",
    "optim.grad_accum": 2, "optim.grad_clip": 0.5, "schedule.warmup_steps": 1,
}


def reference_params(release: Path, cfg: TrainConfig, tokenizer, steps: int,
                     data_ranks: tuple[int, ...] = (0, 1)) -> dict[str, torch.Tensor]:
    """Parameters after ``steps`` one-process steps, each on the batches that ranks ``data_ranks``
    of a ``len(data_ranks)``-process run read (``(0, 0)``: rank 0's twice), loss = the mean of the
    micro-batch losses; same seed, initial weights, optimizer, schedule and clipping as the loop."""
    from granary_pipe.train.data import batch_seed, iterate_epochs, open_release
    from granary_pipe.train.features import LogMel, spec_augment
    from granary_pipe.train.loop import _seed_all, build_optimizer
    from granary_pipe.train.model import ConformerCTC, ctc_loss
    from granary_pipe.train.schedules import make_scheduler

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.train.threads or threads)
    rel, world = open_release(release), len(data_ranks)
    streams = [iterate_epochs(rel, cfg.data, tokenizer, seed=cfg.seed, epoch=0,
                              start=0, rank=r, world=world) for r in data_ranks]
    seen: dict[tuple[int, int], set[str]] = {}  # (rank, epoch) -> utterance ids
    try:
        _seed_all(cfg.seed)
        model = ConformerCTC(cfg.model, tokenizer.vocab_size)
        optimizer = build_optimizer(model, cfg)
        scheduler = make_scheduler(optimizer, cfg.schedule)
        model.train()
        logmel = LogMel(cfg.model.n_mels)
        for _ in range(steps):
            losses = []
            for _micro in range(cfg.optim.grad_accum):
                for rank, stream in zip(data_ranks, streams):
                    b = next(stream)
                    gen = torch.Generator().manual_seed(batch_seed(cfg.seed, b["epoch"], b["index"], rank))
                    feats, feat_lens = logmel(b["waves"], b["wave_lens"])
                    feats = spec_augment(feats, feat_lens, cfg.data.spec_augment, gen)
                    lp, lens = model(feats, feat_lens)
                    losses.append(ctc_loss(lp, lens, b["targets"], b["target_lens"]))
                    seen.setdefault((rank, b["epoch"]), set()).update(b["ids"])
            torch.stack(losses).mean().backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        torch.set_num_threads(threads)
        for stream in streams:
            stream.close()
    if data_ranks == (0, 1):  # within an epoch the ranks read disjoint shards (epochs differ in length)
        assert all(not seen[0, e] & ids for (r, e), ids in seen.items() if r == 1 and (0, e) in seen)
    return {k: v.detach() for k, v in model.state_dict().items()}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def assert_data_parallel_correct(release: Path, out: Path) -> None:
    """Checks of the module doc on a finished 2-rank run in ``out``."""
    from granary_pipe.train.tokenizer import Tokenizer

    ckpt = load_checkpoint(out)
    assert ckpt["step"] == STEPS and ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 2
    assert not any(k.startswith("module.") for k in ckpt["model"])  # saved unwrapped from DDP
    replicas = read_metrics(out, "replicas")
    assert [(r["step"], r["max_abs_diff"]) for r in replicas] == [(s, 0.0) for s in range(1, STEPS + 1)]
    cfg = TrainConfig.model_validate(ckpt["config"])
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)) and all(math.isfinite(r["loss"]) for r in rows)
    assert all(r["grad_norm"] > cfg.optim.grad_clip for r in rows)  # clipping is exercised
    evals = read_metrics(out, "eval")  # rank 0 evaluates while the other rank waits
    assert [e["step"] for e in evals] == [STEPS] and evals[0]["utterances"] >= 1

    tokenizer = Tokenizer.from_state(ckpt["tokenizer"])
    ref = reference_params(release, cfg, tokenizer, STEPS)
    diff = _max_diff(ckpt["model"], ref)
    print(f"max |ddp - reference| = {diff:.3g}")
    assert diff <= ATOL
    same = _max_diff(ckpt["model"], reference_params(release, cfg, tokenizer, STEPS, data_ranks=(0, 0)))
    print(f"max |ddp - same-batch reference| = {same:.3g}")
    assert same > CONTROL_MIN


def test_torchrun_two_processes_equal_one_process_on_the_global_batch(tiny_release, tmp_path):
    out = tmp_path / "out"
    sets = [a for k, v in OVERRIDES.items() for a in ("--set", f"{k}={v}")]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "granary_pipe.cli", "train", "--data", str(tiny_release), "--out", str(out),
         "--config", str(TINY_YAML), "--max-steps", str(STEPS), "-q", *sets],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_data_parallel_correct(tiny_release, out)


@pytest.fixture
def local_ray():
    """An embedded 2-CPU Ray; its workers inherit this process's environment (PYTHONPATH: a worker
    importing another granary_pipe would refuse the ``train.check_replicas_every`` key)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_train_two_workers_equal_one_process_on_the_global_batch(local_ray, tiny_release, tmp_path):
    from granary_pipe.train.launch import train_with_ray

    cfg = load_train_config(TINY_YAML, OVERRIDES)
    summary = train_with_ray(tiny_release, tmp_path / "out", cfg, num_workers=2, max_steps=STEPS, use_gpu=False)
    assert summary["world_size"] == 2 and summary["step"] == STEPS
    assert_data_parallel_correct(tiny_release, tmp_path / "out")


def _divergence_worker(rank: int, init: str, results: str) -> None:
    """Rank ``rank`` of 2 (gloo): replica checks on identical, then shifted, then NaN parameters."""
    import torch.distributed as td

    from granary_pipe.train.distributed import DistContext, check_replicas

    td.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        dist = DistContext(rank=rank, world=2)
        found = [check_replicas(model, dist, 1)["max_abs_diff"]]
        with torch.no_grad():
            model.bias[1] += 0.25 if rank == 1 else 0.0
            found.append(check_replicas(model, dist, 2)["max_abs_diff"])
            model.weight[0, 0] = float("nan") if rank == 1 else 0.0
            found.append(str(check_replicas(model, dist, 3)["max_abs_diff"]))
        Path(results, f"{rank}.json").write_text(json.dumps(found))
    finally:
        td.destroy_process_group()


def test_replica_check_sees_a_diverged_rank(tmp_path):
    """``check_replicas`` gives 0 for identical replicas, the shift when one rank's parameter moved,
    NaN when one rank has a NaN, on every rank."""
    import torch.multiprocessing as mp

    mp.spawn(_divergence_worker, args=(f"file://{tmp_path / 'pg'}", str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        same, moved, nan = json.loads((tmp_path / f"{rank}.json").read_text())
        assert same == 0.0 and moved == pytest.approx(0.25, abs=1e-6) and nan == "nan"
