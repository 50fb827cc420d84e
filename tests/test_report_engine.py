"""The report and the audit, merged from the units' digests, agree with an oracle that reads every
row the simple way.

The run: several units, kept and rejected rows, rows with and without a reference (one with an
empty reference), several languages, licenses and sources, null durations, a unit whose rejected
file lacks columns (read by name) and a unit with no rejected file. The oracle loads every row
with pyarrow and counts in Python; the report runs on markers that carry their digest and on
the same run with the digests removed (each unit digested from its files when read).
"""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path

import jiwer
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from granary_pipe import audit, counters, digest
from granary_pipe.report import scan as scan_mod
from granary_pipe.scoring import GARBAGE_WER_MIN, GOOD_WER_MAX, span_wer
from granary_pipe.report.summary import summarize
from granary_pipe.rundir import committed_units, read_unit_table
from granary_pipe.text import normalize, tokens

try:
    from tests.helpers_rundir import Row, make_run, set_digests
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import Row, make_run, set_digests

REF_A = "the cat sat on the mat and looked at the rain falling on the garden"
REF_B = "ein kleiner hund lief schnell über die straße"


def _units() -> dict[str, list[Row]]:
    units: dict[str, list[Row]] = {}
    langs = ["en", "de", None, "fr"]
    licenses = ["CC-BY-4.0", "CC0-1.0", "CC-BY-NC-4.0", "CC-BY-SA-4.0"]
    reasons = [None, "hallucination:phrase", None, "text_lang:mismatch:de", "decode_error: bad header",
               None, "license:CC-BY-NC-4.0", "filter:empty_text"]
    for u in range(7):
        rows = []
        for k in range(9):
            rec = f"r{u}-{k // 3}"
            lang = langs[(u + k) % 4]
            ref = REF_A if k % 3 == 0 else REF_B if k % 3 == 1 else ("" if u == 2 else None)
            text = ["the cat sat on the mat", "ein hund lief", "thank you for watching", None][(u * 3 + k) % 4]
            reason = reasons[(u + k) % len(reasons)]
            unknown = reason is not None and (u + k) % 3 == 0  # a kept row has audio, so a duration
            rows.append(Row(f"{rec}-s{k:03d}", rec, lang, None if unknown else 0.5 + 0.25 * k,
                            license=licenses[(u + 2 * k) % 4], drop_reason=reason,
                            lang_hint="es" if lang is None and k % 2 else None, text=text, ref_text=ref,
                            offset_s=float(9 - k)))
        units[f"u{u:06d}"] = rows
    return units


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("engine"), _units(), uncommitted={}, failed={}, counts=True)
    units = run / "units"
    # a unit written before some columns existed: read by name, missing columns are nulls
    t = pq.read_table(units / "u000003" / "rejected.parquet")
    pq.write_table(t.drop_columns(["source", "ref_text", "lang_prob"]), units / "u000003" / "rejected.parquet")
    # another source in one unit; a unit with no rejected file
    t = pq.read_table(units / "u000004" / "kept.parquet")
    pq.write_table(t.set_column(t.schema.get_field_index("source"), "source",
                                pa.array(["other"] * t.num_rows, pa.string())), units / "u000004" / "kept.parquet")
    (units / "u000005" / "rejected.parquet").unlink()
    set_digests(run)  # the markers' digests as the sink would have written them for these files
    return run


@pytest.fixture(scope="module")
def bare_run_dir(run_dir, tmp_path_factory) -> Path:
    """The same run, its markers without a digest (as an older build wrote them)."""
    bare = tmp_path_factory.mktemp("bare") / "run"
    shutil.copytree(run_dir, bare)
    set_digests(bare, keep=False)
    return bare


def _rows(run: Path) -> list[dict]:
    out = []
    for unit in committed_units(run):
        for side in ("kept", "rejected"):
            out += [{**r, "kept": side == "kept"} for r in read_unit_table(run, unit, side).to_pylist()]
    return out


def _lang(r: dict) -> str:
    return r["lang"] if r["lang"] is not None else r["lang_hint"] if r["lang_hint"] is not None else "und"


