"""How many translations a run keeps, how good they are, and what they cost.

Reads a run directory made by ``benchmarks/label_quality.py`` (its dev-set corpus carries the
spoken sentences in each file's ``.truth.json``) and the hand-written English references in
``benchmarks/devset_translations.yaml``. For every clean single-sentence file of a language with
references that kept rows, it compares the run's English translation (joined over the file's kept
rows) with the reference: chrF (character 6-grams, beta 2, in [0, 100]) and WER. Prints per
language: files, translations kept (the rest were dropped by the translation filters, with the
flags that dropped them), mean chrF and WER of the kept ones, how many are wrong (chrF < 40), and
the translation stage's share of the run's stage time.

    python benchmarks/translation_quality.py [RUN_DIR]   (default: the dev-set run of label_quality.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from granary_pipe import text as text_norm  # noqa: E402

REFS = Path(__file__).with_name("devset_translations.yaml")
WRONG_CHRF = 40.0


def chrf(hyp: str, ref: str, n: int = 6, beta: float = 2.0) -> float:
    """chrF (Popović 2015): character n-gram F-beta averaged over n = 1..6, spaces removed, 0–100."""
    h, r = "".join(text_norm.normalize(hyp).split()), "".join(text_norm.normalize(ref).split())
    precisions, recalls = [], []
    for k in range(1, n + 1):
        hg = Counter(h[i:i + k] for i in range(len(h) - k + 1))
        rg = Counter(r[i:i + k] for i in range(len(r) - k + 1))
        if not hg or not rg:
            continue
        match = sum((hg & rg).values())
        precisions.append(match / sum(hg.values()))
        recalls.append(match / sum(rg.values()))
    if not precisions:
        return 0.0
    p, rc = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    return 0.0 if p + rc == 0 else 100 * (1 + beta**2) * p * rc / (beta**2 * p + rc)


def rows_by_file(run: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for f in sorted(run.glob("units/*/kept.parquet")):
        for r in pq.read_table(f).to_pylist():
            out[r["audio_relpath"]].append(r)
    return out


def measure(run: Path, corpus: Path) -> dict[str, dict]:
    """Per source language: files, translations kept, chrF/WER of the kept ones, flags of the dropped."""
    refs = yaml.safe_load(REFS.read_text(encoding="utf-8"))
    stats: dict[str, dict] = defaultdict(lambda: {"files": 0, "kept": 0, "chrf": [], "wer": [], "wrong": 0,
                                                  "dropped_by": Counter()})
    for rel, rows in sorted(rows_by_file(run).items()):
        truth = json.loads((corpus / (rel + ".truth.json")).read_text())
        said = truth.get("recipe", {}).get("say") or []
        lang = truth.get("lang")
        if truth.get("kind") != "speech" or not truth.get("clean") or len(said) != 1 or said[0] not in refs.get(lang, {}):
            continue
        s = stats[lang]
        s["files"] += 1
        rows = sorted(rows, key=lambda r: r["offset_s"])
        got = [r["translation"] for r in rows if r["translation"]]
        if len(got) < len(rows):
            s["dropped_by"].update(f for r in rows if not r["translation"] for f in (r["flags"] or [])
                                   if f.startswith("translate:"))
        if not got:
            continue
        hyp, ref = " ".join(got), refs[lang][said[0]]
        s["kept"] += 1
        s["chrf"].append(chrf(hyp, ref))
        s["wer"].append(text_norm.error_rate(ref, hyp))
        s["wrong"] += s["chrf"][-1] < WRONG_CHRF
    return stats


def stage_share(run: Path, stage: str) -> float | None:
    info = json.loads((run / "run.json").read_text())
    times = info.get("stage_s") or {}
    total = sum(times.values())
    return times.get(stage, 0.0) / total if total else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", nargs="?", type=Path, default=Path("~/.cache/granary_pipe/devset/runs/dev").expanduser())
    p.add_argument("--corpus", type=Path, default=Path("~/.cache/granary_pipe/devset/corpus").expanduser())
    args = p.parse_args()
    stats = measure(args.run, args.corpus)
    print(f"{'lang':5} {'files':>5} {'kept':>5} {'chrF':>6} {'WER':>6} {'wrong':>6}  dropped by")
    for lang, s in sorted(stats.items()):
        mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
        print(f"{lang:5} {s['files']:5d} {s['kept']:5d} {mean(s['chrf']):6.1f} {mean(s['wer']):6.2f} {s['wrong']:6d}  "
              + ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in s["dropped_by"].most_common()))
    share = stage_share(args.run, "translate.whisper")
    if share is not None:
        print(f"translate.whisper: {100 * share:.0f}% of the run's stage time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
