"""``granary release --out DIR``: it owns what it deletes, locks DIR, and a SIGKILL at any point loses
nothing, and two releases into one DIR do not collide.

Run as a user does: the CLI (in-process ``main`` where no process has to die, a subprocess where one
is paused or killed), real concurrent processes, a real SIGKILL. The kill at a chosen step of the
publish is made by the killed process itself (``_KILL_AT``: it counts the renames and removals in
DIR and sends itself SIGKILL before step K), so every moment of the publish can be hit.
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

from granary_pipe.cli import main
from granary_pipe.io.release_out import LOCK_NAME

try:
    from tests.helpers_rundir import make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import make_run

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "GRANARY_PROGRESS": "off"}


def _tree(root: Path, *, hidden: bool = True) -> dict[str, str]:
    """Every file under ``root`` → its sha256; ``hidden=False`` leaves out a release's lock and work
    directories (``.granary-release.lock``, ``.tmp-release-*``)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and (hidden or not p.relative_to(root).parts[0]
                                                                 .startswith((".tmp-release-", LOCK_NAME)))}


def _release(capsys, *args: str) -> tuple[int, str]:
    """``granary release ARGS -q`` in this process: (exit code, stderr)."""
    capsys.readouterr()
    code = main(["release", *args, "-q"])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def refs(run_dir, tmp_path_factory) -> dict[str, dict[str, str]]:
    """Reference trees: ``en`` (``--lang en``) and ``all`` (every language), built into fresh directories."""
    base = tmp_path_factory.mktemp("refs")
    for name, extra in (("en", ["--lang", "en"]), ("all", [])):
        assert main(["release", str(run_dir), "--out", str(base / name), "-q", *extra]) == 0
    return {name: _tree(base / name) for name in ("en", "all")}


# ------------------------------------------------------------------ ownership


