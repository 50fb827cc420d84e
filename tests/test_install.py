"""The package works outside a checkout: a wheel built from this tree carries the pipelines, the
training configs, the demo corpus, the source catalog and the license registry, and from an empty
directory `granary run demo` runs the demo, `granary sources` lists the catalog and `granary train`
finds its default config.

The wheel is installed with ``--no-deps`` into a target directory that comes first on
``PYTHONPATH``: the dependencies are those of the test environment, but every file of
``granary_pipe`` comes from the wheel, not from this checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.e2e  # builds and installs a wheel, runs the demo from it

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True, timeout=300)
    return next(out.glob("granary_pipe-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    return target


def granary(installed: Path, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "granary_pipe.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_wheel_carries_the_bundled_data_and_the_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    demo = [n for n in names if n.startswith("granary_pipe/_data/demo/audio/")]
    listing = (ROOT / "manifests" / "demo" / "listing.jsonl").read_text().splitlines()
    assert len(demo) == len([ln for ln in listing if ln.strip()]), sorted(demo)
    for rel in ("pipelines/demo.yaml", "pipelines/granary-gpu.yaml", "pipelines/train-base.yaml",
                "pipelines/train-tiny.yaml", "demo/demo.yaml", "demo/listing.jsonl", "licenses.yaml",
                "catalog/voxpopuli-labelled.yaml", "report/report.css", "hallucinations/en.txt"):
        assert f"granary_pipe/_data/{rel}" in names, rel
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta
    assert "apache-beam" not in meta.split("Provides-Extra")[0].lower()  # beam is an extra, not a dependency
    assert "fasttext-numpy2" not in meta  # one provider of the `fasttext` module


def test_demo_runs_from_an_empty_directory(installed, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = granary(installed, empty, "run", "demo", "--out", "run", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["status"] == "complete" and not result["failed_units"]
    info = json.loads((empty / "run" / "run.json").read_text())
    assert info["source"]["manifest"].startswith(str(installed)), info["source"]["manifest"]
    kept = [r for f in (empty / "run").glob("units/*/kept.parquet") for r in pq.read_table(f).to_pylist()]
    assert {r["lang"] for r in kept} >= {"en", "de", "es", "it"}
    rel = granary(installed, empty, "release", "run", "--out", "rel", "-q")
    assert rel.returncode == 0, rel.stderr[-2000:]
    assert (empty / "rel" / "release.json").is_file()


def test_catalog_stages_and_train_config_from_an_empty_directory(installed, tmp_path):
    sources = granary(installed, tmp_path, "sources", "--json")
    assert sources.returncode == 0 and len(json.loads(sources.stdout)) >= 10, sources.stderr
    stages = granary(installed, tmp_path, "stages")
    assert stages.returncode == 0 and "asr.two_pass" in stages.stdout
    code = "from granary_pipe.train.config import DEFAULT_CONFIG, load_train_config; print(DEFAULT_CONFIG, load_train_config().model.d_model)"
    cfg = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(installed)})
    assert cfg.returncode == 0 and cfg.stdout.startswith(str(installed)), cfg.stdout + cfg.stderr
