"""Both Whisper passes fused (``asr.two_pass``) vs ``asr.language_id`` then ``asr.whisper``.

    python benchmarks/two_pass.py [--repeat 3] [--en-model whisper-tiny.en]

Decodes and segments the demo corpus once, then times the two ways on the same segment table
in this process (models loaded and warmed first, so only inference is timed), alternating
``--repeat`` times, and checks that both give the same rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from granary_pipe import schema  # noqa: E402
from granary_pipe.stages.asr.language_id import WhisperLanguageID  # noqa: E402
from granary_pipe.stages.asr.transcribe import WhisperTranscribe  # noqa: E402
from granary_pipe.stages.asr.two_pass import WhisperTwoPass  # noqa: E402
from granary_pipe.stages.audio.decode import Decode  # noqa: E402
from granary_pipe.ingest.manifest import list_recordings  # noqa: E402
from granary_pipe.stages.segment.silero import SileroSegment  # noqa: E402

KEYS = ("id", "lang", "text", "drop_reason")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--en-model", default="whisper-base",
                    help="pass-2 model for English (the demo: whisper-base, the language-ID model)")
    args = ap.parse_args()
    _, table = list_recordings(ROOT / "manifests" / "demo" / "demo.yaml")
    table = SileroSegment()(Decode()(table))
    kw = {"models_by_lang": {"en": args.en_model, "default": "whisper-base"}, "compute_type": "int8"}
    lid, asr, fused = WhisperLanguageID(compute_type="int8"), WhisperTranscribe(**kw), WhisperTwoPass(**kw)
    for stage in (lid, asr, fused):
        stage.setup()
    separate_s, fused_s = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        a = asr(lid(table))
        t1 = time.perf_counter()
        b = fused(table)
        t2 = time.perf_counter()
        separate_s.append(t1 - t0)
        fused_s.append(t2 - t1)
    rows = lambda t: {tuple(r[k] for k in KEYS) for r in schema.drop_transient(t).to_pylist()}  # noqa: E731
    same = rows(a) == rows(b)
    print(f"{table.num_rows} rows; best of {args.repeat}: separate {min(separate_s):.1f} s, "
          f"fused {min(fused_s):.1f} s, separate/fused {min(separate_s) / min(fused_s):.2f}; same rows: {same}")


if __name__ == "__main__":
    main()
