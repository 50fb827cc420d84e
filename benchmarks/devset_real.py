"""The real-speech split of the label-quality dev set: recorded voices with human references.

    python benchmarks/devset_real.py [--workdir DIR] [--src DIR]

Reads ``SRC/manifest.jsonl`` (default ``../shared/realspeech-dev`` beside the repository, or
``$GRANARY_REALSPEECH_DIR``): one object per clip with ``file``, ``lang``, ``text`` (the human
reference), ``license`` (SPDX id), ``source``, ``duration_s``. The clips are FLEURS test
utterances (de, en, es, fr, pt; CC-BY-4.0, Conneau et al. 2022) and SpeechBrain's English test
samples (Apache-2.0; one LJ Speech utterance, public domain); ``SRC/README.md`` names each source.

The clips are copied (not linked: ingest lists each inode once and keeps paths inside the corpus)
to ``WORKDIR/corpus/audio/real/`` with a sidecar ``FILE.truth.json`` in the format of
``devset.py`` (``kind`` ``speech``, ``clean`` true, ``split`` ``real``), and the listings
``real.jsonl``/``real.yaml`` (and ``real-nohint.*`` without the ``lang`` hint) are written beside
``dev.yaml``. Nothing is copied into the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from granary_pipe.config import ConfigError, json_lines  # noqa: E402
SPLIT = "real"
DEFAULT_SRC = Path(os.environ.get("GRANARY_REALSPEECH_DIR") or ROOT.parent / "shared" / "realspeech-dev")
LICENSE_IDS = {"LicenseRef-PublicDomain": "public-domain"}
"""Manifest license strings written as the registry's id in the listing (the LJ Speech clip is in
the public domain; ``public-domain`` is the registry's id for that statement)."""
_KEYS = ("file", "lang", "text", "license")


def read_manifest(src: Path) -> list[dict]:
    """The clips of ``src/manifest.jsonl``, checked for the keys the split needs."""
    path = src / "manifest.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: real-speech manifest not found; pass --real-dir or set GRANARY_REALSPEECH_DIR")
    clips = []
    try:
        lines = list(json_lines(path))
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    for n, clip in lines:
        missing = [k for k in _KEYS if not clip.get(k)]
        if missing:
            raise SystemExit(f"{path}:{n}: clip lacks {', '.join(missing)}")
        if not (src / clip["file"]).is_file():
            raise SystemExit(f"{path}:{n}: {src / clip['file']}: audio file not found")
        clips.append(clip)
    return clips


def _fingerprint(src: Path, clips: list[dict]) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update((src / "manifest.jsonl").read_bytes())
    for c in clips:
        st = (src / c["file"]).stat()
        h.update(f"{c['file']}:{st.st_size}".encode())
    return h.hexdigest()


def build_real(corpus: Path, src: Path = DEFAULT_SRC, rebuild: bool = False) -> list[dict]:
    """Copy the clips into ``corpus/audio/real`` with sidecars and listings (reused when the
    manifest and this builder are unchanged); returns the sidecars."""
    clips = read_manifest(src)
    audio_dir = corpus / "audio" / SPLIT
    stamp = audio_dir / "BUILD.json"
    fp = _fingerprint(src, clips)
    if not rebuild and stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fp:
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(audio_dir.glob("*.truth.json"))]
    if audio_dir.exists():
        shutil.rmtree(audio_dir)
    audio_dir.mkdir(parents=True)
    lines, truths = [], []
    for c in clips:
        name = Path(c["file"]).name
        rel = f"audio/{SPLIT}/{name}"
        shutil.copyfile(src / c["file"], corpus / rel)
        info = sf.info(str(corpus / rel))
        seconds = info.frames / info.samplerate
        truth = {"name": Path(name).stem, "kind": "speech", "lang": c["lang"], "refs": [c["text"]],
                 "license": c["license"], "license_ok": True, "fmt": Path(name).suffix[1:],
                 "rate_hz": info.samplerate, "recipe": {"source": c.get("source"), "note": c.get("note")},
                 "path": rel, "split": SPLIT, "clean": True, "seconds": round(seconds, 3),
                 "speech_spans_s": [[0.0, round(seconds, 3)]]}
        (corpus / f"{rel}.truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=1), encoding="utf-8")
        truths.append(truth)
        lines.append({"path": rel, "text": c["text"], "lang": c["lang"],
                      "license": LICENSE_IDS.get(c["license"], c["license"])})
    for name, listing in ((SPLIT, lines), (f"{SPLIT}-nohint", [{k: v for k, v in x.items() if k != "lang"}
                                                              for x in lines])):
        (corpus / f"{name}.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in listing),
                                              encoding="utf-8")
        (corpus / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": f"devset-{name}", "license": "CC-BY-4.0", "homepage": "https://github.com/granary-pipe/granary_pipe",
            "citation": "FLEURS (Google), CC-BY-4.0; SpeechBrain test samples, Apache-2.0 (see realspeech-dev/README.md)",
            "listing": f"{name}.jsonl"}, sort_keys=False))
    stamp.write_text(json.dumps({"fingerprint": fp, "src": str(src), "files": len(truths),
                                 "seconds": round(sum(t["seconds"] for t in truths), 1)}, indent=1))
    return truths


def main() -> None:
    import devset  # here, not at the top: devset imports this module

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=devset.DEFAULT_WORKDIR)
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="the realspeech-dev directory (manifest.jsonl)")
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    truths = build_real(args.workdir.expanduser() / "corpus", args.src, args.rebuild)
    by_lang: dict[str, list[float]] = {}
    for t in truths:
        by_lang.setdefault(t["lang"], []).append(t["seconds"])
    print(f"real: {len(truths)} files, {sum(sum(v) for v in by_lang.values()):.1f} s")
    for lang, secs in sorted(by_lang.items()):
        print(f"  {lang:4s} {len(secs):3d} files {sum(secs):7.1f} s")


if __name__ == "__main__":
    main()
