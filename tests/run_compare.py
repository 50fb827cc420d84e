"""Compare a run (and the release cut from it) with a reference run, byte for byte.

Used by the fault and Beam tests against the shared uninterrupted demo run (``conftest.py``):
:func:`assert_same_units` for the run directory, :func:`assert_same_release` for ``granary
release`` of both runs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def release(run: Path, rel: Path) -> dict[str, str]:
    """``granary release RUN --out REL`` (2 rows per shard, every format); the release's :func:`tree_digest`."""
    out = subprocess.run([sys.executable, "-m", "granary_pipe.cli", "release", str(run), "--out", str(rel),
                          "--shard-rows", "2", "--formats", "all", "-q"], capture_output=True, text=True, cwd=ROOT,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return tree_digest(rel)


def assert_same_release(run: Path, ref_run: Path, tmp: Path, *, executor_differs: bool = False) -> dict[str, str]:
    """The release cut from ``run`` is byte-identical to the one cut from ``ref_run``: every shard
    (Parquet, WebDataset, NeMo, Lhotse Shar), ATTRIBUTION.md, README.md and release.json. With
    ``executor_differs`` release.json may differ in ``run.executor`` only (it records the engine
    that finished the run); every other byte of it must match. Returns the release's digest."""
    got, ref = release(run, tmp / "rel-got"), release(ref_run, tmp / "rel-ref")
    assert any(k.endswith(".tar") for k in got) and any(k.endswith(".parquet") for k in got), sorted(got)
    if executor_differs:
        a, b = (json.loads((tmp / d / "release.json").read_text()) for d in ("rel-got", "rel-ref"))
        assert a["run"].pop("executor") != b["run"].pop("executor")
        assert a == b, "release.json differs beyond run.executor"
        got.pop("release.json"), ref.pop("release.json")
    diff = {k: (got.get(k), ref.get(k)) for k in set(got) | set(ref) if got.get(k) != ref.get(k)}
    assert not diff, f"release files differ from the uninterrupted run's: {sorted(diff)}"
    return got


def assert_same_units(run: Path, ref: Path) -> None:
    """Every committed unit of ``run`` equals ``ref``'s: the same files, kept/rejected Parquet equal on
    every column and byte for byte, the same audio bytes, and the same commit markers but for
    ``stage_s`` (seconds each stage took)."""
    files = lambda r: sorted(str(p.relative_to(r)) for p in Path(r).glob("units/**/*") if p.is_file())  # noqa: E731
    assert files(run) == files(ref), set(files(run)) ^ set(files(ref))
    for rel in files(ref):
        a, b = Path(run) / rel, Path(ref) / rel
        if rel.endswith("_COMMITTED"):
            ma, mb = json.loads(a.read_text()), json.loads(b.read_text())
            ma.pop("stage_s"), mb.pop("stage_s")
            assert ma == mb, f"{rel} differs"
        elif rel.endswith(".parquet"):
            ta, tb = pq.read_table(a), pq.read_table(b)
            assert ta.schema == tb.schema, rel
            for col in tb.column_names:
                assert ta.column(col).equals(tb.column(col)), f"{rel}: column {col} differs"
            assert a.read_bytes() == b.read_bytes(), f"{rel}: same columns, different bytes"
        else:
            assert a.read_bytes() == b.read_bytes(), f"{rel}: different bytes"
