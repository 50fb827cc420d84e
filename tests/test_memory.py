"""Bounded memory: units in flight are capped, and peak memory does not grow with corpus length.

The corpus-length test runs the same ASR-free pipeline (decode → license gate → Silero VAD, units
of 4 recordings, 2 in flight) through the CLI on N and 3N copies of demo clips and samples the
resident memory of every process of the run (driver, embedded Ray, workers; ``/proc``, every
0.2 s). A test-only first stage (``test.inflight_probe``) stamps when each unit starts; with the
commit markers' times this shows at most ``max_in_flight`` units were ever open at once.
``benchmarks/memory_growth.py`` does the same with the full demo pipeline at hour scale.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fault_helpers import (
    ASR_FREE_STAGES,
    RssSampler,
    finish,
    marker_mtimes,
    max_overlap,
    run_json,
    start_cli,
    write_pipeline,
    write_source,
)
from granary_pipe import schema
from granary_pipe.units import apply_stage
from granary_pipe.stages.license.gate import LicenseGate

pytestmark = pytest.mark.e2e

CLIPS = ["en_01.flac", "de_02.mp3", "it_05.opus", "es_03.flac"]
N = 12
PER_UNIT, IN_FLIGHT = 4, 2


def copies_source(d: Path, n: int) -> Path:
    """A source of ``n`` recordings: copies of a few demo clips under distinct names."""
    (d / "audio").mkdir(parents=True)
    files = []
    for k in range(n):
        clip = CLIPS[k % len(CLIPS)]
        name = f"c{k:04d}_{clip}"
        (d / "audio" / name).write_bytes((Path(__file__).parents[1] / "manifests/demo/audio" / clip).read_bytes())
        files.append((f"audio/{name}", {}))
    return write_source(d, files, name="copies")


def measured_run(d: Path, n: int) -> dict:
    source = copies_source(d / "src", n)
    starts = d / "starts"
    starts.mkdir()
    stages = [{"use": "test.inflight_probe", "params": {"dir": str(starts), "delay_s": 0.2},
               "resources": {"cpus": 0.25}}, *ASR_FREE_STAGES]
    pipeline = write_pipeline(d / "p.yaml", stages, per_unit=PER_UNIT, in_flight=IN_FLIGHT, name="memory")
    out = d / "run"
    proc = start_cli("run", str(pipeline), "--source", str(source), "--out", str(out), "-q", log=d / "log",
                     test_stages=True)
    with RssSampler(proc.pid, every_s=0.2) as mem:
        rc = finish(proc, timeout=300)
    assert rc == 0, (d / "log").read_text()[-3000:]
    info = run_json(out)
    assert info["status"] == "complete" and info["units_total"] == -(-n // PER_UNIT)
    ends = {u: t / 1e9 for u, t in marker_mtimes(out).items()}
    begins = {p.stem: float(p.read_text()) for p in starts.glob("*.start")}
    assert set(begins) == set(ends)
    return {"n": n, "mem": mem, "overlap": max_overlap([(begins[u], ends[u]) for u in ends]),
            "procs": max(s["procs"] for s in mem.samples), "wall_s": mem.samples[-1]["t"] - mem.samples[0]["t"]}


def test_peak_memory_does_not_grow_with_corpus_length(tmp_path):
    short = measured_run(tmp_path / "short", N)
    long = measured_run(tmp_path / "long", 3 * N)
    keys = ("tree_rss", "tree_pss", "driver", "worker_max")
    print()
    for r in (short, long):
        print(f"{r['n']:3d} recordings: " + ", ".join(f"{k} {r['mem'].peak(k):6.0f} MiB" for k in keys)
              + f", ≤{r['procs']} processes, {r['overlap']} units open at once, {r['wall_s']:.0f} s")
    for k in keys:
        print(f"ratio 3N/N {k}: {long['mem'].peak(k) / short['mem'].peak(k):.2f}")
    for r in (short, long):
        assert r["overlap"] <= IN_FLIGHT, f"{r['overlap']} units in flight with max_in_flight={IN_FLIGHT}"
    assert long["overlap"] == IN_FLIGHT, "the cap was never reached: the test does not test it"
    for k, slack in (("tree_rss", 200), ("tree_pss", 200), ("driver", 30)):
        assert long["mem"].peak(k) <= 1.3 * short["mem"].peak(k) + slack, (k, short["mem"].peak(k), long["mem"].peak(k))


# ----------------------------------------------------------------------------- copies of the samples

def test_pass_through_stage_does_not_copy_samples():
    """A stage that only looks at metadata (the license gate, every row allowed) must hand the
    unit's samples on without copying them: each copy of a unit's audio is another unit's worth
    of worker memory (a 1-hour recording is 220 MiB of float32). So ``apply_stage`` must not re-sort an
    already sorted table, nor ``split_active`` filter with an all-true mask: both would copy."""
    audio = np.zeros(16000 * 60, np.float32)
    rows = [{"id": f"r{k}", "recording_id": f"r{k}", "source": "t", "offset_s": 0.0, "license": "CC-BY-4.0",
             "duration_s": 60.0, "samples": audio.tobytes()} for k in range(3)]
    table = schema.make_table(rows, with_samples=True)
    before = table.column("samples").chunk(0).buffers()[2].address
    out, _ = apply_stage(LicenseGate(), (table, {}))
    assert out.column("drop_reason").null_count == 3
    after = {c.buffers()[2].address for c in out.column("samples").chunks}
    assert after == {before}, "the samples were copied by a stage that passes them through"


DECODE_PROBE = textwrap.dedent("""
    import sys, tracemalloc
    from granary_pipe.stages.audio.decode import decode_file
    try:
        decode_file(sys.argv[1], 10.0)  # warm-up: codecs loaded (stops after 10 s of audio)
    except Exception:
        pass
    tracemalloc.start()  # numpy and Python allocations, exactly
    audio, _ = decode_file(sys.argv[1], 7200.0)
    print(tracemalloc.get_traced_memory()[1] / audio.nbytes)
""")


def test_decode_holds_the_audio_about_once(tmp_path):
    """Decoding a 20-minute file should hold the decoded audio about once (one growing buffer),
    not three times (today: a list of per-frame arrays, their concatenation and a redundant
    ``astype`` copy, all alive at the peak). Measured with tracemalloc: exact, not timing-bound."""
    path = tmp_path / "twenty_min.flac"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", 16000, 1, format="FLAC", subtype="PCM_16") as fh:
        for _ in range(20):
            fh.write((0.01 * rng.standard_normal(16000 * 60)).astype(np.float32))
    out = subprocess.run([sys.executable, "-c", DECODE_PROBE, str(path)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    ratio = float(out.stdout.strip())
    print(f"\ndecode peak / decoded audio: {ratio:.2f}")
    assert ratio <= 1.6, f"decoding held {ratio:.1f}× the decoded audio at its peak"