def _oracle(run: Path) -> dict:
    rows = _rows(run)
    lang, secs = _lang, (lambda r: r["duration_s"] or 0.0)
    per_lang: dict = defaultdict(lambda: {"rows_kept": 0, "rows_rejected": 0, "s_kept": 0.0, "s_rejected": 0.0})
    lic: dict = defaultdict(lambda: {"rows_kept": 0, "rows_rejected": 0, "s_kept": 0.0, "s_rejected": 0.0})
    rules: dict = defaultdict(lambda: {"rows": 0, "per_lang": defaultdict(int), "rows_list": []})
    by_reason: dict = defaultdict(int)
    for r in rows:
        side = "kept" if r["kept"] else "rejected"
        per_lang[lang(r)][f"rows_{side}"] += 1
        per_lang[lang(r)][f"s_{side}"] += secs(r)
        name = r["license"] if r["license"] is not None else "unknown"
        lic[name][f"rows_{side}"] += 1
        lic[name][f"s_{side}"] += secs(r)
        if not r["kept"]:
            d = rules[r["drop_reason"] or "(no reason)"]
            d["rows"] += 1
            d["per_lang"][lang(r)] += 1
            d["rows_list"].append(r)
            by_reason[r["drop_reason"]] += 1
    return {"rows": rows, "per_lang": per_lang, "licenses": lic, "rules": rules, "by_reason": by_reason,
            "rows_in": len({r["id"] for r in rows}), "recordings": len({r["recording_id"] for r in rows}),
            "with_kept": len({r["recording_id"] for r in rows if r["kept"]}),
            "unknown_dur": sum(r["duration_s"] is None for r in rows),
            "hours_in": sum(secs(r) for r in rows) / 3600}


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@pytest.fixture(scope="module", params=["digests", "no-digests"])
def summary(request, run_dir, bare_run_dir) -> dict:
    return summarize(run_dir if request.param == "digests" else bare_run_dir)


def _markers(run: Path) -> list[dict]:
    return [json.loads((run / "units" / u / "_COMMITTED").read_text()) for u in committed_units(run)]


def test_digests_in_markers_and_from_files_give_the_same_report(run_dir, bare_run_dir):
    assert all(digest.KEY in m for m in _markers(run_dir))
    assert not any(digest.KEY in m for m in _markers(bare_run_dir))
    with_digests, from_files = summarize(run_dir), summarize(bare_run_dir)
    for s in (with_digests, from_files):
        del s["path"]
    assert json.dumps(with_digests, sort_keys=True) == json.dumps(from_files, sort_keys=True)
    assert audit.to_json(audit.audit_run(run_dir)).replace(str(run_dir), "RUN") == \
        audit.to_json(audit.audit_run(bare_run_dir)).replace(str(bare_run_dir), "RUN")


def test_a_marker_digest_is_what_its_files_give(run_dir):
    for unit, marker in zip(committed_units(run_dir), _markers(run_dir)):
        assert marker[digest.KEY] == json.loads(json.dumps(digest.digest_of_unit(run_dir, unit)))


def test_the_run_has_what_the_oracle_needs(run_dir):
    rows = _rows(run_dir)
    assert len(committed_units(run_dir)) == 7
    assert {r["kept"] for r in rows} == {True, False}
    assert any(r["ref_text"] for r in rows) and any(not r["ref_text"] for r in rows)
    assert any(r["duration_s"] is None for r in rows) and any(r["source"] is None for r in rows)
    assert len({r["license"] for r in rows}) >= 3 and len({r["lang"] for r in rows}) >= 3


def test_counts_hours_languages_licenses_match_the_oracle(run_dir, summary):
    o = _oracle(run_dir)
    rows = o["rows"]
    kept = sum(r["kept"] for r in rows)
    assert summary["rows"]["in"] == o["rows_in"] and summary["rows"]["kept"] == kept
    assert summary["rows"]["rejected"] == len(rows) - kept
    assert summary["recordings"]["in"] == o["recordings"]
    assert summary["recordings"]["with_kept_rows"] == o["with_kept"]
    assert summary["rows_unknown_duration"] == o["unknown_dur"] > 0
    assert _close(summary["hours"]["in"], o["hours_in"])
    assert sorted(summary["per_lang"]) == sorted(o["per_lang"])
    for name, d in o["per_lang"].items():
        got = summary["per_lang"][name]
        assert (got["rows_kept"], got["rows_rejected"]) == (d["rows_kept"], d["rows_rejected"])
        assert _close(got["hours_kept"], d["s_kept"] / 3600) and _close(got["hours_rejected"], d["s_rejected"] / 3600)
    assert sorted(summary["licenses"]) == sorted(o["licenses"])
    for name, d in o["licenses"].items():
        got = summary["licenses"][name]
        assert (got["rows_kept"], got["rows_rejected"]) == (d["rows_kept"], d["rows_rejected"])
        assert _close(got["hours_kept"], d["s_kept"] / 3600) and _close(got["hours_rejected"], d["s_rejected"] / 3600)


def test_reasons_rules_and_examples_match_the_oracle(run_dir, summary):
    o = _oracle(run_dir)
    want = {("(no reason)" if k is None else k): v for k, v in o["by_reason"].items()}
    assert summary["rejected"]["by_reason"] == want
    assert list(summary["rules"]) == sorted(o["rules"], key=lambda k: (-o["rules"][k]["rows"], k))
    for reason, d in o["rules"].items():
        got = summary["rules"][reason]
        assert got["rows"] == d["rows"] and got["per_lang"] == dict(d["per_lang"])
        first = sorted(d["rows_list"], key=lambda r: r["id"])[:2]
        assert got["examples"] == [{"id": r["id"], "lang": _lang(r), "text": r["text"],
                                    "duration_s": r["duration_s"]} for r in first]


