"""``granary transcribe`` on hostile inputs, through the real CLI in a subprocess.

A FIFO (real, ``os.mkfifo``, no writer), a symlink loop, a missing path, a directory, a 0-byte
file, a WAV header without samples and random bytes named ``.wav`` sit among a good clip of the
bundled demo corpus: each bad file is one stderr line with its cause, the good ones are
transcribed, and the exit is 1. The subprocess has a timeout, so a hang fails the test instead of
blocking the session.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from granary_pipe.cli import main

try:
    from tests.test_train_fixtures import tiny_release  # noqa: F401 (fixture)
    from tests.test_train_loop import TINY_YAML
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from test_train_fixtures import tiny_release  # noqa: F401
    from test_train_loop import TINY_YAML

REPO = Path(__file__).resolve().parents[1]
GOOD = REPO / "granary_pipe" / "_data" / "demo" / "audio" / "en_06.flac"
TIMEOUT_S = 180  # generous: a cold start imports torch; the FIFO hung forever before


@pytest.fixture(scope="module")
def checkpoint(tiny_release, tmp_path_factory) -> Path:
    """A one-step model trained by ``granary train`` on the tiny release (its directory)."""
    out = tmp_path_factory.mktemp("transcribe-model") / "model"
    assert main(["train", "--data", str(tiny_release), "--out", str(out), "--config", str(TINY_YAML),
                 "--max-steps", "1", "-q", "--set", "train.threads=1", "--set", "data.loader_workers=0",
                 "--set", "tokenizer.model_type=char"]) == 0
    return out


def _transcribe(checkpoint: Path, *paths: Path, json_out: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "granary_pipe.cli", "transcribe", "--checkpoint", str(checkpoint),
           "--device", "cpu", *map(str, paths), *(["--json"] if json_out else [])]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT_S,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"granary transcribe hung (no answer in {TIMEOUT_S} s) on {[p.name for p in paths]}")


def _stderr_line(proc: subprocess.CompletedProcess, path: Path) -> str:
    lines = [line for line in proc.stderr.splitlines() if str(path) in line]
    assert len(lines) == 1, f"expected one stderr line naming {path}, got {lines}; stderr:\n{proc.stderr}"
    return lines[0]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    """Every kind of bad input, by name (the FIFO is made by its own test)."""
    d = tmp_path_factory.mktemp("hostile")
    empty = d / "empty.wav"
    empty.write_bytes(b"")
    header = d / "header.wav"  # a valid WAV header and no samples: decoded to nothing
    sf.write(header, np.zeros(0, np.float32), 16000)
    noise = d / "noise.wav"
    noise.write_bytes(random.Random(0).randbytes(8192))
    loop = d / "loop.wav"
    loop.symlink_to(loop.name)  # loop.wav -> loop.wav
    folder = d / "clips.wav"
    folder.mkdir()
    return {"empty": empty, "header": header, "noise": noise, "loop": loop, "folder": folder,
            "missing": d / "missing.wav"}


def test_a_fifo_is_refused_without_hanging_and_the_good_clip_is_transcribed(checkpoint, tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)  # nobody ever writes: opening it for reading blocks forever
    proc = _transcribe(checkpoint, fifo, GOOD)
    assert proc.returncode == 1, proc.stderr
    assert "FIFO" in _stderr_line(proc, fifo)
    assert proc.stdout.splitlines()[0].startswith(f"{GOOD}\t"), proc.stdout


def test_each_bad_file_is_reported_with_its_cause_and_the_good_one_transcribed(checkpoint, hostile):
    order = [hostile["empty"], GOOD, hostile["missing"], hostile["folder"], hostile["loop"], hostile["noise"],
             hostile["header"]]
    proc = _transcribe(checkpoint, *order)
    assert proc.returncode == 1, proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == [str(GOOD)], proc.stdout
    causes = {"empty": "empty file", "missing": "no such file", "folder": "not a regular file (directory)",
              "loop": "symlink loop", "noise": "not decodable audio", "header": "no audio samples"}
    for name, cause in causes.items():
        assert cause in _stderr_line(proc, hostile[name]), proc.stderr
    assert "6 of 7 files failed" in proc.stderr.splitlines()[-1]


def test_json_gives_one_object_per_file_with_the_error(checkpoint, hostile):
    proc = _transcribe(checkpoint, GOOD, hostile["empty"], json_out=True)
    assert proc.returncode == 1, proc.stderr
    good, bad = [json.loads(line) for line in proc.stdout.splitlines()]
    assert good["audio"] == str(GOOD) and isinstance(good["text"], str) and "error" not in good
    assert bad == {"audio": str(hostile["empty"]), "error": "empty file"}


def test_an_empty_file_alone_is_an_error_not_empty_text(checkpoint, hostile):
    proc = _transcribe(checkpoint, hostile["empty"])
    assert proc.returncode == 1 and proc.stdout == "", (proc.stdout, proc.stderr)
    assert "empty file" in _stderr_line(proc, hostile["empty"])
