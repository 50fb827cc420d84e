"""One ``granary run`` per run directory (``granary_pipe.io.run_lock``).

Without the lock, two runs started at once on one ``--out`` would both process every unit, and the
second one's debris cleaning could delete the first one's unit in flight.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fault_helpers import (
    ASR_FREE_STAGES, committed, finish, marker_mtimes, run_json, start_cli, write_pipeline, write_source,
)
from granary_pipe.config import ConfigError
from granary_pipe.io import run_lock
from granary_pipe.pipeline import run_pipeline

FILES = ["en_01.flac", "en_02.opus", "en_03.flac", "en_04.mp3", "es_02.opus", "de_01.flac"]


def test_a_locked_run_directory_is_refused_before_its_debris_is_touched(tmp_path):
    """In process: the lock held (as by a running ``granary run``), a second run is refused naming
    the holder, and the unit directory the holder is writing stays."""
    source = write_source(tmp_path / "src", FILES[:2])
    pipeline = write_pipeline(tmp_path / "p.yaml", ASR_FREE_STAGES, per_unit=1)
    out = tmp_path / "run"
    out.mkdir()
    in_flight = out / "units" / ".u000000.tmp-12345678"
    in_flight.mkdir(parents=True)
    (out / "run.json").write_text('{"status": "running"}\n')  # the holder's run
    with run_lock.acquire(out):
        with pytest.raises(run_lock.RunLocked) as err:
            run_pipeline(pipeline, source, out, progress=False)
    assert in_flight.is_dir(), "the refused run cleaned the other run's unit in flight"
    message = str(err.value)
    assert "\n" not in message
    assert f"pid {__import__('os').getpid()} on {socket.gethostname()}, since " in message, message
    assert (out / "run.json").read_text() == '{"status": "running"}\n'


def test_a_foreign_directory_is_refused_without_a_lock_file(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("not a run")
    source = write_source(tmp_path / "src", FILES[:1])
    pipeline = write_pipeline(tmp_path / "p.yaml", ASR_FREE_STAGES, per_unit=1)
    with pytest.raises(ConfigError, match="exists, is not empty and has no run.json"):
        run_pipeline(pipeline, source, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.e2e
def test_two_runs_started_at_once_on_one_out(tmp_path):
    """Two real ``granary run`` processes on the same ``--out``: one runs, the other exits 2 with one
    line naming the first (pid, host, since when); every unit is committed once."""
    source = write_source(tmp_path / "src", FILES)
    probes = tmp_path / "probes"
    probes.mkdir()
    stages = [*ASR_FREE_STAGES, {"use": "test.inflight_probe", "params": {"dir": str(probes), "delay_s": 1.5},
                                  "resources": {"cpus": 0.25}}]
    pipeline = write_pipeline(tmp_path / "p.yaml", stages, per_unit=2, in_flight=1)
    out = tmp_path / "run"
    args = ["run", str(pipeline), "--source", str(source), "--out", str(out), "-q"]
    procs = [start_cli(*args, log=tmp_path / f"run{i}.log", test_stages=True) for i in range(2)]
    rcs = [finish(p) for p in procs]
    logs = [(tmp_path / f"run{i}.log").read_text() for i in range(2)]
    assert sorted(rcs) == [0, 2], logs
    winner, loser = (0, 1) if rcs[0] == 0 else (1, 0)
    lines = [ln for ln in logs[loser].splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in logs[loser], logs[loser]
    assert lines[0].startswith("granary run: error: ") and "another granary run is writing it" in lines[0]
    assert f"pid {procs[winner].pid} on {socket.gethostname()}, since " in lines[0], lines[0]
    info = run_json(out)
    assert info["status"] == "complete" and committed(out) == ["u000000", "u000001", "u000002"]
    assert sorted(p.name for p in probes.iterdir()) == ["u000000.start", "u000001.start", "u000002.start"]

    before = marker_mtimes(out)  # the lock is released with the run: a rerun resumes (nothing to do)
    rerun = tmp_path / "rerun.log"
    assert finish(start_cli(*args, log=rerun, test_stages=True)) == 0, rerun.read_text()
    assert marker_mtimes(out) == before
    assert Path(out / run_lock.LOCK_NAME).is_file()
