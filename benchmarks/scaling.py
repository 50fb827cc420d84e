"""Scaling: the same corpus with 1 vs 2 ASR workers, and where the time goes per stage.

    python benchmarks/scaling.py [--repeat 2]

Runs benchmarks/bench-pipeline.yaml twice on the demo corpus repeated ``--repeat`` times:
(1) one two-pass ASR actor reserving 1 CPU and running 2 threads (every core of a 2-core
machine), (2) two ASR actors reserving 0.5 CPU each, threads following the reservation (1 each:
the demo's setting). Prints wall time, audio seconds per wall second, the ratio 2-worker /
1-worker, and the per-stage time breakdown the pipeline records in run.json (``stage_s``:
decode, VAD, ASR, filters and ``sink.write``, the writing of each unit; summed over units, so
stages that overlap add up to more than the wall time).

    python benchmarks/scaling.py --repeat 2 --per-unit 3,6,8,12

With ``--per-unit`` it instead runs the pipeline as configured (two 1-thread ASR workers) once per
unit size and prints the wall time of each against the configured size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from pipeline_throughput import make_corpus  # noqa: E402


def variant(base: dict, workers: int, threads: int, cpus: float) -> dict:
    """``base`` with its two-pass ASR stage on ``workers`` actors of ``cpus`` and ``threads``
    (0: the reservation)."""
    cfg = json.loads(json.dumps(base))
    for stage in cfg["stages"]:
        if stage["use"] == "asr.two_pass":
            stage["workers"] = workers
            stage["params"]["cpu_threads"] = threads
            stage["resources"] = {"cpus": cpus}
    return cfg


def run(cfg: dict, source: Path, tmp: Path, name: str) -> dict:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = tmp / f"run-{name}"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "granary_pipe.cli", "run", str(path), "--source", str(source),
                    "--out", str(out), "-q"], check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    info = json.loads((out / "run.json").read_text())
    return {"wall_s": wall, "audio_s": info["audio_hours_in"] * 3600, "stage_s": info["stage_s"]}


def sweep_units(base: dict, sizes: list[int], source: Path, tmp: Path) -> None:
    """The configured pipeline once per unit size; wall time against the configured size."""
    configured = base["units"]["recordings_per_unit"]
    walls = {}
    for n in sorted(set(sizes) | {configured}):
        cfg = json.loads(json.dumps(base))
        cfg["units"]["recordings_per_unit"] = n
        walls[n] = run(cfg, source, tmp, f"per-unit-{n}")
    for n, r in walls.items():
        print(f"{n:3d} recordings per unit: wall {r['wall_s']:6.1f} s  {r['audio_s'] / r['wall_s']:5.2f}x real time  "
              f"configured ({configured}) / this: {walls[configured]['wall_s'] / r['wall_s']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--per-unit", default=None, help="comma-separated recordings per unit to sweep")
    args = ap.parse_args()
    base = yaml.safe_load((ROOT / "benchmarks" / "bench-pipeline.yaml").read_text())
    with tempfile.TemporaryDirectory(prefix="gp-scale-") as tmp:
        tmp = Path(tmp)
        source, _ = make_corpus(args.repeat, tmp / "corpus")
        if args.per_unit:
            return sweep_units(base, [int(x) for x in args.per_unit.split(",")], source, tmp)
        one = run(variant(base, 1, 2, 1.0), source, tmp, "one")
        two = run(variant(base, 2, 0, 0.5), source, tmp, "two")
    for name, r in (("1 worker x 2 threads", one), ("2 workers x 1 thread", two)):
        print(f"{name:24s} wall {r['wall_s']:6.1f} s  {r['audio_s'] / r['wall_s']:5.2f}x real time  stages: "
              + ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["stage_s"].items(), key=lambda kv: -kv[1])))
    print(f"2 workers / 1 worker throughput ratio: {one['wall_s'] / two['wall_s']:.2f}")


if __name__ == "__main__":
    main()
