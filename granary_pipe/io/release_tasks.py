"""Write a release's shards, one task per shard (here or on Ray), each leaving a done-record
``done/{lang}/{n:06d}.json``; merge the records in plan order. Design: docs/architecture.md, "After the run"
(Release, Write and Merge).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from granary_pipe import licenses
from granary_pipe.io.formats import RELEASE_FORMATS
from granary_pipe.io.release_gather import read_shard_rows
from granary_pipe.io.release_meta import Written, file_entry
from granary_pipe.io.release_plan import PlannedShard
from granary_pipe.io.shards import flac_frames
from granary_pipe.progress import LINES_EVERY_S, Progress
from granary_pipe.rundir import fsync_path, write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardJob:
    """Everything a shard task needs; plain data, so it travels to a Ray worker."""

    run_dir: str
    root: str  # the release's work directory
    shard: PlannedShard
    formats: tuple[str, ...]
    sources: tuple[tuple[int, int, int], ...]  # the shard's rows: (gather job, offset, length)


def done_path(root: Path, shard: PlannedShard) -> Path:
    """Where ``shard``'s done-record goes under the work directory ``root``: ``done/{lang}/{n:06d}.json``."""
    return root / "done" / shard.lang / f"{shard.n:06d}.json"


def _read_audio(run_dir: Path, ids: list[str], files: list[str]) -> list[bytes]:
    out = []
    for rid, rel in zip(ids, files, strict=True):
        path = run_dir / rel
        if not path.is_file():
            raise FileNotFoundError(f"audio of kept row {rid!r} is missing: {path}")
        out.append(path.read_bytes())
    return out


def write_shard(job: ShardJob) -> dict[str, Any]:
    """Write shard ``job.shard`` in every format of ``job.formats``, fsync it, record it done (returned)."""
    run_dir, root, shard = Path(job.run_dir), Path(job.root), job.shard
    table = read_shard_rows(root, shard, list(job.sources))
    audio = _read_audio(run_dir, table.column("id").to_pylist(), table.column("audio_file").to_pylist())
    writers = [RELEASE_FORMATS[fmt] for fmt in job.formats]
    frames = [flac_frames(a) for a in audio] if any(w.needs_frames for w in writers) else []
    durations = [d or 0.0 for d in table.column("duration_s").to_pylist()]
    seconds = math.fsum(durations)
    entries = []
    for fmt in writers:
        lang_dir = root / fmt.name / shard.lang
        lang_dir.mkdir(parents=True, exist_ok=True)
        paths = fmt.paths(lang_dir, shard.lang, shard.n)
        fmt.write(paths, shard.n, table, audio, frames)
        for path in paths:
            fsync_path(path)
            entry = file_entry(root, path.relative_to(root).as_posix(), fmt.name, shard.lang, shard.rows, seconds)
            entry["shard"] = shard.n
            entries.append(entry)
        fsync_path(lang_dir)
    lics = [lic or licenses.UNKNOWN for lic in table.column("license").to_pylist()]
    cells: dict[tuple[Any, str], list[float]] = {}
    for src, lic, d in zip(table.column("source").to_pylist(), lics, durations, strict=True):
        cells.setdefault((src, lic), []).append(d)
    record = {"lang": shard.lang, "shard": shard.n, "rows": shard.rows, "seconds": seconds, "entries": entries,
              "licenses": Counter(lics), "by_source": [[s, lic, ds] for (s, lic), ds in cells.items()]}
    done_path(root, shard).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(done_path(root, shard), record, sort_keys=False)  # entries go into release.json as they are
    return record


def read_done(root: Path, shard: PlannedShard) -> dict[str, Any] | None:
    """The done-record of ``shard`` when it is there and every file it lists has its recorded size; else None."""
    try:
        record = json.loads(done_path(root, shard).read_text(encoding="utf-8"))
        for entry in record["entries"]:
            if (root / entry["path"]).stat().st_size != entry["bytes"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def merge_records(root: Path, shards: Iterable[PlannedShard]) -> Written:
    """What the shards wrote, merged in plan order from their done-records."""
    out = Written()
    for shard in shards:
        record = read_done(root, shard)
        if record is None:
            raise RuntimeError(f"shard {shard.lang}/{shard.n} has no valid done-record in {done_path(root, shard)}")
        stats = out.per_lang.setdefault(shard.lang, {"rows": 0, "seconds": [], "shards": 0, "bytes": {}})
        for entry in record["entries"]:
            out.shards.append(entry)
            stats["bytes"][entry["format"]] = stats["bytes"].get(entry["format"], 0) + entry["bytes"]
        stats["rows"] += record["rows"]
        stats["seconds"].append(record["seconds"])
        stats["shards"] += 1
        out.licenses.update(record["licenses"])
        for src, lic, durations in record["by_source"]:
            cell = out.by_source.setdefault(src, {}).setdefault(lic, [0, 0.0])
            cell[0] += len(durations)
            for d in durations:  # row by row, in release order: the same float sum as one process makes
                cell[1] += d
    return out


class TaskRunner:
    """Runs a task function over jobs, here (``workers == 1``, no address) or on Ray, started (or joined)
    at the first :meth:`map` with jobs and shut down on exit."""

    def __init__(self, *, workers: int, address: str | None, record_dir: Path) -> None:
        self.workers, self.address, self.record_dir = workers, address, record_dir
        self.engine: Any = None

    def __enter__(self) -> "TaskRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any], *, desc: str, unit: str, total: int,
            progress: bool) -> None:
        """Run ``fn(job)`` for every job; progress over ``total`` tasks, those not in ``jobs`` done before.
        A task's exception is raised here (its cause, for a Ray task)."""
        with Progress(total, initial=total - len(jobs), desc=desc, unit=unit, enabled=progress,
                      every_s=LINES_EVERY_S) as bar:
            if self.workers <= 1 and not self.address:
                for job in jobs:
                    fn(job)
                    bar.update(1)
            elif jobs:
                self._map_on_ray(fn, jobs, bar)

    def _start_ray(self) -> None:
        import ray

        from granary_pipe.executors import ray_orphans
        from granary_pipe.executors.ray import RayExecutor

        ray_orphans.clean(self.record_dir)  # what the embedded Ray of a killed release left behind
        started = time.monotonic()
        self.engine = RayExecutor([], self.record_dir, address=self.address, num_cpus=self.workers)
        log.info("release: Ray %s in %.1f s", f"at {self.address}" if self.address else "started",
                 time.monotonic() - started)
        if self.address and self.workers <= 1:
            self.workers = max(1, int(sum(n.get("CPU", 0) for n in ray.nodes() if n.get("Alive"))))

    def _map_on_ray(self, fn: Callable[[Any], Any], jobs: Sequence[Any], bar: Progress) -> None:
        import ray

        if self.engine is None:
            self._start_ray()
        task = ray.remote(num_cpus=1, max_retries=2)(fn)
        pending = iter(jobs)
        running: list = []
        while True:
            room = 2 * max(1, self.workers) - len(running)  # one running, one ready per worker
            running += [task.remote(job) for job in itertools.islice(pending, room)]
            if not running:
                return
            ready, running = ray.wait(running, num_returns=1)
            try:
                ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, Exception) else exc) from None
            bar.update(1)
