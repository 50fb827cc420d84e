"""Session fixtures shared across test modules.

``demo_subset`` and ``demo_reference``: the full demo pipeline (every stage of
``pipelines/demo.yaml``) on a small subset of the demo corpus (``fault_helpers.DEMO_SUBSET``), and
one uninterrupted ``granary run`` of it on an embedded local Ray. The beam and fault tests compare
their runs and releases with this one run instead of each making their own reference.

``fault_helpers`` is imported inside the fixtures: it registers test-only stages, which a test
session that never asks for these fixtures should not see.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="session")
def demo_subset(tmp_path_factory) -> dict:
    """``{"source", "pipeline"}``: the subset's manifest and the demo pipeline with 2 recordings per
    unit and 2 units in flight (so a run has committed units while others are still in ASR)."""
    from fault_helpers import DEMO_SUBSET, ROOT, write_source

    d = tmp_path_factory.mktemp("demo-subset")
    cfg = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    cfg["units"].update(recordings_per_unit=2, max_in_flight=2)
    pipeline = d / "demo-subset.yaml"
    pipeline.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return {"source": write_source(d / "src", DEMO_SUBSET, name="demo"), "pipeline": pipeline}


@pytest.fixture(scope="session")
def demo_reference(tmp_path_factory, demo_subset) -> Path:
    """One uninterrupted Ray run of the demo subset (the directory is named ``run`` like every run it
    is compared with, since a release records the run's directory name)."""
    from fault_helpers import DEMO_SUBSET_UNITS, demo_run_args, finish, run_json, start_cli

    out = tmp_path_factory.mktemp("demo-reference") / "run"
    log = out.parent / "run.log"
    rc = finish(start_cli(*demo_run_args(demo_subset, out), log=log), timeout=400)
    assert rc == 0, log.read_text()[-3000:]
    info = run_json(out)
    assert info["status"] == "complete" and info["units_total"] == DEMO_SUBSET_UNITS, info["unit_errors"]
    return out
