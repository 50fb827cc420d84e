"""``granary run`` submitted to a Ray cluster through Ray's Jobs API; its status and logs.

Design: docs/architecture.md, "Jobs".
"""

from __future__ import annotations

import asyncio
import functools
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TextIO

import granary_pipe
from granary_pipe.retry import backoff_delay

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
AGENT_WAIT_S = 300.0
"""How long a submission waits for a new cluster's job agent to come up."""
UPLOAD_EXCLUDES = [".git", ".venv", ".venv-*", "**/__pycache__", "demo-out", "*.egg-info", ".pytest_cache"]


def auth_token() -> str | None:
    """Ray's auth token: ``$RAY_AUTH_TOKEN``, the file at ``$RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return path.read_text().strip() if path.is_file() else None


def _client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    from granary_pipe.executors.ray_address import check_dashboard

    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    url = address or os.environ.get("RAY_JOB_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    if url.startswith(("http://", "https://")):
        check_dashboard(url)  # one clear line instead of Ray's retries
    return JobSubmissionClient(url, headers=headers)


def submit(pipeline: str, source: str, out: str, *, address: str | None = None, working_dir: Path | None = None,
           upload_package: bool = True, entrypoint_num_cpus: float = 0.5, job_id: str | None = None,
           extra_args: list[str] | None = None) -> str:
    """Submit ``granary run`` as a Ray job; returns the submission id. ``pipeline`` and ``source``: paths
    relative to ``working_dir`` (uploaded with the job); ``out``: a path every node sees."""
    working_dir = Path(working_dir or Path.cwd()).resolve()
    # no -q: the job's log gets one progress line per committed unit (its stderr is not a terminal)
    args = ["run", pipeline, "--source", source, "--out", out, *(extra_args or [])]
    runtime_env: dict = {"working_dir": str(working_dir), "excludes": UPLOAD_EXCLUDES,
                         "env_vars": {"PYTHONUNBUFFERED": "1"}}
    if upload_package:
        runtime_env["py_modules"] = [str(Path(granary_pipe.__file__).parent)]
    client = _client(address)
    submit_job = functools.partial(
        client.submit_job,
        entrypoint="python -m granary_pipe.cli " + " ".join(shlex.quote(a) for a in args),
        runtime_env=runtime_env,
        entrypoint_num_cpus=entrypoint_num_cpus,
        submission_id=job_id,
        metadata={"granary_pipe": granary_pipe.__version__, "pipeline": pipeline, "source": source, "out": out},
    )
    deadline = time.monotonic() + AGENT_WAIT_S
    attempt = 0
    while True:
        try:
            return submit_job()
        except RuntimeError as exc:  # a fresh cluster's job agent may not be up yet
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(backoff_delay(attempt, 1.0, 10.0))
            attempt += 1


def status(job_id: str, address: str | None = None) -> dict:
    """Status, message and timing of a job."""
    info = _client(address).get_job_info(job_id)
    return {"job_id": job_id, "status": str(info.status.value if hasattr(info.status, "value") else info.status),
            "message": info.message, "entrypoint": info.entrypoint, "start_time": info.start_time,
            "end_time": info.end_time, "metadata": info.metadata}


def logs(job_id: str, address: str | None = None, follow: bool = False, out: TextIO | None = None) -> str | None:
    """A job's driver log; with ``follow`` stream it to ``out`` (stdout) until the job ends."""
    client = _client(address)
    if not follow:
        return client.get_job_logs(job_id)

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            print(chunk, end="", flush=True, file=out or sys.stdout)

    asyncio.run(_tail())
    return None


def wait(job_id: str, address: str | None = None, timeout_s: float = 3600, poll_s: float = 1.0) -> str:
    """Block until the job reaches a terminal state; returns it (SUCCEEDED, FAILED, STOPPED)."""
    from ray.job_submission import JobStatus

    client = _client(address)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        state = client.get_job_status(job_id)
        if state in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            return str(state.value)
        time.sleep(poll_s)
    raise TimeoutError(f"job {job_id} still running after {timeout_s:g} s")
