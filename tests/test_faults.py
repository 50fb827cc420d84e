"""Faults during a run: a stage worker killed, the driver killed, a unit that keeps failing, Ctrl-C.

Every run is the ``granary`` CLI in a session of its own (``fault_helpers.start_cli``); the test
kills only processes of that session and cleans the session up afterwards.

The worker kill, the driver kill (resumed with Ray, or finished by Beam) and Ctrl-C run the full
demo pipeline (every stage of ``pipelines/demo.yaml``) on the demo subset of ``conftest.py`` (8
clips, 4 units of 2, 2 in flight) and compare units and the release, byte for byte, with the one
uninterrupted reference run (``demo_reference``) that the beam tests share. The tests of how a run
stops (SIGTERM, Ctrl-C while Ray starts) use a smaller pipeline: decode → license gate → Silero VAD
→ Whisper → basic filters, over 9 recordings in units of 2.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fault_helpers import (
    ASR_FREE_STAGES,
    DEMO_SUBSET_UNITS,
    ROOT,
    cleanup,
    cmdline,
    committed,
    demo_run_args,
    finish,
    marker_mtimes,
    ps_title,
    rows,
    run_json,
    session_procs,
    stage_actors,
    start_cli,
    stop_with,
    wait_for,
    write_pipeline,
    write_source,
)
from run_compare import assert_same_release, assert_same_units

pytestmark = pytest.mark.e2e

FILES = ["en_01.flac", "en_02.opus", "en_03.flac", "en_04.mp3", "en_05.flac", "en_06.flac",
         "en_nc_01.flac", "es_02.opus", "noise_music_01.mp3"]
ASR_STAGES = ASR_FREE_STAGES + [
    {"use": "asr.whisper",
     "params": {"models_by_lang": {"en": "whisper-tiny.en", "default": "whisper-base"}, "beam_size": 5,
                "compute_type": "int8", "model_batch": 8},
     "resources": {"cpus": 0.75}},
    {"use": "filter.basic", "params": {"min_duration_s": 0.3, "max_duration_s": 30}, "resources": {"cpus": 0.25}},
]
"""One actor stage (asr.whisper), so the only ``ray::StageActor`` process of a run is the ASR worker."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("faults")
    return {"source": write_source(d / "src", FILES),
            "pipeline": write_pipeline(d / "asr.yaml", ASR_STAGES, per_unit=2, in_flight=2, attempts=2)}


def run_args(setup: dict, out: Path) -> list[str]:
    return ["run", str(setup["pipeline"]), "--source", str(setup["source"]), "--out", str(out), "-q"]


def test_sigkill_stage_worker_on_full_demo_gives_byte_identical_release(demo_subset, demo_reference, tmp_path):
    """SIGKILL one ``StageActor`` (an ASR or text-LID worker) while it runs a unit of the full demo
    pipeline: Ray restarts it, the unit is retried, and the release cut afterwards is the
    uninterrupted run's, byte for byte."""
    out, log = tmp_path / "run", tmp_path / "run.log"
    proc = start_cli(*demo_run_args(demo_subset, out), log=log)
    try:
        wait_for(lambda: committed(out), proc, log)
        victim = wait_for(lambda: next((p for p in stage_actors(proc.pid) if ps_title(p).endswith(".run")), None),
                          proc, log, every=0.02)
        title = ps_title(victim)
        os.kill(victim, signal.SIGKILL)
        done_at_kill = committed(out)
        assert title.startswith("ray::StageActor"), f"pid {victim} was {title!r}, not a stage actor"
        assert len(done_at_kill) < DEMO_SUBSET_UNITS, "the kill came after the last unit: nothing to recover"
        time.sleep(0.3)
        assert victim not in session_procs(proc.pid), "the killed actor is still alive"
        rc = finish(proc)
    finally:
        cleanup(proc)
    print(f"\nkilled pid {victim} ({title}) with {len(done_at_kill)} unit(s) committed")
    assert rc == 0, log.read_text()[-3000:]
    info = run_json(out)
    assert info["status"] == "complete" and info["failed_units"] == [], info["unit_errors"]
    assert_same_units(out, demo_reference)
    assert_same_release(out, demo_reference, tmp_path)


