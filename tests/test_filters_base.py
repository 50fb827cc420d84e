"""The filter base (``stages/filters/base.py``) and the per-stage counters (``granary_pipe/counters.py``)
on a toy filter and tiny tables: every rule that fired is flagged, the first one that may reject
decides ``drop_reason``, and rows in / rejected / flagged are counted per rule."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
import pytest

from granary_pipe import counters, schema
from granary_pipe.units import apply_stage
from granary_pipe.schema import make_table
from granary_pipe.stage import Stage
from granary_pipe.stages.filters.base import FilterStage
from granary_pipe.stages.filters.basic import BasicFilter
from granary_pipe.stages.filters.hallucination import HallucinationFilter
from granary_pipe.stages.filters.pass_agreement import PassAgreementFilter
from granary_pipe.stages.filters.text_lang import TextLanguageFilter
from granary_pipe.stages.license.gate import LicenseGate


class Toy(FilterStage):
    """Fires rules named by the words of ``text``: ``big`` → toy:big, ``odd`` → toy:odd,
    ``lang`` → toy:lang:<lang>, ``note`` → toy:note (flag only), ``bad`` → an undeclared reason."""

    name: ClassVar[str] = "test.toy"
    RULES: ClassVar[tuple[str, ...]] = ("toy:big", "toy:lang", "toy:odd", "toy:note")
    FLAG_ONLY: ClassVar[tuple[str, ...]] = ("toy:note",)
    COLUMNS: ClassVar[tuple[str, ...]] = ("text", "lang")
    batch_size: int = 2

    def rules(self, row: dict[str, Any]) -> list[str]:
        words = (row["text"] or "").split()
        names = {"big": "toy:big", "odd": "toy:odd", "note": "toy:note", "bad": "toy:undeclared",
                 "lang": f"toy:lang:{row['lang']}"}
        return [names[w] for w in reversed(words) if w in names]  # any order: the base sorts


def row(rid: str, text: str | None, lang: str = "en", duration_s: float = 1.0, **extra) -> dict:
    return {"id": rid, "recording_id": rid, "text": text, "lang": lang, "duration_s": duration_s, **extra}


ROWS = [
    row("a", "odd big note", duration_s=2.0),     # three rules: flags all, rejects on the first
    row("b", "note only"),                        # flag-only: kept, flagged
    row("c", "lang odd", lang="de", duration_s=0.5),
    row("d", "clean"),
    row("e", "big", drop_reason="license:CC-BY-NC-4.0", flags=["license:CC-BY-NC-4.0"]),  # passes through
    row("f", None, flags=["pnc:changed_words"]),  # earlier flags kept
]


def test_flags_every_rule_rejects_on_the_first_and_counts():
    out, counts = Toy().apply(make_table(ROWS, with_samples=True))
    got = {r["id"]: (r["drop_reason"], r["flags"]) for r in out.to_pylist()}
    assert got == {
        "a": ("toy:big", ["toy:big", "toy:odd", "toy:note"]),
        "b": (None, ["toy:note"]),
        "c": ("toy:lang:de", ["toy:lang:de", "toy:odd"]),
        "d": (None, []),
        "e": ("license:CC-BY-NC-4.0", ["license:CC-BY-NC-4.0"]),
        "f": (None, ["pnc:changed_words"]),
    }
    assert counts == {
        "rows_in": 5, "rows_out": 5,  # e was rejected before: not seen
        "rejected": {"toy:big": 1, "toy:lang": 1, "toy:odd": 0, "toy:note": 0},
        "rejected_s": {"toy:big": 2.0, "toy:lang": 0.5, "toy:odd": 0.0, "toy:note": 0.0},
        "flagged": {"toy:big": 1, "toy:lang": 1, "toy:odd": 2, "toy:note": 2},
    }
    assert Toy()(make_table(ROWS, with_samples=True)).equals(out)  # __call__ is apply without counts


def test_an_undeclared_reason_is_an_error_naming_the_stage():
    with pytest.raises(ValueError, match=r"test.toy: reason 'toy:undeclared' is not declared in Toy.RULES"):
        Toy()(make_table([row("x", "bad")], with_samples=True))


def test_apply_stage_sums_counts_over_batches_and_stages():
    table = make_table(ROWS, with_samples=True)
    out, stats = apply_stage(Toy(), (table, {}))  # batch_size 2: three calls
    whole = Toy().apply(table)[1]
    assert stats["counts"]["test.toy"] == whole
    _, again = apply_stage(LicenseGate(), (out, stats))
    assert list(again["counts"]) == ["test.toy", "license.gate"]
    assert again["counts"]["license.gate"]["rows_in"] == 3  # a, c and e were rejected before
    assert again["counts"]["test.toy"] == whole


class Splitter(Stage):
    """A segmenter-like stage: each row becomes two; rows with no text are rejected by a message."""

    name: ClassVar[str] = "test.split"

    def process(self, active: pa.Table) -> pa.Table:
        out = []
        for r in active.to_pylist():
            if r["text"] is None:
                out.append({**r, "drop_reason": f"decode_error: no such file: /data/{r['id']}.wav"})
            else:
                out += [{**r, "id": f"{r['id']}_{k}", "duration_s": 0.5, "flags": ["test:half"]} for k in (0, 1)]
        return make_table(out, with_samples=True)


def test_any_stage_is_counted_without_declaring_rules():
    rows = [row("a", "x"), row("b", None, duration_s=3.0), row("c", "y")]
    _, counts = Splitter().apply(make_table(rows, with_samples=True))
    assert counts == {"rows_in": 3, "rows_out": 5, "rejected": {"decode_error": 1},
                      "rejected_s": {"decode_error": 3.0}, "flagged": {"test:half": 4}}


def test_rule_of_and_reason_key():
    assert counters.reason_key("decode_error: file not found: /x y.wav") == "decode_error"
    assert counters.reason_key("hallucination:phrase") == "hallucination:phrase"
    assert counters.rule_of("license:CC-BY-NC-4.0", ["license"]) == "license"
    assert counters.rule_of("text_lang:mismatch:de", ["text_lang", "text_lang:mismatch"]) == "text_lang:mismatch"
    assert counters.rule_of("licensed", ["license"]) == "licensed"  # a prefix must end at ':'
    assert counters.rule_of("segment:no_speech") == "segment:no_speech"


def test_merge():
    a = {"rows_in": 2, "rows_out": 2, "rejected": {"r": 1}, "rejected_s": {"r": 1.5}, "flagged": {"r": 1}}
    b = {"rows_in": 3, "rows_out": 4, "rejected": {"s": 2}, "rejected_s": {"s": 1.0}, "flagged": {}}
    assert counters.merge(a, b) == {"rows_in": 5, "rows_out": 6, "rejected": {"r": 1, "s": 2},
                                    "rejected_s": {"r": 1.5, "s": 1.0}, "flagged": {"r": 1}}
    assert counters.merge(None, a) == a
    merged = counters.merge_stages({"x": a}, {"y": b, "x": a})
    assert list(merged) == ["x", "y"] and merged["x"]["rows_in"] == 4 and merged["y"] == counters.merge(b, None)


@pytest.mark.parametrize("stage", [BasicFilter, HallucinationFilter, TextLanguageFilter, PassAgreementFilter,
                                   LicenseGate])
def test_the_filters_are_filter_stages_with_their_rules_declared(stage):
    assert issubclass(stage, FilterStage) and stage.RULES
    assert set(stage.FLAG_ONLY) <= set(stage.RULES)
    assert set(stage.COLUMNS) <= set(schema.SCHEMA.names)
    counts = counters.empty(stage.RULES)
    assert set(counts["rejected"]) == set(stage.RULES)


def test_empty_batches_still_report_every_declared_rule():
    _, counts = BasicFilter().apply(make_table([row("a", "x", drop_reason="license:unknown")], with_samples=True))
    assert counts["rows_in"] == 0 and counts["rejected"] == dict.fromkeys(BasicFilter.RULES, 0)
