"""Scoring for the label-quality benchmark: WER against references, local alignment, the table.

Texts are compared after the product's own normalisation (:func:`granary_pipe.text.normalize`:
NFKC, casefold, punctuation and symbols as spaces; in a given language numbers in one written
form), so ``1-2-3`` and ``1, 2, 3`` agree; a file may list several accepted references (digits or number words) and is scored
against the best one.

The benchmark's input is one :class:`FileResult` per listed file (truth from the builder's
sidecar, plus the rows a system kept and rejected); :func:`summarize` turns a list of them into
the table rows ``label_quality.py`` prints.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from granary_pipe.text import edit_distance, normalize

GARBAGE_WER = 0.5
"""A file whose kept text is further than this from its reference is garbage."""
GOOD_SPAN_WER = 0.2
"""A rejected row whose text matches a span of the reference this well was a good label."""


def words(text: str | None, lang: str | None = None) -> list[str]:
    """Normalised words (in ``lang``, when given)."""
    return normalize(text, lang).split()


def best_wer(refs: list[str], hyp: str, lang: str | None = None) -> tuple[int, int]:
    """(edits, reference words) against the reference that gives the lowest WER, both normalised in
    ``lang`` (numbers as one form: :mod:`granary_pipe.text`); an empty reference list scores any
    hypothesis words as insertions against a 0-word reference."""
    h = words(hyp, lang)
    best: tuple[int, int] | None = None
    for ref in refs:
        r = words(ref, lang)
        cand = (edit_distance(r, h), len(r))
        if best is None or cand[0] / max(1, cand[1]) < best[0] / max(1, best[1]):
            best = cand
    return best if best is not None else (len(h), 0)


def rate(edits: int, ref_words: int) -> float:
    """Error rate; a non-empty hypothesis against an empty reference is 1.0."""
    if ref_words == 0:
        return 0.0 if edits == 0 else 1.0
    return edits / ref_words


def local_align(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    """Best-matching span ``ref[start:end]`` for ``hyp`` and its edit count.

    Semi-global alignment: the span may start and end anywhere in ``ref`` for free, every hyp
    word must be aligned (substitution or insertion), reference words inside the span that hyp
    misses are deletions. The span with the fewest edits wins; ties go to the longer span.
    """
    n, m = len(ref), len(hyp)
    if m == 0:
        return 0, 0, 0
    prev, pstart = [0] * (n + 1), list(range(n + 1))
    for i in range(1, m + 1):
        cur, cstart = [i] + [0] * n, [0] * (n + 1)
        for j in range(1, n + 1):
            sub = prev[j - 1] + (hyp[i - 1] != ref[j - 1])
            ins = prev[j] + 1
            dele = cur[j - 1] + 1
            if sub <= ins and sub <= dele:
                cur[j], cstart[j] = sub, pstart[j - 1]
            elif ins <= dele:
                cur[j], cstart[j] = ins, pstart[j]
            else:
                cur[j], cstart[j] = dele, cstart[j - 1]
        prev, pstart = cur, cstart
    end = min(range(n + 1), key=lambda j: (prev[j], -(j - pstart[j])))
    return pstart[end], end, prev[end]


def span_match(refs: list[str], text: str) -> tuple[float, str]:
    """(WER, matched reference span) of ``text`` against its best-matching span over ``refs``."""
    h = words(text)
    best = (1.0, "")
    for ref in refs:
        r = words(ref)
        start, end, edits = local_align(r, h)
        wer = rate(edits, end - start) if h else 1.0
        if wer < best[0] or not best[1]:
            best = (wer, " ".join(r[start:end]))
    return best


# ----------------------------------------------------------------------------- per-file results


@dataclass
class Row:
    """One output row of a system (pipeline segment or baseline segment)."""

    offset_s: float
    duration_s: float
    text: str
    lang: str | None
    drop_reason: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class FileResult:
    """One listed file: its truth and what a system did with it."""

    path: str
    truth: dict
    kept: list[Row] = field(default_factory=list)
    rejected: list[Row] = field(default_factory=list)

    @property
    def kept_text(self) -> str:
        return " ".join(r.text for r in sorted(self.kept, key=lambda r: r.offset_s) if r.text)

    @property
    def kept_lang(self) -> str | None:
        langs = [r.lang for r in self.kept if r.lang]
        return max(set(langs), key=langs.count) if langs else None


def rule_of(reason: str) -> str:
    """A drop_reason's rule: the prefix up to the second ':' (or the whole reason), cut before a
    file path (``decode_error: no audio stream in /x/y.flac`` → ``decode_error: no audio stream in``)."""
    parts = reason.split(":")
    rule = ":".join(parts[:2]) if len(parts) > 2 else reason
    return re.sub(r"\s+\(?/\S.*$", "", rule).strip()


def _pct(num: int, den: int) -> str:
    return f"{num} ({100 * num / den:.1f}%)" if den else f"{num} (-)"


def summarize(files: list[FileResult]) -> dict:
    """Every figure of the table for one system on one split."""
    nonspeech = [f for f in files if f.truth["kind"] == "non_speech"]
    clean = [f for f in files if f.truth["clean"]]
    kept_files = [f for f in files if f.kept]
    leaks = [f for f in kept_files if not f.truth["license_ok"]]
    garbage = [f for f in kept_files if rate(*best_wer(f.truth["refs"], f.kept_text, f.truth.get("lang"))) > GARBAGE_WER]
    scored = [f for f in kept_files if f.truth["clean"]]
    by_lang: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for f in scored:
        edits, n = best_wer(f.truth["refs"], f.kept_text, f.truth.get("lang"))
        acc = by_lang[f.truth["lang"]]
        acc[0] += edits
        acc[1] += n
        acc[2] += 1
    with_lang = [f for f in kept_files if f.truth.get("lang")]
    return {
        "files": len(files),
        "nonspeech_hallucinated": (len([f for f in nonspeech if f.kept]), len(nonspeech)),
        "license_leak_rows": sum(len(f.kept) for f in leaks),
        "license_leak_files": len(leaks),
        "garbage_files": len(garbage),
        "garbage_nonspeech": len([f for f in garbage if not f.truth["refs"]]),
        "false_rejects": (len([f for f in clean if not f.kept]), len(clean)),
        "wer_en": rate(*by_lang["en"][:2]) if by_lang.get("en") else None,
        "wer_en_files": by_lang["en"][2] if by_lang.get("en") else 0,
        "lid_kept": (len([f for f in with_lang if f.kept_lang == f.truth["lang"]]), len(with_lang)),
        "wer_by_lang": {lang: (rate(e, n), k) for lang, (e, n, k) in sorted(by_lang.items())},
        "garbage_list": garbage,
    }


def rule_table(files: list[FileResult]) -> list[dict]:
    """Per rule: rows and seconds rejected, rows from clean files, rows whose text matches the
    file's reference (WER ≤ :data:`GOOD_SPAN_WER` on its best span) — the false-reject count."""
    acc: dict[str, dict] = {}
    for f in files:
        for r in f.rejected:
            if not r.drop_reason:
                continue
            d = acc.setdefault(rule_of(r.drop_reason), {"rows": 0, "seconds": 0.0, "clean_rows": 0,
                                                        "with_text": 0, "good": 0})
            d["rows"] += 1
            d["seconds"] += r.duration_s or 0.0
            if f.truth["clean"]:
                d["clean_rows"] += 1
                if r.text and r.text.strip():
                    d["with_text"] += 1
                    if span_match(f.truth["refs"], r.text)[0] <= GOOD_SPAN_WER:
                        d["good"] += 1
    return [{"rule": k, **v} for k, v in sorted(acc.items(), key=lambda kv: -kv[1]["rows"])]


