"""Training loop: overfitting 4 utterances, exact resume in a new process, checkpoints, metrics,
TensorBoard events, evaluate and transcribe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from granary_pipe.train.checkpoint import latest_checkpoint, load_checkpoint
from granary_pipe.train.config import load_train_config
from granary_pipe.train.infer import evaluate, iter_transcripts
from granary_pipe.train.loop import train
from granary_pipe.train.metrics import read_metrics

try:
    from tests.test_train_fixtures import OVERFIT_UTTERANCES, make_tiny_release, tiny_release  # noqa: F401
except ImportError:
    from test_train_fixtures import OVERFIT_UTTERANCES, make_tiny_release, tiny_release  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
TINY_YAML = REPO / "pipelines" / "train-tiny.yaml"

RESUME_OVERRIDES = {
    "train.log_every": 1, "train.eval_every": 1000, "train.ckpt_every": 3, "train.threads": 1,
    "train.deterministic": True, "data.held_out_pct": 0, "data.loader_workers": 1, "data.max_batch_s": 4.0,
    "data.bucket_boundaries_s": [1.0, 2.0, 4.0], "data.shuffle_buffer": 8, "optim.grad_accum": 2,
    "schedule.warmup_steps": 4, "tokenizer.model_type": "char",
}

OVERFIT_OVERRIDES = {
    "train.max_steps": 60, "train.log_every": 10, "train.eval_every": 30, "train.ckpt_every": 30,
    "train.threads": 1, "train.deterministic": True, "data.held_out_pct": 0, "data.loader_workers": 0,
    "data.spec_augment": {"freq_masks": 0, "time_masks": 0}, "model.dropout": 0.0,
    "tokenizer.model_type": "char", "schedule.peak_lr": 3e-3, "schedule.warmup_steps": 30,
}


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    """The tiny model trained 60 steps on 4 short utterances, no dropout, no SpecAugment."""
    tmp = tmp_path_factory.mktemp("overfit")
    rel = make_tiny_release(tmp, OVERFIT_UTTERANCES, shard_rows=4)
    cfg = load_train_config(TINY_YAML, OVERFIT_OVERRIDES)
    summary = train(rel, tmp / "out", cfg, progress=False)
    return rel, tmp / "out", summary


def test_overfits_four_utterances(overfit):
    rel, out, summary = overfit
    losses = [r["loss"] for r in read_metrics(out)]
    assert losses[0] > 1.0 and losses[-1] < 0.3 * losses[0]
    result = evaluate(out, split="train")
    assert result["utterances"] == 4
    assert result["cer"] < 0.5, result["examples"]
    assert summary["step"] == 60 and summary["steps_this_run"] == 60


def test_outputs_metrics_tensorboard_and_checkpoints(overfit):
    rel, out, summary = overfit
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    for r in rows:
        assert {"loss", "lr", "step_time_s", "samples_per_s", "data_wait_s", "audio_s_per_s"} <= set(r)
        assert r["samples"] == 4 and r["data_wait_s"] <= r["step_time_s"]
    assert rows[2]["lr"] == pytest.approx(3e-3)  # update 30 = end of warmup
    assert [r["step"] for r in read_metrics(out, "eval")] == []  # held_out_pct 0: nothing to evaluate
    events = list((out / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("ckpt-*.pt"))
    assert ckpts == ["ckpt-00000030.pt", "ckpt-00000060.pt"]
    assert latest_checkpoint(out).name == "ckpt-00000060.pt"
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == 60 and ckpt["world_size"] == 1
    assert ckpt["split"]["held_out_pct"] == 0 and ckpt["split"]["method"] == "row-hash"
    assert ckpt["release"]["root"] == str(rel.resolve())
    assert {"python", "numpy", "torch"} <= set(ckpt["ranks"][0]["rng"])
    assert set(ckpt["ranks"][0]["data"]) == {"epoch", "batch"}
    assert (out / "tokenizer" / "shared.model").is_file()
    assert json.loads((out / "summary.json").read_text())["step"] == 60


def test_transcribe_audio_files(overfit, tmp_path):
    import soundfile as sf

    from granary_pipe.train.audio import decode_flac
    from granary_pipe.train.data import sample_stream
    from granary_pipe.train.data import open_release as open_rel

    rel, out, _ = overfit
    from granary_pipe.train.config import DataConfig

    sample = next(s for s in sample_stream(open_rel(rel), DataConfig(held_out_pct=0), split="all", shuffle=False)
                  if s["meta"]["text"].lower().startswith("hello"))
    wav = tmp_path / "hello.wav"  # a WAV at 22.05 kHz: read by soundfile, resampled
    import numpy as np

    wave = decode_flac(sample["flac"])
    sf.write(wav, np.interp(np.arange(0, len(wave), 16000 / 22050), np.arange(len(wave)), wave), 22050)
    [result] = iter_transcripts(out, [wav])
    assert result["audio"] == str(wav) and result["duration_s"] == pytest.approx(len(wave) / 16000, abs=0.01)
    import jiwer

    assert jiwer.cer("hello world", result["text"]) < 0.5, result


_RESUME_CHILD = """
import json, sys
from granary_pipe.train.config import load_train_config
from granary_pipe.train.loop import train
rel, out, overrides, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
train(rel, out, load_train_config(sys.argv[5], overrides), max_steps=steps, progress=False)
"""


def test_resume_in_a_new_process_reproduces_the_uninterrupted_losses(tiny_release, tmp_path):
    """6 steps straight vs 3 steps, then a fresh process resuming for 3 more: same losses."""
    cfg = load_train_config(TINY_YAML, RESUME_OVERRIDES)  # dropout 0.1, SpecAugment on, 1 loader worker
    straight = tmp_path / "straight"
    train(tiny_release, straight, cfg, max_steps=6, progress=False)
    split = tmp_path / "split"
    train(tiny_release, split, cfg, max_steps=3, progress=False)
    assert [r["step"] for r in read_metrics(split)] == [1, 2, 3]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", _RESUME_CHILD, str(tiny_release), str(split),
                    json.dumps(RESUME_OVERRIDES), "6", str(TINY_YAML)], check=True, env=env, timeout=120)
    a, b = read_metrics(straight), read_metrics(split)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    epochs = {r["epoch"] for r in a}
    assert len(epochs) > 1  # the 12 micro-batches cross an epoch boundary
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-6, rel=0), (ra["step"], ra["loss"], rb["loss"])
        assert rb["lr"] == ra["lr"] and rb["samples"] == ra["samples"] and rb["epoch"] == ra["epoch"]
    sa, sb = load_checkpoint(straight), load_checkpoint(split)
    assert sa["ranks"][0]["data"] == sb["ranks"][0]["data"]
    for k, v in sa["model"].items():
        assert (v - sb["model"][k]).abs().max().item() < 1e-6, k


def test_resume_refuses_a_different_model_config(overfit):
    rel, out, _ = overfit
    cfg = load_train_config(TINY_YAML, {"model.d_model": 32, "data.held_out_pct": 0})
    with pytest.raises(ValueError, match="different .*model"):
        train(rel, out, cfg, max_steps=61, progress=False)


def test_a_finished_run_rerun_is_a_no_op_and_keeps_its_metrics(overfit):
    rel, out, _ = overfit
    before = (out / "metrics.jsonl").read_text()
    summary = train(rel, out, load_train_config(TINY_YAML, OVERFIT_OVERRIDES), progress=False)
    assert summary["steps_this_run"] == 0 and summary["step"] == 60
    assert (out / "metrics.jsonl").read_text() == before
