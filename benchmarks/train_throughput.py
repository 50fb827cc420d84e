"""Training throughput: the model alone, the loader alone, and the full ``granary train`` loop.

In one run, on the same batch shapes (the config's duration buckets filled from the release):

(a) **model alone**: forward, CTC loss, backward, clipping and AdamW on synthetic log-mel
    batches already on the device (no loader, no features, no SpecAugment): the ceiling;
(b) **loader alone**: batches from the DataLoader workers (read shards, decode FLAC, tokenise,
    pad; pinned on CUDA), no model;
(c) **full loop**: ``granary train`` in a subprocess, as a user runs it (features and SpecAugment
    on the device); rates over the steps after ``--warmup`` from its ``metrics.jsonl``.

Prints audio seconds per second of each, full ÷ model alone, the share of each step spent
waiting for data, and GPU utilisation (``nvidia-smi``, where it exists) during (a) and (c).

    python benchmarks/train_throughput.py --config pipelines/train-tiny.yaml            # CPU
    python benchmarks/train_throughput.py --config pipelines/train-base.yaml            # GPU

Without ``--data`` a synthetic release is written under ``--out`` and reused by later runs with the
same sizes: speech-shaped audio and pseudo-word texts, durations spread over the buckets, enough
rows that the measured batches come from one epoch. Rows reuse a pool of FLAC encodings, so hours
of audio take seconds. Its shards and ``release.json`` are written here directly in the layout the
trainer reads (not by ``granary release``, which needs the curation stack), so the benchmark runs
on a machine with torch and the training extra's small packages alone (``gpu_train.sh``).
Writes ``OUT/results.json``. Not part of the test run.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from granary_pipe.train.config import load_train_config  # noqa: E402
from granary_pipe.train.data import ReleaseBatches, iterate_epochs, open_release, training_texts  # noqa: E402
from granary_pipe.train.infer import autocast  # noqa: E402
from granary_pipe.train.loop import _amp, build_optimizer  # noqa: E402
from granary_pipe.train.model import ConformerCTC, ctc_loss  # noqa: E402
from granary_pipe.train.tokenizer import build_tokenizer, normalize_text  # noqa: E402

BENCH_OVERRIDES = {"data.held_out_pct": 0, "train.eval_every": 10**9, "train.ckpt_every": 10**9}
"""No held-out evaluation and no checkpoint inside the measured steps."""


# ----------------------------------------------------------------------------- data

_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def synthetic_wave(rng: np.random.Generator, duration_s: float) -> np.ndarray:
    """Speech-shaped 16 kHz audio: voiced harmonics under a syllable-rate envelope, plus noise."""
    t = np.arange(int(duration_s * 16000)) / 16000
    f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None)
    voiced = sum(np.sin(h * phase) / h for h in range(1, 8))
    return (0.1 * envelope * voiced + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def synthetic_release(out: Path, cfg, rows: int, pool: int, seed: int = 0, shard_rows: int = 500) -> Path:
    """``rows`` utterances (``pool`` distinct FLAC encodings, about 2.5 pseudo-words per second of text
    from a 3000-word vocabulary) as ``wds/en-NNNNNN.tar`` shards + ``release.json``; cached in ``out``."""
    import soundfile as sf

    root = out / f"synthetic-{rows}-{pool}-{cfg.data.max_duration_s:g}"
    if (root / "release.json").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "wds").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(_SYLLABLES, size=1 + k % 3)) for k in range(3000)]
    lo, hi = max(1.0, cfg.data.min_duration_s), min(20.0, cfg.data.max_duration_s)
    flacs = []
    for _ in range(pool):
        buf = io.BytesIO()
        wave = synthetic_wave(rng, rng.uniform(lo, hi))
        sf.write(buf, wave, 16000, format="FLAC", subtype="PCM_16")
        flacs.append((buf.getvalue(), round(len(wave) / 16000, 4)))
    shards = []
    for first in range(0, rows, shard_rows):
        path = f"wds/en-{len(shards):06d}.tar"
        with tarfile.open(root / path, "w") as tar:
            for k in range(first, min(rows, first + shard_rows)):
                flac, dur = flacs[k % pool]
                text = " ".join(rng.choice(words, size=max(1, round(2.5 * dur))))
                meta = json.dumps({"id": f"syn-{k:07d}", "lang": "en", "text": text, "duration_s": dur}).encode()
                for name, data in ((f"syn-{k:07d}.flac", flac), (f"syn-{k:07d}.json", meta)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        shards.append({"path": path, "format": "wds", "lang": "en", "rows": min(rows, first + shard_rows) - first})
    (root / "release.json").write_text(json.dumps({"created_from": "synthetic", "shards": shards,
                                                   "totals": {"rows": rows, "per_lang": {"en": {"rows": rows}}}}))
    return root


def rows_needed(cfg, batches: int) -> int:
    """Rows for ``batches`` full batches inside one epoch (so no end-of-epoch leftovers are timed)."""
    mean_s = (max(1.0, cfg.data.min_duration_s) + min(20.0, cfg.data.max_duration_s)) / 2
    return max(200, math.ceil(1.3 * batches * cfg.data.max_batch_s / mean_s) + cfg.data.shuffle_buffer)


# ----------------------------------------------------------------------------- GPU utilisation

class GpuUtil:
    """``nvidia-smi`` sampled every 100 ms in the background; :meth:`mean` over a time window."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.proc = None
        if shutil.which("nvidia-smi") and torch.cuda.is_available():
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "100", "-i", os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]],
                                         stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.samples.append((time.time(), float(line.strip())))
            except ValueError:
                pass

    def mean(self, t0: float, t1: float) -> float | None:
        vals = [u for t, u in self.samples if t0 <= t <= t1]
        return sum(vals) / len(vals) if vals else None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


