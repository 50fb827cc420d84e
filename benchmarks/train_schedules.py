"""Compare the four LR warmup schedules on a release, and the data loader against the model.

For each schedule (linear, piecewise, exponential, polynomial) it trains the same model from
the same seed on the same batch sequence (only the learning rate differs) for ``--steps``
updates, then reports the loss at fixed steps, the step where the loss first falls below
thresholds, held-out WER/CER, mean step time and the data loader's share of it. Before that it
measures the loader alone (batches decoded and tokenised, no model; ``train_throughput.py``'s
measurement) so its throughput can be compared with what training consumes.

    python benchmarks/train_schedules.py --data /tmp/demo-rel-train --out /tmp/sched-bench \
        --config pipelines/train-tiny.yaml --steps 200 --warmup-steps 50 --set data.max_batch_s=30

Writes ``OUT/results.json``, ``OUT/loss.png`` and one training directory per schedule; prints
a Markdown table. Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch
from train_throughput import loader_alone  # benchmarks/ is sys.path[0] when run as a script

from granary_pipe.train.config import load_train_config
from granary_pipe.train.data import open_release, training_texts
from granary_pipe.train.loop import train
from granary_pipe.train.metrics import read_metrics
from granary_pipe.train.schedules import SCHEDULE_NAMES
from granary_pipe.train.tokenizer import build_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=Path("pipelines/train-tiny.yaml"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup-steps", type=int, default=50)
    ap.add_argument("--peak-lr", type=float, default=2e-3)
    ap.add_argument("--schedules", default=",".join(SCHEDULE_NAMES))
    ap.add_argument("--loader-batches", type=int, default=20)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides (YAML values)")
    args = ap.parse_args()

    import yaml

    overrides = {"train.max_steps": args.steps, "train.log_every": 1, "train.eval_every": args.steps, "train.ckpt_every": args.steps,
                 "schedule.warmup_steps": args.warmup_steps, "schedule.peak_lr": args.peak_lr}
    for item in args.set:
        k, _, v = item.partition("=")
        overrides[k] = yaml.safe_load(v)
    base = load_train_config(args.config, overrides)
    args.out.mkdir(parents=True, exist_ok=True)

    results: dict = {"config": str(args.config), "steps": args.steps, "warmup_steps": args.warmup_steps,
                     "peak_lr": args.peak_lr, "overrides": overrides, "schedules": {}}
    release = open_release(args.data)
    tok = build_tokenizer(training_texts(release, base.data), base.tokenizer, base.data.text_norm)
    results["loader_alone"] = loader_alone(base, release, tok, torch.device("cpu"), args.loader_batches, warmup=1)
    print("loader alone:", json.dumps(results["loader_alone"]))

    for name in args.schedules.split(","):
        cfg = base.model_copy(update={"schedule": base.schedule.model_copy(update={"name": name})})
        out = args.out / name
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        summary = train(args.data, out, cfg, progress=False)
        wall = time.perf_counter() - t0
        rows = read_metrics(out)
        steps = [r["step"] for r in rows]
        loss = {r["step"]: r["loss"] for r in rows}
        step_times = [r["step_time_s"] for r in rows[1:]]  # step 1 includes loader start-up
        waits = [r["data_wait_s"] for r in rows[1:]]
        first_below = {str(t): next((s for s in steps if loss[s] < t), None) for t in (5.0, 4.0, 3.5, 3.0)}
        results["schedules"][name] = {
            "wall_s": wall,
            "loss_at": {str(s): loss[s] for s in steps if s in {1, 5, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200}
                        or s == steps[-1]},
            "mean_loss_last10": statistics.fmean(loss[s] for s in steps[-10:]),
            "first_step_below": first_below,
            "lr_at": {str(s): r["lr"] for s, r in zip(steps, rows) if s in {1, 10, args.warmup_steps, steps[-1]}},
            "mean_step_time_s": statistics.fmean(step_times),
            "data_wait_share": sum(waits) / sum(step_times),
            "train_samples_per_s": sum(r["samples"] for r in rows[1:]) / sum(step_times),
            "train_audio_s_per_s": sum(r["audio_s_per_s"] * r["step_time_s"] for r in rows[1:]) / sum(step_times),
            "eval": summary["eval"] and {k: summary["eval"][k] for k in ("utterances", "wer", "cer")},
            "curve": [loss[s] for s in steps],
        }
        print(name, json.dumps({k: v for k, v in results["schedules"][name].items() if k != "curve"}))

    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _plot(results, args.out / "loss.png")
    _table(results)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results["schedules"].items():
        ax.plot(range(1, len(r["curve"]) + 1), r["curve"], label=name)
    ax.axvline(results["warmup_steps"], color="grey", ls="--", lw=0.8)
    ax.set_xlabel("update")
    ax.set_ylabel("CTC loss per token")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _table(results: dict) -> None:
    marks = sorted({int(s) for r in results["schedules"].values() for s in r["loss_at"]})
    print("\n| schedule | " + " | ".join(f"loss@{s}" for s in marks)
          + " | first <4.0 | first <3.0 | step s | data wait | train samples/s | WER | CER |")
    print("|---" * (len(marks) + 8) + "|")
    for name, r in results["schedules"].items():
        ev = r["eval"] or {}
        print(f"| {name} | " + " | ".join(f"{r['loss_at'].get(str(s), float('nan')):.3f}" for s in marks)
              + f" | {r['first_step_below']['4.0']} | {r['first_step_below']['3.0']}"
              f" | {r['mean_step_time_s']:.3f} | {100 * r['data_wait_share']:.1f} % | {r['train_samples_per_s']:.2f}"
              f" | {ev.get('wer', float('nan')):.3f} | {ev.get('cer', float('nan')):.3f} |")
    la = results["loader_alone"]
    print(f"\nloader alone ({la['loader_workers']} worker(s)): {la['samples_per_s']:.1f} samples/s, "
          f"{la['audio_s_per_s']:.0f} s audio/s, {la['decode_s_per_batch'] * 1000:.0f} ms decode per batch")


if __name__ == "__main__":
    main()