def char_rates(files: list[FileResult]) -> dict[str, dict[str, tuple[float, float, float, int]]]:
    """Per language, non-space characters per second of VAD speech for clean files' kept rows:
    ``{"ref": (mean, p5, p95, rows), "kept": (...)}``; ``ref`` counts the characters of the
    reference span the row's text aligns to, ``kept`` those of the text itself."""
    ref_rates: dict[str, list[float]] = defaultdict(list)
    hyp_rates: dict[str, list[float]] = defaultdict(list)
    for f in files:
        if not f.truth["clean"]:
            continue
        for r in f.kept:
            if not r.duration_s or r.duration_s <= 0:
                continue
            _, span = span_match(f.truth["refs"], r.text)
            ref_rates[f.truth["lang"]].append(len(span.replace(" ", "")) / r.duration_s)
            hyp_rates[f.truth["lang"]].append(sum(not c.isspace() for c in r.text) / r.duration_s)

    def stats(xs: list[float]) -> tuple[float, float, float, int]:
        a = np.asarray(xs)
        return float(a.mean()), float(np.percentile(a, 5)), float(np.percentile(a, 95)), len(xs)

    return {lang: {"ref": stats(ref_rates[lang]), "kept": stats(hyp_rates[lang])} for lang in sorted(ref_rates)}


