"""Whisper on CTranslate2 per segment: encode and beam search by thread count and batch size.

    python benchmarks/whisper_threads.py [--model whisper-base] [--threads 1,2] [--batches 1,8]

Decodes and segments the demo's German clips (VAD speech, padded to 30 s as Whisper sees them),
then times, in this process with the model loaded and warmed, the encoder and the beam search
(beam 5) per segment for each thread count and batch size. It is the measurement behind the
demo's two 1-thread ASR workers: on a small CPU a second thread speeds up the encoder but not
the beam search over small batches. The baseline of each row is the first thread count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from granary_pipe.stages.asr import whisper_runtime  # noqa: E402
from granary_pipe.stages.audio.decode import decode_file  # noqa: E402
from granary_pipe.stages.segment.silero import SileroSegment  # noqa: E402


def segments(lang: str, n: int) -> list:
    demo = ROOT / "manifests" / "demo"
    vad = SileroSegment()
    out = []
    for line in (demo / "listing.jsonl").read_text().splitlines():
        e = json.loads(line) if line.strip() else {}
        if e.get("lang") == lang:
            audio, _ = decode_file(str(demo / e["path"]), 3600)
            out += [audio[s:t] for s, t in vad.segments(audio)]
    return (out * (n // max(len(out), 1) + 1))[:n]


def per_segment(model, segs: list, batch: int, lang: str) -> tuple[float, float]:
    enc = dec = 0.0
    for k in range(0, len(segs), batch):
        feats = whisper_runtime.features(model, segs[k:k + batch])
        t0 = time.perf_counter()
        encoded = model.encode(feats)
        t1 = time.perf_counter()
        whisper_runtime.transcribe(model, None, lang, beam_size=5, encoded=encoded)
        enc += t1 - t0
        dec += time.perf_counter() - t1
    return enc / len(segs), dec / len(segs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="whisper-base")
    ap.add_argument("--lang", default="de")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--segments", type=int, default=8)
    args = ap.parse_args()
    segs = segments(args.lang, args.segments)
    threads = [int(x) for x in args.threads.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    results = {}
    for t in threads:
        model = whisper_runtime.load(args.model, "cpu", "int8", t)
        whisper_runtime.encode(model, segs[:1])  # warm
        for b in batches:
            results[t, b] = per_segment(model, segs, b, args.lang)
    print(f"{args.model} int8, {len(segs)} {args.lang} segments, beam 5; seconds per segment")
    for b in batches:
        base_enc, base_dec = results[threads[0], b]
        for t in threads:
            enc, dec = results[t, b]
            print(f"batch {b:2d}  threads {t}: encode {enc:.3f} s  beam search {dec:.3f} s  "
                  f"(÷ {threads[0]} thread: encode {base_enc / enc:.2f}x, beam search {base_dec / dec:.2f}x faster)")


if __name__ == "__main__":
    main()