@pytest.fixture(scope="module")
def killed_demo_run(tmp_path_factory, demo_subset) -> Path:
    """A Ray run of the full demo pipeline whose driver was SIGKILLed after its first commit (and
    whose session was then cleaned up). Tests resume copies of it."""
    out = tmp_path_factory.mktemp("killed") / "run"
    log = out.parent / "first.log"
    proc = start_cli(*demo_run_args(demo_subset, out), log=log)
    try:
        wait_for(lambda: committed(out), proc, log, every=0.02)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only; its Ray notices on its own
        proc.wait()
    finally:
        cleanup(proc)
    assert 1 <= len(committed(out)) < DEMO_SUBSET_UNITS, f"the kill came too late to test resume: {committed(out)}"
    assert run_json(out)["status"] == "running", "a SIGKILLed driver cannot have written a final status"
    return out


@pytest.mark.parametrize("executor", ["ray", "beam"])
def test_sigkill_driver_then_resume_gives_byte_identical_release(demo_subset, demo_reference, killed_demo_run,
                                                                 tmp_path, executor):
    """Resume the killed run with the same command (``ray``) or finished by the other executor
    (``beam``: the resume fingerprint leaves the engine out, so this is allowed, and must give the
    same result): committed units are skipped, the rest is done, and the units and the release
    equal the uninterrupted Ray run's byte for byte (release.json records which executor finished
    the run, so with beam it differs in ``run.executor`` only)."""
    out = tmp_path / "run"
    shutil.copytree(killed_demo_run, out)
    before = marker_mtimes(out)
    log = tmp_path / "second.log"
    rc = finish(start_cli(*demo_run_args(demo_subset, out, "--executor", executor), log=log))
    assert rc == 0, log.read_text()[-3000:]
    after = marker_mtimes(out)
    assert {u: after[u] for u in before} == before, "committed units were redone instead of skipped"
    info = run_json(out)
    assert len(after) == DEMO_SUBSET_UNITS and info["status"] == "complete" and info["executor"] == executor
    assert_same_units(out, demo_reference)
    digest = assert_same_release(out, demo_reference, tmp_path, executor_differs=executor != "ray")
    print(f"\nresumed with {executor} after {len(before)} committed unit(s); release: {len(digest)} files identical")


def test_ctrl_c_stops_cleanly_then_resumes(demo_subset, demo_reference, tmp_path):
    out, log = tmp_path / "run", tmp_path / "first.log"
    proc = start_cli(*demo_run_args(demo_subset, out), log=log)
    try:
        wait_for(lambda: committed(out), proc, log, every=0.02)
        rc, stop_s, left = stop_with(proc, signal.SIGINT)
    finally:
        cleanup(proc)
    text = log.read_text()
    assert rc == 130, text[-3000:]
    assert "rerun the same command to resume" in text, text[-3000:]
    info = run_json(out)
    assert info["status"] == "interrupted", info["status"]
    assert not left, f"processes of the interrupted run still alive 10 s after it exited: {left}"
    before = marker_mtimes(out)
    assert 1 <= len(before) < DEMO_SUBSET_UNITS, f"the interrupt came too late to test resume: {sorted(before)}"

    rc = finish(start_cli(*demo_run_args(demo_subset, out), log=tmp_path / "second.log"))
    assert rc == 0, (tmp_path / "second.log").read_text()[-3000:]
    after = marker_mtimes(out)
    assert {u: after[u] for u in before} == before, "committed units were redone instead of skipped"
    assert run_json(out)["status"] == "complete"
    assert_same_units(out, demo_reference)
    print(f"\nSIGINT → exit 130 in {stop_s:.1f} s with {len(before)} unit(s) committed; resumed to the same units")


