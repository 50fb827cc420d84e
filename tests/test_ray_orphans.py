"""A driver killed with SIGKILL: its embedded Ray's agents (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``, about 210 MB) outlived it; the next ``granary run`` on the same
directory now stops them (``granary_pipe.executors.ray_orphans``), and only them.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from fault_helpers import (
    ASR_FREE_STAGES, cleanup, committed, finish, ps_title, run_json, session_procs, start_cli, wait_for,
    write_pipeline, write_source,
)

pytestmark = pytest.mark.e2e

FILES = ["en_01.flac", "en_02.opus", "en_03.flac", "en_04.mp3", "en_05.flac", "en_06.flac"]


def test_the_next_start_stops_what_a_killed_driver_left(tmp_path):
    source = write_source(tmp_path / "src", FILES)
    pipeline = write_pipeline(tmp_path / "p.yaml", ASR_FREE_STAGES, per_unit=2, in_flight=1)
    out = tmp_path / "run"
    args = ["run", str(pipeline), "--source", str(source), "--out", str(out), "-q"]
    slow = write_pipeline(tmp_path / "slow.yaml", [*ASR_FREE_STAGES, {
        "use": "test.inflight_probe", "params": {"dir": str(tmp_path), "delay_s": 6}, "resources": {"cpus": 0.25}}],
        per_unit=1, in_flight=1)
    bystander = start_cli("run", str(slow), "--source", str(source), "--out", str(tmp_path / "other"), "-q",
                          log=tmp_path / "other.log", test_stages=True)  # another run's Ray: not to be touched
    first = start_cli(*args, log=tmp_path / "first.log")
    try:
        wait_for(lambda: committed(out), first, tmp_path / "first.log", every=0.02)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        time.sleep(5)  # the raylet and GCS notice and go; their agents stay
        left = {p: ps_title(p) for p in session_procs(first.pid)}
        assert left, "nothing outlived the killed driver: the test would prove nothing"
        assert run_json(out)["status"] == "running"

        second = start_cli(*args, log=tmp_path / "second.log")
        rc = finish(second)
        assert rc == 0, (tmp_path / "second.log").read_text()[-3000:]
        still = {p: t for p, t in left.items() if p in session_procs(first.pid)}
        assert not still, f"processes of the killed run's Ray still alive after the next run: {still}"
        assert run_json(out)["status"] == "complete"
        assert not (out / ".ray-embedded.json").exists(), "a cleanly stopped Ray leaves no record"
        assert finish(bystander) == 0, (tmp_path / "other.log").read_text()[-3000:]
    finally:
        cleanup(first)
        cleanup(bystander)
