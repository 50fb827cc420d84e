"""The start of ``granary run`` as a user sees it: a first line at once (Ray takes up to a minute
to start: the terminal must not stay silent), no warning from Ray about its token
authentication (the secure default, announced on every run), and a driver killed with SIGKILL
while Ray is still starting leaves nothing the next run does not stop: ``ray.init`` had not
returned, so nothing recorded which processes were the killed run's (``ray_orphans`` marks them
before the start now).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    from tests.fault_helpers import (
        ASR_FREE_STAGES, ROOT, cleanup, cmdline, finish, ps_title, run_json, session_procs, start_cli, wait_for,
        write_pipeline, write_source,
    )
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from fault_helpers import (
        ASR_FREE_STAGES, ROOT, cleanup, cmdline, finish, ps_title, run_json, session_procs, start_cli, wait_for,
        write_pipeline, write_source,
    )

FIRST_LINE_S = 10.0
"""Bound on the first line of ``granary run`` (the issue's goal is 2 s on an idle machine; the
test machine may be loaded)."""

TOKEN_NOTE = "Token authentication is enabled"


def _ray_processes(sid: int) -> list[str]:
    """Ray's own processes (GCS, raylet, agents, workers) in session ``sid``."""
    return [c for p in session_procs(sid) if (c := cmdline(p)) and ("ray" in c.split()[0] or c.startswith("ray::"))]


def _workers(sid: int) -> list[str]:
    """Ray's worker processes in session ``sid``: the raylet starts them at the end of ``ray.init``,
    once its agents are well up (a driver killed before that takes its Ray with it)."""
    return [c for c in _ray_processes(sid) if "workers/default_worker.py" in c or c.startswith("ray::")]


def _agents(sid: int) -> list[int]:
    """The raylet's agents in session ``sid`` that are up (they take their ``ray::`` title then)."""
    return [p for p in session_procs(sid) if ps_title(p).startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent"))]


def _ray_started(out: Path) -> bool:
    """True once ``ray.init`` has returned: the run's record then names Ray's session directory."""
    try:
        return bool(json.loads((out / ".ray-embedded.json").read_text()).get("session_dir"))
    except (OSError, ValueError):
        return False


def test_run_prints_a_first_line_before_ray_starts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "granary_pipe.cli", "run", "demo", "--out", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT,
                            env=env, start_new_session=True)
    try:
        ready, _, _ = select.select([proc.stdout, proc.stderr], [], [], FIRST_LINE_S)
        seconds = time.monotonic() - t0
        ray_up = _ray_processes(proc.pid)
        assert ready, f"no line within {FIRST_LINE_S:.0f} s of granary run"
        line = ready[0].readline().decode()
        assert line.startswith("granary run: ") and "starting Ray (embedded" in line, line
        assert str(tmp_path / "run") in line, line
        assert not ray_up, f"the first line came only once Ray was up ({seconds:.1f} s): {ray_up}"
        print(f"first line after {seconds:.2f} s: {line.strip()}")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: the run stops what it started
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        cleanup(proc)


@pytest.mark.e2e
def test_a_driver_killed_while_ray_starts_leaves_nothing_past_the_next_run(tmp_path):
    source = write_source(tmp_path / "src", ["en_01.flac", "de_02.mp3"])
    pipeline = write_pipeline(tmp_path / "p.yaml", ASR_FREE_STAGES, per_unit=1, in_flight=1)
    out = tmp_path / "run"
    args = ["run", str(pipeline), "--source", str(source), "--out", str(out)]
    first = start_cli(*args, log=tmp_path / "first.log")
    try:
        # strike while ray.init is still starting Ray: hold the driver (SIGSTOP) as the raylet starts its
        # first workers, before ray.init returns; once the raylet's agents are up, SIGKILL it
        wait_for(lambda: _workers(first.pid), first, tmp_path / "first.log", every=0.02)
        os.kill(first.pid, signal.SIGSTOP)
        assert not _ray_started(out), "ray.init returned before the moment to strike"
        deadline = time.monotonic() + 120
        while len(_agents(first.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        time.sleep(3)  # what goes by itself, goes
        left = {p: ps_title(p) for p in session_procs(first.pid)}
        assert left, "nothing outlived the driver killed during Ray's start: the test would prove nothing"

        second = start_cli(*args, log=tmp_path / "second.log")
        rc = finish(second)
        log = (tmp_path / "second.log").read_text()
        assert rc == 0, log[-3000:]
        still = {p: t for p, t in left.items() if p in session_procs(first.pid)}
        assert not still, f"processes of the killed run's Ray still alive after the next run: {still}"
        assert run_json(out)["status"] == "complete"
        assert not (out / ".ray-embedded.json").exists(), "a cleanly stopped Ray leaves no record"
        assert TOKEN_NOTE not in log, log[-3000:]
        assert log.startswith("granary run: "), log[:500]
    finally:
        cleanup(first)
