"""Helpers for fault, bad-input and memory tests: run the CLI as a user does, watch and kill what it starts.

* ``start_cli(...)`` runs ``granary`` in a new session (``start_new_session=True``), so every
  process the run starts — driver, embedded Ray (GCS, raylet, agents) and the Ray workers, which
  move to process groups of their own but stay in the session — can be found by session id
  (``session_procs``) and cleaned up one by one (``kill_session``). Nothing else on the machine
  is touched: other engineers' Ray clusters live in other sessions. ``ray stop`` is never used.
* Test-only stages (``test.fail_on``, ``test.inflight_probe``) are registered when this module is
  imported. ``start_cli(..., test_stages=True)`` runs the CLI through ``python -c`` after importing
  this module, with ``tests/`` on ``PYTHONPATH`` so Ray workers (children of the embedded raylet,
  which inherits the driver's environment) can unpickle them. The product has no fake stage.
* ``RssSampler`` samples the resident memory of a session's processes from ``/proc`` (psutil is
  not in the venv).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import Field

from granary_pipe.registry import STAGES, register
from granary_pipe.stage import Stage

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
DEMO_DIR = ROOT / "manifests" / "demo"
DEMO_AUDIO = DEMO_DIR / "audio"

ASR_FREE_STAGES = [
    {"use": "audio.decode", "params": {"max_duration_s": 21600}, "resources": {"cpus": 0.25}},
    {"use": "license.gate", "resources": {"cpus": 0.25}},
    {"use": "segment.silero", "params": {"max_segment_s": 30, "min_silence_duration_ms": 500, "speech_pad_ms": 200},
     "resources": {"cpus": 0.25}},
]
"""decode → license gate → VAD: every recording is decoded, gated and segmented; no model but Silero."""


# ----------------------------------------------------------------------------- sources and pipelines

DEMO_SUBSET = ["en_01.flac", "en_02.opus", "en_nc_01.flac", "de_02.mp3", "it_03.mp3", "es_04.mp3",
               "noise_music_01.mp3", "en_04.mp3"]
"""8 short clips: 4 languages, the non-commercial clip (rejected by the license gate) and the music
clip (no speech), so kept and rejected rows both come from several stages."""

DEMO_SUBSET_UNITS = 4


def demo_run_args(subset: dict, out: Path, *extra: str, quiet: bool = True) -> list[str]:
    """``granary run`` arguments for the demo subset (``conftest.demo_subset``) into ``out``."""
    return ["run", str(subset["pipeline"]), "--source", str(subset["source"]), "--out", str(out),
            *(["-q"] if quiet else []), *extra]


def write_source(dirpath: Path, files: list[str | tuple[str, dict]], name: str = "faults",
                 license: str = "CC-BY-4.0", copy: bool = True) -> Path:
    """A source manifest with a JSONL listing under ``dirpath``.

    ``files``: demo file names (copied into ``dirpath/audio``) or ``(relative path, listing extras)``
    for files the caller already placed (or deliberately did not). Returns the manifest path."""
    dirpath = Path(dirpath)
    (dirpath / "audio").mkdir(parents=True, exist_ok=True)
    demo = {json.loads(x)["path"].split("/")[-1]: json.loads(x)
            for x in (DEMO_DIR / "listing.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()}
    lines = []
    for f in files:
        if isinstance(f, tuple):
            rel, extra = f
            lines.append({"path": rel, **extra})
            continue
        line = dict(demo[f])
        line["path"] = f"audio/{f}"
        if copy:
            (dirpath / "audio" / f).write_bytes((DEMO_AUDIO / f).read_bytes())
        lines.append(line)
    (dirpath / "listing.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines),
                                           encoding="utf-8")
    manifest = dirpath / "source.yaml"
    manifest.write_text(yaml.safe_dump({"name": name, "license": license, "listing": "listing.jsonl"}))
    return manifest


def write_pipeline(path: Path, stages: list[dict], *, per_unit: int, in_flight: int = 2, attempts: int = 2,
                   name: str = "faults") -> Path:
    cfg = {"name": name, "units": {"recordings_per_unit": per_unit, "max_in_flight": in_flight,
                                   "max_attempts": attempts}, "stages": stages}
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return Path(path)


# ----------------------------------------------------------------------------- processes

def start_cli(*args: str, log: Path, test_stages: bool = False, env: dict | None = None) -> subprocess.Popen:
    """Start ``granary ARGS`` in a new session; stdout+stderr go to ``log``."""
    environ = dict(os.environ)
    environ.pop("RAY_ADDRESS", None)  # always an embedded Ray of our own
    environ["PYTHONUNBUFFERED"] = "1"
    if test_stages:
        environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        cmd = [sys.executable, "-c",
               "import sys, fault_helpers; from granary_pipe.cli import main; sys.exit(main(sys.argv[1:]))", *args]
    else:
        cmd = [sys.executable, "-m", "granary_pipe.cli", *args]
    environ.update(env or {})
    return subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=environ)


def in_tmpfs(mnt: Path, options: str, cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``cmd`` with a tmpfs (mount ``options``, e.g. ``size=64k``) mounted at ``mnt``, in a private
    mount namespace (user namespace too, so it needs no root); the mount ends with ``cmd``."""
    mount = shutil.which("mount")
    assert mount, "mount is not installed (make setup installs it)"
    script = f'{mount} -t tmpfs -o {options} tmpfs "{mnt}" && exec "$@"'
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", *cmd],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()  # [state, ppid, pgrp, session, ...]


