"""Peak RSS and time of each step of a release's plan (issue 19): where the planner's memory goes.

    PYTHONPATH=. python benchmarks/release_plan_memory.py RUN [--duckdb-memory 64MB]

Runs :func:`granary_pipe.io.release_plan.plan_release` on the committed run ``RUN`` in this process
and prints, after each step (loading the planning columns, the checks, the selection, the sorted
stream, the gather jobs), its seconds, the process's RSS and its peak RSS so far. Used to choose
``DUCKDB_MEMORY`` (``--duckdb-memory`` sets ``$GRANARY_RELEASE_DUCKDB_MEMORY`` before the import).
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS = ("_load_kept", "_check_rows", "_selection", "_sorted_batches", "write_gather_jobs")


def rss_mb() -> tuple[int, int]:
    """(RSS now, peak RSS so far) of this process, MB."""
    now = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10


def timed(module, name: str) -> None:
    """Wrap ``module.name`` to print its time and memory when it (or the stream it returns) ends."""
    fn = getattr(module, name)

    def report(t0: float) -> None:
        now, peak = rss_mb()
        print(f"{name:18s} {time.perf_counter() - t0:8.1f} s  RSS {now:5d} MB  peak {peak:5d} MB", flush=True)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        if hasattr(out, "__next__"):
            def stream():
                yield from out
                report(t0)
            return stream()
        report(t0)
        return out

    setattr(module, name, wrapper)


def main() -> int:
    """Plan ``RUN`` once with every step timed."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a committed run directory")
    ap.add_argument("--duckdb-memory", default=None, help="DuckDB memory_limit while planning (default: the code's)")
    args = ap.parse_args()
    if args.duckdb_memory:
        os.environ["GRANARY_RELEASE_DUCKDB_MEMORY"] = args.duckdb_memory
    from granary_pipe.io import release_plan

    for name in STEPS:
        timed(release_plan, name)
    print(f"DuckDB memory_limit {release_plan.DUCKDB_MEMORY}; start RSS {rss_mb()[0]} MB", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="plan-memory-") as work:
        plan = release_plan.plan_release(args.run, Path(work), langs=None, release_license=None, seed=0,
                                         shard_rows=1000, shard_bytes=None)
    now, peak = rss_mb()
    print(f"plan: {len(plan.shards)} shards, {len(plan.gather_jobs)} gather jobs in {time.perf_counter() - t0:.1f} s; "
          f"peak RSS {peak} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
