"""Label quality of ``granary run`` on a labelled dev set, against the published way and a naive pass.

    python benchmarks/label_quality.py [--pipeline pipelines/demo.yaml] [--split dev|heldout|real|both|all]
                                       [--workdir DIR] [--rebuild] [--scale 1.0] [--baselines] [--failures]
                                       [--no-lang-hints] [--reuse-runs] [--real-dir DIR]

Builds the dev set if needed (``devset.py``; default ``~/.cache/granary_pipe/devset``; the
``real`` split: recorded speech with human references, ``devset_real.py``: FLEURS, CC-BY-4.0,
and SpeechBrain test samples, Apache-2.0; ``both`` is dev and heldout, ``all`` adds real), runs
``granary run PIPELINE --source WORKDIR/corpus/SPLIT.yaml --out WORKDIR/runs/SPLIT`` (the real
CLI, embedded Ray; the run directory is replaced each time), and prints per split:

- hallucinated text from non-speech: non-speech files with any kept row;
- license leaks: kept rows (files) from files whose listing license is not open-source compliant;
- garbage released: files with kept rows whose kept text (time order) has WER > 0.5 against the
  reference of their speech part (non-speech files with kept text count, as WER 1);
- false rejects: clean files (compliant license, real speech) with nothing kept;
- English WER of kept files (hypothesis: the file's kept text, so dropped segments are
  deletions; over English clean files with kept rows), and the same per language;
- LID accuracy of kept: files with kept rows whose (majority) ``lang`` is the reference language;
- per rule (``drop_reason`` up to its second ':'): rows and seconds rejected, rows from clean
  files, and rows whose text matches its best span of the file's reference with WER ≤ 0.2
  ("actually good"): good / rows is the rule's false-reject rate;
- wall time and × real time of each run; characters per second of VAD speech of clean kept rows
  per language (reference span and kept text).

``--baselines`` also runs, in this process and on the same files, the two baselines of the issue:
"published way" (``pipeline_throughput.published_way``: per file language ID, a long-form
``transcribe`` and one ``transcribe`` per VAD segment; the file is kept when the language
probability is ≥ 0.7, its labels are the per-segment texts) and "naive single pass" (one
``transcribe`` per file, everything kept: the published way's long-form pass, whose language
comes from the same first-30-s detection ``transcribe`` does by itself). Models: the pipeline's
(``pipeline_models``). With ``--baselines`` a third column, "oracle", decodes every clean file
told its reference language (the published way's per-segment ``transcribe``, beam 5, on the same
VAD segments; its texts are reused where the published way's language ID was right): the best a
perfect language ID keeps. Its WER per language stands next to the others, and "usable labels
lost" counts, per system, clean files with nothing kept whose oracle WER is <= 0.5.
``--failures`` lists every false reject and garbage file with what the
pipeline produced and which rule fired.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path
from unittest import mock

import ctranslate2
import pyarrow.parquet as pq
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import devset  # noqa: E402
import devset_real  # noqa: E402
import pipeline_throughput as pt  # noqa: E402
from label_metrics import (GARBAGE_WER, FileResult, Row, best_wer, char_rates, classify, fmt_count,  # noqa: E402
                           fmt_rate, rate, rule_table, summarize)
from granary_pipe.stages.asr import whisper_runtime  # noqa: E402
from granary_pipe.stages.audio.decode import decode_file  # noqa: E402
from granary_pipe.stages.segment.silero import SileroSegment  # noqa: E402

PUBLISHED_MIN_LANG_PROB = 0.7
SAMPLING_SEED = 20261206
"""Seed of CTranslate2's sampler, set before each file of the baselines and the oracle: their
temperature fallback samples, and an unseeded oracle called one file usable in one run and
unusable in the next."""
_ROW_COLUMNS = ["audio_relpath", "offset_s", "duration_s", "text", "lang", "drop_reason", "lang_prob", "flags",
                "avg_logprob", "compression_ratio", "no_speech_prob", "pass1_text"]


def load_truth(corpus: Path, split: str) -> dict[str, dict]:
    """Sidecars of a split, by listing path."""
    truths = {}
    for line in (corpus / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
        path = json.loads(line)["path"]
        side = corpus / f"{path}.truth.json"
        if not side.is_file():
            raise SystemExit(f"{side}: sidecar missing; rebuild with --rebuild")
        truths[path] = json.loads(side.read_text(encoding="utf-8"))
    return truths


# ----------------------------------------------------------------------------- the pipeline


def run_pipeline(pipeline: Path, manifest: Path, out: Path) -> dict:
    """``granary run`` as a user runs it (fresh run directory); wall seconds and audio seconds."""
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "granary_pipe.cli", "run", str(pipeline), "--source", str(manifest),
           "--out", str(out), "-q"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"granary run exited {proc.returncode} on {manifest} (run dir {out})")
    info = json.loads((out / "run.json").read_text())
    return {"wall_s": wall, "audio_s": info["audio_hours_in"] * 3600, "failed_units": info.get("failed_units") or []}


def read_run(run: Path, truths: dict[str, dict]) -> list[FileResult]:
    """Kept and rejected rows of every committed unit, by file."""
    files = {p: FileResult(p, t) for p, t in truths.items()}
    for unit in sorted((run / "units").iterdir()):
        if not (unit / "_COMMITTED").exists():
            continue
        for table, kept in (("kept", True), ("rejected", False)):
            path = unit / f"{table}.parquet"
            if not path.exists():
                continue
            cols = [c for c in _ROW_COLUMNS if c in pq.read_schema(path).names]
            for r in pq.read_table(path, columns=cols).to_pylist():
                f = files.get(r["audio_relpath"])
                if f is None:
                    raise SystemExit(f"{path}: row for {r['audio_relpath']!r}, which is not in the listing")
                row = Row(r["offset_s"] or 0.0, r["duration_s"] or 0.0, r.get("text") or "", r.get("lang"),
                          r.get("drop_reason"), {k: r.get(k) for k in _ROW_COLUMNS[6:] if k in r})
                (f.kept if kept else f.rejected).append(row)
    return list(files.values())


# ----------------------------------------------------------------------------- baselines


class _Recorder:
    """Wraps a WhisperModel so that what ``published_way`` computes is kept, per file."""

    def __init__(self, model, log: dict) -> None:
        self._model, self._log = model, log

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def detect_language(self, audio, **kw):
        t0 = time.perf_counter()
        out = self._model.detect_language(audio, **kw)
        cur = self._log["current"]
        cur["lid"] = (out[0], float(out[1]))
        cur["naive_s"] += time.perf_counter() - t0
        return out

    def transcribe(self, audio, **kw):
        t0 = time.perf_counter()
        segs, info = self._model.transcribe(audio, **kw)
        segs = list(segs)
        cur = self._log["current"]
        if "long" not in cur:  # published_way's first transcribe of a file is the long-form pass
            cur["long"] = segs
            cur["naive_s"] += time.perf_counter() - t0
        else:
            cur["segments"].append((audio.size / 16000, segs))
        return segs, info


def baselines(pipeline: Path, corpus: Path, truths: dict[str, dict]) -> dict[str, tuple[list[FileResult], dict]]:
    """Both baselines on every file: ``{name: (results, {"wall_s", "audio_s"})}``."""
    pt.MODELS.clear()
    pt.MODELS.update(pt.pipeline_models(pipeline))
    log: dict = {"files": {}, "current": None}
    real_decode, real_load = pt.decode_file, pt.whisper_runtime.load

    def decode(path: str, max_s: float):
        ctranslate2.set_random_seed(SAMPLING_SEED)  # temperature fallback samples: the same texts each run
        t0 = time.perf_counter()
        cur = log["files"][path] = {"lid": None, "segments": [], "naive_s": 0.0}
        log["current"] = cur
        audio, info = real_decode(path, max_s)
        cur["audio_s"] = audio.size / 16000
        cur["naive_s"] += time.perf_counter() - t0
        return audio, info

    shim = types.SimpleNamespace(load=lambda *a, **k: _Recorder(real_load(*a, **k), log))
    entries = [{"path": p} for p in truths]
    with mock.patch.object(pt, "decode_file", decode), mock.patch.object(pt, "whisper_runtime", shim):
        timing = pt.published_way(entries, corpus)
    published, naive = [], []
    for p, t in truths.items():
        rec = log["files"].get(str(corpus / p)) or {"lid": None, "segments": []}
        pub, nai = FileResult(p, t), FileResult(p, t)
        lang, prob = rec["lid"] or (None, 0.0)
        for k, (dur, segs) in enumerate(rec["segments"]):
            row = Row(float(k), dur, " ".join(s.text.strip() for s in segs).strip(), lang)
            if prob >= PUBLISHED_MIN_LANG_PROB and row.text:
                pub.kept.append(row)
            else:
                row.drop_reason = "published:lang_prob" if row.text else "published:empty"
                pub.rejected.append(row)
        for s in rec.get("long") or []:
            if s.text.strip():
                nai.kept.append(Row(s.start, s.end - s.start, s.text.strip(), lang))
        published.append(pub)
        naive.append(nai)
    naive_s = sum(r["naive_s"] for r in log["files"].values())
    t0 = time.perf_counter()
    oracle = []
    for p, t in truths.items():
        rec = log["files"].get(str(corpus / p)) or {}
        reuse = [" ".join(s.text.strip() for s in segs).strip() for _, segs in rec.get("segments") or []] \
            if (rec.get("lid") or (None,))[0] == t["lang"] else None
        oracle.append(oracle_result(corpus, p, t, reuse))
    oracle_timing = {"wall_s": time.perf_counter() - t0, "audio_s": timing["audio_s"]}
    return {"published way": (published, timing),
            "naive single pass": (naive, {"wall_s": naive_s, "audio_s": timing["audio_s"]}),
            "oracle": (oracle, oracle_timing)}


_ORACLE: dict[tuple[str, str], list[str]] = {}


def oracle_texts(corpus: Path, path: str, lang: str) -> list[str]:
    """The published way's per-segment ``transcribe`` (beam 5, faster-whisper's defaults) told the
    reference language, on the default Silero segments; one text per segment (cached)."""
    key = (str(corpus / path), lang)
    if key not in _ORACLE:
        model = whisper_runtime.load(pt.MODELS.get(lang, pt.MODELS["default"]), pt.DEVICE["device"],
                                     pt.DEVICE["compute_type"])
        audio, _ = decode_file(key[0], 6 * 3600)
        ctranslate2.set_random_seed(SAMPLING_SEED)
        kw = {"language": lang} if model.model.is_multilingual else {}
        _ORACLE[key] = [" ".join(s.text.strip() for s in model.transcribe(audio[a:b], beam_size=5, **kw)[0]).strip()
                        for a, b in SileroSegment().segments(audio)]
    return _ORACLE[key]


def oracle_result(corpus: Path, path: str, truth: dict, reuse: list[str] | None = None) -> FileResult:
    """The oracle on one file: clean files only, everything it decodes kept. ``reuse``: segment
    texts already decoded in the reference language (the published way's, when its LID was right)."""
    res = FileResult(path, truth)
    if not truth["clean"]:
        return res
    if reuse is not None:
        _ORACLE[(str(corpus / path), truth["lang"])] = reuse
    try:
        texts = oracle_texts(corpus, path, truth["lang"])
    except Exception:  # noqa: BLE001 - a file the decoder refuses yields nothing, as in the baselines
        return res
    res.kept = [Row(float(k), 0.0, text, truth["lang"]) for k, text in enumerate(texts) if text]
    return res


# ----------------------------------------------------------------------------- printing


def print_table(split: str, systems: dict[str, tuple[list[FileResult], dict]]) -> None:
    """The side-by-side table of one split."""
    sums = {name: summarize(res) for name, (res, _) in systems.items()}
    names = list(systems)
    first = next(iter(systems.values()))[0]
    seconds = sum(f.truth["seconds"] for f in first)
    print(f"\n=== {split}: {len(first)} files, {seconds:.1f} s of audio ===")
    width = max(20, *(len(n) for n in names))
    rows: list[tuple[str, list[str]]] = [
        ("hallucinated text from non-speech", [fmt_count(s["nonspeech_hallucinated"]) for s in sums.values()]),
        ("license leaks: kept rows (files)", [f"{s['license_leak_rows']} ({s['license_leak_files']})" for s in sums.values()]),
        ("garbage released: files (non-speech)", [f"{s['garbage_files']} ({s['garbage_nonspeech']})" for s in sums.values()]),
        ("false rejects: clean files", [fmt_rate(s["false_rejects"]) for s in sums.values()]),
        ("English WER of kept (files)", [f"{s['wer_en']:.3f} ({s['wer_en_files']})" if s["wer_en"] is not None else "-"
                                         for s in sums.values()]),
        ("LID accuracy of kept", [fmt_rate(s["lid_kept"]) for s in sums.values()]),
    ]
    if "oracle" in systems:
        usable = {f.path for f in systems["oracle"][0] if f.kept and rate(*best_wer(f.truth["refs"], f.kept_text, f.truth.get("lang")))
                  <= GARBAGE_WER}
        rows.append((f"usable labels lost (oracle WER <= {GARBAGE_WER})", [
            f"{sum(1 for f in res if f.path in usable and not f.kept)} / {len(usable)}" for res, _ in systems.values()]))
    langs = sorted({lang for s in sums.values() for lang in s["wer_by_lang"]})
    for lang in langs:
        rows.append((f"WER of kept, {lang} (files)", [
            f"{s['wer_by_lang'][lang][0]:.3f} ({s['wer_by_lang'][lang][1]})" if lang in s["wer_by_lang"] else "-"
            for s in sums.values()]))
    rows.append(("wall s / x real time", [f"{t['wall_s']:.1f} / {t['audio_s'] / t['wall_s']:.2f}x"
                                          for _, t in systems.values()]))
    print(f"{'':40s} " + " ".join(f"{n:>{width}s}" for n in names))
    for label, vals in rows:
        print(f"{label:40s} " + " ".join(f"{v:>{width}s}" for v in vals))
    res = systems[names[0]][0]
    print(f"\nper rule ({names[0]}): rows rejected, seconds, rows from clean files, of those with text, "
          "actually good (text WER <= 0.2 on its best reference span), false-reject rate = good / rows")
    print(f"{'rule':36s} {'rows':>5s} {'sec':>7s} {'clean':>6s} {'w/text':>6s} {'good':>5s} {'FR rate':>8s}")
    for r in rule_table(res):
        print(f"{r['rule'][:36]:36s} {r['rows']:5d} {r['seconds']:7.1f} {r['clean_rows']:6d} {r['with_text']:6d} "
              f"{r['good']:5d} {r['good'] / r['rows']:8.1%}")


def print_char_rates(split: str, results: list[FileResult]) -> None:
    """Characters per second of VAD speech of clean kept rows, per language."""
    print(f"\nchars/s of VAD speech, clean kept rows ({split}): reference span (normalised: no punctuation) | kept text")
    print(f"{'lang':5s} {'rows':>5s} {'ref mean':>9s} {'p5':>6s} {'p95':>6s} {'kept mean':>10s} {'p5':>6s} {'p95':>6s}")
    for lang, d in char_rates(results).items():
        r, k = d["ref"], d["kept"]
        print(f"{lang:5s} {r[3]:5d} {r[0]:9.2f} {r[1]:6.2f} {r[2]:6.2f} {k[0]:10.2f} {k[1]:6.2f} {k[2]:6.2f}")


def oracle_text(pipeline: Path, corpus: Path, f: FileResult) -> str:
    """What the pipeline's Whisper makes of a file told its reference language (:func:`oracle_texts`):
    the best a perfect language ID could have kept."""
    if not pt.MODELS:
        pt.MODELS.update(pt.pipeline_models(pipeline))
    return " ".join(t for t in oracle_texts(corpus, f.path, f.truth["lang"]) if t)


def print_failures(results: list[FileResult], pipeline: Path, corpus: Path) -> None:
    """Every false reject and garbage file with its cause, what the pipeline produced and the
    rule that fired, and the WER of an oracle decode (reference language forced): a false reject
    whose oracle WER is ≤ 0.5 lost a usable label, one above it was refused rightly in effect
    (Whisper base cannot transcribe that audio). Then the count per cause, and whether pass 1
    texts exist at all."""
    print("\nfailures (pipeline), with the WER of a decode forced to the reference language (oracle):")
    causes: dict[str, list[str]] = {}
    for f in sorted(results, key=lambda f: f.path):
        cause = classify(f)
        if cause is None:
            continue
        t = f.truth
        oracle = rate(*best_wer(t["refs"], oracle_text(pipeline, corpus, f), t.get("lang"))) if t["refs"] else None
        if oracle is not None:
            cause += " | oracle usable" if oracle <= GARBAGE_WER else " | oracle unusable too"
        causes.setdefault(cause, []).append(f.path)
        print(f"- {cause}: {f.path} [{t['kind']}, {t['lang']}] ref: {t['refs'][0] if t['refs'] else '-'!r}"
              + (f" oracle WER {oracle:.2f}" if oracle is not None else ""))
        for r in sorted(f.kept + f.rejected, key=lambda r: r.offset_s):
            x = r.extra
            scores = " ".join(f"{k}={x[k]:.2f}" for k in ("lang_prob", "avg_logprob", "compression_ratio",
                                                         "no_speech_prob") if x.get(k) is not None)
            print(f"    {r.offset_s:6.1f}+{r.duration_s:5.1f}s {r.drop_reason or 'KEPT'} lang={r.lang} {scores} "
                  f"flags={x.get('flags')} text={r.text!r}")
    print("\ncauses:")
    for cause, paths in sorted(causes.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(paths):3d}  {cause}")
    lost = sum(len(p) for c, p in causes.items() if c.startswith("FR") and c.endswith("| oracle usable"))
    futile = sum(len(p) for c, p in causes.items() if c.startswith("FR") and c.endswith("oracle unusable too"))
    print(f"false rejects that lost a usable label (oracle WER <= {GARBAGE_WER}): {lost}; "
          f"of files the model cannot transcribe even with the language given: {futile}")
    rows = [r for f in results for r in f.kept + f.rejected]
    with_p1 = sum(1 for r in rows if r.extra.get("pass1_text") is not None)
    uses = any(st.get("use") == "filter.pass_agreement" for st in yaml.safe_load(pipeline.read_text())["stages"])
    print(f"pass_agreement: {with_p1} of {len(rows)} rows carry pass1_text; "
          f"{pipeline.name} {'runs' if uses else 'does not run'} filter.pass_agreement")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", type=Path, default=ROOT / "pipelines" / "demo.yaml")
    ap.add_argument("--split", choices=["dev", "heldout", "real", "both", "all"], default="dev",
                    help="both: dev and heldout; all: dev, heldout and real (recorded speech)")
    ap.add_argument("--real-dir", type=Path, default=devset_real.DEFAULT_SRC,
                    help="the real-speech set (manifest.jsonl, clips/) the real split is copied from")
    ap.add_argument("--workdir", type=Path, default=devset.DEFAULT_WORKDIR)
    ap.add_argument("--rebuild", action="store_true", help="rebuild the dev set even when it is up to date")
    ap.add_argument("--scale", type=float, default=1.0, help="dev-set size (multiplies per-language file counts)")
    ap.add_argument("--baselines", action="store_true", help="also run the published way and a naive single pass")
    ap.add_argument("--failures", action="store_true", help="list every false reject and garbage file, with causes")
    ap.add_argument("--no-lang-hints", action="store_true",
                    help="run on the listings without the 'lang' hint (SPLIT-nohint.yaml): audio language ID alone")
    ap.add_argument("--reuse-runs", action="store_true",
                    help="score the run directories of the last invocation instead of running the pipeline again "
                         "(wall time then from run.json)")
    args = ap.parse_args()
    if not args.pipeline.is_file():
        raise SystemExit(f"{args.pipeline}: pipeline file not found")
    workdir = args.workdir.expanduser().resolve()
    t0 = time.perf_counter()
    splits = {"both": ["dev", "heldout"], "all": ["dev", "heldout", "real"]}.get(args.split, [args.split])
    corpus = (devset.build(workdir, args.scale, args.rebuild) if set(splits) - {"real"}
              else workdir / "corpus")
    if "real" in splits:
        devset_real.build_real(corpus, args.real_dir, args.rebuild)
    print(f"dev set: {corpus} (built or reused in {time.perf_counter() - t0:.1f} s); pipeline {args.pipeline}; "
          f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M')}")
    for split in splits:
        truths = load_truth(corpus, split)
        manifest = corpus / (f"{split}-nohint.yaml" if args.no_lang_hints else f"{split}.yaml")
        run = workdir / "runs" / (f"{split}-nohint" if args.no_lang_hints else split)
        if args.reuse_runs and (run / "run.json").is_file():
            info = json.loads((run / "run.json").read_text())
            timing = {"wall_s": info["wall_s"], "audio_s": info["audio_hours_in"] * 3600,
                      "failed_units": info.get("failed_units") or []}
        else:
            timing = run_pipeline(args.pipeline.resolve(), manifest, run)
        if timing["failed_units"]:
            print(f"warning: failed units in {split}: {timing['failed_units']}")
        results = read_run(run, truths)
        systems = {"pipeline": (results, timing)}
        if args.baselines:
            systems.update(baselines(args.pipeline, corpus, truths))
        print_table(split, systems)
        print_char_rates(split, results)
        if args.failures:
            print_failures(results, args.pipeline, corpus)
    print(f"\ntotal wall: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