# ----------------------------------------------------------------------------- (a) (b) (c)

def model_alone(cfg, plans: list[list[dict]], tokenizer, device: torch.device, warmup: int, gpu: GpuUtil) -> dict:
    """Training steps on synthetic log-mel batches of the plans' shapes, already on the device."""
    torch.manual_seed(cfg.seed)
    model = ConformerCTC(cfg.model, tokenizer.vocab_size).to(device).train()
    optimizer = build_optimizer(model, cfg)
    amp_dtype, scaler_on = _amp(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=scaler_on)
    batches = []
    for plan in plans:
        frames = torch.tensor([round(s["meta"]["duration_s"] * 100) for s in plan])
        targets = [tokenizer.encode(normalize_text(s["meta"]["text"], cfg.data.text_norm)) for s in plan]
        batches.append((torch.randn(len(plan), int(frames.max()), cfg.model.n_mels, device=device), frames.to(device),
                        torch.tensor([x for t in targets for x in t], device=device),
                        torch.tensor([len(t) for t in targets], device=device),
                        sum(s["meta"]["duration_s"] for s in plan)))

    def step(feats, lens, targets, target_lens) -> None:
        with autocast(device, amp_dtype):
            lp, out_lens = model(feats, lens)
            loss = ctc_loss(lp, out_lens, targets, target_lens)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or 1e9)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for b in batches[:warmup]:
        step(*b[:4])
    _sync(device)
    t0, w0 = time.perf_counter(), time.time()
    for b in batches[warmup:]:
        step(*b[:4])
    _sync(device)
    wall = time.perf_counter() - t0
    audio = sum(b[4] for b in batches[warmup:])
    return {"steps": len(batches) - warmup, "audio_s_per_s": audio / wall, "step_s": wall / (len(batches) - warmup),
            "gpu_util_pct": gpu.mean(w0, time.time())}


def loader_alone(cfg, release, tokenizer, device: torch.device, batches: int, warmup: int) -> dict:
    """Batches of the training loader (pinned on CUDA), consumed as fast as they come."""
    it = iterate_epochs(release, cfg.data, tokenizer, seed=cfg.seed, epoch=0, start=0, rank=0, world=1,
                        pin_memory=device.type == "cuda")
    for _ in range(warmup):
        next(it)  # worker start-up and shuffle-buffer fill are not throughput
    t0 = time.perf_counter()
    audio = decode = 0.0
    samples = 0
    for _ in range(batches):
        b = next(it)
        audio, decode, samples = audio + b["audio_s"], decode + b["decode_s"], samples + len(b["ids"])
    wall = time.perf_counter() - t0
    it.close()
    return {"batches": batches, "audio_s_per_s": audio / wall, "samples_per_s": samples / wall,
            "decode_s_per_batch": decode / batches, "loader_workers": cfg.data.loader_workers}


