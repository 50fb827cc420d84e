"""Ray executor: model stages as actors, CPU stages as tasks, each unit a chain of remote calls.

Joins ``address`` (or ``RAY_ADDRESS``), else starts an embedded Ray. Design: docs/architecture.md, "Ray executor".
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections import deque
from pathlib import Path
from types import FrameType
from typing import Callable, Iterable, Iterator

import ray

from granary_pipe.executors import capacity, ray_orphans
from granary_pipe.io import run_guard, sink
from granary_pipe.stage import Stage
from granary_pipe.units import OnResult, Payload, Unit, UnitStats, apply_stage

log = logging.getLogger(__name__)


@ray.remote
def _run_task(stage: Stage, payload: Payload) -> Payload:
    stage.setup()
    return apply_stage(stage, payload)


COMMIT_CPUS = 0.25
"""CPU reserved by the sink task that writes a unit (mostly I/O and FLAC encoding)."""


@ray.remote(num_cpus=COMMIT_CPUS)
def _commit(run_dir: str, unit: str, payload: Payload) -> dict:
    table, stats = payload
    return sink.commit_unit(Path(run_dir), unit, table, stats)


@ray.remote
class StageActor:
    """A long-lived worker holding one stage (and its model)."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        stage.setup()

    def run(self, payload: Payload) -> Payload:
        return apply_stage(self.stage, payload)


