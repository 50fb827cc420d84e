"""The terminal text of a run or release summary (:func:`granary_pipe.report.summary.summarize`'s
dict): one function per section, aligned tables, check marks, colour on a terminal."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from granary_pipe.report.fmt import hms, pct, rate, text_table
from granary_pipe.report.rule_quality import format_rule_quality


@dataclass(frozen=True)
class _Style:
    color: bool

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def mark(self, ok: bool) -> str:
        return self.paint("✓", "32") if ok else self.paint("✗", "31")

    def title(self, text: str) -> list[str]:
        return ["", self.paint(text, "1")]


def format_summary(summary: dict[str, Any], *, color: bool | None = None) -> str:
    """:func:`summarize`'s dict as a plain-text report; ``color`` (ANSI, for check marks and titles)
    None: only when stdout is a terminal and ``NO_COLOR`` is unset."""
    style = _Style(sys.stdout.isatty() and "NO_COLOR" not in os.environ if color is None else color)
    sections = _RELEASE_SECTIONS if summary["kind"] == "release" else _RUN_SECTIONS
    return "\n".join(line for section in sections for line in section(summary, style)) + "\n"


def _units(s: dict[str, Any], style: _Style) -> list[str]:
    lines = [style.paint(f"Run {s['name']}", "1") + f"  ({s['path']})"]
    if s["sources"]:
        lines.append(f"Sources: {', '.join(str(x) for x in s['sources'])}")
    u = s["units"]
    lines.append(f"Units: {u['committed']} committed, {u['failed']} failed, {u['pending']} pending"
                 f" (of {u['total']}; only committed units are counted below)")
    lines += [f"  failed {f['unit']}: {f['error'] or '(no error recorded)'}" for f in u["failed_units"]]
    lines += [f"  note: {note}" for note in u["notes"]]
    return lines


def _balance(s: dict[str, Any], style: _Style) -> list[str]:
    r, rec, h = s["rows"], s["recordings"], s["hours"]
    lines = ["", f"rows in = kept + rejected: {r['in']} = {r['kept']} + {r['rejected']} {style.mark(r['balanced'])}"]
    if r.get("recorded_in") is not None and r["recorded_in"] != r["kept"] + r["rejected"]:
        lines.append(f"  commit markers record {r['recorded_in']} rows in {style.mark(False)}")
    if rec["expected"] is not None:
        lines.append(f"recordings in: {rec['in']} of {rec['expected']} expected "
                     f"{style.mark(rec['balanced'])} ({rec['with_kept_rows']} with kept rows)")
    else:
        lines.append(f"recordings in: {rec['in']} ({rec['with_kept_rows']} with kept rows)")
    if h.get("recordings_in") is not None:
        lines.append(f"recorded audio in: {hms(h['recordings_in'])} (rows below cover {hms(h['in'])};"
                     " the rest is silence between segments)")
    if s["rows_unknown_duration"]:
        lines.append(f"rows without a duration (counted as 0 s): {s['rows_unknown_duration']}")
    return lines


LANG_HEADERS = ["lang", "rows in", "kept", "rejected", "audio in", "audio kept", "% audio kept"]
WER_HEADERS = ["lang", "recordings", "words", "WER", "CER", "rejected (unscored)"]
LICENSE_HEADERS = ["license", "rows kept", "audio kept", "rows rejected", "audio rejected"]
STAGE_HEADERS = ["stage", "seconds"]
RELEASE_LANG_HEADERS = ["lang", "rows", "audio", "shards"]
RELEASE_LICENSE_HEADERS = ["license", "rows", "share"]


def lang_rows(s: dict[str, Any], langs: Iterable[str]) -> list[list[Any]]:
    """The rows of a run's per-language table (text and HTML), in the order of ``langs``, then the total."""
    per, r, h = s["per_lang"], s["rows"], s["hours"]
    rows = [[k, per[k]["rows_in"], per[k]["rows_kept"], per[k]["rows_rejected"], hms(per[k]["hours_in"]),
             hms(per[k]["hours_kept"]), pct(per[k]["hours_kept"], per[k]["hours_in"])] for k in langs]
    return rows + [["total", r["kept"] + r["rejected"], r["kept"], r["rejected"], hms(h["in"]), hms(h["kept"]),
                    pct(h["kept"], h["in"])]]


