"""Run summary: rejections per rule (rows, rows per language, two examples) and its table."""

from __future__ import annotations

import pytest

from granary_pipe.report.summary import summarize
from granary_pipe.report.text import format_summary

try:
    from tests.helpers_rundir import DEFAULT_UNITS, Row, make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import DEFAULT_UNITS, Row, make_run

LONG = "Thank you for watching, and don't forget to subscribe to the channel.\n" * 3  # > 80 characters

UNITS = {
    "u000000": [
        Row("a-s000", "a", "en", 2.0, text="We went to the market this morning."),
        Row("a-s001", "a", "en", 1.0, drop_reason="hallucination:phrase", text="Thank you for watching!"),
        Row("a-s002", "a", "en", 1.5, drop_reason="hallucination:phrase", text=LONG),
        Row("b-s000", "b", "de", 3.0, drop_reason="hallucination:phrase", text="Vielen Dank fürs Zuschauen!"),
        Row("b-s001", "b", "de", 2.0, drop_reason="hallucination:ngram_loop", text="so so so so so"),
        Row("c-s000", "c", None, None, drop_reason="decode_error: invalid data found", text=None),
    ],
    "u000001": [
        Row("a-s003", "a", "en", 0.8, drop_reason="hallucination:phrase", text="you"),
        Row("d-s000", "d", "de", 2.2, drop_reason="text_lang:mismatch:en", text="I am speaking English now."),
        Row("d-s001", "d", "de", 2.4, text="Heute scheint die Sonne."),
    ],
}


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> dict:
    return summarize(make_run(tmp_path_factory.mktemp("rules"), UNITS, uncommitted={}, failed={}))


def test_every_full_reason_has_a_rule_entry(summary):
    rules = summary["rules"]
    assert set(rules) == set(summary["rejected"]["by_reason"])
    assert {k: v["rows"] for k, v in rules.items()} == summary["rejected"]["by_reason"]
    assert sum(v["rows"] for v in rules.values()) == summary["rows"]["rejected"] == 7
    assert list(rules)[0] == "hallucination:phrase"  # most rows first


def test_per_language_counts_and_examples(summary):
    phrase = summary["rules"]["hallucination:phrase"]
    assert phrase["rows"] == 4 and phrase["per_lang"] == {"en": 3, "de": 1}
    assert phrase["examples"] == [  # the first two rows by id
        {"id": "a-s001", "lang": "en", "text": "Thank you for watching!", "duration_s": 1.0},
        {"id": "a-s002", "lang": "en", "text": LONG, "duration_s": 1.5},
    ]
    assert summary["rules"]["text_lang:mismatch:en"]["per_lang"] == {"de": 1}
    decode = summary["rules"]["decode_error: invalid data found"]
    assert decode["per_lang"] == {"und": 1}
    assert decode["examples"] == [{"id": "c-s000", "lang": "und", "text": None, "duration_s": None}]


def test_rules_table_is_printed_with_truncated_examples(summary):
    text = format_summary(summary, color=False)
    assert "Rejections per rule" in text
    section = text.split("Rejections per rule", 1)[1].split("\nLicenses", 1)[0]
    assert "hallucination:phrase" in section and "en 3, de 1" in section
    assert '"Thank you for watching!"' in section and "Vielen Dank" not in section  # third example
    assert "(no text)" in section and "(c-s000, und, ?)" in section
    line = next(ln for ln in section.splitlines() if "a-s002" in ln)
    quoted = line.strip().split('"')[1]
    assert len(quoted) == 80 and quoted.endswith("…")


def test_default_run_dir_has_rules_for_its_reasons(tmp_path):
    s = summarize(make_run(tmp_path))
    rejected = [r for rows in DEFAULT_UNITS.values() for r in rows if r.drop_reason]
    assert sum(v["rows"] for v in s["rules"].values()) == len(rejected)
    assert s["rules"]["hallucination:repeated_ngrams"]["examples"][0]["id"] == "rec11-s900"


def test_run_without_rejections_prints_no_rules_section(tmp_path):
    units = {"u000000": [Row("a-s000", "a", "en", 2.0)]}
    s = summarize(make_run(tmp_path, units, uncommitted={}, failed={}))
    assert s["rules"] == {}
    assert "Rejections per rule" not in format_summary(s, color=False)
