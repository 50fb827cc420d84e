"""What the durable commit costs per unit: the sink with real ``fsync`` against ``fsync`` as a no-op.

    PYTHONPATH=. python benchmarks/commit_cost.py [--units 200] [--serial] [--dir /path/on/the/disk/to/measure]

One demo-like unit (6 kept rows of 4-8 s of real demo speech, each a FLAC; 4 rejected rows: a
license, no speech, a decode error, an empty text) is committed ``--units`` times through the
pipeline's own sink (``io.sink.commit_unit``) into one run directory, alternating the modes
commit by commit (so drift in the machine's load falls on all alike):

* **fsync**: the real ``os.fsync``, counted: each file, ``audio/`` and the unit's temporary
  directory, ``units/`` after the rename, the marker's temporary and the unit directory;
* **no-op**: ``os.fsync`` patched to do nothing (every other step identical: the same files, the
  same renames, the same sha256 of every file for the marker);
* with ``--serial``, both again with ``sink.SYNC_THREADS = 1`` (each file written and fsynced
  after the one before, instead of ``SYNC_THREADS`` at once).

Printed: ms per unit for each (median and mean), the ratio, fsyncs per unit, files and bytes per
unit, the sha256 share (hashing the unit's bytes, done in both modes), and the filesystem the run
directory is on (fsync costs what the device and filesystem make it cost: run it on the disk
runs are written to). Only wall-clock figures; nothing here runs in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from granary_pipe import rundir
from granary_pipe.io import sink
from granary_pipe.schema import make_table

ROOT = Path(__file__).resolve().parents[1]
DEMO_AUDIO = ROOT / "manifests" / "demo" / "audio"
KEPT_CLIPS = ["de_01.flac", "en_01.flac", "en_05.flac", "es_03.flac", "it_02.flac", "it_04.flac"]


def demo_unit() -> "object":
    """The unit's rows as the sink receives them (decoded samples in the transient column)."""
    rows = []
    for k, clip in enumerate(KEPT_CLIPS):
        samples, rate = sf.read(DEMO_AUDIO / clip, dtype="float32")
        assert rate == 16000, (clip, rate)
        rec = clip.split(".")[0]
        rows.append({"id": f"{rec}_0000", "recording_id": rec, "offset_s": 0.0, "duration_s": len(samples) / rate,
                     "recording_duration_s": len(samples) / rate, "samples": samples.tobytes(), "lang": rec[:2],
                     "text": f"segment {k} of the benchmark unit", "license": "CC-BY-4.0"})
    noise = (0.01 * np.random.default_rng(0).standard_normal(16000 * 3)).astype(np.float32).tobytes()
    for rec, reason in [("nc_01", "license:CC-BY-NC-4.0"), ("music_01", "segment:no_speech"),
                        ("broken_01", "decode_error: invalid data"), ("short_01", "filter:empty_text")]:
        rows.append({"id": f"{rec}_0000", "recording_id": rec, "offset_s": 0.0, "duration_s": 3.0,
                     "recording_duration_s": 3.0, "samples": None if "decode" in reason else noise,
                     "drop_reason": reason, "license": "CC-BY-NC-4.0" if "license" in reason else "CC-BY-4.0"})
    return make_table(rows, with_samples=True)


def filesystem_of(path: Path) -> str:
    """``TYPE on MOUNTPOINT (DEVICE)`` of the mount that holds ``path``, from /proc/mounts."""
    best = ("?", "?", "?")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype = line.split()[:3]
            if str(path.resolve()).startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best[1]):
                best = (fstype, mnt, dev)
    except OSError:
        pass
    return f"{best[0]} on {best[1]} ({best[2]})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--units", type=int, default=200, help="commits per mode (default 200)")
    ap.add_argument("--dir", type=Path, default=None, help="where to make the run directory (default: $TMPDIR)")
    ap.add_argument("--serial", action="store_true",
                    help="also time both modes with one file at a time (sink.SYNC_THREADS = 1)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    table = demo_unit()
    work = Path(tempfile.mkdtemp(prefix="commit-cost-", dir=args.dir))
    real_fsync, threads = os.fsync, sink.SYNC_THREADS
    modes = {"fsync": (True, threads), "no-op": (False, threads)}
    if args.serial:
        modes.update({"fsync, 1 thread": (True, 1), "no-op, 1 thread": (False, 1)})
    fsyncs = dict.fromkeys(modes, 0)
    times: dict[str, list[float]] = {m: [] for m in modes}
    names = list(modes)
    try:
        for k in range(len(names) * (args.units + 1)):  # round 0 is warm-up (imports, first writes)
            mode = names[k % len(names)]
            real, sink.SYNC_THREADS = modes[mode]

            def counted(fd: int, mode: str = mode, real: bool = real) -> None:
                fsyncs[mode] += 1
                if real:
                    real_fsync(fd)

            os.fsync = counted
            try:
                t0 = time.perf_counter()
                marker = sink.commit_unit(work, rundir.unit_id(k), table, {})
                dt = time.perf_counter() - t0
            finally:
                os.fsync, sink.SYNC_THREADS = real_fsync, threads
            if k >= len(names):
                times[mode].append(dt)
            else:
                fsyncs[mode] = 0
        files = marker[rundir.FILES]
        data = [(rundir.unit_dir(work, marker["unit"]) / rel).read_bytes() for rel in files]
        t0 = time.perf_counter()
        for _ in range(20):
            for d in data:
                rundir.file_record(d)
        hash_ms = (time.perf_counter() - t0) / 20 * 1000
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_mode = {m: {"units": len(t), "threads": modes[m][1], "ms_per_unit_median": 1000 * statistics.median(t),
                    "ms_per_unit_mean": 1000 * statistics.fmean(t), "fsyncs_per_unit": fsyncs[m] / len(t)}
                for m, t in times.items()}
    fs, noop = per_mode["fsync"], per_mode["no-op"]
    out = {
        "filesystem": filesystem_of(work.parent),
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "files_per_unit": len(files),
        "bytes_per_unit": sum(r["bytes"] for r in files.values()),
        "kept_rows": marker["rows_kept"], "rejected_rows": marker["rows_rejected"],
        "kept_audio_s": marker["speech_s_kept"],
        "modes": per_mode,
        "ratio_median": fs["ms_per_unit_median"] / noop["ms_per_unit_median"],
        "ratio_mean": fs["ms_per_unit_mean"] / noop["ms_per_unit_mean"],
        "fsync_ms_per_unit_median": fs["ms_per_unit_median"] - noop["ms_per_unit_median"],
        "sha256_ms_per_unit": hash_ms,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"run directory on {out['filesystem']}, {out['cpus']} CPUs, load {out['load_avg_1m']:.1f}; a unit: "
          f"{out['kept_rows']} kept rows ({out['kept_audio_s']:.1f} s of audio), {out['rejected_rows']} rejected, "
          f"{out['files_per_unit']} files, {out['bytes_per_unit'] / 1e6:.2f} MB")
    for m, r in per_mode.items():
        print(f"  {m:16s} {r['units']:4d} commits: {r['ms_per_unit_median']:7.2f} ms/unit median, "
              f"{r['ms_per_unit_mean']:7.2f} mean, {r['fsyncs_per_unit']:.0f} fsync calls per unit "
              f"({out['files_per_unit']} files + 5)")
    print(f"  fsync / no-op: {out['ratio_median']:.2f}x (median), {out['ratio_mean']:.2f}x (mean); "
          f"fsync adds {out['fsync_ms_per_unit_median']:.2f} ms per unit (median)")
    print(f"  sha256 of the unit's files (both modes): {hash_ms:.2f} ms per unit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