def full_loop(config: Path, overrides: dict, data: Path, out: Path, steps: int, warmup: int, gpu: GpuUtil) -> dict:
    """``granary train`` in a subprocess; rates between the records at ``warmup`` and the last step."""
    shutil.rmtree(out, ignore_errors=True)
    sets = {**overrides, "train.log_every": warmup}
    cmd = [sys.executable, "-m", "granary_pipe.cli", "-q", "train", "--data", str(data), "--out", str(out),
           "--config", str(config), "--max-steps", str(warmup + steps), "--json"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if r["kind"] == "train"]
    a, b = next(r for r in rows if r["step"] == warmup), rows[-1]
    span = b["run_step_time_s"] - a["run_step_time_s"]
    return {"steps": b["step"] - a["step"], "audio_s_per_s": (b["run_audio_s"] - a["run_audio_s"]) / span,
            "step_s": span / (b["step"] - a["step"]),
            "data_wait_share": (b["run_data_wait_s"] - a["run_data_wait_s"]) / span,
            "gpu_util_pct": gpu.mean(a["wall_time"], b["wall_time"]), "loss_last": b["loss"]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "pipelines" / "train-tiny.yaml")
    ap.add_argument("--data", type=Path, help="a release (default: a synthetic one under --out)")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "granary-train-throughput")
    ap.add_argument("--steps", type=int, default=20, help="measured steps (batches) of each part")
    ap.add_argument("--warmup", type=int, default=5, help="steps (batches) before measuring")
    ap.add_argument("--pool", type=int, default=200, help="distinct synthetic waveforms")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides (YAML values)")
    args = ap.parse_args()

    overrides = dict(BENCH_OVERRIDES)
    for item in args.set:
        k, _, v = item.partition("=")
        overrides[k] = yaml.safe_load(v)
    cfg = load_train_config(args.config, overrides)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    total = args.warmup + args.steps
    data = args.data or synthetic_release(args.out, cfg, rows_needed(cfg, total), args.pool)
    release = open_release(data)
    tokenizer = build_tokenizer(training_texts(release, cfg.data), cfg.tokenizer, cfg.data.text_norm)
    plans = [p for _, (_, p) in zip(range(total), ReleaseBatches(release, cfg.data, tokenizer, seed=cfg.seed).plans(0))]
    gpu = GpuUtil()
    try:
        res = {"config": str(args.config), "overrides": overrides, "data": str(data), "device": str(device),
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "amp": str(_amp(cfg, device)[0])}
        res["model_alone"] = model_alone(cfg, plans, tokenizer, device, args.warmup, gpu)
        print("model alone :", json.dumps(res["model_alone"]), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        res["loader_alone"] = loader_alone(cfg, release, tokenizer, device, args.steps, args.warmup)
        print("loader alone:", json.dumps(res["loader_alone"]), flush=True)
        res["full"] = full_loop(args.config, overrides, data, args.out / "train", args.steps, args.warmup, gpu)
        print("full loop   :", json.dumps(res["full"]), flush=True)
    finally:
        gpu.close()
    res["full_over_model_alone"] = res["full"]["audio_s_per_s"] / res["model_alone"]["audio_s_per_s"]
    (args.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    _report(res)


def _report(res: dict) -> None:
    def pct(x):
        return "n/a" if x is None else f"{x:.0f} %"

    m, ld, f = res["model_alone"], res["loader_alone"], res["full"]
    print(f"\n{res['config']} on {res['gpu'] or 'CPU'} ({res['device']}, amp {res['amp']}, torch {res['torch']}, "
          f"{res['cpus']} CPUs, {res['torch_threads']} torch threads, {ld['loader_workers']} loader workers)")
    print("| part | audio s / s | step s | data wait | GPU util |\n|---|---|---|---|---|")
    print(f"| (a) model alone | {m['audio_s_per_s']:.0f} | {m['step_s']:.3f} | – | {pct(m['gpu_util_pct'])} |")
    print(f"| (b) loader alone | {ld['audio_s_per_s']:.0f} | – | – | – |")
    print(f"| (c) full `granary train` | {f['audio_s_per_s']:.0f} | {f['step_s']:.3f} | "
          f"{100 * f['data_wait_share']:.1f} % | {pct(f['gpu_util_pct'])} |")
    print(f"\nfull ÷ model alone: {res['full_over_model_alone']:.2f}")


if __name__ == "__main__":
    main()