def session_procs(sid: int) -> list[int]:
    """PIDs of live (non-zombie) processes in session ``sid`` (the CLI's pid)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st and int(st[3]) == sid and st[0] != "Z":
                out.append(int(entry))
    return sorted(out)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def ps_title(pid: int) -> str:
    """What ``ps -o args`` shows for ``pid`` (Ray workers set it to ``ray::StageActor.run`` etc.)."""
    out = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True)
    return out.stdout.strip()


def stage_actors(sid: int) -> list[int]:
    """Ray actor processes of our ``StageActor`` class in session ``sid``."""
    return [p for p in session_procs(sid) if cmdline(p).startswith("ray::StageActor")]


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (the ones a CLI run we started has left)."""
    for _ in range(3):
        pids = session_procs(sid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def finish(proc: subprocess.Popen, timeout: float = 300) -> int:
    """Wait for a CLI run; then clean up anything left in its session."""
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_session(proc.pid)


def cleanup(proc: subprocess.Popen) -> None:
    """Kill a CLI run we started (if still running) and whatever its session left."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    kill_session(proc.pid)


def stop_with(proc: subprocess.Popen, sig: int, grace_s: float = 10.0) -> tuple[int, float, dict[int, str]]:
    """Send ``sig`` to a CLI run, wait for it to exit, then up to ``grace_s`` for its session to
    empty. Returns (exit code, seconds to exit, ``{pid: title}`` of processes still alive)."""
    os.kill(proc.pid, sig)
    t0 = time.time()
    rc = proc.wait(timeout=60)
    stop_s = time.time() - t0
    deadline = time.time() + grace_s
    while session_procs(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    return rc, stop_s, {p: ps_title(p) for p in session_procs(proc.pid)}


def wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 240, every: float = 0.05):
    """Poll ``predicate()`` until truthy; fail if the CLI exits first or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        assert proc.poll() is None, f"run ended (rc={proc.returncode}) before the moment to strike:\n" \
                                    + Path(log).read_text()[-3000:]
        time.sleep(every)
    raise AssertionError(f"timed out waiting:\n{Path(log).read_text()[-3000:]}")


def committed(run: Path) -> list[str]:
    return sorted(p.parent.name for p in Path(run).glob("units/*/_COMMITTED"))


def marker_mtimes(run: Path) -> dict[str, int]:
    return {u: (Path(run) / "units" / u / "_COMMITTED").stat().st_mtime_ns for u in committed(run)}


# ----------------------------------------------------------------------------- run contents

ROW_KEYS = ("id", "recording_id", "offset_s", "duration_s", "lang", "text", "drop_reason", "license")


def rows(run: Path, which: str) -> list[dict]:
    return [r for f in sorted(Path(run).glob(f"units/*/{which}.parquet")) for r in pq.read_table(f).to_pylist()]


def row_set(run: Path, which: str) -> set[tuple]:
    return {tuple(r[k] for k in ROW_KEYS) for r in rows(run, which)}


def assert_same_rows(run: Path, ref: Path) -> None:
    """Kept and rejected row sets equal the reference run's; no row twice."""
    for which in ("kept", "rejected"):
        got = rows(run, which)
        ids = [r["id"] for r in got]
        assert len(ids) == len(set(ids)), f"duplicate {which} rows"
        assert row_set(run, which) == row_set(ref, which), f"{which} rows differ from the uninterrupted run"
    kept_ids = {r["id"] for r in rows(run, "kept")}
    assert not kept_ids & {r["id"] for r in rows(run, "rejected")}, "a row is both kept and rejected"


def run_json(run: Path) -> dict:
    return json.loads((Path(run) / "run.json").read_text())


# ----------------------------------------------------------------------------- memory

@dataclass
class RssSampler:
    """Samples resident memory of session ``sid`` every ``every_s`` seconds in a thread.

    Per sample: ``tree_rss`` (sum of VmRSS; shared pages such as Ray's object store count once
    per process that maps them), ``tree_pss`` (sum of Pss from smaps_rollup: shared pages split
    between their users, so the sum is the tree's real footprint), ``driver`` (VmRSS of the CLI
    process), ``worker_max`` (largest VmRSS of a ``ray::`` worker, object-store pages it maps
    included) and ``worker_anon`` (largest private RssAnon of a worker). All in MiB."""

    sid: int
    every_s: float = 0.2
    samples: list[dict] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @staticmethod
    def _kib(path: str, key: str) -> int:
        try:
            with open(path) as fh:
                for line in fh:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def sample(self) -> dict:
        rss = pss = worker_max = worker_anon = 0
        driver = 0
        procs = session_procs(self.sid)
        for pid in procs:
            r = self._kib(f"/proc/{pid}/status", "VmRSS:")
            rss += r
            pss += self._kib(f"/proc/{pid}/smaps_rollup", "Pss:")
            if pid == self.sid:
                driver = r
            elif cmdline(pid).startswith("ray::"):
                worker_max = max(worker_max, r)
                worker_anon = max(worker_anon, self._kib(f"/proc/{pid}/status", "RssAnon:"))
        return {"t": time.time(), "procs": len(procs), "tree_rss": rss / 1024, "tree_pss": pss / 1024,
                "driver": driver / 1024, "worker_max": worker_max / 1024, "worker_anon": worker_anon / 1024}

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.every_s)

    def __enter__(self) -> "RssSampler":
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, key: str) -> float:
        return max((s[key] for s in self.samples), default=0.0)


