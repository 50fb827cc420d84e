"""Peak memory vs corpus length: the full demo pipeline on a short and a long corpus.

Builds two corpora by repeating the bundled demo clips under distinct names (same languages,
licenses and hints as the demo listing) — by default 10 minutes and 2 hours of audio — runs
``granary run`` on each as a user would (its own session, embedded Ray), samples the resident
memory of every process of the run from ``/proc`` every 0.2 s, and prints the driver's peak, the
largest Ray worker's peak, the whole run's peak (sum of RSS, and of PSS, which counts shared pages
such as Ray's object store once) and the long/short ratios. Bounded memory means ratios near 1.

Not part of the test run (the 2-hour run takes a long while on a small CPU machine); the test
``tests/test_memory.py`` does the same at test size with an ASR-free pipeline.

    python benchmarks/memory_growth.py                      # 10 min vs 2 h, pipelines/demo.yaml
    python benchmarks/memory_growth.py --short-min 1 --long-min 3 --per-unit 4   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fault_helpers import RssSampler, cleanup, start_cli  # noqa: E402

DEMO = ROOT / "manifests" / "demo"


def demo_clips() -> list[tuple[dict, float]]:
    """(listing line, seconds) of every demo clip."""
    import av

    out = []
    for raw in (DEMO / "listing.jsonl").read_text(encoding="utf-8").splitlines():
        if raw.strip():
            line = json.loads(raw)
            with av.open(str(DEMO / line["path"])) as c:
                seconds = float(c.duration) / 1e6 if c.duration else sf.info(str(DEMO / line["path"])).duration
            out.append((line, seconds))
    return out


def build_corpus(d: Path, minutes: float) -> tuple[Path, int, float]:
    """A source of demo clips repeated until ``minutes`` of audio; returns (manifest, files, seconds)."""
    (d / "audio").mkdir(parents=True)
    clips, lines, total, k = demo_clips(), [], 0.0, 0
    while total < minutes * 60:
        line, seconds = clips[k % len(clips)]
        src = DEMO / line["path"]
        name = f"r{k:05d}_{src.name}"
        os.link(src, d / "audio" / name) if _same_fs(src, d) else shutil.copy(src, d / "audio" / name)
        lines.append({**line, "path": f"audio/{name}"})
        total += seconds
        k += 1
    (d / "listing.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    manifest = d / "source.yaml"
    manifest.write_text(yaml.safe_dump({"name": "bench", "license": "CC-BY-4.0", "listing": "listing.jsonl"}))
    return manifest, len(lines), total


def _same_fs(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def measure(pipeline: Path, source: Path, out: Path, every_s: float = 0.2) -> dict:
    """Run the CLI on ``source`` in its own session; peaks in MiB and wall seconds (the sampler
    and the session clean-up are the memory tests' own, ``tests/fault_helpers.py``)."""
    log = out.parent / f"{out.name}.log"
    t0 = time.time()
    proc = start_cli("run", str(pipeline), "--source", str(source), "--out", str(out), "-q", log=log)
    try:
        with RssSampler(proc.pid, every_s=every_s) as mem:
            rc = proc.wait()
    finally:
        cleanup(proc)  # whatever the run left behind: only our session
    if rc != 0:
        raise SystemExit(f"run failed (exit {rc}); see {log}:\n" + log.read_text()[-3000:])
    result = {k: mem.peak(k) for k in ("driver", "worker_max", "tree_rss", "tree_pss")}
    result["processes"] = int(mem.peak("procs"))
    result["wall_s"] = time.time() - t0
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", type=Path, default=ROOT / "pipelines" / "demo.yaml")
    ap.add_argument("--short-min", type=float, default=10.0, help="minutes of audio in the short corpus")
    ap.add_argument("--long-min", type=float, default=120.0, help="minutes of audio in the long corpus")
    ap.add_argument("--per-unit", type=int, default=None, help="override units.recordings_per_unit")
    ap.add_argument("--in-flight", type=int, default=None, help="override units.max_in_flight")
    ap.add_argument("--workdir", type=Path, default=None, help="keep corpora and runs here (default: a temp dir)")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="memory_growth-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load(args.pipeline.read_text())
    if args.per_unit:
        cfg["units"]["recordings_per_unit"] = args.per_unit
    if args.in_flight:
        cfg["units"]["max_in_flight"] = args.in_flight
    pipeline = work / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"pipeline {args.pipeline.name}: units of {cfg['units']['recordings_per_unit']} recordings, "
          f"{cfg['units']['max_in_flight']} in flight; work dir {work}")

    results = {}
    for label, minutes in (("short", args.short_min), ("long", args.long_min)):
        manifest, files, seconds = build_corpus(work / f"src-{label}", minutes)
        print(f"{label}: {files} recordings, {seconds / 60:.1f} min of audio ...", flush=True)
        results[label] = r = measure(pipeline, manifest, work / f"run-{label}")
        print(f"  driver {r['driver']:.0f} MiB, largest worker {r['worker_max']:.0f} MiB, run total "
              f"{r['tree_rss']:.0f} MiB RSS / {r['tree_pss']:.0f} MiB PSS, ≤{r['processes']} processes, "
              f"{r['wall_s']:.0f} s", flush=True)
    s, lg = results["short"], results["long"]
    print("peak ratio long/short: " + ", ".join(
        f"{k} {lg[k] / s[k]:.2f}" for k in ("driver", "worker_max", "tree_rss", "tree_pss") if s[k]))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
