"""A run directory that stops taking files: a full disk, a read-only one, no permission.

Each ends ``granary run`` with one line naming the file and the cause (the errno's text, not a
codec's "System error"), ``run.json`` marked ``failed`` with that error (where the disk still takes
it), no temporary file left, committed units untouched, and a rerun that resumes once the disk
takes files again. Before: a 40-line traceback, the unit error named the FLAC encoder, run.json
stayed ``running`` and ``.tmp-`` directories stayed behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fault_helpers import (
    ASR_FREE_STAGES, ROOT, committed, finish, in_tmpfs, marker_mtimes, run_json, start_cli, write_pipeline,
    write_source,
)

pytestmark = pytest.mark.e2e

FILES = ["en_01.flac", "en_02.opus", "en_03.flac", "en_04.mp3", "en_05.flac", "en_06.flac"]
"""Three units of two; the FLAC of u000000 + u000001 (about 400 kB) fits in 600k, u000002's does not."""


def temporaries(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in Path(run).rglob("*") if ".tmp-" in p.name)


def error_line(log: str) -> str:
    lines = [ln for ln in log.splitlines() if ln.strip() and "WARNING" not in ln]
    assert "Traceback" not in log, log[-3000:]
    assert len(lines) == 1, log[-3000:]
    assert lines[0].startswith("granary run: error: "), lines[0]
    return lines[0]


STEPS = r'''
import json, shutil, subprocess, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from fault_helpers import finish, start_cli
mnt, tmp, args = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
out, result = mnt / "out", {}

def step(name):
    log = tmp / f"{name}.log"
    result[name] = finish(start_cli(*args, "--out", str(out), "-q", log=log))
    shutil.copytree(out, tmp / name, symlinks=True)

step("full")
subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
step("readonly")
subprocess.run(["mount", "-o", "remount,rw,size=64m", str(mnt)], check=True)
step("resumed")
(tmp / "rc.json").write_text(json.dumps(result))
'''


def test_full_then_read_only_disk_then_resume(tmp_path):
    source = write_source(tmp_path / "src", FILES)
    pipeline = write_pipeline(tmp_path / "p.yaml", ASR_FREE_STAGES, per_unit=2, in_flight=1)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = ["run", str(pipeline), "--source", str(source)]
    done = in_tmpfs(mnt, "size=600k", [sys.executable, "-c", STEPS, str(ROOT / "tests"), str(mnt), str(tmp_path),
                                       *args], timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    rc = json.loads((tmp_path / "rc.json").read_text())
    out = mnt / "out"

    full = tmp_path / "full"
    log = (tmp_path / "full.log").read_text()
    assert rc["full"] == 2, log[-3000:]
    line = error_line(log)
    assert "no space left on device" in line.lower() and str(out) in line, line
    info = run_json(full)
    assert info["status"] == "failed", info["status"]
    assert "No space left on device" in info["error"] and str(out) in info["error"], info["error"]
    assert "System error" not in json.dumps(info), "a unit error names the codec instead of the disk"
    assert temporaries(full) == [], "temporary files left after the failed run"
    assert 1 <= len(committed(full)) < 3, committed(full)
    before = marker_mtimes(full)

    log = (tmp_path / "readonly.log").read_text()
    assert rc["readonly"] == 2, log[-3000:]
    line = error_line(log)
    assert "read-only file system" in line.lower() and str(out) in line, line
    assert marker_mtimes(tmp_path / "readonly") == before

    resumed = tmp_path / "resumed"
    assert rc["resumed"] == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert run_json(resumed)["status"] == "complete" and committed(resumed) == ["u000000", "u000001", "u000002"]
    assert {u: t for u, t in marker_mtimes(resumed).items() if u in before} == before, "committed units redone"
    assert temporaries(resumed) == []


@pytest.fixture
def immutable():
    """``chattr +i`` on directories (as root; mode 0555 otherwise), undone afterwards."""
    done: list[Path] = []

    def apply(d: Path) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i", str(d)], check=True)
        else:
            d.chmod(0o555)
        done.append(d)

    yield apply
    for d in done:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(d)], check=True)
        d.chmod(0o755)


def test_no_permission_to_write_a_unit_fails_the_run_in_one_line(tmp_path, immutable):
    source = write_source(tmp_path / "src", FILES[:4])
    pipeline = write_pipeline(tmp_path / "p.yaml", ASR_FREE_STAGES, per_unit=2, in_flight=1)
    out = tmp_path / "run"
    args = ["run", str(pipeline), "--source", str(source), "--out", str(out), "-q"]
    assert finish(start_cli(*args, log=tmp_path / "first.log")) == 0, (tmp_path / "first.log").read_text()[-3000:]
    subprocess.run(["rm", "-r", str(out / "units" / "u000001")], check=True)  # one unit to do again
    before = marker_mtimes(out)
    immutable(out / "units")

    rc = finish(start_cli(*args, log=tmp_path / "denied.log"))
    log = (tmp_path / "denied.log").read_text()
    assert rc == 2, log[-3000:]
    line = error_line(log)
    assert ("operation not permitted" in line.lower() or "permission denied" in line.lower()), line
    assert str(out / "units") in line, line
    info = run_json(out)
    assert info["status"] == "failed" and str(out / "units") in info["error"], info
    assert marker_mtimes(out) == before and temporaries(out) == []