# ----------------------------------------------------------------------------- test-only stages

def _register_once(name: str):
    def wrap(cls):
        return STAGES[name] if name in STAGES else register(name)(cls)
    return wrap


@_register_once("test.fail_on")
class FailOn(Stage):
    """Raises (a real exception in a real Ray task) on any batch holding a recording whose path
    contains ``path_contains``, for as long as ``while_file`` exists. Test-only."""

    path_contains: str
    while_file: str

    def process(self, active: pa.Table) -> pa.Table:
        paths = active.column("audio_path").to_pylist()
        hit = [p for p in paths if self.path_contains in p]
        if hit and os.path.exists(self.while_file):
            raise RuntimeError(f"injected fault: {os.path.basename(hit[0])} while {self.while_file} exists")
        return active


@_register_once("test.inflight_probe")
class InFlightProbe(Stage):
    """Writes ``DIR/UNIT.start`` (time the unit's first stage ran) and passes rows on. Test-only."""

    dir: str
    delay_s: float = Field(0.0, ge=0)

    def process(self, active: pa.Table) -> pa.Table:
        units = set(active.column("unit").to_pylist())
        for u in units:
            p = Path(self.dir) / f"{u}.start"
            if not p.exists():
                p.write_text(repr(time.time()))
        if self.delay_s:
            time.sleep(self.delay_s)
        return active


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Largest number of ``[start, end]`` intervals open at one time."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


@_register_once("test.worker_probe")
class WorkerProbe(Stage):
    """An actor stage that writes ``DIR/UNIT.json`` (its pid and the Whisper thread default it
    sees) and sleeps ``slow_s`` on the units in ``slow_units``. Test-only."""

    actor = True

    dir: str
    slow_units: list[str] = Field(default_factory=list)
    slow_s: float = Field(0.0, ge=0)

    def process(self, active: pa.Table) -> pa.Table:
        from granary_pipe.stages.asr.whisper_runtime import default_threads

        for u in set(active.column("unit").to_pylist()):
            info = {"pid": os.getpid(), "threads": default_threads(), "t": time.time()}
            (Path(self.dir) / f"{u}.json").write_text(json.dumps(info))
            if u in self.slow_units:
                time.sleep(self.slow_s)
        return active
