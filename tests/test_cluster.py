"""A real two-node Ray cluster on loopback: `ray start --head` and `ray start --address` as
separate processes, each with its own CPUs and custom resource, token auth on. A run submitted
through the Jobs API (`granary submit`) must give the same rows as a local run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from granary_pipe.report.summary import summarize
from granary_pipe.report.text import format_summary

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "manifests" / "demo"
FILES = ["en_01.flac", "de_04.wav", "it_02.flac", "es_04.mp3", "noise_music_01.mp3", "en_nc_01.flac"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def cluster():
    """Head (1 CPU, resource head_node) + worker (2 CPUs, resource worker_node), torn down by process group."""
    token = secrets.token_hex(16)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
           # `ray start --block` drains a node for up to 30 s on SIGTERM (for Serve); nothing here to drain
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
           # the cluster's `python` (job entrypoints run through it) is this environment's
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    tmp = Path(tempfile.mkdtemp(prefix="gpray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    gcs, dash = free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(
            [ray_bin(), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=1",
             "--resources", json.dumps({"head_node": 1}), "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={tmp}",
             "--disable-usage-stats"],
            env=env, stdout=open(tmp / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
        address = f"http://127.0.0.1:{dash}"
        _wait_for_dashboard(dash, tmp / "head.log")
        procs.append(subprocess.Popen(
            [ray_bin(), "start", "--block", f"--address=127.0.0.1:{gcs}", "--num-cpus=2",
             "--resources", json.dumps({"worker_node": 1}), "--disable-usage-stats"],
            env=env, stdout=open(tmp / "worker.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for_nodes(address, token, 2, tmp)
        yield {"address": address, "token": token, "env": env}
    finally:
        for p in reversed(procs):  # both nodes told at once: a worker waits for the head it loses otherwise
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in reversed(procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_for_dashboard(port: int, log: Path, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"head node did not start:\n{log.read_text()[-3000:]}")


def _wait_for_nodes(address: str, token: str, n: int, tmp: Path, timeout: float = 90) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            r = requests.get(f"{address}/nodes?view=summary", headers={"Authorization": f"Bearer {token}"}, timeout=5)
            alive = [x for x in r.json()["data"]["summary"] if x.get("raylet", {}).get("state") == "ALIVE"]
            if len(alive) >= n:
                return
        except (requests.RequestException, KeyError, ValueError):
            pass
        time.sleep(1)
    raise RuntimeError(f"cluster did not reach {n} nodes:\n{(tmp / 'worker.log').read_text()[-3000:]}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A job working dir: a small source (absolute audio paths) and a pipeline pinning the
    model stages to the worker node through its custom resource."""
    d = tmp_path_factory.mktemp("job")
    lines = [json.loads(x) for x in (DEMO / "listing.jsonl").read_text().splitlines() if x.strip()]
    keep = [dict(x, path=str(DEMO / x["path"])) for x in lines if Path(x["path"]).name in FILES]
    (d / "listing.jsonl").write_text("".join(json.dumps(x) + "\n" for x in keep))
    (d / "source.yaml").write_text("name: clusterdemo\nlicense: CC-BY-4.0\nlisting: listing.jsonl\n"
                                   "allow_outside_root: true\n")  # the audio stays in the demo corpus
    cfg = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    cfg["units"]["recordings_per_unit"] = 3
    for stage in cfg["stages"]:
        if stage["use"].startswith("asr."):
            stage["resources"] = {"cpus": 0.5, "custom": {"worker_node": 0.5}}
    (d / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for stage in cfg["stages"]:
        stage.get("resources", {}).pop("custom", None)  # the local run has no worker_node resource
    (d / "pipeline-local.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return d


def row_set(run: Path, which: str) -> set[tuple]:
    keys = ("id", "offset_s", "duration_s", "lang", "text", "drop_reason")
    return {tuple(r[k] for k in keys) for f in sorted(run.glob(f"units/*/{which}.parquet"))
            for r in pq.read_table(f).to_pylist()}


def cli(*args: str, env: dict | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "granary_pipe.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def test_job_on_two_node_cluster_equals_local_run(cluster, workdir, tmp_path):
    env = {k: v for k, v in cluster["env"].items() if k != "RAY_AUTH_MODE"}
    out = tmp_path / "cluster-run"
    sub = cli("submit", "pipeline.yaml", "--source", "source.yaml", "--out", str(out), "--working-dir", str(workdir),
              "--dashboard", cluster["address"], "--wait", env=env)
    assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
    job = sub.stdout.strip().splitlines()[0]
    units = -(-len(FILES) // 3)
    progress = [f"demo: {k}/{units} units ({100 * k // units}%)" for k in range(1, units + 1)]
    assert all(p in sub.stdout for p in progress), sub.stdout[-3000:]  # --wait shows one line per unit
    st = cli("status", job, "--dashboard", cluster["address"], "--json", env=env)
    assert st.returncode == 0 and json.loads(st.stdout)["status"] == "SUCCEEDED", st.stdout + st.stderr
    logs = cli("logs", job, "--dashboard", cluster["address"], env=env)
    assert logs.returncode == 0 and not logs.stderr.strip(), logs.stderr
    # the job's own output, in order: one progress line per unit, then the run's summary as the
    # run directory gives it now (rows, recordings, retention), printed once
    lines = logs.stdout.splitlines()
    at = [next((i for i, ln in enumerate(lines) if ln.startswith(p)), None) for p in progress]
    assert None not in at and at == sorted(at), logs.stdout[-3000:]
    summary = format_summary(summarize(out), color=False)
    assert logs.stdout.count(summary) == 1, f"summary not in the log:\n{summary}\n---\n{logs.stdout[-3000:]}"
    assert logs.stdout.index(summary) > logs.stdout.index(progress[-1])

    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    no_token["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "no-such-token")
    denied = cli("status", job, "--dashboard", cluster["address"], env=no_token)
    assert denied.returncode != 0, "token auth must stay on"

    local = tmp_path / "local-run"
    run = cli("run", str(workdir / "pipeline-local.yaml"), "--source", str(workdir / "source.yaml"), "--out", str(local),
              "-q", env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert run.returncode == 0, run.stderr[-3000:]
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete"
    for which in ("kept", "rejected"):
        assert row_set(out, which) == row_set(local, which) != set()


def test_stage_needing_a_resource_no_node_has_fails_fast(tmp_path):
    """Ray would wait forever for such an actor; the executor says what is missing instead."""
    cfg = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    for stage in cfg["stages"]:
        if stage["use"] == "asr.two_pass":
            stage["resources"] = {"cpus": 0.5, "custom": {"big_gpu_box": 1}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = cli("run", str(tmp_path / "p.yaml"), "--source", str(DEMO / "demo.yaml"), "--out", str(tmp_path / "run"),
              "-q", env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, timeout=180)
    assert out.returncode != 0
    assert "asr.two_pass needs big_gpu_box=1" in out.stderr
