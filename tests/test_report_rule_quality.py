"""Every rule measured (``report/rule_quality.py``): span scoring against per-recording references,
each rule's false-reject rate and the garbage left in kept rows, in the summary JSON and the terminal."""

from __future__ import annotations

import json

import pytest

from granary_pipe.report.rule_quality import stage_order
from granary_pipe.report.summary import summarize
from granary_pipe.report.text import format_summary
from granary_pipe.scoring import span_wer
from granary_pipe.text import tokens

try:
    from tests.helpers_rundir import PIPELINE, Row, make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import PIPELINE, Row, make_run

# ---------------------------------------------------------------- span scoring


def test_span_wer_finds_the_segment_inside_the_recording_reference():
    ref = "yesterday we went to the market and bought fresh bread for the whole family".split()
    assert span_wer("we went to the market".split(), ref) == 0.0
    assert span_wer("bought fresh bred for the whole".split(), ref) == pytest.approx(1 / 6)  # one substitution
    assert span_wer("went to market".split(), ref) == pytest.approx(1 / 4)  # "the" deleted: span of 4
    assert span_wer("we went to the the market".split(), ref) == pytest.approx(1 / 5)  # one insertion
    assert span_wer("please subscribe now".split(), ref) == 1.0  # nothing matches: garbage
    assert span_wer("thank you for watching".split(), ref) == 0.75  # "for" is in the reference
    assert span_wer("the the the the the the".split(), ref) > 0.5  # a loop on a word of the reference
    assert span_wer([], ref) is None and span_wer(["a"], []) is None


def test_span_wer_matches_a_brute_force_search():
    import random

    from granary_pipe.text import edit_distance

    rng = random.Random(7)
    for _ in range(200):
        ref = [rng.choice("abcd") for _ in range(rng.randint(1, 9))]
        hyp = [rng.choice("abcde") for _ in range(rng.randint(1, 6))]
        spans = [(edit_distance(ref[i:j], hyp), j - i) for i in range(len(ref) + 1) for j in range(i, len(ref) + 1)]
        best = min(d for d, _ in spans)
        longest = max(n for d, n in spans if d == best)
        assert span_wer(hyp, ref) == pytest.approx(best / max(longest, 1)), (hyp, ref)


def test_tokens_use_the_one_normalisation_and_characters_for_unspaced_languages():
    assert tokens("Thank you, D’Artagnan!", "en") == ["thank", "you", "d", "artagnan"]  # Whisper: apostrophe → space
    assert tokens("今天 天气很好。", "zh") == list("今天天气很好")


def test_stage_order_follows_run_json_then_others_then_the_sink():
    run = {"pipeline": {"stages": [{"use": "audio.decode"}, {"use": "filter.basic"}]}}
    assert stage_order(run, ["sink.write", "zeta", "filter.basic", "alpha", "audio.decode"]) == [
        "audio.decode", "filter.basic", "alpha", "zeta", "sink.write"]


# ---------------------------------------------------------------- a run with references

REF_A = "Good morning everyone. Today we talk about the weather in the mountains and the rain in the valley."
REF_B = "The train was late again so we walked home through the park."
UNITS = {
    "u000000": [
        # recording a: two good kept segments, one kept garbage, a good segment wrongly rejected, a real hallucination
        Row("a-s000", "a", "en", 2.0, text="Good morning everyone.", ref_text=REF_A),
        Row("a-s001", "a", "en", 3.0, text="Today we talk about the weather in the mountains", ref_text=REF_A),
        Row("a-s002", "a", "en", 1.5, text="Subscribe to my channel for more videos", ref_text=REF_A),
        Row("a-s003", "a", "en", 2.5, text="and the rain in the valley.", ref_text=REF_A,
            drop_reason="hallucination:char_rate_high", flags=["hallucination:char_rate_high"]),
        Row("a-s004", "a", "en", 1.0, text="Thank you for watching!", ref_text=REF_A,
            drop_reason="hallucination:phrase", flags=["hallucination:phrase", "hallucination:char_rate_high"]),
        # recording b: the language check rejected a correct transcript; one segment had no text
        Row("b-s000", "b", "en", 3.0, text="The train was late again,", ref_text=REF_B,
            drop_reason="text_lang:mismatch:de", flags=["text_lang:mismatch:de"]),
        Row("b-s001", "b", "en", 2.0, text="so we walked home through the park.", ref_text=REF_B),
        Row("b-s002", "b", "en", 0.2, text="", ref_text=REF_B, drop_reason="filter:empty_text"),
    ],
    "u000001": [
        # no reference: not scored, still counted
        Row("c-s000", "c", "de", 2.0, text="Hallo zusammen.", drop_reason="hallucination:char_rate_high"),
        Row("d-s000", "d", None, None, text=None, drop_reason="decode_error: invalid data found"),
        Row("e-s000", "e", "en", 1.0, text="Just words.", drop_reason="mystery:rule", ref_text="Just words."),
    ],
}


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> dict:
    return summarize(make_run(tmp_path_factory.mktemp("rq"), UNITS, uncommitted={}, failed={}, counts=True))


