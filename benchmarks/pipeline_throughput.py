"""Pipeline throughput vs the published way and vs the compute floor, on the same audio and models.

    python benchmarks/pipeline_throughput.py [--repeat 3] [--pipeline benchmarks/bench-pipeline.yaml]

Audio: the demo corpus repeated ``--repeat`` times (copies, so each copy is its own
recording). Models: the baselines use the pipeline's own (``asr.two_pass``: ``lid_model`` for
language ID, ``models_by_lang`` for transcription; the demo's: Whisper base for both), or
``--whisper`` for every step.
Figures are audio seconds per wall second (higher is better):

- pipeline: ``granary run`` (embedded Ray, two passes + filters), wall clock of the whole command
  (Ray start and model loading included) and of the run alone (run.json ``wall_s``).
- published way: one process, sequential faster-whisper ``WhisperModel.transcribe`` calls per file
  as the published Granary pipeline does: a language-ID pass, a long-form pass, a per-segment pass.
- compute floor: one batched pass of the same models over the same VAD speech segments, language
  known, no pipeline around it (decode and VAD not timed), in one process using every core.
- compute floor, N processes: the same batches shared by ``--floor-procs`` processes of
  cores/N threads each (models loaded before timing). On a small CPU, single-threaded
  CTranslate2 processes use the cores better than one process with all of them, so this is
  the stricter floor; the pipeline's ratio against it is printed too.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from granary_pipe.stages.asr import whisper_runtime  # noqa: E402
from granary_pipe.stages.audio.decode import decode_file  # noqa: E402
from granary_pipe.stages.segment.silero import SileroSegment  # noqa: E402

MODELS = {"default": "whisper-base"}
"""Language → model of the transcription baselines; ``_lid`` is the language-ID model."""


def pipeline_models(pipeline: Path) -> dict[str, str]:
    """The ASR models a pipeline config uses: its ``models_by_lang`` plus ``_lid``."""
    cfg = yaml.safe_load(Path(pipeline).read_text())
    for stage in cfg["stages"]:
        if stage["use"] in ("asr.two_pass", "asr.whisper"):
            params = stage.get("params") or {}
            by_lang = dict(params.get("models_by_lang") or {"default": "whisper-base"})
            lid = params.get("lid_model") or by_lang["default"]
            break
    else:
        raise SystemExit(f"{pipeline}: no asr.two_pass or asr.whisper stage to take the models from")
    for stage in cfg["stages"]:
        if stage["use"] == "asr.language_id":
            lid = (stage.get("params") or {}).get("model", lid)
    return {**by_lang, "_lid": lid}
DEVICE = {"device": "cpu", "compute_type": "int8"}


def make_corpus(repeat: int, out: Path) -> tuple[Path, list[dict]]:
    """Copy the demo audio ``repeat`` times into ``out`` with a listing (NC and music kept). Copies,
    not links: ingest keeps paths inside the corpus root and lists each file (inode) once."""
    demo = ROOT / "manifests" / "demo"
    lines = [json.loads(x) for x in (demo / "listing.jsonl").read_text().splitlines() if x.strip()]
    entries = []
    (out / "audio").mkdir(parents=True)
    for r in range(repeat):
        for x in lines:
            name = f"r{r}_{Path(x['path']).name}"
            shutil.copyfile(demo / x["path"], out / "audio" / name)
            entries.append({**x, "path": f"audio/{name}"})
    (out / "listing.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    (out / "source.yaml").write_text("name: bench\nlicense: CC-BY-4.0\nlisting: listing.jsonl\n")
    return out / "source.yaml", entries


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``; 0 elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def ray_start_s() -> float:
    """Seconds for an embedded ``ray.init`` as the pipeline does it (in a fresh process)."""
    code = ("import logging, os, time, ray; t = time.perf_counter(); "
            "ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING); "
            "print(time.perf_counter() - t); ray.shutdown()")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def run_pipeline(pipeline: Path, source: Path, out: Path) -> dict:
    """``granary run`` as a user runs it: wall seconds, and the CPU seconds the machine spent
    during it (every process: driver, Ray, workers)."""
    cpu0, t0 = busy_cpu_s(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "granary_pipe.cli", "run", str(pipeline), "--source", str(source),
                    "--out", str(out), "-q"], check=True, cwd=ROOT)
    wall, cpu = time.perf_counter() - t0, busy_cpu_s() - cpu0
    info = json.loads((out / "run.json").read_text())
    return {"wall_s": wall, "run_wall_s": info["wall_s"], "audio_s": info["audio_hours_in"] * 3600,
            "stage_s": info["stage_s"], "cpu_s": cpu}


def published_way(entries: list[dict], base: Path) -> dict:
    """Sequential transcribe() calls per file: language ID, long-form, then per VAD segment."""
    lid = whisper_runtime.load(MODELS["_lid"], DEVICE["device"], DEVICE["compute_type"])
    vad = SileroSegment()
    t0 = time.perf_counter()
    audio_s = 0.0
    for e in entries:
        try:
            audio, _ = decode_file(str(base / e["path"]), 6 * 3600)
        except Exception:  # noqa: BLE001 - same files the pipeline rejects at decode
            continue
        audio_s += audio.size / 16000
        lang, _, _ = lid.detect_language(audio)
        model = whisper_runtime.load(MODELS.get(lang, MODELS["default"]), DEVICE["device"], DEVICE["compute_type"])
        kw = {"language": lang} if model.model.is_multilingual else {}
        list(model.transcribe(audio, beam_size=5, **kw)[0])
        for start, end in vad.segments(audio):
            list(model.transcribe(audio[start:end], beam_size=5, **kw)[0])
    return {"wall_s": time.perf_counter() - t0, "audio_s": audio_s}


def speech_by_lang(entries: list[dict], base: Path) -> tuple[dict[str, list[np.ndarray]], float]:
    """The VAD speech segments of every decodable file, by the listing's language, longest
    first; and the seconds of audio decoded."""
    vad = SileroSegment()
    by_lang: dict[str, list[np.ndarray]] = defaultdict(list)
    audio_s = 0.0
    for e in entries:
        try:
            audio, _ = decode_file(str(base / e["path"]), 6 * 3600)
        except Exception:  # noqa: BLE001
            continue
        audio_s += audio.size / 16000
        for start, end in vad.segments(audio):
            by_lang[e.get("lang") or "en"].append(audio[start:end])
    for segs in by_lang.values():
        segs.sort(key=len, reverse=True)
    return by_lang, audio_s


def compute_floor(entries: list[dict], base: Path, model_batch: int = 8) -> dict:
    """One batched pass over the VAD speech, language known from the listing (not timed: decode, VAD)."""
    by_lang, audio_s = speech_by_lang(entries, base)
    models = {lang: whisper_runtime.load(MODELS.get(lang, MODELS["default"]), DEVICE["device"], DEVICE["compute_type"])
              for lang in by_lang}
    t0 = time.perf_counter()
    for lang, segs in by_lang.items():
        for k in range(0, len(segs), model_batch):
            whisper_runtime.transcribe(models[lang], segs[k:k + model_batch], lang, beam_size=5)
    return {"wall_s": time.perf_counter() - t0, "audio_s": audio_s}


def _load_floor_models(models: dict, device: dict, threads: int) -> None:
    MODELS.clear()
    MODELS.update(models)
    DEVICE.update(device)
    for name in {v for k, v in MODELS.items() if k != "_lid"}:
        whisper_runtime.load(name, DEVICE["device"], DEVICE["compute_type"], threads)


def _floor_batch(job: tuple[str, list[np.ndarray], int]) -> int:
    lang, segs, threads = job
    model = whisper_runtime.load(MODELS.get(lang, MODELS["default"]), DEVICE["device"], DEVICE["compute_type"], threads)
    whisper_runtime.transcribe(model, segs, lang, beam_size=5)
    return len(segs)


def _ready(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def compute_floor_procs(entries: list[dict], base: Path, procs: int, model_batch: int = 8) -> dict:
    """The compute floor's batches shared by ``procs`` processes of cores/procs threads each."""
    threads = max(1, (os.cpu_count() or 1) // procs)
    by_lang, audio_s = speech_by_lang(entries, base)
    jobs = []
    for lang, segs in by_lang.items():
        jobs += [(lang, segs[k:k + model_batch], threads) for k in range(0, len(segs), model_batch)]
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(procs, mp_context=ctx, initializer=_load_floor_models, initargs=(dict(MODELS), dict(DEVICE), threads)) as pool:
        pids = set(pool.map(_ready, [2.0] * procs))  # every process started and holding its models
        if len(pids) != procs:
            raise RuntimeError(f"only {len(pids)} of {procs} floor processes started")
        t0 = time.perf_counter()
        done = sum(pool.map(_floor_batch, jobs))
        wall = time.perf_counter() - t0
    assert done == sum(len(s) for s in by_lang.values())
    return {"wall_s": wall, "audio_s": audio_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pipeline", type=Path, default=ROOT / "benchmarks" / "bench-pipeline.yaml")
    ap.add_argument("--device", default="cpu", help="device of the baselines (cuda on a GPU machine)")
    ap.add_argument("--compute-type", default="int8", help="CTranslate2 compute type of the baselines")
    ap.add_argument("--whisper", default=None, help="one model for every language in the baselines "
                    "(e.g. whisper-large-v3); default: the pipeline's own")
    ap.add_argument("--floor-procs", type=int, default=2,
                    help="processes for the stricter floor (0: skip it; on a GPU one process is the floor)")
    args = ap.parse_args()
    DEVICE.update(device=args.device, compute_type=args.compute_type)
    MODELS.clear()
    MODELS.update({"default": args.whisper, "_lid": args.whisper} if args.whisper else pipeline_models(args.pipeline))
    with tempfile.TemporaryDirectory(prefix="gp-bench-") as tmp:
        source, entries = make_corpus(args.repeat, Path(tmp) / "corpus")
        base = source.parent
        results = {
            "pipeline": run_pipeline(args.pipeline, source, Path(tmp) / "run"),
            "published_way": published_way(entries, base),
            "compute_floor": compute_floor(entries, base),
        }
        if args.floor_procs > 1:
            results[f"floor_{args.floor_procs}procs"] = compute_floor_procs(entries, base, args.floor_procs)
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print("models:", ", ".join(f"{k}={v}" for k, v in MODELS.items()), f"({DEVICE['device']}, {DEVICE['compute_type']})")
    for name, r in results.items():
        print(f"{name:15s} audio {r['audio_s']:8.1f} s  wall {r['wall_s']:7.1f} s  "
              f"{r['audio_s'] / r['wall_s']:6.2f}x real time")
    p = results["pipeline"]
    speed = p["audio_s"] / p["wall_s"]
    run_speed = p["audio_s"] / p["run_wall_s"]
    for base_name in [k for k in results if k != "pipeline"]:
        b = results[base_name]
        ratio = speed / (b["audio_s"] / b["wall_s"])
        ratio_run = run_speed / (b["audio_s"] / b["wall_s"])
        print(f"pipeline / {base_name}: {ratio:.2f} (whole command), {ratio_run:.2f} (run only, run.json wall_s)")
    print("pipeline stage seconds (summed over units):",
          ", ".join(f"{k} {v:.1f}" for k, v in sorted(p["stage_s"].items(), key=lambda kv: -kv[1])))
    print(f"pipeline CPU: {p['cpu_s']:.1f} busy CPU-s in {p['wall_s']:.1f} s on {os.cpu_count()} cores "
          f"({p['cpu_s'] / p['wall_s'] / (os.cpu_count() or 1):.0%} busy); embedded ray.init alone: {ray_start_s():.1f} s")


if __name__ == "__main__":
    main()
