"""Release writing and download + verify throughput, each against a plain copy of the same bytes.

    python benchmarks/release_and_download.py [--minutes 60] [--formats parquet,wds,nemo,lhotse_shar]

1. **Run.** ``granary run benchmarks/bench-pipeline.yaml`` over the demo corpus (real ASR and
   filters). Its committed units are then re-committed through the pipeline's own sink under new
   unit and row ids until the run holds about ``--minutes`` of kept speech, so the release is big
   enough to time without hours of CPU ASR.
2. **Release.** ``granary release`` (all ``--formats``), timed as a user runs it. Baseline, same
   run: ``shutil.copytree`` of the finished release — the same bytes written by a plain copy.
   Figures: MB/s of release output and its ratio to the copy's (a release writes each format's
   own copy of the audio, so its output is ~N× the run's FLAC for N formats).
3. **Download + verify.** A real HTTP server (``python -m http.server``, its own process) serves
   the release on loopback; ``granary download`` (parallel, sha256 of every file, atomic
   renames) then ``granary verify`` fetch and check it. Baseline, same run: one ``requests``
   stream per file, sequential, no hashing, straight to disk. Figures: MB/s and the ratio.

Only wall-clock figures are printed; nothing here runs in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import requests
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from granary_pipe import rundir, schema  # noqa: E402
from granary_pipe.io import sink  # noqa: E402
from pipeline_throughput import make_corpus  # noqa: E402

MB = 1e6


def granary(*args: str) -> float:
    """Run the CLI as a user does; return its wall seconds."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "granary_pipe.cli", *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def grow_run(run: Path, minutes: float) -> float:
    """Re-commit the run's units (new unit and row ids, same audio) through the sink until the
    kept speech reaches ``minutes``; returns the kept minutes."""
    units = sorted(p.name for p in (run / "units").iterdir() if (p / rundir.MARKER).is_file())
    tables = []
    for u in units:
        kept = pq.read_table(run / "units" / u / "kept.parquet")
        pcm = [sf.read(run / f, dtype="float32")[0].tobytes() for f in kept.column("audio_file").to_pylist()]
        tables.append(kept.append_column(schema.TRANSIENT, pa.array(pcm, schema.TRANSIENT.type)))
    have = sum(float(np.sum(t.column("duration_s").to_numpy())) for t in tables) / 60
    if have <= 0:
        raise SystemExit(f"{run}: the run kept no speech")
    info = json.loads((run / "run.json").read_text())
    copy, n = 1, len(units)
    total = have
    while total < minutes:
        for t in tables:
            ids = [f"{i}~c{copy}" for i in t.column("id").to_pylist()]
            recs = [f"{r}~c{copy}" for r in t.column("recording_id").to_pylist()]
            t2 = schema.set_column(schema.set_column(t, "id", ids), "recording_id", recs)
            uid = f"u{n:06d}"
            stats = sink.commit_unit(run, uid, t2, {"stage_s": {}})
            info["units_total"] = info["units_committed"] = n + 1
            n += 1
        total += have
        copy += 1
    rundir.write_json_atomic(run / "run.json", info)
    return total


def dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def copy_baseline(src: Path, dest: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    shutil.copytree(src, dest)
    return time.perf_counter() - t0, dir_bytes(dest)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(url + "/release.json", timeout=1).raise_for_status()
            return proc, url
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("http.server did not start")


def plain_get(url: str, release: Path, dest: Path) -> tuple[float, int]:
    """Sequential plain GET of every file the release lists, no hashing."""
    meta = json.loads((release / "release.json").read_text())
    paths = [s["path"] for s in meta["shards"]] + ["release.json"]
    t0 = time.perf_counter()
    total = 0
    with requests.Session() as session:
        for rel in paths:
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with session.get(f"{url}/{rel}", stream=True, timeout=60) as r, open(out, "wb") as fh:
                r.raise_for_status()
                for chunk in r.iter_content(1 << 20):
                    total += fh.write(chunk)
    return time.perf_counter() - t0, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0, help="kept speech in the run to release")
    ap.add_argument("--formats", default="parquet,wds,nemo,lhotse_shar")
    ap.add_argument("--jobs", type=int, default=4, help="parallel downloads of granary download")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gp-reldl-") as tmp:
        tmp = Path(tmp)
        source, _ = make_corpus(1, tmp / "corpus")
        run = tmp / "run"
        granary("run", str(ROOT / "benchmarks" / "bench-pipeline.yaml"), "--source", str(source), "--out", str(run), "-q")
        minutes = grow_run(run, args.minutes)
        run_bytes = dir_bytes(run / "units")
        startup_s = granary("--help")
        release = tmp / "release"
        release_s = granary("release", str(run), "--out", str(release), "--formats", args.formats, "--shard-rows", "500", "-q")
        release_bytes = dir_bytes(release)
        copy_s, copy_bytes = copy_baseline(release, tmp / "copy")
        server, url = serve(release)
        try:
            get_s, get_bytes = plain_get(url, release, tmp / "plain")
            down = tmp / "download"
            download_s = granary("download", url + "/release.json", "--out", str(down), "--jobs", str(args.jobs), "-q")
            verify_s = granary("verify", str(down))
        finally:
            server.terminate()
            server.wait()
        down_bytes = dir_bytes(down)
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"run: {minutes:.1f} min of kept speech, unit files {run_bytes / MB:.1f} MB; formats: {args.formats}; "
          f"CLI start-up (granary --help) {startup_s:.2f} s, included in the granary figures")
    copy_mbps = copy_bytes / MB / copy_s
    rel_mbps = release_bytes / MB / release_s
    print(f"copy of the release (baseline)      {copy_bytes / MB:8.1f} MB  {copy_s:6.2f} s  {copy_mbps:7.1f} MB/s")
    print(f"granary release                     {release_bytes / MB:8.1f} MB  {release_s:6.2f} s  {rel_mbps:7.1f} MB/s"
          f"  ({rel_mbps / copy_mbps:.2f}x the copy's MB/s; {release_bytes / run_bytes:.2f}x the run's bytes)")
    get_mbps = get_bytes / MB / get_s
    dv_s = download_s + verify_s
    dv_mbps = down_bytes / MB / dv_s
    print(f"plain sequential GET (baseline)     {get_bytes / MB:8.1f} MB  {get_s:6.2f} s  {get_mbps:7.1f} MB/s")
    print(f"granary download + verify           {down_bytes / MB:8.1f} MB  {dv_s:6.2f} s  {dv_mbps:7.1f} MB/s"
          f"  (download {download_s:.2f} s, verify {verify_s:.2f} s; {dv_mbps / get_mbps:.2f}x the plain GET)")


if __name__ == "__main__":
    main()