def wer_rows(s: dict[str, Any]) -> list[list[Any]]:
    """The rows of the reference-WER table (text and HTML): the languages with a scored recording."""
    return [[lang, v["recordings"], v["ref_words"], rate(v["wer"]), rate(v["cer"]), v["recordings_unscored"]]
            for lang, v in (s.get("reference_wer") or {}).items() if v["wer"] is not None]


def rejected_rows(s: dict[str, Any]) -> list[list[Any]]:
    """The rows of the rejected-rows-by-reason-category table (text and HTML): category, rows, share, audio."""
    rj = s["rejected"]
    return [[cat, n, pct(n, s["rows"]["rejected"]), hms(rj["hours_by_category"][cat])]
            for cat, n in rj["by_category"].items()]


def license_rows(s: dict[str, Any], names: Iterable[str]) -> list[list[Any]]:
    """The rows of a run's license table (text and HTML), in the order of ``names``."""
    lic = s["licenses"]
    return [[k, lic[k]["rows_kept"], hms(lic[k]["hours_kept"]), lic[k]["rows_rejected"], hms(lic[k]["hours_rejected"])]
            for k in names]


def stage_rows(s: dict[str, Any]) -> list[list[Any]]:
    """The rows of the time-per-stage table (text and HTML), slowest stage first."""
    return [[k, f"{v:.1f}"] for k, v in sorted(s["stage_s"].items(), key=lambda kv: -kv[1])]


def release_lang_rows(s: dict[str, Any], langs: Iterable[str]) -> list[list[Any]]:
    """The rows of a release's per-language table (text and HTML), in the order of ``langs``, then the total."""
    per = s["per_lang"]
    rows = [[k, per[k]["rows"], hms(per[k]["hours"]), per[k]["shards"]] for k in langs]
    return rows + [["total", s["rows"], hms(s["hours"]), sum(v["shards"] for v in per.values())]]


def release_license_rows(s: dict[str, Any], names: Iterable[str]) -> list[list[Any]]:
    """The rows of a release's license table (text and HTML), in the order of ``names``."""
    return [[k, s["licenses"][k], pct(s["licenses"][k], s["rows"])] for k in names]


def _languages(s: dict[str, Any], style: _Style) -> list[str]:
    return style.title("Per language (h:mm:ss)") + text_table(LANG_HEADERS, lang_rows(s, s["per_lang"]))


def _rejected(s: dict[str, Any], style: _Style) -> list[str]:
    rj = s["rejected"]
    lines = style.title("Rejected rows by reason")
    if not rj["by_category"]:
        return lines + ["  (none)"]
    lines += text_table(["reason", "rows", "share", "audio"], rejected_rows(s))
    lines.append("")
    lines += text_table(["full reason", "rows"], [[k, v] for k, v in list(rj["by_reason"].items())[:15]])
    if len(rj["by_reason"]) > 15:
        lines.append(f"  ... and {len(rj['by_reason']) - 15} more distinct reasons")
    return lines