def rules(summary: dict) -> dict[str, dict]:
    return {d["rule"]: d for d in summary["rule_quality"]["rules"]}


def test_false_rejects_per_rule(summary):
    rq = summary["rule_quality"]
    assert rq["counters"] is True and rq["good_wer_max"] == 0.2 and rq["garbage_wer_min"] == 0.5
    assert rq["rows_with_reference"] == 9
    r = rules(summary)
    rate = r["hallucination:char_rate_high"]
    assert (rate["stage"], rate["rows_rejected"], rate["rows_flagged"]) == ("filter.hallucination", 2, 2)
    assert rate["hours_rejected"] == pytest.approx(4.5 / 3600)
    assert (rate["rows_scored"], rate["rows_good"], rate["false_reject_rate"]) == (1, 1, 1.0)  # c has no reference
    assert rate["hours_good"] == pytest.approx(2.5 / 3600)
    phrase = r["hallucination:phrase"]
    assert (phrase["rows_rejected"], phrase["rows_scored"], phrase["rows_good"], phrase["false_reject_rate"]) == (
        1, 1, 0, 0.0)
    lid = r["text_lang:mismatch"]  # counted under the declared rule, whatever language it detected
    assert (lid["stage"], lid["rows_rejected"], lid["rows_good"], lid["false_reject_rate"]) == (
        "filter.text_lang", 1, 1, 1.0)
    empty = r["filter:empty_text"]
    assert (empty["rows_rejected"], empty["rows_scored"], empty["false_reject_rate"]) == (1, 0, None)  # no text
    assert r["decode_error"]["stage"] == "audio.decode" and r["decode_error"]["rows_scored"] == 0
    mystery = r["mystery:rule"]  # a reason no counter holds: counted from the rows
    assert (mystery["stage"], mystery["rows_rejected"], mystery["rows_flagged"], mystery["rows_good"]) == (
        None, 1, None, 1)


def test_garbage_in_kept_rows(summary):
    kept = summary["rule_quality"]["kept"]
    assert (kept["rows"], kept["rows_scored"], kept["rows_garbage"]) == (4, 4, 1)
    assert kept["garbage_rate"] == 0.25 and kept["hours_garbage"] == pytest.approx(1.5 / 3600)


def test_rules_follow_the_pipeline_and_every_counted_rule_is_listed(summary):
    order = [d["stage"] for d in summary["rule_quality"]["rules"]]
    stages = [s for s in PIPELINE if s in order]
    assert [s for s in dict.fromkeys(order) if s] == stages and order[-1] is None
    assert summary["counts"]["filter.hallucination"]["rows_in"] == 9  # 11 rows but the decode error and empty text
    assert json.loads(json.dumps(summary)) == summary  # JSON-ready (granary report --json)


def test_terminal_table(summary):
    text = format_summary(summary, color=False)
    section = text.split("Every rule measured", 1)[1].split("\nLicenses", 1)[0]
    line = next(ln for ln in section.splitlines() if ln.strip().startswith("hallucination:char_rate_high"))
    assert line.split()[1:] == ["filter.hallucination", "2", "0:00:04", "2", "1", "1", "100.0%"]
    assert "(not counted)" in section
    assert "kept rows scored against references: 4 of 4; garbage (WER>0.5): 1 (25.0%, 0:00:02)" in section


def test_a_run_without_counters_or_references(tmp_path):
    units = {"u000000": [Row("a-s000", "a", "en", 2.0),
                         Row("a-s001", "a", "en", 1.0, drop_reason="hallucination:phrase", text="you")]}
    s = summarize(make_run(tmp_path, units, uncommitted={}, failed={}))
    rq = s["rule_quality"]
    assert s["counts"] is None and rq["counters"] is False and rq["rows_with_reference"] == 0
    assert [(d["rule"], d["stage"], d["rows_rejected"], d["rows_flagged"]) for d in rq["rules"]] == [
        ("hallucination:phrase", None, 1, None)]
    text = format_summary(s, color=False)
    assert "no reference transcripts in the source listing" in text and "carry no per-stage counters" in text
