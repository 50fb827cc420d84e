"""The terminal text of a run or release summary (:func:`granary_pipe.report.summary.summarize`'s
dict): aligned tables, check marks, colour on a terminal. Numbers are formatted by
:mod:`granary_pipe.report.fmt`."""

from __future__ import annotations

import os
import sys
from typing import Any

from granary_pipe.report.fmt import hms, pct, rate, text_table
from granary_pipe.report.rule_quality import format_rule_quality


def _use_color(color: bool | None) -> bool:
    if color is not None:
        return color
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def format_summary(summary: dict[str, Any], *, color: bool | None = None) -> str:
    """Render :func:`summarize`'s dict as an aligned plain-text report.

    ``color``: ANSI colour for check marks and titles; ``None`` means only when stdout is a
    terminal and ``NO_COLOR`` is unset.
    """
    use = _use_color(color)
    paint = lambda s, code: f"\033[{code}m{s}\033[0m" if use else s  # noqa: E731
    mark = lambda ok: paint("✓", "32") if ok else paint("✗", "31")  # noqa: E731
    title = lambda s: ["", paint(s, "1")]  # noqa: E731
    if summary["kind"] == "release":
        return _format_release(summary, title)
    s = summary
    lines = [paint(f"Run {s['name']}", "1") + f"  ({s['path']})"]
    if s["sources"]:
        lines.append(f"Sources: {', '.join(str(x) for x in s['sources'])}")
    u = s["units"]
    lines.append(f"Units: {u['committed']} committed, {u['failed']} failed, {u['pending']} pending"
                 f" (of {u['total']}; only committed units are counted below)")
    for f in u["failed_units"]:
        lines.append(f"  failed {f['unit']}: {f['error'] or '(no error recorded)'}")
    for note in u["notes"]:
        lines.append(f"  note: {note}")
    r = s["rows"]
    lines.append("")
    lines.append(f"rows in = kept + rejected: {r['in']} = {r['kept']} + {r['rejected']} {mark(r['balanced'])}")
    if r.get("recorded_in") is not None and r["recorded_in"] != r["kept"] + r["rejected"]:
        lines.append(f"  commit markers record {r['recorded_in']} rows in {mark(False)}")
    rec = s["recordings"]
    if rec["expected"] is not None:
        lines.append(f"recordings in: {rec['in']} of {rec['expected']} expected "
                     f"{mark(rec['balanced'])} ({rec['with_kept_rows']} with kept rows)")
    else:
        lines.append(f"recordings in: {rec['in']} ({rec['with_kept_rows']} with kept rows)")
    h = s["hours"]
    if h.get("recordings_in") is not None:
        lines.append(f"recorded audio in: {hms(h['recordings_in'])} (rows below cover {hms(h['in'])};"
                     " the rest is silence between segments)")
    if s["rows_unknown_duration"]:
        lines.append(f"rows without a duration (counted as 0 s): {s['rows_unknown_duration']}")

    lines += title("Per language (h:mm:ss)")
    rows = [[lang, v["rows_in"], v["rows_kept"], v["rows_rejected"], hms(v["hours_in"]),
             hms(v["hours_kept"]), pct(v["hours_kept"], v["hours_in"])]
            for lang, v in s["per_lang"].items()]
    rows.append(["total", r["kept"] + r["rejected"], r["kept"], r["rejected"], hms(h["in"]),
                 hms(h["kept"]), pct(h["kept"], h["in"])])
    lines += text_table(["lang", "rows in", "kept", "rejected", "audio in", "audio kept", "% audio kept"], rows)

    rj = s["rejected"]
    lines += title("Rejected rows by reason")
    if rj["by_category"]:
        rows = [[cat, n, pct(n, r["rejected"]), hms(rj["hours_by_category"][cat])]
                for cat, n in rj["by_category"].items()]
        lines += text_table(["reason", "rows", "share", "audio"], rows)
        lines.append("")
        lines += text_table(["full reason", "rows"], [[k, v] for k, v in list(rj["by_reason"].items())[:15]])
        if len(rj["by_reason"]) > 15:
            lines.append(f"  ... and {len(rj['by_reason']) - 15} more distinct reasons")
    else:
        lines.append("  (none)")

    if s.get("rules"):
        lines += title("Rejections per rule (with the first two examples)")
        lines += _format_rules(s["rules"])

    quality = format_rule_quality(s["rule_quality"]) if s.get("rule_quality") else []
    if quality:
        lines += title("Every rule measured (rows and audio rejected; against reference transcripts)")
        lines += quality

    lines += title("Licenses (h:mm:ss)")
    rows = [[lic, v["rows_kept"], hms(v["hours_kept"]), v["rows_rejected"], hms(v["hours_rejected"])]
            for lic, v in s["licenses"].items()]
    lines += text_table(["license", "rows kept", "audio kept", "rows rejected", "audio rejected"], rows)

    wer = {k: v for k, v in (s.get("reference_wer") or {}).items() if v["wer"] is not None}
    if wer:
        lines += title("Against reference transcripts (kept rows, per recording)")
        rows = [[lang, v["recordings"], v["ref_words"], rate(v["wer"]), rate(v["cer"]),
                 v["recordings_unscored"]] for lang, v in wer.items()]
        lines += text_table(["lang", "recordings", "words", "WER", "CER", "rejected (unscored)"], rows)
    if s.get("stage_s"):
        lines += title("Time per stage (seconds, summed over units)")
        by_time = sorted(s["stage_s"].items(), key=lambda kv: -kv[1])
        lines += text_table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in by_time])
    if s["wall_s"]:
        lines.append("")
        rtf = s["real_time_factor"]
        speed = f", real-time factor {rtf:.3f} ({1 / rtf:.1f}x real time)" if rtf else ""
        audio = h["recordings_in"] if h.get("recordings_in") is not None else h["in"]
        lines.append(f"wall time (all invocations) {s['wall_s']:.1f} s for {hms(audio)} of audio{speed}")
    return "\n".join(lines) + "\n"


def _format_rules(rules: dict[str, Any], limit: int = 20, width: int = 80) -> list[str]:
    items = list(rules.items())[:limit]
    rows = [[k, v["rows"], ", ".join(f"{lang} {n}" for lang, n in v["per_lang"].items())] for k, v in items]
    table = text_table(["rule", "rows", "per language"], rows)
    lines = table[:2]
    for line, (_, v) in zip(table[2:], items):
        lines.append(line)
        for ex in v["examples"]:
            text = " ".join((ex["text"] or "").split())
            text = f'"{text}"' if len(text) <= width else f'"{text[: width - 1]}…"'
            text = text if text != '""' else "(no text)"
            dur = "?" if ex["duration_s"] is None else f"{ex['duration_s']:.1f} s"
            lines.append(f"      {text}  ({ex['id']}, {ex['lang']}, {dur})")
    if len(rules) > limit:
        lines.append(f"  ... and {len(rules) - limit} more rules")
    return lines


def _format_release(s: dict[str, Any], title: Any) -> str:
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
    lines.append(f"shards: {shards}")
    lines += title("Per language (h:mm:ss)")
    rows = [[lang, v["rows"], hms(v["hours"]), v["shards"]] for lang, v in s["per_lang"].items()]
    rows.append(["total", s["rows"], hms(s["hours"]), sum(v["shards"] for v in s["per_lang"].values())])
    lines += text_table(["lang", "rows", "audio", "shards"], rows)
    lines += title("Licenses")
    lines += text_table(["license", "rows", "share"], [[k, v, pct(v, s["rows"])] for k, v in s["licenses"].items()])
    return "\n".join(lines) + "\n"
