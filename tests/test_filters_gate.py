"""filter.basic and license.gate on tiny tables (no models)."""

from __future__ import annotations

import pytest

from granary_pipe.schema import make_table
from granary_pipe.stages.filters.basic import BasicFilter
from granary_pipe.stages.license.gate import LicenseGate


def seg(rid: str, text: str | None = "a clean sentence", duration_s: float | None = 3.0, **extra) -> dict:
    row = {"id": rid, "recording_id": rid.split("_")[0], "text": text, "duration_s": duration_s,
           "avg_logprob": -0.2, "no_speech_prob": 0.05, "license": "CC-BY-4.0"}
    row.update(extra)
    return row


def run(stage, rows):
    return {r["id"]: r for r in stage(make_table(rows, with_samples=True)).to_pylist()}


# ============================================================================= basic filter

@pytest.mark.parametrize(
    ("row", "rule"),
    [
        (seg("a", text=None), "empty_text"),
        (seg("a", text="   "), "empty_text"),
        (seg("a", text="... ?! —"), "no_words"),
        (seg("a", duration_s=0.1), "too_short"),
        (seg("a", duration_s=None), "too_short"),
        (seg("a", duration_s=45.0), "too_long"),
        (seg("a", no_speech_prob=0.9, avg_logprob=-1.5), "no_speech"),
    ],
)
def test_each_rule_fires_alone(row, rule):
    out = run(BasicFilter(), [row])["a"]
    assert out["drop_reason"] == f"filter:{rule}"
    assert out["flags"] == [f"filter:{rule}"]


def test_clean_row_is_kept_with_no_flags():
    out = run(BasicFilter(), [seg("a", text="Ja.", duration_s=0.3)])["a"]  # bounds are inclusive
    assert out["drop_reason"] is None and out["flags"] == []


def test_silence_rule_needs_both_scores():
    rows = [
        seg("p", no_speech_prob=0.9, avg_logprob=-0.5),  # confident decode: speech after all
        seg("q", no_speech_prob=0.3, avg_logprob=-2.0),  # poor decode but not silent
        seg("r", no_speech_prob=None, avg_logprob=-2.0),  # not transcribed: rule cannot apply
    ]
    out = run(BasicFilter(), rows)
    assert all(out[k]["drop_reason"] is None for k in "pqr")


def test_first_rule_wins_and_every_rule_is_flagged():
    row = seg("a", text="", duration_s=0.1, no_speech_prob=0.95, avg_logprob=-3.0)
    out = run(BasicFilter(), [row])["a"]
    assert out["drop_reason"] == "filter:empty_text"
    assert out["flags"] == ["filter:empty_text", "filter:too_short", "filter:no_speech"]
    out = run(BasicFilter(), [seg("b", text="!!", duration_s=50.0)])["b"]
    assert out["drop_reason"] == "filter:no_words"
    assert out["flags"] == ["filter:no_words", "filter:too_long"]


def test_silence_rule_lives_here_only():
    """Whisper's silence rule: both scores by default, the probability alone on request, off with None;
    filter.hallucination has no copy of it."""
    from granary_pipe.stages.filters.hallucination import HallucinationFilter

    row = seg("a", no_speech_prob=0.7, avg_logprob=-0.2)
    assert run(BasicFilter(), [row])["a"]["drop_reason"] is None
    assert run(BasicFilter(no_speech_mode="alone"), [row])["a"]["drop_reason"] == "filter:no_speech"
    silent = seg("b", no_speech_prob=0.99, avg_logprob=-3.0)
    assert run(BasicFilter(max_no_speech_prob=None), [silent])["b"]["drop_reason"] is None
    # its only no-speech option bounds when a phrase counts as trusted speech; it rejects nothing
    assert [f for f in HallucinationFilter.model_fields if "no_speech" in f] == ["max_trusted_phrase_no_speech_prob"]
    trusted = seg("c", text="Thank you.", no_speech_prob=0.99, avg_logprob=-3.0)
    assert run(HallucinationFilter(), [trusted])["c"]["drop_reason"] == "hallucination:phrase"
    assert not [r for r in HallucinationFilter.RULES if "no_speech" in r]


def test_thresholds_are_params():
    rows = [seg("a", duration_s=1.0), seg("b", duration_s=9.0)]
    out = run(BasicFilter(min_duration_s=2.0, max_duration_s=8.0), rows)
    assert out["a"]["drop_reason"] == "filter:too_short" and out["b"]["drop_reason"] == "filter:too_long"
    out = run(BasicFilter(max_no_speech_prob=0.99), [seg("c", no_speech_prob=0.9, avg_logprob=-1.5)])
    assert out["c"]["drop_reason"] is None


def test_flags_append_to_earlier_flags_and_rejected_rows_pass_through():
    rows = [
        seg("a", text="", flags=["pnc:changed_words"]),
        seg("b", text="", drop_reason="lang:low_confidence", flags=["x"]),
        seg("c"),
    ]
    out = run(BasicFilter(), rows)
    assert out["a"]["flags"] == ["pnc:changed_words", "filter:empty_text"]
    assert out["b"]["drop_reason"] == "lang:low_confidence" and out["b"]["flags"] == ["x"]
    assert out["c"]["drop_reason"] is None
    assert len(out) == 3


# ============================================================================= license gate

def test_gate_keeps_compliant_and_rejects_the_rest():
    rows = [
        seg("by", license="CC-BY-4.0"),
        seg("sa", license="CC-BY-SA-4.0"),
        seg("zero", license="CC0-1.0"),
        seg("nc", license="CC-BY-NC-4.0"),
        seg("nd", license="CC-BY-ND-4.0"),
        seg("unk", license="unknown"),
        seg("none", license=None),
    ]
    out = run(LicenseGate(), rows)
    assert len(out) == len(rows)
    for kept in ("by", "sa", "zero"):
        assert out[kept]["drop_reason"] is None, kept
    assert out["nc"]["drop_reason"] == "license:CC-BY-NC-4.0"
    assert out["nd"]["drop_reason"] == "license:CC-BY-ND-4.0"
    assert out["unk"]["drop_reason"] == "license:unknown"
    assert out["none"]["drop_reason"] == "license:unknown"


def test_gate_does_not_overwrite_an_earlier_reason():
    rows = [seg("a", license="CC-BY-NC-4.0", drop_reason="decode_error: empty file: /x.wav")]
    assert run(LicenseGate(), rows)["a"]["drop_reason"] == "decode_error: empty file: /x.wav"


def test_gate_keeps_samples_of_kept_rows():
    rows = [seg("a", samples=b"\x00\x00\x80\x3f"), seg("b", license="unknown", samples=b"\x00\x00\x80\x3f")]
    out = run(LicenseGate(), rows)
    assert out["a"]["samples"] == b"\x00\x00\x80\x3f"
    assert out["b"]["drop_reason"] == "license:unknown"
