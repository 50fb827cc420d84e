"""Driver cost per unit and driver peak memory as the listing grows (issue 15, item 8).

A cheap pipeline (``audio.decode`` + ``license.gate``) over a JSONL listing of N files that do not
exist: every recording becomes a rejected row (``decode_error``) at once, so what is left is the
driver's own bookkeeping (ingest, planning, ``run.json``, one result per unit) and Ray's per-unit
overhead. Each size runs ``run_pipeline`` in a fresh Python process (the driver, with an embedded
Ray of ``--cpus`` CPUs) that reports its own CPU time (all threads, Ray's core-worker threads
included, which tick with wall time; and the main thread's alone, where the driver's bookkeeping
runs) and peak RSS (``ru_maxrss``); ratios are
against the smallest N of the same invocation. The listing child (ingest, in a spawned process)
reports its own peak RSS, and this script samples the driver's whole process tree (driver, listing
child, Ray's GCS, raylet and workers) every 0.2 s with psutil and records the largest summed RSS,
and the share of each kind of process at that moment. Per-unit figures are the steady state: from the first
unit's end to the last's (counted at the progress line's update, which both the old and the new
driver call once per unit), so imports, ingest and Ray's start and stop are left out; peak RSS is
the whole process's.

    PYTHONPATH=. python benchmarks/driver_scale.py --sizes 20000,100000 --per-unit 200

Goal: driver time per unit and driver peak RSS flat (within 1.2x) from 20 k to 1 M recordings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import yaml

DRIVER = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    from granary_pipe import progress
    from granary_pipe.pipeline import run_pipeline
    ticks = []  # (process CPU, main-thread CPU, wall) each time a unit ends (the progress line's update)
    update = progress.Progress.update
    def counting(self, n=1):
        ticks.append((time.process_time(), time.thread_time(), time.monotonic()))
        return update(self, n)
    progress.Progress.update = counting
    t0 = time.monotonic()
    info = run_pipeline(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), progress=False,
                        num_cpus=int(sys.argv[4]))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    span = [b - a for a, b in zip(ticks[0], ticks[-1])]
    print("RESULT " + json.dumps({"status": info["status"], "wall_s": time.monotonic() - t0,
                                  "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024,
                                  "steady": {"units": len(ticks) - 1, "cpu_s": span[0], "main_cpu_s": span[1],
                                             "wall_s": span[2]},
                                  "ingest": info.get("ingest")}))
""")


def write_inputs(d: Path, n: int, per_unit: int) -> tuple[Path, Path]:
    """A manifest listing ``n`` missing files and the decode + license-gate pipeline."""
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "listing.jsonl", "w", encoding="utf-8") as fh:
        for k in range(n):
            fh.write(f'{{"path": "audio/missing_{k:07d}.flac"}}\n')
    (d / "source.yaml").write_text(yaml.safe_dump({"name": "scale", "license": "CC-BY-4.0",
                                                   "listing": "listing.jsonl"}))
    (d / "pipeline.yaml").write_text(yaml.safe_dump({
        "name": "driver-scale",
        "units": {"recordings_per_unit": per_unit, "max_in_flight": 4},
        "stages": [{"use": "audio.decode", "resources": {"cpus": 0.25}},
                   {"use": "license.gate", "resources": {"cpus": 0.25}}],
    }, sort_keys=False))
    return d / "pipeline.yaml", d / "source.yaml"


def _psutil():
    """psutil (Ray ships a copy in ``ray/thirdparty_files`` when it is not installed on its own)."""
    try:
        import psutil
    except ImportError:
        import ray
        sys.path.append(os.path.join(os.path.dirname(ray.__file__), "thirdparty_files"))
        import psutil
    return psutil


_RAY_KINDS = (("gcs_server", "ray gcs_server"), ("raylet", "ray raylet"), ("dashboard", "ray dashboard"),
              ("runtime_env", "ray runtime_env"), ("runtimeenv", "ray runtime_env"), ("log_monitor", "ray log_monitor"),
              ("autoscaler", "ray monitor"), ("monitor.py", "ray monitor"))


def _kind(proc) -> str:
    """A process of the tree by role: driver, listing child, one of Ray's daemons or agents, or
    a Ray worker (``ray::IDLE``, ``ray::_run_task``, ...)."""
    try:
        joined = " ".join(proc.cmdline()).lower()
    except Exception:  # gone, or not ours to read
        return "gone"
    if "multiprocessing" in joined and "spawn" in joined:
        return "listing child"
    if joined.startswith("ray::"):  # a retitled worker (its arguments name the raylet) or an agent
        agent = next((kind for part, kind in _RAY_KINDS if part in joined.split(" ", 1)[0]), None)
        return agent or "ray workers"
    if "default_worker.py" in joined:
        return "ray workers"
    for part, kind in _RAY_KINDS:
        if part in joined:
            return kind
    return joined.split(" ", 1)[0].rsplit("/", 1)[-1] or "other"


