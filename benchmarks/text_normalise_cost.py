"""Cost of the project's one text normaliser (``granary_pipe.text``) per sentence, per language.

    python benchmarks/text_normalise_cost.py [--repeat 3] [--real-dir ../shared/realspeech-dev]

Texts: every sentence, number and short-clip reference of ``devset_sentences.yaml`` (the label
benchmark's synthetic dev set) and the human references of the real-speech split's manifest. Per
language it times, on the same texts in the same run:

- ``basic``: whisper-normalizer's ``BasicTextNormalizer(remove_diacritics=False)`` (the baseline:
  a normaliser that knows no numbers);
- ``normalize cold``: ``text.normalize`` with its cache cleared before each pass (every sentence new,
  as in a run where each row's text is compared once);
- ``normalize warm``: the same texts again (the cache hit a second comparison of a row gets);
- ``error_rate``: ``text.error_rate(ref, hyp)`` of each sentence against itself with its numbers
  written the other way (what pass agreement pays per row), cache cleared.

Prints microseconds per sentence and each figure ÷ basic.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import yaml
from whisper_normalizer.basic import BasicTextNormalizer

from granary_pipe import text

HERE = Path(__file__).resolve().parent


def load_texts(real_dir: Path) -> dict[str, list[str]]:
    """Sentences per language from the synthetic dev set's text and the real split's references."""
    by_lang: dict[str, list[str]] = defaultdict(list)
    data = yaml.safe_load((HERE / "devset_sentences.yaml").read_text(encoding="utf-8"))
    for lang, spec in data["languages"].items():
        by_lang[lang] += spec.get("sentences", [])
        for kind in ("numbers", "short"):
            by_lang[lang] += [item["refs"][0] for item in spec.get(kind, [])]
    manifest = real_dir / "manifest.jsonl"
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            by_lang[entry["lang"]].append(entry["text"])
    return {lang: texts for lang, texts in sorted(by_lang.items()) if texts}


def other_way(sentence: str, lang: str) -> str:
    """The sentence with its numbers in the other written form (digits <-> words, as a second pass may write)."""
    from num2words import num2words

    words = []
    for word in sentence.split():
        core = word.strip(".,;:!?")
        if core.isdigit() and len(core) < 7:
            try:
                word = word.replace(core, num2words(int(core), lang=lang))
            except (NotImplementedError, OverflowError):
                pass
        words.append(word)
    return " ".join(words)


def per_sentence_us(fn, items: list, repeat: int, before=None) -> float:
    """Median over ``repeat`` passes of the microseconds per item of ``fn(item)``."""
    passes = []
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        passes.append((time.perf_counter() - t0) / len(items) * 1e6)
    return statistics.median(passes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed passes per figure (median; default 3)")
    ap.add_argument("--real-dir", type=Path, default=HERE.parent.parent / "shared" / "realspeech-dev",
                    help="the real-speech split's folder (its manifest.jsonl; skipped when absent)")
    args = ap.parse_args()
    texts = load_texts(args.real_dir)
    basic = BasicTextNormalizer(remove_diacritics=False)
    clear = text._normalize.cache_clear
    text.normalize("warm up imports 21", "en")
    for lang, items in texts.items():  # imports and compiled patterns outside the timing
        text.normalize("1", lang)
        for s in items:
            basic(s)

    print(f"{sum(map(len, texts.values()))} sentences in {len(texts)} languages; median of {args.repeat} passes")
    print(f"{'lang':5} {'n':>4} {'basic us':>9} {'cold us':>9} {'÷ basic':>8} {'warm us':>8} "
          f"{'error_rate us':>14} {'÷ basic':>8}")
    totals = defaultdict(float)
    for lang, items in texts.items():
        pairs = [(s, other_way(s, lang)) for s in items]
        b = per_sentence_us(basic, items, args.repeat)
        cold = per_sentence_us(lambda s, lg=lang: text.normalize(s, lg), items, args.repeat, before=clear)
        warm = per_sentence_us(lambda s, lg=lang: text.normalize(s, lg), items, args.repeat)
        rate = per_sentence_us(lambda p, lg=lang: text.error_rate(p[0], p[1], lg), pairs, args.repeat, before=clear)
        for key, value in (("basic", b), ("cold", cold), ("warm", warm), ("rate", rate)):
            totals[key] += value * len(items)
        print(f"{lang:5} {len(items):>4} {b:>9.1f} {cold:>9.1f} {cold / b:>7.1f}x {warm:>8.1f} {rate:>14.1f} "
              f"{rate / b:>7.1f}x")
    n = sum(map(len, texts.values()))
    print(f"{'all':5} {n:>4} {totals['basic'] / n:>9.1f} {totals['cold'] / n:>9.1f} "
          f"{totals['cold'] / totals['basic']:>7.1f}x {totals['warm'] / n:>8.1f} {totals['rate'] / n:>14.1f} "
          f"{totals['rate'] / totals['basic']:>7.1f}x")


if __name__ == "__main__":
    main()