def test_overwrite_refuses_a_folder_that_is_not_a_release(run_dir, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my notes\n")
    code, err = _release(capsys, str(run_dir), "--out", str(out), "--overwrite")
    assert code == 2 and "README.md" in err and "--overwrite" in err, err
    assert (out / "README.md").read_text() == "my notes\n" and sorted(os.listdir(out)) == ["README.md"]


def test_overwrite_refuses_a_release_holding_a_foreign_file(run_dir, refs, tmp_path, capsys):
    out = tmp_path / "rel"
    assert _release(capsys, str(run_dir), "--out", str(out), "--lang", "en")[0] == 0
    (out / "parquet" / "mydata.txt").write_text("keep me\n")
    before = _tree(out)
    code, err = _release(capsys, str(run_dir), "--out", str(out), "--overwrite")
    assert code == 2 and "parquet/mydata.txt" in err, err
    assert _tree(out) == before  # nothing touched: the earlier release and the user's file
    (out / "parquet" / "mydata.txt").unlink()
    assert _release(capsys, str(run_dir), "--out", str(out), "--overwrite")[0] == 0
    assert _tree(out) == refs["all"]  # a release's own files are replaced, no lock or work left


def test_overwrite_keeps_a_dataset_card_the_user_edited(run_dir, tmp_path, capsys):
    out = tmp_path / "rel"
    assert _release(capsys, str(run_dir), "--out", str(out))[0] == 0
    with open(out / "README.md", "a") as fh:
        fh.write("\nMy own paragraph.\n")
    code, err = _release(capsys, str(run_dir), "--out", str(out), "--overwrite")
    assert code == 2 and "README.md (changed since the release wrote it)" in err, err
    assert (out / "README.md").read_text().endswith("My own paragraph.\n")


@pytest.mark.parametrize("where", ["run", "other_run", "inside_run"])
def test_a_run_directory_is_never_the_release_output(run_dir, tmp_path, capsys, where):
    other = make_run(tmp_path, name="other")
    out = {"run": run_dir, "other_run": other, "inside_run": run_dir / "release"}[where]
    before = _tree(out.parent if where == "inside_run" else out)
    code, err = _release(capsys, str(run_dir), "--out", str(out), "--overwrite")
    assert code == 2 and "--out" in err and "run directory" in err, err
    assert _tree(out.parent if where == "inside_run" else out) == before
    assert main(["report", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "run"


def test_not_empty_names_the_flag_not_a_python_keyword(run_dir, tmp_path, capsys):
    out = tmp_path / "rel"
    assert _release(capsys, str(run_dir), "--out", str(out))[0] == 0
    code, err = _release(capsys, str(run_dir), "--out", str(out))
    assert code == 2 and "--overwrite" in err and "overwrite=True" not in err, err


# ------------------------------------------------------------------ lock


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "granary_pipe.cli", "release", *args, "-q"], env=ENV, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_release_into_the_same_out_exits_2_naming_the_first(run_dir, refs, tmp_path):
    out = tmp_path / "rel"
    first = _cli(str(run_dir), "--out", str(out), "--lang", "en", "--overwrite")
    deadline = time.monotonic() + 60
    while not list(out.glob(".tmp-release-*")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    first.send_signal(signal.SIGSTOP)  # at work in OUT: hold it there while the second one tries
    try:
        second = _cli(str(run_dir), "--out", str(out), "--overwrite")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert "another granary release is writing it" in err and f"pid {first.pid} on" in err, err
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert _tree(out) == refs["en"]  # the first one's release, untouched by the second


def test_two_releases_at_once_never_collide(run_dir, refs, tmp_path):
    out = tmp_path / "rel"
    procs = [_cli(str(run_dir), "--out", str(out), "--overwrite") for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code == 0 or (code == 2 and "another granary release is writing it" in err), err
        assert "No such file" not in err and "no such file" not in err, err
    assert 0 in [code for code, _ in results]
    assert _tree(out) == refs["all"]


# ------------------------------------------------------------------ SIGKILL during the publish

_KILL_AT = """
import os, shutil, signal, sys
from pathlib import Path
out, k = Path(sys.argv[1]).resolve(), int(sys.argv[2])
seen = [0]
def step(*paths):
    if any(Path(p).resolve().parent == out for p in paths):
        seen[0] += 1
        if seen[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
real_replace, real_rmtree = os.replace, shutil.rmtree
def replace(src, dst, *a, **kw):
    step(src, dst)
    return real_replace(src, dst, *a, **kw)
def rmtree(path, *a, **kw):
    step(path)
    return real_rmtree(path, *a, **kw)
os.replace, shutil.rmtree = replace, rmtree
from granary_pipe.cli import main
sys.exit(main(sys.argv[3:]))
"""
"""Run the CLI, SIGKILLed just before its K-th rename or removal of an entry of OUT (argv: OUT K ARGS)."""


def _killed_at(k: int, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _KILL_AT, str(out), str(k), "release", *args, "-q"], env=ENV,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("step", [2, 6, 10, 11, 12])
def test_sigkill_during_the_publish_keeps_the_previous_release(run_dir, refs, tmp_path, capsys, step):
    """The previous release (``--lang en``) is replaced by every language (``--overwrite``); a kill before
    step 2 (one entry moved aside), 6 (all five aside, none in), 10 (all in but release.json), 11 (the
    work directory's rename, after the commit) or 12 (its removal)."""
    out = tmp_path / "rel"
    assert _release(capsys, str(run_dir), "--out", str(out), "--lang", "en")[0] == 0
    killed = _killed_at(step, out, str(run_dir), "--out", str(out), "--overwrite")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    # the next command into OUT settles the publish first: the previous release back whole, or the new one
    code, err = _release(capsys, str(run_dir), "--out", str(out), "--lang", "en")
    assert code == 2 and "--overwrite" in err, err
    assert _tree(out, hidden=False) in (refs["en"], refs["all"]), sorted(_tree(out))
    if step <= 10:  # killed before its release.json went out: nothing of the previous release lost
        assert _tree(out, hidden=False) == refs["en"]

    assert _release(capsys, str(run_dir), "--out", str(out), "--overwrite")[0] == 0
    assert _tree(out) == refs["all"]  # resumed and published; no work directory, journal or lock left


@pytest.mark.parametrize("step", [2, 7])
def test_sigkill_of_a_first_release_then_the_same_command_finishes_it(run_dir, refs, tmp_path, capsys, step):
    """Into a new OUT (no --overwrite): killed before step 2 (one directory out) or 7 (the work
    directory's removal, after the commit); the same command run again completes the release, whatever
    was moved already (it does not refuse with "not empty")."""
    out = tmp_path / "rel"
    killed = _killed_at(step, out, str(run_dir), "--out", str(out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    code, err = _release(capsys, str(run_dir), "--out", str(out))
    assert code == 0, err
    assert _tree(out) == refs["all"]
    assert not (out / LOCK_NAME).exists() and not list(out.glob(".tmp-release-*"))