def _rules(s: dict[str, Any], style: _Style, limit: int = 20, width: int = 80) -> list[str]:
    if not s.get("rules"):
        return []
    items = list(s["rules"].items())[:limit]
    table = text_table(["rule", "rows", "per language"],
                       [[k, v["rows"], ", ".join(f"{lang} {n}" for lang, n in v["per_lang"].items())]
                        for k, v in items])
    lines = style.title("Rejections per rule (with the first two examples)") + table[:2]
    for line, (_, v) in zip(table[2:], items, strict=True):
        lines.append(line)
        for ex in v["examples"]:
            text = " ".join((ex["text"] or "").split())
            text = f'"{text}"' if len(text) <= width else f'"{text[: width - 1]}…"'
            text = text if text != '""' else "(no text)"
            dur = "?" if ex["duration_s"] is None else f"{ex['duration_s']:.1f} s"
            lines.append(f"      {text}  ({ex['id']}, {ex['lang']}, {dur})")
    if len(s["rules"]) > limit:
        lines.append(f"  ... and {len(s['rules']) - limit} more rules")
    return lines


def _rule_quality(s: dict[str, Any], style: _Style) -> list[str]:
    quality = format_rule_quality(s["rule_quality"]) if s.get("rule_quality") else []
    if not quality:
        return []
    return style.title("Every rule measured (rows and audio rejected; against reference transcripts)") + quality


def _licenses(s: dict[str, Any], style: _Style) -> list[str]:
    return style.title("Licenses (h:mm:ss)") + text_table(LICENSE_HEADERS, license_rows(s, s["licenses"]))


def _reference_wer(s: dict[str, Any], style: _Style) -> list[str]:
    rows = wer_rows(s)
    if not rows:
        return []
    return style.title("Against reference transcripts (kept rows, per recording)") + text_table(WER_HEADERS, rows)


def _timing(s: dict[str, Any], style: _Style) -> list[str]:
    lines = []
    if s.get("stage_s"):
        lines += style.title("Time per stage (seconds, summed over units)") + text_table(STAGE_HEADERS, stage_rows(s))
    if s["wall_s"]:
        rtf, h = s["real_time_factor"], s["hours"]
        speed = f", real-time factor {rtf:.3f} ({1 / rtf:.1f}x real time)" if rtf else ""
        audio = h["recordings_in"] if h.get("recordings_in") is not None else h["in"]
        lines += ["", f"wall time (all invocations) {s['wall_s']:.1f} s for {hms(audio)} of audio{speed}"]
    return lines


def _release_head(s: dict[str, Any], style: _Style) -> list[str]:
    lines = [f"Release {s['name']}  ({s['path']})"]
    if s.get("files_absent"):
        named = ", ".join(s["absent"][:3]) + (", ..." if s["files_absent"] > 3 else "")
        lines.append(f"INCOMPLETE: {s['files_absent']} of {s['files_listed']} files are not here ({named}); "
                     "the figures below are release.json's, for the whole release (granary download resumes, "
                     "granary verify checks)")
    if s.get("selection"):
        picked = "; ".join(f"{k} {','.join(v)}" for k, v in s["selection"].items() if v)
        lines.append(f"downloaded a part: {picked} (the figures below are the whole release's)")
    lines += [f"built from run: {s['created_from']}", f"release license: {s['release_license'] or 'not set'}"]
    if s["sources"]:
        lines.append(f"sources: {', '.join(str(x) for x in s['sources'])}")
    shards = ", ".join(f"{n} {fmt} ({s['bytes'][fmt] / 1e6:.1f} MB)" for fmt, n in s["shards"].items())
    return lines + [f"shards: {shards}"]


def _release_tables(s: dict[str, Any], style: _Style) -> list[str]:
    langs = text_table(RELEASE_LANG_HEADERS, release_lang_rows(s, s["per_lang"]))
    licenses = text_table(RELEASE_LICENSE_HEADERS, release_license_rows(s, s["licenses"]))
    return style.title("Per language (h:mm:ss)") + langs + style.title("Licenses") + licenses


_Section = Callable[[dict[str, Any], _Style], list[str]]
_RUN_SECTIONS: tuple[_Section, ...] = (_units, _balance, _languages, _rejected, _rules, _rule_quality, _licenses,
                                       _reference_wer, _timing)
_RELEASE_SECTIONS: tuple[_Section, ...] = (_release_head, _release_tables)
