"""Build the labelled dev set of the label-quality benchmark (and measure its languages).

    python benchmarks/devset.py build [--workdir DIR] [--scale 1.0] [--rebuild]
    python benchmarks/devset.py probe [--langs en,de,...]

``build`` writes, under ``WORKDIR/corpus`` (default ``~/.cache/granary_pipe/devset``), two source
manifests ``dev.yaml`` and ``heldout.yaml`` with JSONL listings (``path``, ``lang``, ``text``,
``license``; ``SPLIT-nohint.yaml`` lists the same files without the ``lang`` hint) and, beside every audio file, a sidecar ``FILE.truth.json`` with the ground truth
the benchmark scores against: ``kind`` (speech, numbers, short, long, related, non_speech,
speech_then_music, license_trap, broken), ``refs`` (accepted transcripts of the speech part;
the first is the listing's ``text``), ``lang`` (reference language), ``license_ok`` (the
listing's license string is truly open-source compliant, by hand, not by the product's
registry), ``clean`` (compliant license and real speech: the file should yield kept text) and
the ``recipe`` it was made from. Text comes from ``devset_sentences.yaml``, audio from
``devset_audio.py``. Seeded: the same build twice gives the same audio (for one espeak-ng);
only the Ogg/Opus containers differ, in the stream serial number libsndfile draws.

Splits are decided by content: every sentence, number item, short item, parallel sentence
group, non-speech recipe, license string and broken-file kind is ranked by the sha1 of its
content within its group, and the first half goes to ``dev``, the rest to ``heldout``; files are
then made from their split's content only, so a sentence never appears in both splits.

``build`` also copies the third split, ``real`` (recorded speech with human references: FLEURS,
CC-BY-4.0, and SpeechBrain test samples, Apache-2.0), from ``--real-dir`` when it exists
(``devset_real.py``; its own listings ``real.yaml``/``real.jsonl`` and sidecars, same format).

``probe`` synthesises every sentence of every language in the YAML (kept or not) with the
language's first voice and prints Whisper base's WER with the language forced, and its
language-ID accuracy: the measurement behind each language's ``keep``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import devset_audio as A  # noqa: E402
import devset_real  # noqa: E402

SENTENCES = Path(__file__).with_name("devset_sentences.yaml")
DEFAULT_WORKDIR = Path.home() / ".cache" / "granary_pipe" / "devset"
SEED = 20261127
SPLITS = ("dev", "heldout")

COMPLIANT_LICENSES = [None, "CC0-1.0", "CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/",
                      "CC-BY-SA-4.0", "Creative Commons Attribution 4.0 International"]
"""Listing licenses of clean files (None: the manifest's CC-BY-4.0), spelled as found in the wild."""
TRAP_LICENSES = ["CC-BY-NC-4.0", "All rights reserved", "cc by 4.0 (but not for commercial use)", "",
                 "L" * 10240, "CC-BY-ND-4.0", "Creative Commons Attribution-NonCommercial-ShareAlike 4.0",
                 "ＣＣ-ＢＹ-ＮＣ-４.０", "proprietary, contact the author", "CC-BY-NC-SA-3.0"]
"""Listing licenses that do not allow an open release (NC, ND, unknown, hostile strings)."""
NON_SPEECH = ["silence", "white", "pink", "chords", "melody", "drums", "band", "tone440", "tone1000",
              "hum50", "hum60", "room"]
BROKEN = ["zero_bytes", "truncated", "text", "png", "random", "wrong_extension"]
FORMATS = [("flac", 16000), ("wav", 22050), ("mp3", 22050), ("opus", 16000), ("flac", 22050),
           ("m4a", 22050), ("opus", 24000), ("wav", 16000), ("mp3", 16000)]
LONG_LANGS = ["en", "de", "es", "it", "fr", "pl", "nl", "pt"]
MUSIC = ["chords", "melody", "band", "drums"]
SPEECH_PER_LANG, LONG_FILES, THEN_MUSIC_FILES = 12, 4, 4
"""Files per split at ``--scale 1`` (speech: per kept language)."""


@dataclass
class Item:
    """One file to make: its ground truth and how to make it."""

    name: str
    kind: str
    lang: str | None
    refs: list[str]
    license: str | None
    license_ok: bool
    fmt: str
    rate_hz: int
    recipe: dict = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        speech = self.kind not in ("non_speech", "license_trap") and bool(self.refs)
        return speech and self.license_ok and self.recipe.get("broken") in (None, "wrong_extension")


def load_text(path: Path = SENTENCES) -> dict:
    """The sentence YAML, checked for the keys the builder needs."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for lang, d in data["languages"].items():
        for key in ("keep", "voices", "sentences"):
            if key not in d:
                raise SystemExit(f"{path}: language {lang!r} lacks {key!r}")
    return data


def content_split(keys: list[str], group: str) -> dict[str, str]:
    """Split of each content key: ranked by sha1 within ``group``, first half dev, rest heldout."""
    ranked = sorted(keys, key=lambda k: hashlib.sha1(f"{group}\x00{k}".encode()).hexdigest())
    cut = math.ceil(len(ranked) / 2)
    return {k: ("dev" if i < cut else "heldout") for i, k in enumerate(ranked)}


def _pick(keys: list[str], group: str, split: str) -> list[str]:
    where = content_split(keys, group)
    return [k for k in keys if where[k] == split]


def plan(text: dict, split: str, scale: float = 1.0) -> list[Item]:
    """Every file of one split (no audio yet)."""
    langs = {k: v for k, v in text["languages"].items() if v["keep"]}
    items: list[Item] = []
    n = {"fmt": 0, "lic": 0}

    def fmt() -> tuple[str, int]:
        n["fmt"] += 1
        return FORMATS[n["fmt"] % len(FORMATS)]

    def good_license() -> str | None:
        n["lic"] += 1
        return COMPLIANT_LICENSES[n["lic"] % len(COMPLIANT_LICENSES)]

    def speech_item(name: str, kind: str, lang: str, sents: list[str], refs: list[str], k: int, **recipe) -> Item:
        voices = langs[lang]["voices"]
        rec = {"voice": voices[k % len(voices)], "speed": 135 + (k * 17) % 50, "pitch": 35 + (k * 11) % 35,
               "say": sents, **recipe}
        return Item(name, kind, lang, refs, good_license(), True, *fmt(), recipe=rec)

    conditions = [{}, {"bg": "white", "snr_db": 15}, {}, {"bg": "music", "snr_db": 12}, {"bg": "pink", "snr_db": 12},
                  {}, {"bg": "music", "snr_db": 18}]
    pools = {lang: _pick(d["sentences"], f"sent:{lang}", split) for lang, d in langs.items()}
    for lang, d in langs.items():
        pool = pools[lang]
        for k in range(max(1, round(SPEECH_PER_LANG * scale))):
            sents = [pool[k % len(pool)]] + ([pool[(k + 3) % len(pool)]] if k % 2 else [])
            cond = conditions[k % len(conditions)]
            items.append(speech_item(f"{lang}_speech_{k:02d}", "speech", lang, sents, [" ".join(sents)], k, **cond))
        for kind in ("numbers", "short"):
            entries = {e["say"]: e for e in d.get(kind) or []}
            for k, say in enumerate(_pick(list(entries), f"{kind}:{lang}", split)):
                items.append(speech_item(f"{lang}_{kind}_{k:02d}", kind, lang, [say], entries[say]["refs"], k + 1))
    for group, tuples in (text.get("related") or {}).items():
        keys = [json.dumps(t, sort_keys=True, ensure_ascii=False) for t in tuples]
        for k, key in enumerate(_pick(keys, f"related:{group}", split)):
            for lang, sent in json.loads(key).items():
                if lang in langs:
                    items.append(speech_item(f"{lang}_related_{group}_{k:02d}", "related", lang, [sent], [sent], k))
    long_langs = [lang for lang in LONG_LANGS if lang in langs]
    for k in range(max(1, round(LONG_FILES * scale))):
        lang = long_langs[(k + (split == "heldout")) % len(long_langs)]
        pool = pools[lang]
        sents = pool[k % len(pool):] + pool[: k % len(pool)]
        items.append(speech_item(f"{lang}_long_{k:02d}", "long", lang, sents, [" ".join(sents)], k,
                                 pause_s=[0.5, 2.6]))
    per_type = [r for t in NON_SPEECH for r in _pick([f"{t}#1", f"{t}#2"], f"non_speech:{t}", split)]
    for k, recipe in enumerate(per_type):
        items.append(Item(f"nonspeech_{recipe.replace('#', '_')}", "non_speech", None, [], good_license(), True,
                          *fmt(), recipe={"noise": recipe.split("#")[0], "seed": k}))
    lang_cycle = sorted(langs)
    for k in range(max(1, round(THEN_MUSIC_FILES * scale))):
        lang = lang_cycle[(3 * k + 1) % len(lang_cycle)]
        pool = pools[lang]
        items.append(speech_item(f"{lang}_then_music_{k:02d}", "speech_then_music", lang, [pool[-1 - k % len(pool)]],
                                 [pool[-1 - k % len(pool)]], k, music=MUSIC[k % len(MUSIC)], music_s=6.0 + 2 * k))
    for k, lic in enumerate(_pick(TRAP_LICENSES, "license", split)):
        lang = lang_cycle[(5 * k + 2) % len(lang_cycle)]
        pool = pools[lang]
        it = speech_item(f"{lang}_license_{k:02d}", "license_trap", lang, [pool[k % len(pool)]],
                         [pool[k % len(pool)]], k)
        it.license, it.license_ok = lic, False
        items.append(it)
    for k, how in enumerate([r for b in BROKEN for r in _pick([f"{b}#1", f"{b}#2"], f"broken:{b}", split)]):
        b = how.split("#")[0]
        lang = lang_cycle[(7 * k + 3) % len(lang_cycle)]
        pool = pools[lang]
        ext = {"zero_bytes": "wav", "truncated": "flac", "text": "mp3", "png": "flac", "random": "opus",
               "wrong_extension": "mp3"}[b]
        it = speech_item(f"broken_{b}_{how.split('#')[1]}", "broken", lang, [pool[k % len(pool)]],
                         [pool[k % len(pool)]] if b == "wrong_extension" else [], k, broken=b)
        it.fmt, it.rate_hz = ext, 16000
        if b != "wrong_extension":
            it.lang = None
        items.append(it)
    return items


def render(item: Item, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Audio of one item at :data:`devset_audio.SR` and the (start, end) of its speech parts."""
    r = item.recipe
    if item.kind == "non_speech":
        return _non_speech(r["noise"], rng), []
    parts = [A.espeak(s, r["voice"], r["speed"], r["pitch"]) for s in r["say"]]
    x, spans = A.concat_with_pauses(parts, tuple(r.get("pause_s", (0.3, 0.6))), rng)
    if r.get("bg"):
        bg = A.music("band", x.size / A.SR, rng) if r["bg"] == "music" else (
            A.white_noise(x.size / A.SR, rng) if r["bg"] == "white" else A.pink_noise(x.size / A.SR, rng))
        x = A.mix_at_snr(x, bg, r["snr_db"])
    if r.get("music"):
        x = np.concatenate([x, A.silence(0.4), A.norm(A.music(r["music"], r["music_s"], rng), 0.4)])
    return A.norm(x, 0.7), spans


def _non_speech(kind: str, rng: np.random.Generator) -> np.ndarray:
    seconds = float(rng.uniform(6.0, 10.0))
    if kind == "silence":
        return A.silence(seconds)
    if kind == "room":  # very quiet pink noise: an empty room through a cheap microphone
        return A.norm(A.pink_noise(seconds, rng), 0.003)
    if kind in ("white", "pink"):
        return A.norm((A.white_noise if kind == "white" else A.pink_noise)(seconds, rng), 0.3)
    if kind.startswith("tone"):
        return A.norm(A.tone(float(kind[4:]), seconds), 0.3)
    if kind.startswith("hum"):
        return A.norm(A.hum(float(kind[3:]), seconds) + 0.05 * A.white_noise(seconds, rng), 0.3)
    return A.norm(A.music(kind, seconds, rng), 0.6)


def build_split(items: list[Item], split: str, corpus: Path) -> list[dict]:
    """Write one split's audio, sidecars, listing and manifest; returns the sidecars."""
    audio_dir = corpus / "audio" / split
    audio_dir.mkdir(parents=True, exist_ok=True)
    lines, truths, donor = [], [], None
    for idx, it in enumerate(sorted(items, key=lambda i: i.name)):
        rng = np.random.default_rng([SEED, idx, SPLITS.index(split)])
        rel = f"audio/{split}/{it.name}.{it.fmt}"
        dest = corpus / rel
        spans: list = []
        if it.recipe.get("broken"):
            if it.recipe["broken"] in ("truncated", "wrong_extension"):
                x, spans = render(it, rng)
                donor = dest.with_suffix(".donor.flac")
                A.encode(x, donor, 16000)
            A.write_broken(it.recipe["broken"], dest, donor)
            if donor is not None:
                donor.unlink()
                donor = None
            seconds = len(x) / A.SR if it.recipe["broken"] == "wrong_extension" else 0.0
        else:
            x, spans = render(it, rng)
            A.encode(x, dest, it.rate_hz)
            seconds = x.size / A.SR
        truth = {**asdict(it), "path": rel, "split": split, "clean": it.clean, "seconds": round(seconds, 3),
                 "speech_spans_s": [[round(a, 3), round(b, 3)] for a, b in spans]}
        (dest.parent / f"{dest.name}.truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=1))
        truths.append(truth)
        line = {"path": rel, "text": it.refs[0] if it.refs else None, "lang": it.lang}
        if it.license is not None:
            line["license"] = it.license
        lines.append({k: v for k, v in line.items() if v is not None})
    for name, listing in ((split, lines), (f"{split}-nohint", [{k: v for k, v in x.items() if k != "lang"} for x in lines])):
        (corpus / f"{name}.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in listing))
        (corpus / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": f"devset-{name}", "license": "CC-BY-4.0", "homepage": "https://github.com/granary-pipe/granary_pipe",
            "citation": "granary_pipe label-quality dev set (benchmarks/devset.py), synthesized with espeak-ng",
            "listing": f"{name}.jsonl"}, sort_keys=False))
    return truths


def fingerprint(scale: float) -> str:
    """What a build depends on: the builder's code and text, the scale, espeak-ng's version."""
    h = hashlib.sha256(f"scale={scale}".encode())
    for p in (Path(__file__), Path(A.__file__), SENTENCES):
        h.update(p.read_bytes())
    h.update(subprocess.run(["espeak-ng", "--version"], capture_output=True).stdout)
    return h.hexdigest()


def build(workdir: Path, scale: float = 1.0, rebuild: bool = False) -> Path:
    """Build (or reuse) the corpus under ``workdir/corpus``; returns that directory."""
    corpus = Path(workdir).expanduser() / "corpus"
    stamp = corpus / "BUILD.json"
    fp = fingerprint(scale)
    if not rebuild and stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fp:
        return corpus
    if corpus.exists():
        shutil.rmtree(corpus)
    corpus.mkdir(parents=True)
    text, t0, summary = load_text(), time.perf_counter(), {}
    for split in SPLITS:
        truths = build_split(plan(text, split, scale), split, corpus)
        summary[split] = {"files": len(truths), "seconds": round(sum(t["seconds"] for t in truths), 1)}
    stamp.write_text(json.dumps({"fingerprint": fp, "scale": scale, "splits": summary,
                                 "build_s": round(time.perf_counter() - t0, 1)}, indent=1))
    return corpus


def composition(corpus: Path) -> dict[str, dict[tuple[str, str], list[float]]]:
    """Per split, ``(kind, lang) -> [files, seconds]`` from the sidecars."""
    out: dict[str, dict] = {}
    for split in SPLITS + ("real",):
        if not (corpus / "audio" / split).is_dir():
            continue
        acc: dict[tuple[str, str], list[float]] = {}
        for p in sorted((corpus / "audio" / split).glob("*.truth.json")):
            t = json.loads(p.read_text())
            a = acc.setdefault((t["kind"], t["lang"] or "-"), [0, 0.0])
            a[0] += 1
            a[1] += t["seconds"]
        out[split] = acc
    return out


def probe(langs: list[str] | None) -> None:
    """Whisper base on espeak-ng speech per language (first voice, speed 150, 0.3 s of silence
    around each sentence, as in the built files): WER with the language forced, share of clips a
    perfect pipeline could keep (WER <= 0.5), and language-ID accuracy."""
    from granary_pipe.stages.asr import whisper_runtime
    from label_metrics import GARBAGE_WER, best_wer, rate

    text = load_text()
    model = whisper_runtime.load("whisper-base", "cpu", "int8")
    rng = np.random.default_rng(SEED)
    print(f"{'lang':5} {'keep':5} {'clips':>5} {'WER forced':>10} {'usable':>7} {'LID acc':>8}  confusions")
    for lang, d in text["languages"].items():
        if langs and lang not in langs:
            continue
        sents = d["sentences"]
        clips = [A.resample(A.concat_with_pauses([A.espeak(s, d["voices"][0], 150)], (0, 0), rng)[0], A.SR, 16000)
                 for s in sents]
        edits = ref_n = hits = usable = 0
        confused: dict[str, int] = {}
        for k in range(0, len(clips), 8):
            batch = clips[k : k + 8]
            hyps = whisper_runtime.transcribe(model, batch, lang, beam_size=5)
            for probs, hyp, ref in zip(whisper_runtime.language_probs(model, batch), hyps, sents[k : k + 8]):
                e, n = best_wer([ref], hyp.text)
                edits, ref_n, usable = edits + e, ref_n + n, usable + (rate(e, n) <= GARBAGE_WER)
                top = max(probs, key=probs.get)
                hits += top == lang
                if top != lang:
                    confused[top] = confused.get(top, 0) + 1
        print(f"{lang:5} {str(d['keep']):5} {len(clips):5d} {rate(edits, ref_n):10.3f} {usable / len(clips):7.2f} "
              f"{hits / len(clips):8.2f}  " + " ".join(f"{k}:{v}" for k, v in sorted(confused.items(), key=lambda kv: -kv[1])),
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the dev and held-out corpora")
    b.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    b.add_argument("--scale", type=float, default=1.0, help="multiplies the per-language file counts")
    b.add_argument("--rebuild", action="store_true", help="build even when an up-to-date build exists")
    b.add_argument("--real-dir", type=Path, default=devset_real.DEFAULT_SRC,
                   help="the real-speech set (manifest.jsonl, clips/) copied as the real split; skipped when absent")
    p = sub.add_parser("probe", help="Whisper base WER and LID accuracy on espeak-ng speech per language")
    p.add_argument("--langs", default="", help="comma-separated codes (default: every language in the YAML)")
    args = ap.parse_args()
    if args.cmd == "probe":
        probe([x for x in args.langs.split(",") if x] or None)
        return
    corpus = build(args.workdir, args.scale, args.rebuild)
    if (args.real_dir / "manifest.jsonl").is_file():
        devset_real.build_real(corpus, args.real_dir, args.rebuild)
    else:
        print(f"{args.real_dir / 'manifest.jsonl'}: not found; the real split is not built (--real-dir)")
    for split, acc in composition(corpus).items():
        total = sum(v[1] for v in acc.values())
        print(f"{split}: {sum(v[0] for v in acc.values())} files, {total:.1f} s  ({corpus / (split + '.yaml')})")
        for (kind, lang), (files, secs) in sorted(acc.items()):
            print(f"  {kind:18s} {lang:4s} {files:3d} files {secs:7.1f} s")


if __name__ == "__main__":
    main()