def test_rule_quality_matches_the_oracle(run_dir, summary):
    rows, counts = _oracle(run_dir)["rows"], summary["counts"]
    known = [rule for c in counts.values() for rule in [*(c.get("rejected") or {}), *(c.get("flagged") or {})]]
    scored: dict = defaultdict(lambda: [0, 0])  # rule -> [scored, good]
    kept = [0, 0]
    for r in rows:
        if not r["ref_text"]:
            continue
        wer = span_wer(tokens(r["text"], r["lang"]), tokens(r["ref_text"], r["lang"]))
        if wer is None:
            continue
        if r["kept"]:
            kept[0] += 1
            kept[1] += wer > GARBAGE_WER_MIN
        else:
            d = scored[counters.rule_of(r["drop_reason"] or "(no reason)", known)]
            d[0] += 1
            d[1] += wer <= GOOD_WER_MAX
    rq = summary["rule_quality"]
    assert rq["rows_with_reference"] == sum(bool(r["ref_text"]) for r in rows) > 0
    assert [rq["kept"]["rows_scored"], rq["kept"]["rows_garbage"]] == kept
    assert rq["kept"]["rows"] == sum(r["kept"] for r in rows)
    got = {d["rule"]: [d["rows_scored"], d["rows_good"]] for d in rq["rules"] if d["rows_scored"]}
    assert got == dict(scored) and got


def test_reference_wer_matches_jiwer_over_all_recordings(run_dir, summary):
    rows = _oracle(run_dir)["rows"]
    hyps: dict = defaultdict(list)
    refs: dict = {}
    for r in sorted(rows, key=lambda r: not r["kept"]):
        if r["ref_text"] and r["kept"]:
            hyps[r["recording_id"]].append((r["offset_s"] or 0.0, r["text"] or ""))
            refs[r["recording_id"]] = (r["lang"] or "und", r["ref_text"])
        elif r["ref_text"]:
            refs.setdefault(r["recording_id"], (r["lang"] or "und", r["ref_text"]))
    by_lang: dict = defaultdict(lambda: ([], [], [0]))
    for rid, (lang, ref) in refs.items():
        if rid in hyps:
            by_lang[lang][0].append(normalize(ref, lang))
            by_lang[lang][1].append(normalize(" ".join(t for _, t in sorted(hyps[rid])), lang))
        else:
            by_lang[lang][2][0] += 1
    wer = summary["reference_wer"]
    assert sorted(wer) == sorted(by_lang)
    for lang, (r, h, unscored) in by_lang.items():
        assert wer[lang]["recordings"] == len(r) and wer[lang]["recordings_unscored"] == unscored[0]
        assert wer[lang]["ref_words"] == sum(len(x.split()) for x in r)
        if r:
            assert wer[lang]["wer"] == jiwer.wer(r, h) and wer[lang]["cer"] == jiwer.cer(r, h)
    assert any(v["recordings"] for v in wer.values())


@pytest.mark.parametrize("which", ["digests", "no-digests"])
def test_audit_matches_the_oracle(run_dir, bare_run_dir, which):
    cells: dict = defaultdict(lambda: [0, 0.0, 0, 0.0])
    for r in _rows(run_dir):
        key = (r["source"] or "(no source)", r["license"] or "unknown")
        i = 0 if r["kept"] and r["drop_reason"] is None else 2
        cells[key][i] += 1
        cells[key][i + 1] += r["duration_s"] or 0.0
    report = audit.audit_run(run_dir if which == "digests" else bare_run_dir)
    assert [(ln.source, ln.license) for ln in report.lines] == sorted(cells)
    for ln in report.lines:
        want = cells[ln.source, ln.license]
        assert (ln.rows_kept, ln.rows_rejected) == (want[0], want[2])
        assert _close(ln.seconds_kept, want[1]) and _close(ln.seconds_rejected, want[3])
    assert any(ln.source == "(no source)" for ln in report.lines)
    assert any(v.license == "CC-BY-NC-4.0" for v in report.violations)


def test_empty_run_reports_zeros(tmp_path):
    run = make_run(tmp_path, {}, uncommitted={}, failed={})
    s = summarize(run)
    assert s["rows"]["in"] == s["rows"]["kept"] == 0 and s["per_lang"] == {} and s["reference_wer"] == {}
    assert audit.audit_run(run).lines == []


def test_the_scan_spills_under_the_system_temp_dir(run_dir):
    with scan_mod.RunScan(run_dir) as scan:
        settings = dict(scan.con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'temp_directory')").fetchall())
        spill = Path(settings["temp_directory"])
        assert spill.is_dir() and settings["memory_limit"]
        n = scan.fetch(lambda s: f"SELECT count(*) AS n FROM {s.rows_sql(['id'])}")
        assert pc.sum(pa.array([r["n"] for r in n])).as_py() == len(_rows(run_dir))
    assert not spill.exists()
