"""Check a run directory's committed units against their markers (``granary verify RUN``): every file
a ``_COMMITTED`` marker lists, by size and sha256.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from granary_pipe import rundir
from granary_pipe.io.verify import Checked, UnsafePathError, check_file


@dataclass
class RunVerifyReport(Checked):
    """Outcome of :func:`verify_run`: units checked, files that matched, ``missing`` and ``bad`` (path -> why)."""

    run: str
    units: int = 0
    files_ok: int = 0
    missing: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)


def unit_problems(run_dir: Path, unit: str) -> tuple[int, dict[str, str]]:
    """Check one committed unit's files: ``(files that matched, {run-relative path: reason or "missing"})``."""
    marker_rel = f"units/{unit}/{rundir.MARKER}"
    try:
        marker = rundir.read_marker(run_dir, unit)
    except (OSError, ValueError) as exc:
        return 0, {marker_rel: f"not readable JSON ({type(exc).__name__})"}
    files = marker.get(rundir.FILES) if isinstance(marker, dict) else None
    if not isinstance(files, dict):
        return 0, {marker_rel: "lists no files: the unit is redone when the run is resumed"}
    ok, problems = 0, {}
    for rel, rec in sorted(files.items()):
        path = f"units/{unit}/{rel}"
        if not (isinstance(rec, dict) and isinstance(rec.get("bytes"), int) and isinstance(rec.get("sha256"), str)):
            problems[path] = f"{rundir.MARKER} has no size or sha256 for it"
            continue
        try:
            why = check_file(Path(run_dir), {"path": path, **rec})
        except UnsafePathError as exc:
            why = str(exc)
        if why is None:
            ok += 1
        else:
            problems[path] = why
    return ok, problems


def verify_run(run_dir: Path, *, jobs: int = 4, progress: bool = False) -> RunVerifyReport:
    """Check every file of every committed unit of ``run_dir`` against its marker, ``jobs`` units at once.
    ``FileNotFoundError`` without a run.json; ``KeyboardInterrupt`` within about a second of Ctrl-C."""
    from granary_pipe.io.parallel import run_parallel
    from granary_pipe.progress import Progress

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    run_dir = Path(run_dir)
    rundir.read_run_json(run_dir)  # FileNotFoundError naming run.json when this is not a run
    units = rundir.committed_units(run_dir)
    report = RunVerifyReport(run=str(run_dir), units=len(units))
    lock = threading.Lock()

    def one(unit: str) -> None:
        ok, problems = unit_problems(run_dir, unit)
        with lock:
            report.files_ok += ok
            for path, why in problems.items():
                if why == "missing":
                    report.missing.append(path)
                else:
                    report.bad[path] = why
        bar.update(1)

    with Progress(len(units), desc="verify", unit="unit", enabled=progress, every_s=5.0) as bar:
        run_parallel(units, one, jobs, threading.Event())
    report.missing.sort()
    report.bad = dict(sorted(report.bad.items()))
    return report


def is_run_dir(path: Path) -> bool:
    """True when ``path`` holds a run (``run.json``) rather than a release (``release.json``)."""
    return (Path(path) / rundir.RUN_JSON).is_file()

