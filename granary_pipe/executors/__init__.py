"""Executors run the same stages on one engine: ``ray`` (default) or ``beam``, named in :data:`EXECUTORS`.

Design: docs/architecture.md, "Contracts" (Executor).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Protocol

if TYPE_CHECKING:  # the CLI reads the table to offer --executor choices: no pyarrow at parse time
    from granary_pipe.stage import Stage
    from granary_pipe.units import OnResult, Unit


def _config_error(message: str) -> Exception:
    from granary_pipe.config import ConfigError  # late: granary_pipe.config loads the stages and pyarrow

    return ConfigError(message)


class Executor(Protocol):
    """What ``pipeline.run_pipeline`` asks of an engine."""

    def run(self, units: Iterable[Unit], max_in_flight: int, max_attempts: int, on_result: OnResult) -> None:
        """Process ``units`` (read lazily, in order); call ``on_result`` as each commits or fails."""

    def shutdown(self) -> None:
        """Release what the executor started (actors, an embedded Ray)."""


@dataclass(frozen=True)
class ExecutorOptions:
    """Engine options from the command line: Ray's ``address``/``num_cpus`` or Beam's flags."""

    address: str | None = None
    num_cpus: int | None = None
    beam_options: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExecutorEntry:
    """One executor: a check of its options (``ConfigError``) and a factory."""

    check: Callable[[ExecutorOptions], None]
    make: Callable[[list[Stage], Path, ExecutorOptions], Executor]


def _check_ray(opts: ExecutorOptions) -> None:
    if opts.beam_options:
        raise _config_error("beam options given, but the executor is ray (add --executor beam)")
    if address := opts.address or os.environ.get("RAY_ADDRESS"):
        from granary_pipe.executors.ray_address import check_reachable

        check_reachable(address)


def _make_ray(stages: list[Stage], run_dir: Path, opts: ExecutorOptions) -> Executor:
    from granary_pipe.executors.ray import RayExecutor

    return RayExecutor(stages, run_dir, address=opts.address, num_cpus=opts.num_cpus)


def _check_beam(opts: ExecutorOptions) -> None:
    if opts.address or opts.num_cpus:
        raise _config_error("--ray-address and --num-cpus are for the ray executor; with beam give Beam flags "
                          "as --beam-option (e.g. runner=FlinkRunner, direct_num_workers=2)")
    from granary_pipe.executors.beam import check_options

    try:
        check_options(opts.beam_options)
    except ValueError as exc:
        raise _config_error(str(exc)) from None


def _make_beam(stages: list[Stage], run_dir: Path, opts: ExecutorOptions) -> Executor:
    from granary_pipe.executors.beam import BeamExecutor

    return BeamExecutor(stages, run_dir, pipeline_options=opts.beam_options)


EXECUTORS: dict[str, ExecutorEntry] = {
    "ray": ExecutorEntry(_check_ray, _make_ray),
    "beam": ExecutorEntry(_check_beam, _make_beam),
}
"""In the order ``granary run --executor`` lists them."""


def _entry(name: str) -> ExecutorEntry:
    if name not in EXECUTORS:
        raise _config_error(f"unknown executor {name!r} (available: {', '.join(EXECUTORS)})")
    return EXECUTORS[name]


def check_executor(name: str, opts: ExecutorOptions) -> None:
    """``ConfigError`` for an unknown executor or options of another one, before anything is written."""
    _entry(name).check(opts)


def make_executor(name: str, stages: list[Stage], run_dir: Path, opts: ExecutorOptions) -> Executor:
    """Start the executor ``name`` for ``stages`` writing into ``run_dir``."""
    return _entry(name).make(stages, run_dir, opts)
