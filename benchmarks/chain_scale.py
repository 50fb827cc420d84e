"""One chain at size (issue 19, item 6): the user's whole job on N recordings, each step a
``granary`` command run as a user runs it, with its wall time and peak memory.

    PYTHONPATH=. python benchmarks/chain_scale.py --recordings 200000

1. **Corpus.** N distinct FLAC files (16 kHz mono) in ``WORK/corpus/audio/``, each a one-sentence
   clip of the bundled demo corpus (its files that soundfile reads, the non-commercial one left
   out) with its first ``k`` ms cut off (``k`` different per copy, so no two files are equal),
   optionally shortened to ``--max-s`` (its reference text then cut to the same share of its
   words: roughly what is spoken, enough for CTC to have more frames than tokens); a JSONL listing
   with each clip's language and reference text, and a manifest (CC-BY-4.0). Made by ``--jobs``
   processes, once (reused if complete).

2. ``granary run``: a cheap pipeline, written to ``WORK/pipeline.yaml``: ``audio.decode``,
   ``license.gate``, ``segment.silero`` and ``bench.reference_text`` (``chain_stages.py``: each
   row's ``text`` := the listing's reference text, ``lang`` := its hint; a benchmark stand-in for
   ASR, registered at run time, so the kept rows are trainable). No Whisper: the point is the
   commands after the run. ``granary run`` is the CLI's ``main`` in a process that imported
   ``chain_stages`` first; every other step is the plain CLI.
3. ``granary report RUN --json`` (checked: rows in = kept + rejected), ``granary release RUN``
   (``--formats``, default parquet,wds: training reads wds), ``granary verify REL``, ``granary
   download`` of REL from a local ``http.server`` into ``WORK/download``, then ``granary train
   --data DOWNLOAD`` with ``pipelines/train-tiny.yaml`` for ``--train-steps`` steps (1 loader
   worker).

Disk: the corpus, the run, each release format and the download each hold every recording's
audio once, about 19 KB per second of it as FLAC: about 680 KB per recording at whole clips
(5.9 s on average; 200 k recordings: about 136 GB) and about 115 x S KB with ``--max-s S``
(200 k at ``--max-s 1``: about 23 GB), plus a few MB for the model.

Printed per step: wall seconds, the peak RSS of the largest process of its tree (``/usr/bin/time``) and
the peak of the tree's summed RSS (sampled; Ray's workers included), and rows per second where
the step has rows. Each step's share of the whole chain is its ratio to the total (the baseline
of this benchmark is the chain itself; compare sizes by running it at two N).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bench_cli import (  # noqa: E402
    CODE, ROOT, Measured, add_checkout_option, cli_env, dir_bytes, granary, http_server, print_table, use_checkout,
)

DEMO = ROOT / "granary_pipe" / "_data" / "demo"
RATE = 16000
PER_DIR = 1000
RUN_WITH_STAGES = ("import sys; import chain_stages; from granary_pipe.cli import main; "
                   "sys.exit(main(sys.argv[1:]))")


def demo_clips(max_s: float | None) -> list[dict]:
    """The demo's clips soundfile reads (at 16 kHz, mono, up to 12 s; the NC clip left out)."""
    clips = []
    for line in (DEMO / "listing.jsonl").read_text().splitlines():
        entry = json.loads(line)
        path = DEMO / entry["path"]
        if path.suffix not in (".flac", ".wav") or entry.get("license") or not entry.get("text"):
            continue
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        if sr != RATE:
            audio = np.interp(np.arange(0, len(audio) * RATE // sr) * sr / RATE, np.arange(len(audio)), audio)
        if len(audio) > 12 * RATE:
            continue
        text = entry["text"]
        if max_s and len(audio) > max_s * RATE:  # keep the words of the first max_s seconds, roughly
            words = text.split()
            text = " ".join(words[: max(1, round(len(words) * max_s * RATE / len(audio)))])
            audio = audio[: int(max_s * RATE)]
        clips.append({"audio": audio.astype(np.float32), "lang": entry["lang"], "text": text})
    return clips


def _write_files(args: tuple[str, int, int, float | None]) -> int:
    """Files ``start``..``stop`` of the corpus (in a pool worker)."""
    root, start, stop, max_s = args
    clips = demo_clips(max_s)
    for k in range(start, stop):
        clip = clips[k % len(clips)]
        cut = (k // len(clips)) % 4000  # samples cut off the start: 0..250 ms
        path = Path(root) / "audio" / f"{k // PER_DIR:04d}" / f"c{k:07d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, clip["audio"][cut:], RATE, format="FLAC", subtype="PCM_16")
    return stop - start


def make_corpus(work: Path, n: int, max_s: float | None, jobs: int) -> tuple[Path, float]:
    """The corpus of ``n`` files, its listing and manifest (reused when complete); (manifest, seconds)."""
    root = work / "corpus"
    manifest, stamp = root / "source.yaml", root / "corpus.json"
    want = {"recordings": n, "max_s": max_s}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return manifest, 0.0
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    bounds = [(str(root), n * j // jobs, n * (j + 1) // jobs, max_s) for j in range(jobs)]
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        made = sum(pool.map(_write_files, bounds))
    clips = demo_clips(max_s)
    with open(root / "listing.jsonl", "w", encoding="utf-8") as fh:
        for k in range(made):
            c = clips[k % len(clips)]
            fh.write(json.dumps({"path": f"audio/{k // PER_DIR:04d}/c{k:07d}.flac", "lang": c["lang"],
                                 "text": c["text"]}, ensure_ascii=False) + "\n")
    manifest.write_text(yaml.safe_dump({"name": "chain", "license": "CC-BY-4.0", "listing": "listing.jsonl",
                                        "description": f"{n} clips cut from the demo corpus (chain_scale.py)"}))
    stamp.write_text(json.dumps(want))
    return manifest, time.perf_counter() - t0


def write_pipeline(work: Path, per_unit: int, in_flight: int) -> Path:
    """The cheap pipeline: decode, license gate, Silero VAD, reference text as ``text``."""
    path = work / "pipeline.yaml"
    path.write_text(yaml.safe_dump({
        "name": "chain",
        "description": "decode + license gate + Silero VAD + the listing's text (benchmarks/chain_scale.py)",
        "units": {"recordings_per_unit": per_unit, "max_in_flight": in_flight, "max_attempts": 2},
        "stages": [{"use": "audio.decode", "resources": {"cpus": 0.25}},
                   {"use": "license.gate", "resources": {"cpus": 0.25}},
                   {"use": "segment.silero", "params": {"max_segment_s": 30, "min_silence_duration_ms": 500,
                                                        "speech_pad_ms": 200}, "resources": {"cpus": 0.5}},
                   {"use": "bench.reference_text", "resources": {"cpus": 0.25}}],
    }, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    """Make the corpus, run every step, print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recordings", type=int, default=200_000, help="files in the corpus (default 200000)")
    ap.add_argument("--max-s", type=float, default=None,
                    help="cut each clip to its first S seconds and its text to the same share of its words "
                         "(default: whole clips, 3.9-8.2 s)")
    ap.add_argument("--per-unit", type=int, default=200, help="recordings per unit (default 200)")
    ap.add_argument("--in-flight", type=int, default=4, help="units in flight (default 4)")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the embedded Ray (default 2)")
    ap.add_argument("--formats", default="parquet,wds", help="release formats (default parquet,wds; wds is "
                                                             "what training reads)")
    ap.add_argument("--train-steps", type=int, default=20, help="training steps (default 20)")
    ap.add_argument("--jobs", type=int, default=2, help="processes that write the corpus (default 2)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/chain-scale"), help="work directory "
                                                                                "(default /tmp/chain-scale)")
    ap.add_argument("--keep", action="store_true", help="keep the run, release, download and model")
    add_checkout_option(ap)
    args = ap.parse_args(argv)
    use_checkout(args.checkout)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    manifest, corpus_s = make_corpus(work, args.recordings, args.max_s, args.jobs)
    pipeline = write_pipeline(work, args.per_unit, args.in_flight)
    run, rel, down, model = work / "run", work / "release", work / "download", work / "model"
    for d in (run, rel, down, model):
        shutil.rmtree(d, ignore_errors=True)
    steps: list[tuple[str, Measured, int | None]] = []
    m = granary("run", str(pipeline), "--source", str(manifest), "--out", str(run), "--num-cpus",
                str(args.num_cpus), "-q", prefix=[sys.executable, "-c", RUN_WITH_STAGES], env=cli_env([BENCH]))
    steps.append(("granary run (decode, license gate, Silero VAD, reference text)", m, args.recordings))
    m = granary("report", str(run), "--json")
    rows = json.loads(m.stdout)["rows"]
    if not rows["balanced"] or rows["in"] != rows["kept"] + rows["rejected"]:
        raise SystemExit(f"{run}: the report does not balance: {rows}")
    if not rows["kept"]:
        raise SystemExit(f"{run}: no kept rows, nothing to release")
    steps.append(("granary report RUN --json", m, rows["in"]))
    m = granary("release", str(run), "--out", str(rel), "--formats", args.formats, "--json", "-q")
    released = json.loads(m.stdout)["rows"]
    steps.append((f"granary release RUN --formats {args.formats}", m, released))
    steps.append(("granary verify REL", granary("verify", str(rel), "-q"), released))
    with http_server(rel) as url:
        m = granary("download", f"{url}/release.json", "--out", str(down), "-q")
    steps.append(("granary download (local HTTP server)", m, released))
    m = granary("train", "--data", str(down), "--out", str(model), "--config", "train-tiny", "--max-steps",
                str(args.train_steps), "--set", f"train.eval_every={args.train_steps}", "--set", "train.threads=1",
                "--json", "-q")
    trained = json.loads(m.stdout)
    steps.append((f"granary train (train-tiny, {args.train_steps} steps)", m, None))
    total = sum(s[1].wall_s for s in steps)
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}; {args.recordings} recordings"
          f"{f' of at most {args.max_s:g} s' if args.max_s else ''}, {args.per_unit} per unit; code "
          f"{CODE['checkout']}; corpus "
          f"{dir_bytes(work / 'corpus') / 1e6:.0f} MB" + (f", made in {corpus_s:.0f} s" if corpus_s else " (reused)"))
    print(f"run: {rows['in']} rows = {rows['kept']} kept + {rows['rejected']} rejected; release: {released} rows, "
          f"{dir_bytes(rel) / 1e6:.0f} MB; train: step {trained.get('step')}, loss {trained.get('loss')}")
    print_table("the chain, step by step", ["step", "s", "share of chain", "peak RSS MB", "tree RSS MB", "rows/s"],
                [[name, s.wall_s, s.wall_s / total, s.peak_rss_mb, s.tree_rss_mb, n / s.wall_s if n else None]
                 for name, s, n in steps] + [["whole chain", total, 1.0, max(s.peak_rss_mb for _, s, _ in steps),
                                              max(s.tree_rss_mb for _, s, _ in steps), None]])
    if not args.keep:
        for d in (run, rel, down, model):
            shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
