"""Session fixtures shared across test modules.

``demo_subset`` and ``demo_reference``: the full demo pipeline (every stage of
``pipelines/demo.yaml``) on a small subset of the demo corpus (``fault_helpers.DEMO_SUBSET``), and
one uninterrupted ``granary run`` of it on an embedded local Ray. The beam and fault tests compare
their runs and releases with this one run instead of each making their own reference.

``fault_helpers`` is imported inside the fixtures: it registers test-only stages, which a test
session that never asks for these fixtures should not see.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import yaml


def pytest_configure(config) -> None:
    """Run the suite as from a terminal, where Ctrl-C raises: a runner started in the background (`make test &`)
    ignores SIGINT, and an ignored signal is inherited through exec, so every CLI the tests start and interrupt
    would ignore their Ctrl-C too."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