@contextlib.contextmanager
def _on_sigint(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """``handler`` for SIGINT during the block (only the main thread receives signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Hold SIGINT for the duration of the block and raise ``KeyboardInterrupt`` after it."""
    hit: list[int] = []
    with _on_sigint(lambda signum, frame: hit.append(signum)):
        yield
    if hit:
        raise KeyboardInterrupt


POLL_S = 0.2
"""How often the driver loop looks at the Ctrl-C flag while it waits for units."""


@contextlib.contextmanager
def _ctrl_c_polled() -> Iterator[threading.Event]:
    """Turn the first SIGINT into a flag that the driver loop checks (a second one raises at once):
    a ``KeyboardInterrupt`` raised inside Ray's C-level callbacks is printed and lost."""
    flag = threading.Event()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    with _on_sigint(on_sigint):
        yield flag


def _options(stage: Stage) -> dict:
    res = stage.resources
    return {"num_cpus": res.cpus, "num_gpus": res.gpus, "resources": dict(res.custom)}


def cluster_nodes() -> list[dict[str, float]]:
    """Total resources of each live node of the connected Ray cluster."""
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def _not_token_auth_note(record: logging.LogRecord) -> bool:
    """False for Ray's WARNING "Token authentication is enabled ...", given at every start of a local Ray
    with its secure default (the warning that it is *disabled* still shows)."""
    return not record.getMessage().startswith("Token authentication is enabled")


def _start_embedded(run_dir: Path, num_cpus: int | None) -> None:
    """Start a local Ray for this driver, marked and recorded first (:mod:`ray_orphans`)."""
    with ray_orphans.starting(run_dir) as (mark, started_at):
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    node = getattr(ray._private.worker, "_global_node", None)  # Ray's own record of it
    ray_orphans.record(run_dir, node.get_session_dir_path() if node is not None else None, mark, started_at)


class RayExecutor:
    """Runs units of a pipeline on Ray."""

    def __init__(self, stages: list[Stage], run_dir: Path, address: str | None = None,
                 num_cpus: int | None = None) -> None:
        self.stages = stages
        self.run_dir = Path(run_dir)
        self.actors: dict[int, list] = {}
        self.load: dict[int, list[int]] = {}  # per actor stage: units routed to each actor, not yet ended
        self.owns_ray = False  # True when this executor started (or joined) Ray, so it shuts it down
        self.embedded = False  # True when it started a local Ray (recorded in the run dir, ray_orphans)
        address = address or os.environ.get("RAY_ADDRESS")
        try:
            if not ray.is_initialized():
                self.owns_ray = True
                logging.getLogger(TOKEN_AUTH_LOGGER).addFilter(_not_token_auth_note)  # added once: the same object
                with _ctrl_c_deferred():  # a Ray interrupted half-way through starting leaves processes behind
                    if address:
                        ray.init(address=address, logging_level=logging.WARNING)
                    else:
                        self.embedded = True  # a killed driver leaves its agents: the next start stops them
                        _start_embedded(self.run_dir, num_cpus or os.cpu_count())
            capacity.check(stages, cluster_nodes(), COMMIT_CPUS)  # before any actor: Ray would wait forever
            for i in capacity.actor_order(stages):  # largest GPU share first, as the check placed them
                stage = stages[i]
                # ray.remote's stubs type the decorated class as itself, without ActorClass.options
                cls = StageActor.options(**_options(stage), max_restarts=3,  # type: ignore[attr-defined]
                                         max_task_retries=2)
                self.actors[i] = [cls.remote(stage) for _ in range(stage.workers)]
                self.load[i] = [0] * stage.workers
        except BaseException:  # Ctrl-C or a capacity error: stop what was started
            self.shutdown()
            raise

    def _submit(self, unit: Unit) -> tuple[ray.ObjectRef, dict[int, int]]:
        """Chain a unit through every stage, each actor stage's worker the one with the fewest units
        outstanding; the commit reference and the worker chosen per actor stage."""
        ref = ray.put((unit.table, UnitStats()))
        routed: dict[int, int] = {}
        for i, stage in enumerate(self.stages):
            if i in self.actors:
                load = self.load[i]
                k = routed[i] = load.index(min(load))
                load[k] += 1
                ref = self.actors[i][k].run.remote(ref)
            else:
                ref = _run_task.options(**_options(stage)).remote(stage, ref)
        return _commit.remote(str(self.run_dir), unit.id, ref), routed

    def _release(self, routed: dict[int, int]) -> None:
        for i, k in routed.items():
            self.load[i][k] -= 1

    def run(self, units: Iterable[Unit], max_in_flight: int, max_attempts: int, on_result: OnResult) -> None:
        """Takes from ``units`` only as room frees up, so a lazy listing stays lazy."""
        with _ctrl_c_polled() as interrupted:
            self._run(units, max_in_flight, max_attempts, on_result, interrupted)

    def _run(self, units: Iterable[Unit], max_in_flight: int, max_attempts: int, on_result: OnResult,
             interrupted: threading.Event) -> None:
        fresh = iter(units)
        retry: deque[Unit] = deque()  # units to run again, before any fresh one
        attempts: dict[str, int] = {}
        in_flight: dict[ray.ObjectRef, tuple[Unit, dict[int, int]]] = {}
        while True:
            while len(in_flight) < max_in_flight and not interrupted.is_set():
                unit = retry.popleft() if retry else next(fresh, None)
                if unit is None:
                    break
                attempts[unit.id] = attempts.get(unit.id, 0) + 1
                ref, routed = self._submit(unit)
                in_flight[ref] = (unit, routed)
            if interrupted.is_set():
                raise KeyboardInterrupt
            if not in_flight:  # nothing to retry, the listing is exhausted
                break
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_S)
            if not done:
                continue
            unit, routed = in_flight.pop(done[0])
            self._release(routed)
            try:
                stats, error = ray.get(done[0]), None
            except (ray.exceptions.RayError, OSError) as exc:
                if (full := run_guard.disk_error(exc)) is not None:  # the disk takes no more: stop the run
                    raise full from None
                if attempts[unit.id] < max_attempts:
                    log.warning("unit %s failed (attempt %d), retrying: %s", unit.id, attempts[unit.id], exc)
                    retry.append(unit)
                    continue
                stats, error = None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:500]}"
            attempts.pop(unit.id, None)
            on_result(unit.id, stats, error)

    def shutdown(self) -> None:
        """Release actors; disconnect from Ray (stopping an embedded one) if this executor started it."""
        for pool in self.actors.values():
            for actor in pool:
                ray.kill(actor)
        self.actors = {}
        self.load = {}
        if self.owns_ray:
            ray.shutdown()
            if self.embedded:
                ray_orphans.forget(self.run_dir)
