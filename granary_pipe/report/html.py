"""One self-contained HTML page for a run or a release: tables and inline SVG plots, no request, every
string escaped. Design: docs/architecture.md, "Report"."""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import AbstractSet, Any

from granary_pipe import __version__
from granary_pipe.counters import reason_key
from granary_pipe.report import plots
from granary_pipe.report import text as tables
from granary_pipe.report.distributions import CHAR_RATE_CLIP, Binned, example_licenses, row_histograms
from granary_pipe.report.fmt import hms, pct, rate
from granary_pipe.report.rule_quality import NOT_COUNTED
from granary_pipe.report.scan import RunScan
from granary_pipe.report.summary import summarize

_MAX_REASONS, _MAX_TEXT = 25, 300

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
e = html.escape


def _table(headers: list[str], rows: list[list[Any]], *, numeric: AbstractSet[int] = frozenset(), total: bool = False,
           text_cols: AbstractSet[int] = frozenset(), nowrap: AbstractSet[int] = frozenset()) -> str:
    """An escaped HTML table; ``numeric`` columns right-aligned, ``text`` wrapped anywhere, ``nowrap`` not."""
    def cls(i: int) -> str:
        c = "n" if i in numeric else "text" if i in text_cols else "nw" if i in nowrap else ""
        return f' class="{c}"' if c else ""
    head = "".join(f"<th{cls(i)}>{e(str(h))}</th>" for i, h in enumerate(headers))
    body = []
    for k, r in enumerate(rows):
        tr = ' class="total"' if total and k == len(rows) - 1 else ""
        body.append(f"<tr{tr}>" + "".join(f"<td{cls(i)}>{e(str(c))}</td>" for i, c in enumerate(r)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{e(caption)}</figcaption></figure>"


def _section(sid: str, title: str, *parts: str) -> str:
    return f'<section id="{sid}"><h2>{e(title)}</h2>{"".join(parts)}</section>'


def _stat(value: str, label: str) -> str:
    return f'<div class="stat"><b>{e(value)}</b><span>{e(label)}</span></div>'


def _unit(max_hours: float) -> tuple[float, str]:
    """Scale and name for plotting durations: hours, else minutes, else seconds."""
    if max_hours >= 1:
        return 1.0, "hours"
    return (60.0, "minutes") if max_hours * 60 >= 1 else (3600.0, "seconds")


def _page(title: str, body: str) -> str:
    css = resources.files("granary_pipe").joinpath("_data/report/report.css").read_text(encoding="utf-8")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f"<title>{e(title)}</title><style>{css}</style></head><body><main>{body}"
            f"<footer>granary_pipe {e(__version__)} · generated {stamp}</footer></main></body></html>\n")


def retention(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per stage in pipeline order (``summary["counts"]``): rows/hours it rejected and rows/hours
    remaining after it (rows in - rows rejected by it and every stage before it)."""
    n, h = summary["rows"]["kept"] + summary["rows"]["rejected"], summary["hours"]["in"]
    out = [{"stage": "input", "rows_dropped": 0, "hours_dropped": 0.0, "rows": n, "hours": h}]
    counted_n, counted_h = 0, 0.0
    for stage, c in (summary.get("counts") or {}).items():
        dn, dh = sum((c.get("rejected") or {}).values()), sum((c.get("rejected_s") or {}).values()) / 3600
        counted_n, counted_h = counted_n + dn, counted_h + dh
        n, h = n - dn, h - dh
        out.append({"stage": stage, "rows_dropped": dn, "hours_dropped": dh, "rows": n, "hours": max(h, 0.0)})
    rest_n = summary["rows"]["rejected"] - counted_n
    if rest_n > 0:
        rest_h = max(summary["hours"]["rejected"] - counted_h, 0.0)
        n, h = n - rest_n, h - rest_h
        out.append({"stage": NOT_COUNTED, "rows_dropped": rest_n, "hours_dropped": rest_h, "rows": n,
                    "hours": max(h, 0.0)})
    return out


def _run_page(s: dict[str, Any], run_dir: Path) -> str:
    examples = [x["id"] for rule in list(s["rules"].values())[:_MAX_REASONS] for x in rule["examples"]]
    with RunScan(run_dir) as scan:
        values, licenses = row_histograms(scan), example_licenses(scan, examples)
    r, h = s["rows"], s["hours"]
    ok = r["balanced"]
    mark = "✓" if ok else "✗"
    head = [f"<h1>Run {e(s['name'])}</h1>", f'<p class="meta">{e(s["path"])}</p>']
    if s["sources"]:
        head.append(f'<p class="meta">Sources: {e(", ".join(str(x) for x in s["sources"]))}</p>')
    u = s["units"]
    head.append(f'<p class="meta">Units: {u["committed"]} committed, {u["failed"]} failed, {u["pending"]} pending '
                f'(of {u["total"]}; only committed units are counted)</p>')
    warns = [f"failed {f['unit']}: {f['error'] or '(no error recorded)'}" for f in u["failed_units"]] + u["notes"]
    if r.get("recorded_in") is not None and r["recorded_in"] != r["kept"] + r["rejected"]:
        warns.append(f"commit markers record {r['recorded_in']} rows in")
    rec = s["recordings"]
    if rec["balanced"] is False:
        warns.append(f"recordings in: {rec['in']} of {rec['expected']} expected")
    stats = [_stat(str(r["in"]), "rows in"), _stat(str(r["kept"]), "rows kept"),
             _stat(str(r["rejected"]), "rows rejected"), _stat(str(rec["in"]), "recordings in"),
             _stat(hms(h["in"]), "audio in rows"), _stat(hms(h["kept"]), "audio kept"),
             _stat(pct(h["kept"], h["in"]), "of audio kept")]
    if s.get("real_time_factor"):
        stats.append(_stat(f"{1 / s['real_time_factor']:.1f}×", "real time"))
    banner = (f'<section id="summary" class="banner{"" if ok else " bad"}"><div class="check">'
              f'rows in = kept + rejected: {r["in"]} = {r["kept"]} + {r["rejected"]} <span class="mark">{mark}</span>'
              f'</div>{"".join(stats)}{"".join(f"<p class=warn>{e(w)}</p>" for w in warns)}</section>')
    return _page(f"granary report: run {s['name']}", "".join(head) + banner + "".join([
        _languages_run(s), _retention_section(s), _rejections(s), _rule_quality(s), _distributions(values),
        _licenses_run(s), _examples(s, licenses), _extras(s)]))


def _languages_run(s: dict[str, Any]) -> str:
    per = s["per_lang"]
    langs = sorted(per, key=lambda k: -per[k]["hours_in"])
    scale, unit = _unit(max([v["hours_in"] for v in per.values()], default=0))
    svg = plots.bars("lang", langs, {"in": [per[k]["hours_in"] * scale for k in langs],
                                     "kept": [per[k]["hours_kept"] * scale for k in langs]},
                     xlabel=f"audio ({unit})", colors=[plots.INPUT, plots.KEPT], fmt="{:.3g}")
    return _section("languages", "Audio per language: in vs kept",
                    _figure(svg, "Audio in rows (kept + rejected) and audio kept, per language."),
                    _table(tables.LANG_HEADERS, tables.lang_rows(s, langs), numeric={1, 2, 3, 4, 5, 6}, total=True))


def _retention_section(s: dict[str, Any]) -> str:
    ret = retention(s)
    scale, unit = _unit(ret[0]["hours"])
    svg = plots.retention("retention", [x["stage"] for x in ret], [x["rows"] for x in ret],
                          [x["hours"] * scale for x in ret], hours_label=f"audio remaining ({unit})")
    n0, h0 = ret[0]["rows"], ret[0]["hours"]
    table = _table(["stage", "rows rejected", "rows remaining", "% rows", "audio rejected", "audio remaining",
                    "% audio"],
                   [[x["stage"], x["rows_dropped"], x["rows"], pct(x["rows"], n0), hms(x["hours_dropped"]),
                     hms(x["hours"]), pct(x["hours"], h0)] for x in ret], numeric={1, 2, 3, 4, 5, 6})
    return _section("retention", "Retention per stage", _figure(svg, (
        "Rows and audio remaining after each stage, in pipeline order, as each stage's counters recorded its "
        "rejections. Before segmentation a row is a whole recording.")), table)


def _rejections(s: dict[str, Any]) -> str:
    if not s["rules"]:
        return _section("rejections", "Rejected rows per reason and language", "<p>No rejected rows.</p>")
    grid: dict[str, Counter] = defaultdict(Counter)
    for reason, rule in s["rules"].items():
        grid[reason_key(reason) if reason else "(no reason)"].update(rule["per_lang"])
    labels = sorted(grid, key=lambda k: (-grid[k].total(), k))
    if len(labels) > 12:
        grid["(other reasons)"] = sum((grid[k] for k in labels[11:]), Counter())
        labels = labels[:11] + ["(other reasons)"]
    lang_n = sum(grid.values(), Counter())
    langs = [k for k, _ in lang_n.most_common(6)]
    series = {lg: [grid[k][lg] for k in labels] for lg in langs}
    if len(lang_n) > len(langs):
        series["(other)"] = [grid[k].total() - sum(grid[k][lg] for lg in langs) for k in labels]
    svg = plots.bars("reasons", labels, series, xlabel="rejected rows", stacked=True, integer=True)
    table = _table(["reason", "rows", "share of rejected", "audio"], tables.rejected_rows(s), numeric={1, 2, 3})
    return _section("rejections", "Rejected rows per reason and language", _figure(
        svg, "Rejected rows per rule, stacked by language (messages such as decode errors are grouped by "
             "category)."), table)


def _rule_quality(s: dict[str, Any]) -> str:
    rq = s.get("rule_quality")
    if not rq or not (rq["rules"] or rq["rows_with_reference"]):
        return ""
    scored = rq["rows_with_reference"] > 0
    headers = ["rule", "stage", "stage rows in", "rejected", "audio rejected", "flagged"]
    if scored:
        headers += ["scored", f"good (WER ≤ {rq['good_wer_max']:g})", "false-reject rate", "good audio"]
    rows = []
    for d in rq["rules"]:
        row = [d["rule"], d["stage"] or NOT_COUNTED, "-" if d["stage_rows_in"] is None else d["stage_rows_in"],
               d["rows_rejected"], hms(d["hours_rejected"]), "-" if d["rows_flagged"] is None else d["rows_flagged"]]
        if scored:
            row += [d["rows_scored"], d["rows_good"], rate(d["false_reject_rate"]), hms(d["hours_good"])]
        rows.append(row)
    k = rq["kept"]
    if scored:
        note = (f"Kept rows scored against reference transcripts: {k['rows_scored']} of {k['rows']}; garbage "
                f"(WER > {rq['garbage_wer_min']:g}): {k['rows_garbage']} ({rate(k['garbage_rate'])}, "
                f"{hms(k['hours_garbage'])} of audio). A row is scored against the best-matching span of its "
                "recording's reference; rows without text or reference are not scored.")
    else:
        note = "The source listing gives no reference transcripts: false rejects are not measured."
    if not rq["counters"]:
        note += " This run's units carry no per-stage counters: rejections are counted from the rejected rows."
    return _section("rules", "Every rule measured", f"<p class=meta>{e(note)}</p>",
                    _table(headers, rows, numeric=set(range(2, len(headers)))))


def _distributions(values: dict[str, Binned]) -> str:
    return _section("distributions", "Distributions", '<div class="grid">',
                    _figure(plots.histogram("duration", values["duration_s"], xlabel="segment duration (s)"),
                            "Duration of rows with a known duration."),
                    _figure(plots.histogram("charrate", values["char_rate"], xlabel="characters per second"),
                            f"Non-space characters of text per second (values above {CHAR_RATE_CLIP:g} shown at "
                            f"{CHAR_RATE_CLIP:g})."),
                    _figure(plots.histogram("langprob", values["lang_prob"],
                                            xlabel="language-ID probability (lang_prob)"),
                            "Language-ID confidence of rows that have one."), "</div>")


def _licenses_run(s: dict[str, Any]) -> str:
    lic = s["licenses"]
    names = sorted(lic, key=lambda k: -(lic[k]["hours_kept"] + lic[k]["hours_rejected"]))
    scale, unit = _unit(max([v["hours_kept"] + v["hours_rejected"] for v in lic.values()], default=0))
    svg = plots.bars("licenses", names, {"kept": [lic[k]["hours_kept"] * scale for k in names],
                                         "rejected": [lic[k]["hours_rejected"] * scale for k in names]},
                     xlabel=f"audio ({unit})", stacked=True, colors=[plots.KEPT, plots.REJECTED], fmt="{:.3g}")
    table = _table(tables.LICENSE_HEADERS, tables.license_rows(s, names), numeric={1, 2, 3, 4})
    return _section("licenses", "License mix", _figure(svg, "Audio per license, kept and rejected."), table)


def _examples(s: dict[str, Any], licenses: dict[str, str]) -> str:
    rules = list(s["rules"].items())
    out = []
    for reason, rule in rules[:_MAX_REASONS]:
        for k, x in enumerate(rule["examples"]):
            text = x["text"] or ""
            text = text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"
            dur = "" if x["duration_s"] is None else f"{x['duration_s']:.2f}"
            out.append([reason if k == 0 else "", rule["rows"] if k == 0 else "", x["id"], x["lang"],
                        licenses.get(x["id"]) or "unknown", dur, text or "(no text)"])
    more = f"<p class=meta>… and {len(rules) - _MAX_REASONS} more reasons.</p>" if len(rules) > _MAX_REASONS else ""
    body = _table(["reason", "rows", "id", "lang", "license", "duration (s)", "text"], out,
                  numeric={1, 5}, text_cols={6}, nowrap={2}) if out else "<p>No rejected rows.</p>"
    return _section("examples", "Example rejected rows (the first rows of each rule, by id)", body, more)


def _extras(s: dict[str, Any]) -> str:
    parts = []
    wer = tables.wer_rows(s)
    if wer:
        parts.append(_section("wer", "Against reference transcripts (kept rows)",
                              _table(tables.WER_HEADERS, wer, numeric={1, 2, 3, 4, 5})))
    if s.get("stage_s"):
        parts.append(_section("timing", "Time per stage (seconds, summed over units)",
                              _table(tables.STAGE_HEADERS, tables.stage_rows(s), numeric={1})))
    return "".join(parts)


def _release_page(s: dict[str, Any], rel_dir: Path) -> str:
    rel = json.loads((rel_dir / "release.json").read_text(encoding="utf-8"))
    per, lic = s["per_lang"], s["licenses"]
    n_shards = sum(s["shards"].values())
    head = (f"<h1>Release {e(s['name'])}</h1><p class=meta>{e(s['path'])}</p>"
            f"<p class=meta>Built from run {e(str(s['created_from']))}; release license "
            f"{e(str(s['release_license'] or 'not set'))}</p>")
    if s["sources"]:
        head += f'<p class="meta">Sources: {e(", ".join(str(x) for x in s["sources"]))}</p>'
    banner = ('<section id="summary" class="banner">' + _stat(str(s["rows"]), "rows") + _stat(hms(s["hours"]), "audio")
              + _stat(str(len(per)), "languages") + _stat(str(n_shards), "shard files")
              + _stat(f"{sum(s['bytes'].values()) / 1e6:.1f} MB", "on disk") + "</section>")
    langs = sorted(per, key=lambda k: -per[k]["hours"])
    scale, unit = _unit(max([v["hours"] for v in per.values()], default=0))
    lang_svg = plots.bars("lang", langs, {"audio": [per[k]["hours"] * scale for k in langs]},
                          xlabel=f"audio ({unit})", colors=[plots.KEPT], fmt="{:.3g}")
    names = sorted(lic, key=lambda k: -lic[k])
    lic_svg = plots.bars("licenses", names, {"rows": [lic[k] for k in names]}, xlabel="rows",
                         colors=[plots.OKABE_ITO[2]], integer=True)
    shards = [[sh["path"], sh["format"], sh["lang"], sh["rows"], hms(sh["hours"]), f"{sh['bytes'] / 1e6:.2f}",
               sh["sha256"][:16]] for sh in rel.get("shards", [])]
    return _page(f"granary report: release {s['name']}", head + banner + "".join([
        _section("languages", "Audio per language", _figure(lang_svg, "Audio per language in the release."),
                 _table(tables.RELEASE_LANG_HEADERS, tables.release_lang_rows(s, langs), numeric={1, 2, 3},
                        total=True)),
        _section("licenses", "License mix", _figure(lic_svg, "Rows per license in the release."),
                 _table(tables.RELEASE_LICENSE_HEADERS, tables.release_license_rows(s, names), numeric={1, 2})),
        _section("shards", "Shards", _table(["path", "format", "lang", "rows", "audio", "MB", "sha256 (prefix)"],
                                            shards, numeric={3, 4, 5}, nowrap={0, 6}))]))


def write_html(path: Path, out: Path, summary: dict[str, Any] | None = None) -> Path:
    """Write the report page of a run or release directory to ``out`` (parents created); returns ``out``."""
    path, out = Path(path), Path(out)
    s = summary if summary is not None else summarize(path)
    page = _release_page(s, path) if s["kind"] == "release" else _run_page(s, path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