def fmt_count(pair: tuple[int, int]) -> str:
    """``n / total``."""
    return f"{pair[0]} / {pair[1]}"


def fmt_rate(pair: tuple[int, int]) -> str:
    """``n / total (x%)``."""
    return f"{pair[0]} / {pair[1]} ({100 * pair[0] / pair[1]:.1f}%)" if pair[1] else f"{pair[0]} / 0"


# ----------------------------------------------------------------------------- failure causes


def _main_reason(f: FileResult) -> tuple[str, Row | None]:
    """The rule that rejected most of a file's seconds, and its longest row."""
    by_rule: dict[str, float] = defaultdict(float)
    for r in f.rejected:
        by_rule[rule_of(r.drop_reason or "")] += r.duration_s or 0.001
    if not by_rule:
        return "", None
    rule = max(by_rule, key=by_rule.get)
    rows = [r for r in f.rejected if rule_of(r.drop_reason or "") == rule]
    return rule, max(rows, key=lambda r: r.duration_s or 0.0)


def classify(f: FileResult) -> str | None:
    """Cause of a false reject or a garbage file (None when the file is neither)."""
    t = f.truth
    short = t["kind"] == "short" or t["seconds"] < 2.0
    if t["clean"] and not f.kept:
        rule, row = _main_reason(f)
        text = row.text if row else ""
        if rule.startswith("lang:"):
            where = "short clip" if short else "related language" if t["kind"] == "related" else (
                "numbers" if t["kind"] == "numbers" else "sentence")
            return f"FR: audio LID rejected ({where})"
        if rule.startswith("text_lang:"):
            return "FR: text LID on numbers" if t["kind"] == "numbers" else "FR: text LID on real speech"
        if rule == "hallucination:long_word" and any(ch.isdigit() for ch in text) and "-" in text:
            return "FR: hyphenated numerals taken for a long word"
        if rule.startswith(("hallucination:", "decoder:", "filter:", "pass_agreement:")):
            good = bool(text) and span_match(t["refs"], text)[0] <= GOOD_SPAN_WER
            return f"FR: {rule} on a good decode" if good else f"FR: {rule} on a bad decode (decoder failed first)"
        return f"FR: {rule or 'no rows'}"
    if not f.kept:
        return None
    edits, n = best_wer(t["refs"], f.kept_text, t.get("lang"))
    if rate(edits, n) <= GARBAGE_WER:
        return None
    if not t["refs"]:
        return "GB: text kept from non-speech"
    if f.kept_lang != t["lang"]:
        return "GB: wrong language from audio LID" + (" (short clip)" if short else "")
    hyp_n = len(words(f.kept_text))
    if hyp_n < 0.6 * n:
        longest = max(r.duration_s for r in f.kept)
        dropped = f.rejected and sum(r.duration_s for r in f.rejected) > 0.3 * t["seconds"]
        return ("GB: segments rejected, the rest kept" if dropped else
                "GB: decoder dropped content" + (" (segment > 15 s)" if longest > 15 else ""))
    if t["kind"] == "numbers":
        return "GB: numbers misrecognised or written differently"
    return "GB: misrecognition kept (filters passed it)"