class TreeSampler(threading.Thread):
    """Samples a process and its descendants every ``every`` seconds: the largest summed RSS, the
    RSS by kind of process at that moment, and the largest RSS each kind reached on its own."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.psutil = _psutil()
        self.root = self.psutil.Process(pid)
        self.every = every
        self.done = threading.Event()
        self.peak_mb = 0.0
        self.at_peak: dict[str, float] = {}
        self.kind_peak: dict[str, float] = {}
        self.count_at_peak: dict[str, int] = {}
        self.most_workers = 0
        self.samples = 0

    def run(self) -> None:
        kinds: dict[int, str] = {}
        while not self.done.wait(self.every):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except self.psutil.Error:
                return
            by_kind: dict[str, float] = {}
            counts: dict[str, int] = {}
            for p in procs:
                try:
                    rss = p.memory_info().rss / 2**20
                except self.psutil.Error:
                    continue
                kind = "driver" if p.pid == self.root.pid else kinds.setdefault(p.pid, _kind(p))
                by_kind[kind] = by_kind.get(kind, 0.0) + rss
                counts[kind] = counts.get(kind, 0) + 1
            self.samples += 1
            self.most_workers = max(self.most_workers, counts.get("ray workers", 0))
            for kind, mb in by_kind.items():
                self.kind_peak[kind] = max(self.kind_peak.get(kind, 0.0), mb)
            total = sum(by_kind.values())
            if total > self.peak_mb:
                self.peak_mb, self.at_peak = total, {k: round(v, 1) for k, v in sorted(by_kind.items())}
                self.count_at_peak = dict(sorted(counts.items()))


def measure(n: int, per_unit: int, cpus: int, scratch: Path) -> dict:
    """One driver process over ``n`` recordings; its figures."""
    pipeline, source = write_inputs(scratch / f"n{n}", n, per_unit)
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    with open(scratch / f"n{n}.err", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(pipeline), str(source), str(scratch / f"run{n}"),
                                 str(cpus)], stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                cwd=scratch)  # not the caller's cwd: ``-c`` puts it first on sys.path
        sampler = TreeSampler(proc.pid)
        sampler.start()
        stdout, _ = proc.communicate()
        sampler.done.set()
        sampler.join()
        err.seek(0)
        stderr = err.read()
    lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"n={n}: driver failed (rc {proc.returncode}):\n{stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    out.update(n=n, units=-(-n // per_unit), tree_peak_rss_mb=round(sampler.peak_mb, 1),
               tree_at_peak=sampler.at_peak, tree_kind_peak={k: round(v, 1) for k, v in sampler.kind_peak.items()},
               tree_samples=sampler.samples, tree_count_at_peak=sampler.count_at_peak,
               most_ray_workers=sampler.most_workers,
               listing_child_peak_rss_mb=(out.get("ingest") or {}).get("peak_rss_mb"))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run every size and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20000,100000", help="comma-separated N (default 20000,100000)")
    ap.add_argument("--per-unit", type=int, default=200, help="recordings per unit (default 200)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the embedded Ray (default 2)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    rows = []
    with tempfile.TemporaryDirectory(prefix="driver-scale-") as tmp:
        for n in sizes:
            r = measure(n, args.per_unit, args.cpus, Path(tmp))
            steady = r["steady"]
            r["wall_ms_per_unit"] = 1000 * steady["wall_s"] / steady["units"]
            r["cpu_ms_per_unit"] = 1000 * steady["cpu_s"] / steady["units"]
            r["main_ms_per_unit"] = 1000 * steady["main_cpu_s"] / steady["units"]
            rows.append(r)
            print(f"measured n={n}: {r}", file=sys.stderr, flush=True)
    base = rows[0]
    print(f"{'recordings':>10} {'units':>6} {'wall ms/unit':>13} {'driver CPU ms/unit':>19} "
          f"{'main thread ms/unit':>20} {'driver peak RSS MB':>19} {'CPU/unit ratio':>15} {'main ratio':>11} "
          f"{'RSS ratio':>10} {'listing child MB':>17} {'child ratio':>12} {'tree peak MB':>13} {'tree ratio':>11}")
    for r in rows:
        print(f"{r['n']:>10} {r['units']:>6} {r['wall_ms_per_unit']:>13.1f} {r['cpu_ms_per_unit']:>19.2f} "
              f"{r['main_ms_per_unit']:>20.2f} {r['peak_rss_mb']:>19.1f} "
              f"{r['cpu_ms_per_unit'] / base['cpu_ms_per_unit']:>15.2f} "
              f"{r['main_ms_per_unit'] / base['main_ms_per_unit']:>11.2f} {r['peak_rss_mb'] / base['peak_rss_mb']:>10.2f} "
              f"{r['listing_child_peak_rss_mb']:>17.1f} "
              f"{r['listing_child_peak_rss_mb'] / base['listing_child_peak_rss_mb']:>12.2f} "
              f"{r['tree_peak_rss_mb']:>13.1f} {r['tree_peak_rss_mb'] / base['tree_peak_rss_mb']:>11.2f}")
    for r in rows:
        print(f"n={r['n']}: tree at its peak (MB by process kind) {r['tree_at_peak']}, processes "
              f"{r['tree_count_at_peak']}; each kind's own peak {r['tree_kind_peak']}; "
              f"most Ray workers at once {r['most_ray_workers']}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
