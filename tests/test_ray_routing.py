"""The Ray executor's driver loop: routing units to the workers of an actor stage, threads that
follow the reservation, and Ctrl-C handled as a flag.

A pipeline whose actor stage has two workers (0.5 CPU each) runs on a real embedded Ray. The
first unit is slow on its worker; the later units must go to the other, idle worker instead of
queueing behind it (the executor routes to the worker with the fewest units outstanding), and
each worker's Whisper thread default must be its reservation (1), not every core.
"""

from __future__ import annotations

import json
import os

import pytest

from fault_helpers import start_cli, write_pipeline, write_source
from granary_pipe.stages.asr import whisper_runtime


@pytest.mark.e2e
def test_units_go_to_the_least_loaded_worker(tmp_path):
    files = ["en_01.flac", "de_01.flac", "it_01.flac", "es_01.flac"]
    source = write_source(tmp_path / "src", files)
    probe = tmp_path / "probe"
    probe.mkdir()
    stages = [{"use": "test.worker_probe", "workers": 2, "resources": {"cpus": 0.5},
               "params": {"dir": str(probe), "slow_units": ["u000000"], "slow_s": 8.0}}]
    pipeline = write_pipeline(tmp_path / "p.yaml", stages, per_unit=1, in_flight=2)
    proc = start_cli("run", str(pipeline), "--source", str(source), "--out", str(tmp_path / "run"), "-q",
                     log=tmp_path / "log.txt", test_stages=True)
    assert proc.wait(timeout=300) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    seen = {u: json.loads((probe / f"{u}.json").read_text()) for u in ("u000000", "u000001", "u000002", "u000003")}
    slow_pid = seen["u000000"]["pid"]
    assert len({s["pid"] for s in seen.values()}) == 2, seen  # both workers were used
    # round-robin would have queued u000002 behind the slow u000000; least-loaded sends it elsewhere
    assert all(seen[u]["pid"] != slow_pid for u in ("u000001", "u000002", "u000003")), seen
    assert all(seen[u]["t"] < seen["u000000"]["t"] + 8.0 for u in ("u000002", "u000003")), seen
    assert {s["threads"] for s in seen.values()} == {1}, seen  # 0.5 CPU reserved: one thread each


@pytest.mark.parametrize("env, expected", [("1", 1), ("3", 3), ("", None), ("x", None), ("0", None)])
def test_default_threads_follow_omp_num_threads(monkeypatch, env, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", env)
    want = expected if expected is not None else min(os.cpu_count() or 1, 8)
    assert whisper_runtime.default_threads() == want


def test_ctrl_c_becomes_a_flag_the_driver_loop_checks():
    """The first SIGINT only sets the flag (so it cannot be lost inside one of Ray's C callbacks,
    where Python would print "Exception ignored"); a second one raises at once; the previous
    handler comes back afterwards."""
    import signal

    from granary_pipe.executors.ray import _ctrl_c_polled

    before = signal.getsignal(signal.SIGINT)
    with _ctrl_c_polled() as flag:
        os.kill(os.getpid(), signal.SIGINT)  # handled at the next bytecode boundary: no exception
        for _ in range(100):
            pass
        assert flag.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # the handler runs at the next bytecode boundary
                pass
    assert signal.getsignal(signal.SIGINT) is before
