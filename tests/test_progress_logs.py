"""Progress of every command that has some (release, train, verify, download), run as a user runs it
with its output going to a log (a pipe): plain lines, never a carriage return, and a bounded number
of them (a tenth of the work or ``LINES_EVERY_S`` seconds per line, plus the last one), not one per
step (no tqdm bar, ``\\r`` by the thousand, in a log)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from granary_pipe.progress import LINES_EVERY_S, Progress

try:
    from tests.helpers_rundir import Row, make_run
    from tests.test_train_fixtures import tiny_release  # noqa: F401 (fixture)
    from tests.test_train_loop import TINY_YAML
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import Row, make_run
    from test_train_fixtures import tiny_release  # noqa: F401
    from test_train_loop import TINY_YAML

ROOT = Path(__file__).resolve().parents[1]
SHARDS = 40
"""Shards of the test release (one row each): a line per shard would break the bound."""


def _cli(*args: str) -> tuple[bytes, float]:
    """Run ``granary ARGS`` with stdout and stderr to pipes, as under nohup, CI or a Ray job; returns
    (stderr, seconds it ran). The command must succeed."""
    env = {k: v for k, v in os.environ.items() if k != "GRANARY_PROGRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "granary_pipe.cli", *args], capture_output=True, env=env,
                         cwd=ROOT, timeout=300, stdin=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    assert out.returncode == 0, (out.stdout + out.stderr).decode(errors="replace")[-3000:]
    return out.stderr, wall


def _check_lines(err: bytes, wall: float, desc: str) -> list[str]:
    """No carriage return; progress lines of ``desc``, at most one per tenth or per LINES_EVERY_S
    seconds of the command's run, plus the first and the last; the last one says 100%."""
    assert b"\r" not in err, f"a terminal bar went into the log: {err[:600]!r}"
    lines = [ln for ln in err.decode().splitlines() if ln.startswith(f"{desc}: ")]
    assert lines, err.decode()[-2000:]
    bound = 12 + wall / LINES_EVERY_S
    assert len(lines) <= bound, f"{len(lines)} progress lines in {wall:.0f} s (at most {bound:.0f}):\n" + \
        "\n".join(lines)
    assert "(100%)" in lines[-1], lines
    return lines


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, bytes, float]:
    """A release of SHARDS one-row shards cut by the real CLI: (its directory, the CLI's stderr,
    seconds it ran)."""
    tmp = tmp_path_factory.mktemp("progress-logs")
    rows = [Row(f"rec{k:02d}-s000", f"rec{k:02d}", "en", 0.5) for k in range(SHARDS)]
    run = make_run(tmp, {"u000000": rows[:SHARDS // 2], "u000001": rows[SHARDS // 2:]}, uncommitted={}, failed={})
    rel = tmp / "rel"
    err, wall = _cli("release", str(run), "--out", str(rel), "--shard-rows", "1", "--formats", "parquet")
    return rel, err, wall


def test_release_writes_plain_lines_into_a_log(release):
    _, err, wall = release
    lines = _check_lines(err, wall, "release")
    assert f"/{SHARDS} shards" in lines[-1], lines


def test_verify_and_download_write_plain_lines_into_a_log(release, tmp_path):
    rel = release[0]
    _check_lines(*_cli("verify", str(rel)), "verify")
    _check_lines(*_cli("download", str(rel), "--out", str(tmp_path / "dl")), "download")


def test_train_writes_plain_lines_into_a_log(tiny_release, tmp_path):
    err, wall = _cli("train", "--data", str(tiny_release), "--out", str(tmp_path / "out"), "--config", str(TINY_YAML),
                     "--max-steps", "30", "--set", "train.log_every=10", "--set", "train.threads=1",
                     "--set", "data.loader_workers=0", "--set", "train.eval_every=1000",
                     "--set", "tokenizer.model_type=char")
    lines = _check_lines(err, wall, "train")
    assert "30/30 steps" in lines[-1] and "loss " in lines[-1], lines


def test_lines_come_per_tenth_or_per_interval_and_the_end_once(tmp_path):
    """A server that sends more than it announced: the 100 % line once, not one per chunk."""
    log = tmp_path / "log"
    with open(log, "w") as stream:
        bar = Progress(1000, desc="download", unit="B", every_s=3600, stream=stream)
        for _ in range(1000):
            bar.update(1)
        for _ in range(5000):  # past the total
            bar.update(1)
        bar.close()
    lines = log.read_text().splitlines()
    assert len(lines) == 12, lines  # the first, one per tenth (the tenth is the end) and the last where it ended
    assert sum("(100%)" in ln for ln in lines) == 1, lines