def test_ctrl_c_while_ray_starts_stops_cleanly(setup, tmp_path):
    """Ctrl-C a few seconds after launch, while the embedded Ray is starting (its raylet is up,
    no stage worker yet): the same promise as mid-run — exit 130, run.json ``interrupted``,
    nothing of the run left behind (not status ``running``, no Ray DashboardAgent/RuntimeEnvAgent
    outliving the CLI)."""
    out, log = tmp_path / "run", tmp_path / "run.log"
    proc = start_cli(*run_args(setup, out), log=log)
    try:
        wait_for(lambda: any("raylet" in cmdline(p) for p in session_procs(proc.pid)), proc, log, every=0.01)
        rc, _, left = stop_with(proc, signal.SIGINT)
    finally:
        cleanup(proc)
    assert rc == 130, log.read_text()[-3000:]
    assert run_json(out)["status"] == "interrupted"
    assert not left, f"processes of the interrupted run still alive 10 s after it exited: {left}"


def test_sigterm_marks_run_interrupted(setup, tmp_path):
    """SIGTERM (a scheduler's stop, ``timeout``, ``kill``) mid-run: Ray's driver handler turns it
    into ``sys.exit(15)``; the run must still record ``interrupted`` (not stay ``running``) and
    leave no process behind. Resume after it is the same as after Ctrl-C (tested above)."""
    out, log = tmp_path / "run", tmp_path / "run.log"
    proc = start_cli(*run_args(setup, out), log=log)
    try:
        wait_for(lambda: committed(out), proc, log, every=0.02)
        rc, _, left = stop_with(proc, signal.SIGTERM)
    finally:
        cleanup(proc)
    assert rc != 0, log.read_text()[-3000:]
    assert run_json(out)["status"] == "interrupted", run_json(out)["status"]
    assert not left, f"processes of the stopped run still alive 10 s after it exited: {left}"


def test_unit_failing_repeatedly_is_reported_then_retried_on_rerun(tmp_path):
    """A real exception in a real Ray task (test-only stage ``test.fail_on``, registered by
    ``fault_helpers``) fails unit u000001 on every attempt while a flag file exists."""
    files = ["de_01.flac", "en_01.flac", "en_02.opus", "en_03.flac", "es_01.flac", "it_02.flac"]
    source = write_source(tmp_path / "src", files)
    flag = tmp_path / "FAIL"
    flag.write_text("")
    stages = [ASR_FREE_STAGES[0],
              {"use": "test.fail_on", "params": {"path_contains": "en_03", "while_file": str(flag)},
               "resources": {"cpus": 0.25}},
              *ASR_FREE_STAGES[1:]]
    pipeline = write_pipeline(tmp_path / "p.yaml", stages, per_unit=2, in_flight=2, attempts=2)
    out = tmp_path / "run"
    args = ["run", str(pipeline), "--source", str(source), "--out", str(out)]

    rc = finish(start_cli(*args, log=tmp_path / "first.log", test_stages=True))
    text = (tmp_path / "first.log").read_text()
    assert rc == 1, text[-3000:]
    assert "1 unit(s) failed: u000001" in text, text[-3000:]
    assert "retrying" in text and "injected fault" in text, "the unit was not retried before being failed"
    info = run_json(out)
    assert info["failed_units"] == ["u000001"] and info["status"] == "incomplete"
    assert "injected fault: en_03.flac" in info["unit_errors"]["u000001"]
    assert committed(out) == ["u000000", "u000002"], "the rest of the run must complete"
    report = subprocess.run([sys.executable, "-m", "granary_pipe.cli", "report", str(out)], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "1 failed" in report.stdout and "failed u000001: " in report.stdout
    assert "injected fault: en_03.flac" in report.stdout
    before = marker_mtimes(out)

    flag.unlink()  # the cause is gone
    rc = finish(start_cli(*args, "-q", log=tmp_path / "second.log", test_stages=True))
    assert rc == 0, (tmp_path / "second.log").read_text()[-3000:]
    info = run_json(out)
    assert info["status"] == "complete" and info["failed_units"] == []
    assert info["unit_errors"] == {} and info["units_committed"] == info["units_total"] == 3
    after = marker_mtimes(out)
    assert {u: after[u] for u in before} == before and set(after) == {"u000000", "u000001", "u000002"}
    recs = {r["recording_id"] for r in rows(out, "kept") + rows(out, "rejected")}
    assert len(recs) == len(files)
