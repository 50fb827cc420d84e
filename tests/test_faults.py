"""Faults during a run: a stage worker killed, the driver killed, a unit that keeps failing, Ctrl-C.

Every run is the ``granary`` CLI in a session of its own (``fault_helpers.start_cli``); the test
kills only processes of that session and cleans the session up afterwards. The pipeline is small
but real: decode → license gate → Silero VAD → Whisper (tiny.en for English, base otherwise) →
basic filters, over 9 demo recordings in units of 2 (5 units, 2 in flight). The long recording
(en_06, ~40 s) sits in unit u000002, so a unit is in ASR for a few seconds when we strike.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fault_helpers import (
    ASR_FREE_STAGES,
    ROOT,
    assert_same_rows,
    cleanup,
    cmdline,
    committed,
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


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, setup) -> Path:
    """An uninterrupted run (dir named ``run``, as every run here, since a release records the name)."""
    out = tmp_path_factory.mktemp("baseline") / "run"
    log = out.parent / "run.log"
    rc = finish(start_cli(*run_args(setup, out), log=log))
    assert rc == 0, log.read_text()[-3000:]
    info = run_json(out)
    assert info["status"] == "complete" and info["failed_units"] == [] and info["units_total"] == 5
    assert rows(out, "kept"), "the baseline kept nothing: the comparison would be empty"
    return out


def test_sigkill_asr_actor_mid_run(setup, baseline, tmp_path):
    out, log = tmp_path / "run", tmp_path / "run.log"
    proc = start_cli(*run_args(setup, out), log=log)
    try:
        wait_for(lambda: committed(out), proc, log)
        # the one StageActor is the ASR worker; strike while it is running a unit (title ...StageActor.run)
        victim = wait_for(lambda: next((p for p in stage_actors(proc.pid) if ps_title(p).endswith(".run")), None),
                          proc, log, every=0.02)
        title = ps_title(victim)
        os.kill(victim, signal.SIGKILL)
        done_at_kill = committed(out)
        assert title.startswith("ray::StageActor"), f"pid {victim} was {title!r}, not a stage actor"
        assert len(done_at_kill) < 5, "the kill came after the last unit: nothing to recover"
        time.sleep(0.3)
        assert victim not in session_procs(proc.pid), "the killed actor is still alive"
        replacement = wait_for(lambda: [p for p in stage_actors(proc.pid) if p != victim], proc, log, timeout=120)
        rc = finish(proc)
    finally:
        cleanup(proc)
    print(f"\nkilled pid {victim} ({title}) with {len(done_at_kill)} unit(s) committed; "
          f"restarted as pid {replacement}")
    assert rc == 0, log.read_text()[-3000:]
    info = run_json(out)
    assert info["status"] == "complete" and info["failed_units"] == [], info["unit_errors"]
    assert_same_rows(out, baseline)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def release(run: Path, rel: Path) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "granary_pipe.cli", "release", str(run), "--out", str(rel),
                          "--shard-rows", "2", "-q"], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return _tree_digest(rel)


def test_sigkill_driver_then_resume_gives_byte_identical_release(setup, baseline, tmp_path):
    out, log = tmp_path / "run", tmp_path / "first.log"
    proc = start_cli(*run_args(setup, out), log=log)
    try:
        wait_for(lambda: committed(out), proc, log, every=0.02)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only; its Ray notices on its own
        proc.wait()
    finally:
        cleanup(proc)
    before = marker_mtimes(out)
    assert 1 <= len(before) < 5, f"the kill came too late to test resume: {sorted(before)}"
    assert run_json(out)["status"] == "running", "a SIGKILLed driver cannot have written a final status"

    rc = finish(start_cli(*run_args(setup, out), log=tmp_path / "second.log"))
    assert rc == 0, (tmp_path / "second.log").read_text()[-3000:]
    after = marker_mtimes(out)
    assert {u: after[u] for u in before} == before, "committed units were redone instead of skipped"
    assert len(after) == 5 and run_json(out)["status"] == "complete"
    assert_same_rows(out, baseline)

    ref = release(baseline, tmp_path / "rel-ref")
    got = release(out, tmp_path / "rel")
    assert "release.json" in got and any(k.endswith(".tar") for k in got) and any(k.endswith(".parquet") for k in got)
    assert got == ref, {k: (got.get(k), ref.get(k)) for k in set(got) | set(ref) if got.get(k) != ref.get(k)}
    assert json.loads((tmp_path / "rel" / "release.json").read_text()) == \
        json.loads((tmp_path / "rel-ref" / "release.json").read_text())
    print(f"\nresumed after {len(before)} committed unit(s); release: {len(got)} files byte-identical")


def test_ctrl_c_stops_cleanly_then_resumes(setup, baseline, tmp_path):
    out, log = tmp_path / "run", tmp_path / "first.log"
    proc = start_cli(*run_args(setup, out), log=log)
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
    assert 1 <= len(before) < 5, f"the interrupt came too late to test resume: {sorted(before)}"

    rc = finish(start_cli(*run_args(setup, out), log=tmp_path / "second.log"))
    assert rc == 0, (tmp_path / "second.log").read_text()[-3000:]
    after = marker_mtimes(out)
    assert {u: after[u] for u in before} == before, "committed units were redone instead of skipped"
    assert run_json(out)["status"] == "complete"
    assert_same_rows(out, baseline)
    print(f"\nSIGINT → exit 130 in {stop_s:.1f} s with {len(before)} unit(s) committed; resumed to the same rows")


def test_ctrl_c_while_ray_starts_stops_cleanly(setup, tmp_path):
    """Ctrl-C a few seconds after launch, while the embedded Ray is starting (its raylet is up,
    no stage worker yet): the same promise as mid-run — exit 130, run.json ``interrupted``,
    nothing of the run left behind. (Before the fix: status stayed ``running`` and Ray's
    DashboardAgent/RuntimeEnvAgent outlived the CLI by about a minute.)"""
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
